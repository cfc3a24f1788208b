"""This host's side of volumes, configs and secrets (the records are :mod:`agent.model.storage`'s).

Before the reconciler creates a container it asks :meth:`HostStorage.prepare` for what the container
mounts: its Docker volumes (made with Corral's labels; one already there keeps its data) and its
config and secret files, written once per (digest, mode) into a directory of their own, atomically (a
temporary directory renamed into place), read-only. Secrets are opened here (their bytes are sealed
in the state) and written under :attr:`HostPaths.secrets`, on ``/run``: a memory file system.

After every pass :meth:`sweep` deletes the file directories no container of this host mounts any
more, and :meth:`remove_volumes` deletes the volumes of this host that the cluster is removing
(``volume rm``, ``stack rm --volumes``), then says so (``volume.gone``). Only those: a volume whose
record is missing is never deleted (a host that was away must not lose data to a state it missed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from agent.errors import Conflict, CorralError
from agent.model.commands import Command, VolumeGone
from agent.model.state import ClusterState
from agent.model.storage import SECRET_PURPOSE
from agent.node.docker import Engine
from agent.node.plan import Desired, FileSet, HostPaths
from mesh import sealing

log = logging.getLogger("corral.storage")

Propose = Callable[[Command], Awaitable[object]]


class StorageFailed(CorralError):
    """A container's volume or files could not be made ready (the reason is the instance's error)."""


class HostStorage:
    def __init__(self, host: str, state: ClusterState, engine: Engine, paths: HostPaths, secret: bytes,
                 propose: Propose) -> None:
        self.host = host
        self.state = state
        self.engine = engine
        self.paths = paths
        self._secret = secret
        self._propose = propose
        self._removing: set[str] = set()

    async def prepare(self, want: Desired) -> None:
        """Make the volumes and files ``want`` mounts (StorageFailed with the reason)."""
        for name, labels in want.volumes:
            await self.engine.create_volume(name, dict(labels))
        for fileset in want.files:
            await asyncio.to_thread(self._write, fileset)

    def _write(self, fileset: FileSet) -> None:
        if os.path.isdir(fileset.directory):
            return  # written by an earlier pass (or run of the agent): same digest, same bytes
        config = self.state.storage.configs.get(fileset.config)
        if config is None or config.digest != fileset.digest:
            raise StorageFailed(f"{'secret' if fileset.secret else 'config'} {fileset.config} changed or went "
                                "while its container was being made")
        root = Path(fileset.directory).parent
        root.mkdir(parents=True, exist_ok=True, mode=0o700 if fileset.secret else 0o755)
        temp = Path(tempfile.mkdtemp(prefix=Path(fileset.directory).name + ".tmp-", dir=root))
        os.chmod(temp, 0o755)
        try:
            for path, data in config.files:
                if fileset.secret:
                    try:
                        data = sealing.open_sealed(self._secret, SECRET_PURPOSE, data)
                    except sealing.SealError as exc:
                        raise StorageFailed(f"secret {config.name}: {exc}") from None
                target = temp / "content" if fileset.single else temp / "tree" / path
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(target, fileset.mode)
            try:
                os.rename(temp, fileset.directory)
            except OSError:  # another container's create wrote the same files first
                if not os.path.isdir(fileset.directory):
                    raise
                shutil.rmtree(temp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise

    def sweep(self, desired: Iterable[Desired]) -> None:
        """Delete the config and secret directories no desired container mounts."""
        keep = {f.directory for d in desired for f in d.files}
        for root in (self.paths.configs, self.paths.secrets):
            try:
                entries = list(os.scandir(root))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and entry.path not in keep:
                    shutil.rmtree(entry.path, ignore_errors=True)

    async def remove_volumes(self) -> None:
        """Delete this host's volumes that are being removed, then say each is gone."""
        for volume in list(self.state.storage.volumes.values()):
            if volume.host != self.host or not volume.removing or volume.key in self._removing:
                continue
            try:
                await self.engine.remove_volume(volume.name)
            except Conflict as exc:  # its container is still going: the next pass tries again
                log.info("volume %s: %s", volume.name, exc.message)
                continue
            self._removing.add(volume.key)
            try:
                await self._propose(VolumeGone(volume.name, volume.environment, self.host))
                log.info("volume %s removed", volume.name)
            finally:
                self._removing.discard(volume.key)


__all__ = ["HostStorage", "StorageFailed"]
