"""Run the real ``corral`` command in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys


def corral(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
           input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
        env=dict(os.environ, **(env or {})),
    )
