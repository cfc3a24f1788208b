"""One way to write a file that must not be lost half-written, nor read by others: Raft snapshots,
the cluster secret, keyrings, keys."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """``data`` into ``path`` (mode 0600): a temporary file, fsynced, renamed over it, the folder fsynced.

    A crash leaves either the old file or the new one, never a torn mix; a leftover temporary file
    from an earlier crash is overwritten.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover tmp file may have had another mode
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


__all__ = ["write_private"]
