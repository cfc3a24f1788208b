"""A compose service's ``volumes:``, ``tmpfs:``, ``configs:`` and ``secrets:`` → the spec's ``mounts``.

The contract is :mod:`agent.model.mounts` (docs/COMPOSE.md has the table): a named volume is a volume
mount whose scope its top-level declaration gives, an anonymous one an instance volume, a relative bind
a config of the stack (read-only, shipped by the CLI), an absolute bind a bind mount (the server checks
the paths the cluster allows).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping

from agent.model.compose_context import Service, flag, strings, text, whole


def _target(s: Service, key: str, value: object) -> str:
    raw = text(s.ctx, value, s.at(key), "a path in the container")
    if not raw.startswith("/"):
        raise s.error(key, f"{raw}: a target is an absolute path in the container")
    return posixpath.normpath(raw)


def _is_path(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def _volume_mount(s: Service, key: str, source: str | None, target: str, read_only: bool) -> dict[str, object]:
    if source is None:
        return {"type": "volume", "target": target}
    decl = s.ctx.volumes.get(source)
    if decl is None:
        raise s.error(key, f"the volume {source} is not declared in the top-level volumes")
    mount: dict[str, object] = {"type": "volume", "source": decl.name, "target": target, "scope": decl.scope.value}
    if read_only:
        mount["read_only"] = True
    return mount


def _bind_mount(s: Service, key: str, source: str, target: str, read_only: bool) -> dict[str, object]:
    if source.startswith("/"):
        if posixpath.normpath(source) == "/":
            raise s.error(key, f"{source}: the host's root folder cannot be mounted")
        return {"type": "bind", "source": posixpath.normpath(source), "target": target, "read_only": read_only}
    name = s.ctx.bind_config(source, s.at(key))
    if not read_only:
        s.warn(key, f"{source}: mounted read-only (a config of the stack, shipped from this folder); a folder the "
                    "container writes to is a volume")
    return {"type": "config", "source": name, "target": target}


VOLUME_OPTIONS_IGNORED = {"z", "Z", "nocopy", "cached", "delegated", "consistent", "private", "rprivate", "shared",
                          "rshared", "slave", "rslave"}


def volume_mounts(s: Service, v: object) -> None:
    if not isinstance(v, list):
        raise s.error("volumes", "must be a list")
    for i, item in enumerate(v):
        key = f"volumes[{i}]"
        if isinstance(item, Mapping):
            s.mounts.append(_long_volume(s, key, item))
            continue
        raw = text(s.ctx, item, s.at(key), "SOURCE:TARGET[:ro] or a path")
        parts = raw.split(":")
        options: set[str] = set()
        if len(parts) == 3 or (len(parts) == 2 and not parts[1].startswith("/")):
            options = set(parts.pop().split(","))
        unknown = options - {"ro", "rw"} - VOLUME_OPTIONS_IGNORED
        if unknown or len(parts) > 2:
            raise s.error(key, f"{raw!r} is not SOURCE:TARGET[:ro|rw] or TARGET")
        for ignored in sorted(options & VOLUME_OPTIONS_IGNORED):
            s.warn(key, f"{ignored}: ignored")
        read_only = "ro" in options
        if len(parts) == 1:
            s.mounts.append(_volume_mount(s, key, None, _target(s, key, parts[0]), read_only))
            continue
        source, target = parts[0], _target(s, key, parts[1])
        if _is_path(source):
            s.mounts.append(_bind_mount(s, key, source, target, read_only))
        else:
            s.mounts.append(_volume_mount(s, key, source, target, read_only))


def _long_volume(s: Service, key: str, item: Mapping[str, object]) -> dict[str, object]:
    kind = item.get("type", "volume")
    known = {"type", "source", "target", "read_only", "consistency", "volume", "bind", "tmpfs"}
    unknown = sorted(set(item) - known)
    if unknown:
        raise s.error(f"{key}.{unknown[0]}", "is not a field of a mount here (type, source, target, read_only, "
                                             "volume, bind, tmpfs)")
    target = _target(s, f"{key}.target", item.get("target"))
    read_only = flag(s.ctx, item.get("read_only", False), s.at(f"{key}.read_only"))
    source = item.get("source")
    if item.get("consistency") is not None:
        s.warn(f"{key}.consistency", "ignored")
    for sub in ("volume", "bind", "tmpfs"):
        if item.get(sub) is not None and sub != kind:
            raise s.error(f"{key}.{sub}", f"does not apply to a {kind} mount")
    options = item.get(kind) if kind in ("volume", "bind", "tmpfs") else None
    if options is not None and not isinstance(options, Mapping):
        raise s.error(f"{key}.{kind}", "must be a map")
    options = options or {}
    if kind == "volume":
        for opt in options:
            if opt == "nocopy":
                s.warn(f"{key}.volume.nocopy", "ignored: a new volume is filled from the image, as Docker does")
            else:
                raise s.error(f"{key}.volume.{opt}", "is not supported (nocopy is ignored)")
        return _volume_mount(s, key, None if source is None else text(s.ctx, source, s.at(f"{key}.source")),
                             target, read_only)
    if kind == "bind":
        for opt in options:
            if opt in ("create_host_path", "propagation", "selinux"):
                s.warn(f"{key}.bind.{opt}", "ignored")
            else:
                raise s.error(f"{key}.bind.{opt}", "is not supported")
        return _bind_mount(s, key, text(s.ctx, source, s.at(f"{key}.source"), "a path"), target, read_only)
    if kind == "tmpfs":
        mount: dict[str, object] = {"type": "tmpfs", "target": target}
        for opt, value in options.items():
            if opt == "size":
                mount["size"] = value if isinstance(value, int) else text(s.ctx, value, s.at(f"{key}.tmpfs.size"))
            elif opt == "mode":
                s.warn(f"{key}.tmpfs.mode", "ignored: Docker's default mode (1777)")
            else:
                raise s.error(f"{key}.tmpfs.{opt}", "is not supported (size is)")
        return mount
    raise s.error(f"{key}.type", f"{kind}: only volume, bind and tmpfs mounts are supported")


def tmpfs_mounts(s: Service, v: object) -> None:
    for i, item in enumerate(strings(s.ctx, v, s.at("tmpfs"))):
        key = f"tmpfs[{i}]" if isinstance(v, list) else "tmpfs"
        target, _, opts = item.partition(":")
        mount: dict[str, object] = {"type": "tmpfs", "target": _target(s, key, target)}
        for opt in filter(None, opts.split(",")):
            name, _, value = opt.partition("=")
            if name == "size":
                mount["size"] = value
            else:
                s.warn(key, f"{opt}: ignored (size is applied)")
        s.mounts.append(mount)


def file_mounts(kind: str) -> Callable[[Service, object], None]:
    """``configs:``/``secrets:`` of a service: short names or long ``source``/``target``/``mode``."""
    def apply(s: Service, v: object) -> None:
        declared = s.ctx.configs_declared if kind == "config" else s.ctx.secrets_declared
        key_name = f"{kind}s"
        if not isinstance(v, list):
            raise s.error(key_name, f"must be a list of {key_name}")
        for i, item in enumerate(v):
            key = f"{key_name}[{i}]"
            entry = item if isinstance(item, Mapping) else {"source": item}
            source = text(s.ctx, entry.get("source"), s.at(f"{key}.source"), f"a {kind}'s name")
            if source not in declared:
                raise s.error(key, f"the {kind} {source} is not declared in the top-level {key_name}")
            mount: dict[str, object] = {"type": kind, "source": source}
            for field, value in entry.items():
                where = f"{key}.{field}"
                if field == "target":
                    raw = text(s.ctx, value, s.at(where))
                    mount["target"] = raw if raw.startswith("/") else (
                        f"/run/secrets/{raw}" if kind == "secret" else f"/{raw}")
                elif field == "mode":
                    mount["mode"] = whole(s.ctx, value, s.at(where))
                elif field in ("uid", "gid"):
                    s.warn(where, "ignored: the files belong to root, readable by all (mode 0444 unless given)")
                elif field != "source":
                    raise s.error(where, f"is not a field of a service's {kind} (source, target, mode, uid, gid)")
            if kind == "config" and "target" not in mount:
                mount["target"] = f"/{source}"
            s.mounts.append(mount)
    return apply


__all__ = ["VOLUME_OPTIONS_IGNORED", "file_mounts", "tmpfs_mounts", "volume_mounts"]
