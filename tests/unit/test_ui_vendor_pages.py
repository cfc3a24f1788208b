"""The xterm.js files the shell page serves are those VENDOR.md names, with their licences."""

from __future__ import annotations

import hashlib
import re

from agent.ui.static import ROOT


def test_the_xterm_files_are_those_vendor_md_names() -> None:
    text = (ROOT / "vendor" / "VENDOR.md").read_text()
    row = r"`(xterm/[\w.-]+)` \(`(?:lib|css)/[\w.-]+`\) \| `([0-9a-f]{64})` \| MIT \(`(xterm/LICENSE-[\w-]+)`\)"
    rows = re.findall(row, text)
    assert {name for name, _, _ in rows} == {"xterm/xterm.js", "xterm/xterm.css", "xterm/addon-fit.js"}
    for name, digest, licence in rows:
        assert hashlib.sha256((ROOT / "vendor" / name).read_bytes()).hexdigest() == digest, name
        assert "Permission is hereby granted, free of charge" in (ROOT / "vendor" / licence).read_text()  # MIT
