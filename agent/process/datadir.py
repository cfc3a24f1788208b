"""The agent's data directory: created, proven writable and locked before anything else starts.

Two agents on one data directory would corrupt each other's Raft log later, so the directory is
held with an exclusive ``flock`` for the life of the process; the kernel drops it if the agent dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from pathlib import Path

from agent.errors import DataDirError
from mesh.files import write_private

LOCK_NAME = "agent.lock"
NODE_ID_NAME = "node-id"


class DataDir:
    """An opened, locked data directory."""

    def __init__(self, path: Path, lock_fd: int, node_id: str) -> None:
        self.path = path
        self.node_id = node_id
        self._lock_fd = lock_fd

    @classmethod
    def open(cls, path: Path) -> DataDir:
        """Create (0700), check, lock and read the node id; raise DataDirError with the reason."""
        if path.exists() and not path.is_dir():
            raise DataDirError(f"data dir {path} is not a directory")
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirError(f"cannot create data dir {path}: {exc.strerror or exc}") from exc
        probe = path / ".write-probe"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise DataDirError(f"data dir {path} is not writable: {exc.strerror or exc}") from exc
        lock_path = path / LOCK_NAME
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_small(lock_path) or "another process"
            os.close(fd)
            raise DataDirError(f"data dir {path} is in use by agent pid {holder}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return cls(path, fd, _node_id(path / NODE_ID_NAME))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    def __enter__(self) -> DataDir:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _read_small(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _node_id(path: Path) -> str:
    """A random id made once per data dir: a wiped data dir is a new node, as it should be."""
    existing = _read_small(path)
    if existing:
        return existing
    node_id = secrets.token_hex(8)
    write_private(path, (node_id + "\n").encode())
    return node_id
