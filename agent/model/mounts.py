"""What a service mounts into its containers: volumes, host folders, configs, secrets, tmpfs.

A service spec's ``mounts`` (request form, a list of maps):

``{"type": "volume", "source": "data", "target": "/var/lib/db", "scope": "stack"}``
    A named Docker volume (the ``local`` driver). ``scope`` says whose it is:
    ``stack`` (the default): one volume for the stack, named ``STACK_SOURCE`` on its host (as compose
    names a project's volumes), shared by the service's instances *on that host*;
    ``instance``: one volume per replica slot, ``STACK_SOURCE-SLOT``;
    ``external``: a volume made beforehand with ``corral volume create SOURCE``, used by that name.
    No ``source``: an anonymous volume (``- /var/lib/x`` in compose), which is an instance volume.
    A volume lives on one host, recorded in the replicated state (:mod:`agent.model.volumes`): an
    instance that uses it is placed on that host, and stays there.
``{"type": "bind", "source": "/srv/www", "target": "/usr/share/www", "read_only": true}``
    A folder of the host, by absolute path; allowed only under the paths the cluster allows.
``{"type": "config", "source": "nginx.conf", "target": "/etc/nginx/nginx.conf"}``
    A config object of the stack (``corral stack deploy`` ships the compose file's ``configs:`` and its
    relative bind mounts as these): its files are written on the host and mounted read-only.
``{"type": "secret", "source": "db_password"}``
    As a config, but never readable back through the API; mounted at ``/run/secrets/SOURCE`` unless a
    ``target`` says otherwise.
``{"type": "tmpfs", "target": "/run/cache", "size": "64m"}``
    A memory file system.

Pure: names and paths are checked here; whether a volume or config exists, and where, is the state's.
"""

from __future__ import annotations

import dataclasses
import enum
import posixpath
import re
from collections.abc import Mapping

from agent.model.errors import SpecError

VOLUME_NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$"
"""Docker's rule for a volume's name (and Corral's for a config's), at most 128 characters."""
VOLUME_NAME_RE = re.compile(VOLUME_NAME_PATTERN)
MAX_MOUNTS = 64
MAX_PATH = 1024
SECRETS_DIR = "/run/secrets"
DEFAULT_FILE_MODE = 0o444


class MountType(enum.StrEnum):
    VOLUME = "volume"
    BIND = "bind"
    CONFIG = "config"
    SECRET = "secret"
    TMPFS = "tmpfs"


class VolumeScope(enum.StrEnum):
    STACK = "stack"
    INSTANCE = "instance"
    EXTERNAL = "external"


@dataclasses.dataclass(frozen=True)
class Mount:
    type: MountType
    target: str
    source: str | None = None
    read_only: bool = False
    scope: VolumeScope | None = None
    """Volumes only: whose volume it is (an anonymous volume is an instance volume)."""
    size: int | None = None
    """tmpfs only: its size limit in bytes (None: Docker's default, half the host's memory)."""
    mode: int | None = None
    """Configs and secrets: the files' mode (None: 0444)."""

    def to_request(self) -> dict[str, object]:
        out: dict[str, object] = {"type": self.type.value, "target": self.target}
        if self.source is not None:
            out["source"] = self.source
        if self.read_only:
            out["read_only"] = True
        if self.scope is not None:
            out["scope"] = self.scope.value
        if self.size is not None:
            out["size"] = self.size
        if self.mode is not None:
            out["mode"] = self.mode
        return out


MOUNT_KEYS = ("type", "source", "target", "read_only", "scope", "size", "mode")


def check_path(value: object, field: str) -> str:
    """An absolute, normalised path: ``/data``, not ``data``, ``/a/../b`` or ``/a//b``."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > MAX_PATH \
            or any(c in value for c in "\0\n\r:") or posixpath.normpath(value) != value.rstrip("/") or "//" in value:
        raise SpecError(field, "must be an absolute path such as /var/lib/data (normalised, no '..', no ':')")
    return value.rstrip("/") or "/"


def volume_name(value: object, field: str) -> str:
    if not isinstance(value, str) or not VOLUME_NAME_RE.fullmatch(value):
        raise SpecError(field, "must be 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return value


def mounts(value: object, memory_bytes: object = None) -> tuple[Mount, ...]:
    """A service's mounts, normalised; SpecError naming the field. ``memory_bytes`` parses a tmpfs size
    (spec's :func:`~agent.model.spec.memory_bytes`, passed in so this module needs nothing of spec)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SpecError("mounts", "must be a list of mounts (maps with a type and a target)")
    if len(value) > MAX_MOUNTS:
        raise SpecError("mounts", f"at most {MAX_MOUNTS} mounts")
    out: list[Mount] = []
    targets: dict[str, int] = {}
    for i, item in enumerate(value):
        field = f"mounts[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError(field, "must be a map with a type (volume, bind, config, secret or tmpfs) and a target")
        unknown = sorted(str(k) for k in item if k not in MOUNT_KEYS)
        if unknown:
            raise SpecError(f"{field}.{unknown[0]}", "is not a field of a mount")
        kind = next((m for m in MountType if m.value == item.get("type")), None)
        if kind is None:
            raise SpecError(f"{field}.type", "must be volume, bind, config, secret or tmpfs")
        read_only = item.get("read_only", False)
        if not isinstance(read_only, bool):
            raise SpecError(f"{field}.read_only", "must be true or false")
        source = item.get("source")
        for key, applies in (("scope", kind == MountType.VOLUME), ("size", kind == MountType.TMPFS),
                             ("mode", kind in (MountType.CONFIG, MountType.SECRET))):
            if key in item and item[key] is not None and not applies:
                raise SpecError(f"{field}.{key}", f"does not apply to a {kind} mount")
        scope: VolumeScope | None = None
        size: int | None = None
        mode: int | None = None
        if kind == MountType.VOLUME:
            if source is not None:
                source = volume_name(source, f"{field}.source")
            raw_scope = item.get("scope", "stack" if source is not None else "instance")
            scope = next((s for s in VolumeScope if s.value == raw_scope), None)
            if scope is None:
                raise SpecError(f"{field}.scope", "must be stack, instance or external")
            if source is None and scope != VolumeScope.INSTANCE:
                raise SpecError(f"{field}.source", f"is required for a {scope} volume (an anonymous one is an "
                                "instance volume)")
        elif kind == MountType.BIND:
            source = check_path(source, f"{field}.source")
        elif kind in (MountType.CONFIG, MountType.SECRET):
            source = volume_name(source, f"{field}.source")
            if kind == MountType.SECRET and item.get("target") is None:
                item = {**item, "target": f"{SECRETS_DIR}/{source}"}
            raw_mode = item.get("mode")
            if raw_mode is not None:
                if not isinstance(raw_mode, int) or isinstance(raw_mode, bool) or not 0 <= raw_mode <= 0o777:
                    raise SpecError(f"{field}.mode", "must be a file mode from 0 to 0o777 (511)")
                mode = raw_mode
            read_only = True
        else:  # tmpfs
            if source is not None:
                raise SpecError(f"{field}.source", "does not apply to a tmpfs mount")
            if item.get("size") is not None:
                assert callable(memory_bytes)
                size = memory_bytes(item["size"], f"{field}.size")
        target = check_path(item.get("target"), f"{field}.target")
        if target == "/":
            raise SpecError(f"{field}.target", "cannot be / (the container's root)")
        if target in targets:
            raise SpecError(f"{field}.target", f"{target} is mounted twice (also by mounts[{targets[target]}])")
        targets[target] = i
        out.append(Mount(kind, target, source, read_only, scope, size, mode))
    return tuple(out)


def volume_key(stack: str, mount: Mount, slot: int) -> str:
    """The name of the Docker volume a volume mount of an instance (of ``stack``, in ``slot``) uses:
    ``STACK_SOURCE`` (stack), ``STACK_SOURCE-SLOT`` (instance; anonymous ones are named after their
    target), ``SOURCE`` (external)."""
    assert mount.type == MountType.VOLUME
    if mount.scope == VolumeScope.EXTERNAL:
        assert mount.source is not None
        return mount.source
    base = mount.source if mount.source is not None else "anon" + re.sub(r"[^a-zA-Z0-9_.-]", "-", mount.target)
    name = f"{stack}_{base}"
    return f"{name}-{slot}" if mount.scope == VolumeScope.INSTANCE else name


__all__ = ["DEFAULT_FILE_MODE", "SECRETS_DIR", "VOLUME_NAME_RE", "Mount", "MountType", "VolumeScope",
           "check_path", "mounts", "volume_key", "volume_name"]
