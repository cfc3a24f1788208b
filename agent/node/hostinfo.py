"""Facts about the machine the agent runs on, read from the kernel (no Docker, no network)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def cpu_count() -> int:
    """CPUs this process may run on (affinity, not the machine's total: what a scheduler can use)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """``MemTotal`` and ``MemAvailable`` in bytes, from /proc/meminfo."""
    wanted = {"MemTotal": "total", "MemAvailable": "available"}
    out: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in wanted:
            fields = rest.split()
            if fields and fields[0].isdigit():
                scale = 1024 if len(fields) > 1 and fields[1].lower() == "kb" else 1
                out[wanted[key]] = int(fields[0]) * scale
    return out


def os_hostname() -> str:
    return socket.gethostname()
