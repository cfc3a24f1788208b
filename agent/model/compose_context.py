"""What the reader of one compose file carries from key to key: lines, warnings, declarations, outputs.

Pure, as the rest of :mod:`agent.model`: files are read through the ``read`` function it is given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
import re
from collections.abc import Callable, Mapping

from agent.model.compose_text import Lookup
from agent.model.mounts import VOLUME_NAME_RE, VolumeScope

Reader = Callable[[str], str | None]
"""A file's text by its path relative to the compose file's folder; None when there is no such file."""


class ComposeError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class ConfigSource:
    """Where a config or secret of the stack comes from; ``corral stack deploy`` ships it."""

    path: str | None
    """A file or a folder, relative to the compose file's folder (None: inline or external)."""
    content: str | None
    """Inline text: a config's ``content:``, or a secret's ``environment:`` variable, substituted."""
    secret: bool = False
    external: bool = False
    """Made beforehand (``corral config create``): nothing to ship."""
    from_bind: bool = False
    """Made from a relative bind mount (``./nginx.conf:/etc/nginx/nginx.conf``): the CLI turns a missing or
    empty folder into a stack volume instead."""


@dataclasses.dataclass(frozen=True)
class VolumeDecl:
    """A top-level ``volumes:`` entry: whose volume it is and its Docker name when external."""

    scope: VolumeScope
    name: str


@dataclasses.dataclass
class Context:
    lines: Mapping[str, int]
    lookup: Lookup
    read: Reader
    warnings: list[str] = dataclasses.field(default_factory=list)
    volumes: dict[str, VolumeDecl] = dataclasses.field(default_factory=dict)
    configs_declared: set[str] = dataclasses.field(default_factory=set)
    secrets_declared: set[str] = dataclasses.field(default_factory=set)
    networks: set[str] = dataclasses.field(default_factory=lambda: {"default"})
    configs: dict[str, ConfigSource] = dataclasses.field(default_factory=dict)
    names: dict[str, str] = dataclasses.field(default_factory=dict)
    """Compose service name → Corral service name, for the services deployed."""
    left_out: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """Services left out for their profiles → those profiles."""

    def line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None

    def error(self, path: str, problem: str) -> ComposeError:
        line = self.line(path)
        return ComposeError(f"{path}: {problem}" + (f" (line {line})" if line else ""))

    def warn(self, path: str, problem: str) -> None:
        self.warnings.append(f"{path}: {problem}")

    def bind_config(self, relative: str, path: str) -> str:
        """The config a relative bind mount becomes: a stable, valid name (its base name and 8 hex of
        its path's SHA-256), recorded in :attr:`configs`."""
        if relative.startswith("~"):
            raise self.error(path, f"{relative}: a path in a home folder is not supported (give it relative to the "
                                   "compose file, or as an absolute path of the hosts)")
        normal = posixpath.normpath(relative)
        base = re.sub(r"[^a-zA-Z0-9_.-]", "-", posixpath.basename(normal)).lstrip("._-")[:100] or "bind"
        name = f"{base}-{hashlib.sha256(normal.encode()).hexdigest()[:8]}"
        assert VOLUME_NAME_RE.match(name), name
        self.configs[name] = ConfigSource(path=relative, content=None, from_bind=True)
        return name


@dataclasses.dataclass(frozen=True)
class Build:
    """A service's ``build:``: its context folder (relative to the compose file), Dockerfile and args."""

    context: str
    dockerfile: str = "Dockerfile"
    args: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Service:
    """One service being read: the spec so far and what the document needs of it."""

    ctx: Context
    name: str
    path: str
    body: Mapping[str, object]
    spec: dict[str, object] = dataclasses.field(default_factory=dict)
    build: Build | None = None
    depends: dict[str, str] = dataclasses.field(default_factory=dict)
    """Compose names of the services this one depends on → started, healthy or completed."""
    optional: set[str] = dataclasses.field(default_factory=set)
    """Of those, the ones with ``required: false``."""
    mounts: list[dict[str, object]] = dataclasses.field(default_factory=list)
    links: dict[str, str] = dataclasses.field(default_factory=dict)
    """Compose ``links``: alias → the compose name of the linked service."""

    def error(self, key: str, problem: str) -> ComposeError:
        return self.ctx.error(f"{self.path}.{key}" if key else self.path, problem)

    def warn(self, key: str, problem: str) -> None:
        self.ctx.warn(f"{self.path}.{key}", problem)

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"


def text(ctx: Context, value: object, path: str, what: str = "a string") -> str:
    """A string value; numbers and booleans are taken as their text (``true``, as compose writes them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 1e3 is "1000", as compose (Go) writes it
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str):
        raise ctx.error(path, f"must be {what}")
    return value


def whole(ctx: Context, value: object, path: str) -> int:
    """An integer, or a string of one (a substituted ``${REPLICAS:-2}``)."""
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ctx.error(path, "must be a whole number")
    return value


def number(ctx: Context, value: object, path: str) -> float:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ctx.error(path, "must be a number")
    return float(value)


def flag(ctx: Context, value: object, path: str) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ctx.error(path, "must be true or false")
    return value


def str_map(ctx: Context, value: object, path: str, *, null_from_env: bool = False) -> dict[str, str]:
    """A map, or a list of ``KEY=VALUE`` (``KEY`` alone: from the environment when ``null_from_env``, else
    empty); a null value likewise."""
    if value is None:
        return {}
    items: list[tuple[str, object, str]] = []
    if isinstance(value, list):
        for i, item in enumerate(value):
            entry = text(ctx, item, f"{path}[{i}]", "KEY=VALUE")
            name, sep, given = entry.partition("=")
            if not name:
                raise ctx.error(f"{path}[{i}]", f"{entry!r} is not KEY=VALUE")
            items.append((name, given if sep else None, f"{path}[{i}]"))
    elif isinstance(value, Mapping):
        items = [(str(k), v, f"{path}.{k}") for k, v in value.items()]
    else:
        raise ctx.error(path, "must be a map or a list of KEY=VALUE")
    out: dict[str, str] = {}
    for key, val, where in items:
        if val is None:
            if not null_from_env:
                out[key] = ""
                continue
            found = ctx.lookup(key)
            if found is None:
                ctx.warn(where, f"{key} is not set in the environment: left out")
            else:
                out[key] = found
        else:
            out[key] = text(ctx, val, where)
    return out


def strings(ctx: Context, value: object, path: str) -> list[str]:
    """A list of strings; one string is a list of one."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ctx.error(path, "must be a string or a list of strings")
    return [text(ctx, v, f"{path}[{i}]") for i, v in enumerate(value)]


__all__ = [
    "Build",
    "ComposeError",
    "ConfigSource",
    "Context",
    "Reader",
    "Service",
    "VolumeDecl",
    "flag",
    "number",
    "str_map",
    "strings",
    "text",
    "whole",
]
