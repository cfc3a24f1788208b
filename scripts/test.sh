#!/usr/bin/env bash
# The whole test suite: lint, types, then every test (unit, simulator and the real lab). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check mesh agent overlay tests bench
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
