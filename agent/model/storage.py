"""What the cluster keeps for its containers' data: volumes, configs and secrets, and the host folders
services may bind-mount.

A **volume** (:class:`Volume`) is a Docker volume (the ``local`` driver) on one host. Its record is
keyed by environment and name (``default/web_data``). Stack and instance volumes are recorded when
their first instance is placed (:meth:`Storage.pin`), external ones by ``corral volume create``. The
record's ``host`` is where it lives: the scheduler places every instance that mounts it there and
nowhere else (``agent/model/placement.py``), so a container is never started on an empty copy by
accident. Only a service that says ``on_host_loss: recreate-empty`` moves it (a new, empty volume on
another host; the old one stays on the lost host's disk). Removing one (``volume rm``, ``stack rm
--volumes``) marks it ``removing``: its host deletes it and says so (``volume.gone``), then the record
goes; a volume is never deleted because a record is missing.

A **config** (:class:`Config`) is a few files (``(path, bytes)`` pairs, at most :data:`MAX_CONFIG`
bytes in all) that hosts write to disk and mount read-only into containers: a compose file's
``configs:``, its relative bind mounts, and its ``secrets:`` (whose bytes are sealed with the cluster
secret before they are proposed, and which no route shows back).
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
from collections.abc import Iterable, Mapping
from typing import Protocol

from agent.model.changes import Topic
from agent.model.codec import WireError, from_wire, to_wire
from agent.model.commands import (
    BindPathsSet,
    ConfigFiles,
    ConfigSet,
    Outcome,
    VolumeCreate,
    VolumeGone,
    VolumeRemove,
)
from agent.model.entities import EventKind
from agent.model.errors import bad_request, conflict, not_found
from agent.model.mounts import Mount, MountType, VolumeScope, check_path, volume_key, volume_name
from agent.model.spec import ServiceSpec

SECRET_PURPOSE = b"secret"
"""The sealing purpose of secrets' bytes (``mesh.sealing``): the API seals, the container's host opens."""
MAX_CONFIG = 512 * 1024
"""Bytes of one config's files (Docker swarm's limit is 500 KB): a config is a file, not a data set."""
MAX_CONFIGS_TOTAL = 16 * 2**20
"""Bytes of all configs together: they live in every snapshot."""
MAX_CONFIG_FILES = 256
MAX_BIND_PATHS = 32
MAX_VOLUMES = 10000


@dataclasses.dataclass(frozen=True)
class Volume:
    name: str
    """The Docker volume's name on its host (``STACK_NAME``, ``STACK_NAME-SLOT``, or an external name)."""
    environment: str
    scope: VolumeScope
    stack: str | None
    """The stack's name (stack and instance volumes; kept when the stack is removed, for its next deploy)."""
    host: str | None
    """Where it lives; None until its first instance is placed."""
    created: int
    updated: int
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    removing: bool = False
    """Asked to be removed: its host deletes it, then the record goes."""

    @property
    def key(self) -> str:
        return f"{self.environment}/{self.name}"


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    """``STACK_NAME`` for a stack's config, or the name given to ``corral config create``."""
    environment: str
    stack: str | None
    secret: bool
    files: tuple[tuple[str, bytes], ...]
    digest: str
    """SHA-256 of the (path, bytes) pairs: a container mounting it is replaced when it changes."""
    size: int
    created: int
    updated: int

    @property
    def key(self) -> str:
        return f"{self.environment}/{self.name}"


class Sink(Protocol):
    def event(self, index: int, kind: EventKind, message: str, **refs: str) -> None: ...

    def change(self, index: int, topic: Topic, key: str, removed: bool = False) -> None: ...


def config_digest(files: Iterable[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for path, data in files:
        h.update(len(path).to_bytes(4, "big") + path.encode() + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def check_files(config: ConfigFiles, field: str = "configs") -> tuple[tuple[str, bytes], ...]:
    """A config's files, checked: relative, normalised paths, unique, within the size limits."""
    volume_name(config.name, f"{field}.{config.name}")
    if not config.files:
        raise bad_request(f"config {config.name} has no files", field)
    if len(config.files) > MAX_CONFIG_FILES:
        raise bad_request(f"config {config.name} has {len(config.files)} files; at most {MAX_CONFIG_FILES}", field)
    seen = set()
    total = 0
    for path, data in config.files:
        if path == "" and len(config.files) == 1:
            pass
        elif (not path or path.startswith("/") or posixpath.normpath(path) != path or path.startswith("..")
              or "\0" in path or len(path) > 1024):
            raise bad_request(f"config {config.name}: {path!r} is not a relative path inside the config", field)
        if path in seen:
            raise bad_request(f"config {config.name}: {path} is given twice", field)
        seen.add(path)
        total += len(data)
    if total > MAX_CONFIG:
        raise bad_request(f"config {config.name} is {total} bytes; a config is at most {MAX_CONFIG // 1024} KiB "
                          "(use a volume for data)", field)
    return tuple(sorted(config.files))


def allowed_bind(path: str, allowed: Iterable[str]) -> bool:
    return any(path == a or path.startswith(a.rstrip("/") + "/") or a == "/" for a in allowed)


class Storage:
    def __init__(self) -> None:
        self.volumes: dict[str, Volume] = {}
        self.configs: dict[str, Config] = {}
        self.bind_paths: tuple[str, ...] = ()

    # -------------------------------------------------------------- reading

    def volume(self, environment: str, name: str) -> Volume | None:
        return self.volumes.get(f"{environment}/{name}")

    def config_for(self, environment: str, stack: str, source: str) -> Config | None:
        """The config a mount's ``source`` names: the stack's own (``STACK_SOURCE``), else the environment's."""
        return self.configs.get(f"{environment}/{stack}_{source}") or self.configs.get(f"{environment}/{source}")

    def volumes_of(self, environment: str, stack: str, spec: ServiceSpec,
                   slot: int) -> list[tuple[Mount, Volume | None]]:
        """(mount, its volume's record or None when not made yet) of each volume an instance of ``spec``
        in ``slot`` mounts."""
        return [(m, self.volume(environment, volume_key(stack, m, slot))) for m in spec.mounts
                if m.type == MountType.VOLUME]

    def check_spec(self, environment: str, stack: str, spec: ServiceSpec,
                   pending_configs: Mapping[str, bool] | None = None) -> None:
        """What a spec mounts exists or may be made: external volumes exist, stack/instance volume names
        do not clash with another kind, configs exist (or are in ``pending_configs``, full names), bind
        mounts are under the allowed paths. CommandError naming the mount otherwise. ``pending_configs``:
        the full names of configs the same deploy makes, and whether each is a secret."""
        pending = pending_configs or {}
        for i, m in enumerate(spec.mounts):
            field = f"mounts[{i}]"
            if m.type == MountType.VOLUME:
                name = volume_key(stack, m, 1)
                record = self.volume(environment, name)
                if m.scope == VolumeScope.EXTERNAL:
                    if record is None or record.scope != VolumeScope.EXTERNAL:
                        raise not_found("volume", name, field) if record is None else conflict(
                            f"volume {name} is stack {record.stack}'s, not an external one", field)
                    if record.removing:
                        raise conflict(f"volume {name} is being removed", field)
                elif record is not None and (record.scope != m.scope or record.stack != stack):
                    raise conflict(f"volume {name} exists already as {_whose(record)}: name the volume otherwise",
                                   field)
            elif m.type == MountType.BIND:
                assert m.source is not None
                if not allowed_bind(m.source, self.bind_paths):
                    allowed = ", ".join(self.bind_paths) or "none"
                    raise bad_request(f"{field}: binding host path {m.source} is not allowed (allowed: {allowed}; "
                                      "an administrator allows more with `corral settings --allow-bind-path`)", field)
            elif m.type in (MountType.CONFIG, MountType.SECRET):
                assert m.source is not None
                own = f"{stack}_{m.source}"
                config = self.config_for(environment, stack, m.source)
                if own not in pending and config is None:
                    raise not_found(m.type.value, m.source, field)
                secret = pending.get(own, config is not None and config.secret)
                if secret != (m.type == MountType.SECRET):
                    raise bad_request(f"{field}: {m.source} is a {'secret' if secret else 'config'}, "
                                      f"mounted as a {m.type}", field)

    # -------------------------------------------------------------- volumes

    def volume_create(self, cmd: VolumeCreate, index: int, environments: Mapping[str, object],
                      hosts: Mapping[str, object], sink: Sink) -> Outcome:
        if cmd.environment not in environments:
            raise not_found("environment", cmd.environment)
        volume_name(cmd.name, "name")
        if cmd.host is not None and cmd.host not in hosts:
            raise not_found("host", cmd.host, "host")
        old = self.volume(cmd.environment, cmd.name)
        if old is not None:
            raise conflict(f"volume {cmd.name} exists already ({_whose(old)}"
                           f"{', on ' + old.host if old.host else ''})", "name")
        if len(self.volumes) >= MAX_VOLUMES:
            raise bad_request(f"the cluster holds at most {MAX_VOLUMES} volumes", "name")
        volume = Volume(cmd.name, cmd.environment, VolumeScope.EXTERNAL, None, cmd.host, index, index,
                        dict(cmd.labels))
        self._put(volume, index, sink)
        sink.event(index, EventKind.VOLUME_CREATED, f"volume {cmd.name} created"
                   + (f" on {cmd.host}" if cmd.host else " (on the host of its first container)"),
                   volume=volume.key)
        return Outcome(index, id=volume.key)

    def may_pin(self, environment: str, name: str, host: str, recreate: bool) -> bool:
        """Whether an instance mounting volume ``name`` may be placed on ``host``."""
        record = self.volume(environment, name)
        return record is None or record.host in (None, host) or (recreate and not record.removing)

    def pin(self, environment: str, stack: str, mount: Mount, name: str, host: str, index: int, sink: Sink,
            recreate: bool) -> bool:
        """Record that ``name`` lives on ``host`` (the first placement of an instance mounting it). False
        when it lives elsewhere and ``recreate`` (the service's ``on_host_loss``) does not allow a new one."""
        record = self.volume(environment, name)
        assert mount.scope is not None
        if record is None:
            self._put(Volume(name, environment, mount.scope, stack if mount.scope != VolumeScope.EXTERNAL else None,
                             host, index, index), index, sink)
            sink.event(index, EventKind.VOLUME_CREATED, f"volume {name} created on {host}",
                       volume=f"{environment}/{name}", host=host)
            return True
        if record.host == host:
            return True
        if record.host is None:
            self._put(dataclasses.replace(record, host=host, updated=index), index, sink)
            return True
        if not recreate:
            return False
        self._put(dataclasses.replace(record, host=host, updated=index), index, sink)
        sink.event(index, EventKind.VOLUME_MOVED, f"volume {name} made again, empty, on {host} ({record.host} is "
                   "lost; its copy stays there)", volume=record.key, host=host)
        return True

    def volume_remove(self, cmd: VolumeRemove, index: int, users: list[str], sink: Sink) -> Outcome:
        record = self.volume(cmd.environment, cmd.name)
        if record is None:
            raise not_found("volume", cmd.name, "name")
        if users:
            raise conflict(f"volume {cmd.name} is mounted by {', '.join(sorted(users))}: remove those first", "name")
        self.mark_removing(record, index, sink)
        return Outcome(index, id=record.key)

    def mark_removing(self, record: Volume, index: int, sink: Sink) -> None:
        if record.host is None:  # never made anywhere: nothing to delete
            del self.volumes[record.key]
            sink.change(index, Topic.VOLUME, record.key, removed=True)
            sink.event(index, EventKind.VOLUME_REMOVED, f"volume {record.name} removed", volume=record.key)
            return
        if not record.removing:
            self._put(dataclasses.replace(record, removing=True, updated=index), index, sink)
            sink.event(index, EventKind.VOLUME_REMOVED, f"volume {record.name} is being removed from {record.host}",
                       volume=record.key, host=record.host)

    def volume_gone(self, cmd: VolumeGone, index: int, sink: Sink) -> Outcome:
        record = self.volume(cmd.environment, cmd.name)
        if record is None or not record.removing or record.host != cmd.host:
            return Outcome(index, stale=True)
        del self.volumes[record.key]
        sink.change(index, Topic.VOLUME, record.key, removed=True)
        return Outcome(index, id=record.key)

    def _put(self, volume: Volume, index: int, sink: Sink) -> None:
        self.volumes[volume.key] = volume
        sink.change(index, Topic.VOLUME, volume.key)

    # -------------------------------------------------------------- configs

    def config_set(self, cmd: ConfigSet, index: int, environments: Mapping[str, object], sink: Sink) -> Outcome:
        """Make or replace a config; Outcome.stale when it is already exactly that."""
        if cmd.environment not in environments:
            raise not_found("environment", cmd.environment)
        files = check_files(cmd.config)
        name = f"{cmd.stack}_{cmd.config.name}" if cmd.stack else cmd.config.name
        key = f"{cmd.environment}/{name}"
        old = self.configs.get(key)
        if old is not None and (old.stack != cmd.stack or old.secret != cmd.config.secret):
            raise conflict(f"{name} exists already as {'a secret' if old.secret else 'a config'}"
                           f"{' of stack ' + old.stack if old.stack else ''}", "name")
        digest = config_digest(files)
        if old is not None and old.digest == digest:
            return Outcome(index, id=key, stale=True)
        size = sum(len(d) for _, d in files)
        total = sum(c.size for c in self.configs.values()) - (old.size if old else 0) + size
        if total > MAX_CONFIGS_TOTAL:
            raise bad_request(f"configs would hold {total} bytes in all; at most {MAX_CONFIGS_TOTAL // 2**20} MiB",
                              "configs")
        self.configs[key] = Config(name, cmd.environment, cmd.stack, cmd.config.secret, files, digest, size,
                                   old.created if old else index, index)
        sink.change(index, Topic.CONFIG, key)
        kind = "secret" if cmd.config.secret else "config"
        sink.event(index, EventKind.CONFIG_CHANGED, f"{kind} {name} {'replaced' if old else 'created'} "
                   f"({size} bytes)", config=key)
        return Outcome(index, id=key)

    def config_remove(self, key: str, index: int, users: list[str], sink: Sink) -> Outcome:
        config = self.configs.get(key)
        if config is None:
            raise not_found("config", key.split("/", 1)[-1], "name")
        if users:
            raise conflict(f"{config.name} is mounted by {', '.join(sorted(users))}: remove those first", "name")
        del self.configs[key]
        sink.change(index, Topic.CONFIG, key, removed=True)
        sink.event(index, EventKind.CONFIG_REMOVED, f"{'secret' if config.secret else 'config'} {config.name} removed",
                   config=key)
        return Outcome(index, id=key)

    # -------------------------------------------------------------- bind paths

    def bind_paths_set(self, cmd: BindPathsSet, index: int, sink: Sink) -> Outcome:
        if len(cmd.paths) > MAX_BIND_PATHS:
            raise bad_request(f"at most {MAX_BIND_PATHS} paths", "paths")
        paths = tuple(sorted({check_path(p, f"paths[{i}]") for i, p in enumerate(cmd.paths)}))
        self.bind_paths = paths
        sink.change(index, Topic.CONFIG, "bind-paths")
        sink.event(index, EventKind.SETTINGS_CHANGED, "bind mounts allowed under: " + (", ".join(paths) or "none"))
        return Outcome(index)

    # -------------------------------------------------------------- snapshots

    def to_wire(self) -> dict[str, object]:
        return {"volumes": [to_wire(v) for v in self.volumes.values()],
                "configs": [to_wire(c) for c in self.configs.values()], "bind_paths": list(self.bind_paths)}

    @classmethod
    def from_wire(cls, raw: object) -> Storage:
        storage = cls()
        if raw is None:
            return storage
        if not isinstance(raw, Mapping):
            raise WireError("storage", "must be a map")
        for v in raw.get("volumes") or ():
            volume = from_wire(Volume, v, "storage.volumes")
            storage.volumes[volume.key] = volume
        for c in raw.get("configs") or ():
            config = from_wire(Config, c, "storage.configs")
            storage.configs[config.key] = config
        paths = raw.get("bind_paths") or ()
        if not isinstance(paths, list | tuple) or not all(isinstance(p, str) for p in paths):
            raise WireError("storage.bind_paths", "must be a list of paths")
        storage.bind_paths = tuple(paths)
        return storage


def _whose(volume: Volume) -> str:
    if volume.scope == VolumeScope.EXTERNAL:
        return "an external volume"
    return f"{'an instance' if volume.scope == VolumeScope.INSTANCE else 'a'} volume of stack {volume.stack}"


__all__ = ["MAX_CONFIG", "SECRET_PURPOSE", "Config", "Storage", "Volume", "allowed_bind", "check_files",
           "config_digest"]
