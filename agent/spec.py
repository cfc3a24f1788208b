"""What a service asks for, validated: the one place that says what a valid spec is.

The API validates a request with :func:`service_spec` before it proposes anything (so bad input gets
a 400 naming the field), and the state machine validates again when it applies the command (so a
log entry can never put a bad spec into the state). Pure and deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agent.scheduler import Constraint

MAX_SCALE = 1000
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
RESTART_POLICIES = ("always", "on-failure", "no")
STRATEGIES = ("spread", "pack")
PORT_RE = re.compile(r"^(?:(\d{1,5}):)?(\d{1,5})(?:/(tcp|udp))?$")
MEMORY_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgKMG]i?[bB]?|[bB])?$")
MEMORY_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
HEALTH_TYPES = ("http", "tcp", "command")
ON_UNHEALTHY = ("recreate", "none")
HEALTH_KEYS = {"type", "port", "path", "command", "interval", "timeout", "retries", "start_period", "on_unhealthy"}


class SpecError(ValueError):
    """A field of a request is wrong; ``field`` is its dotted path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def name(value: Any, field: str = "name") -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise SpecError(field, "must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'")
    return value


def memory_bytes(value: Any, field: str) -> int:
    """``536870912``, ``"512m"``, ``"512MiB"``, ``"1g"`` → bytes."""
    if isinstance(value, bool):
        raise SpecError(field, "must be a size such as 512m")
    if isinstance(value, int):
        if value < 0:
            raise SpecError(field, "must not be negative")
        return value
    if isinstance(value, str):
        match = MEMORY_RE.match(value.strip())
        if match:
            unit = (match.group(2) or "").lower()[:1]
            return int(float(match.group(1)) * MEMORY_UNITS[unit])
    raise SpecError(field, f"{value!r} is not a size such as 512m")


def seconds(value: Any, field: str, low: float, high: float) -> float:
    """``5``, ``2.5``, ``"500ms"``, ``"5s"``, ``"1m"`` → seconds, within [low, high]."""
    parsed: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        parsed = float(value)
    elif isinstance(value, str):
        match = DURATION_RE.match(value.strip())
        if match:
            parsed = float(match.group(1)) * DURATION_UNITS[match.group(2)]
    if parsed is None:
        raise SpecError(field, f"{value!r} is not a duration such as 5s or 500ms")
    if not low <= parsed <= high:
        raise SpecError(field, f"must be from {low:g} s to {high:g} s")
    return parsed


def health_check(value: Any, field: str = "health_check") -> dict[str, Any] | None:
    """A service's health check, normalised; None for none.

    ``http``: a GET of ``path`` on the container's ``port`` answered 2xx/3xx; ``tcp``: the port
    accepts a connection — both made by the agent of the container's host to its overlay address, so
    they need nothing in the image (as Rancher's checks); ``command``: a shell command run in the
    container by Docker (exit 0 is healthy). ``retries`` failures in a row (after ``start_period``)
    make it unhealthy; ``on_unhealthy: recreate`` (the default) replaces such a container.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise SpecError(field, "must be a map with a type: http, tcp or command")
    unknown = sorted(set(value) - HEALTH_KEYS)
    if unknown:
        raise SpecError(f"{field}.{unknown[0]}", "is not a field of a health check")
    kind = value.get("type")
    if kind not in HEALTH_TYPES:
        raise SpecError(f"{field}.type", "must be http, tcp or command")
    port = path = command = None
    if kind in ("http", "tcp"):
        port = value.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise SpecError(f"{field}.port", "must be the container's port, 1-65535")
        if kind == "http":
            path = value.get("path", "/")
            if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in " \r\n"):
                raise SpecError(f"{field}.path", "must be a URL path starting with /")
    else:
        command = value.get("command")
        if not isinstance(command, str) or not command.strip():
            raise SpecError(f"{field}.command", "is required for a command check (run with sh -c in the container)")
    for key, ok in (("port", port is not None), ("path", path is not None), ("command", command is not None)):
        if key in value and not ok:
            raise SpecError(f"{field}.{key}", f"does not apply to a {kind} check")
    interval = seconds(value.get("interval", 5), f"{field}.interval", 0.5, 3600)
    timeout = seconds(value.get("timeout", min(2.0, interval)), f"{field}.timeout", 0.1, 3600)
    if timeout > interval:
        raise SpecError(f"{field}.timeout", "must not be longer than the interval")
    retries = value.get("retries", 3)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 1 <= retries <= 100:
        raise SpecError(f"{field}.retries", "must be a whole number from 1 to 100")
    on_unhealthy = value.get("on_unhealthy", "recreate")
    if on_unhealthy not in ON_UNHEALTHY:
        raise SpecError(f"{field}.on_unhealthy", "must be recreate or none")
    return {"type": kind, "port": port, "path": path, "command": command, "interval": interval, "timeout": timeout,
            "retries": retries, "start_period": seconds(value.get("start_period", 0), f"{field}.start_period", 0, 3600),
            "on_unhealthy": on_unhealthy}


def _str_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):  # compose's ["KEY=value", …]
        out: dict[str, str] = {}
        for i, item in enumerate(value):
            if not isinstance(item, str) or "=" not in item:
                raise SpecError(f"{field}[{i}]", "must be KEY=VALUE")
            key, _, val = item.partition("=")
            out[key] = val
        return out
    if not isinstance(value, Mapping):
        raise SpecError(field, "must be a map of strings")
    for key, val in value.items():
        if not isinstance(key, str) or not key:
            raise SpecError(field, "keys must be non-empty strings")
        if not isinstance(val, str | int | float) or isinstance(val, bool):
            raise SpecError(f"{field}.{key}", "must be a string")
    return {str(k): str(v) for k, v in value.items()}


def _ports(value: Any) -> list[dict[str, Any]]:
    """``["8080:80", "53/udp", {"published": 8080, "target": 80, "protocol": "tcp"}]``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError("ports", "must be a list")
    out = []
    seen: set[tuple[int, str]] = set()
    for i, item in enumerate(value):
        field = f"ports[{i}]"
        target: Any
        published: Any
        if isinstance(item, str | int) and not isinstance(item, bool):
            match = PORT_RE.match(str(item))
            if not match:
                raise SpecError(field, f"{item!r} is not PUBLISHED:TARGET[/tcp|udp]")
            target = int(match.group(2))
            published = int(match.group(1)) if match.group(1) else None
            protocol = match.group(3) or "tcp"
        elif isinstance(item, Mapping):
            target, published = item.get("target"), item.get("published")
            protocol = item.get("protocol", "tcp")
            if not isinstance(target, int) or (published is not None and not isinstance(published, int)):
                raise SpecError(field, "target and published must be port numbers")
        else:
            raise SpecError(field, "must be a string such as 8080:80 or a map")
        for port in (target, published):
            if port is not None and not 1 <= port <= 65535:
                raise SpecError(field, f"port {port} is out of 1-65535")
        if protocol not in ("tcp", "udp"):
            raise SpecError(field, f"protocol {protocol!r} is not tcp or udp")
        if published is not None:
            if (published, protocol) in seen:
                raise SpecError(field, f"port {published}/{protocol} is published twice")
            seen.add((published, protocol))
        out.append({"target": target, "published": published, "protocol": protocol})
    return out


def _constraints(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(field, "must be a list of KEY==VALUE or KEY!=VALUE")
    out = []
    for i, item in enumerate(value):
        try:
            out.append(str(Constraint.parse(item if isinstance(item, str) else "")))
        except ValueError:
            raise SpecError(f"{field}[{i}]", f"{item!r} is not KEY==VALUE or KEY!=VALUE") from None
    return out


def service_spec(raw: Any) -> dict[str, Any]:
    """A normalised spec (plain dict, msgpack-able) from a request body; SpecError if it is wrong."""
    if not isinstance(raw, Mapping):
        raise SpecError("spec", "must be a JSON object")
    known = {"image", "command", "environment", "ports", "labels", "scale", "restart", "cpus", "memory",
             "placement", "health_check"}
    unknown = sorted(set(raw) - known - {"name"})
    if unknown:
        raise SpecError(unknown[0], "is not a field of a service")
    image = raw.get("image")
    if not isinstance(image, str) or not image.strip():
        raise SpecError("image", "is required (for example corral/base)")
    command = raw.get("command")
    if isinstance(command, str):
        command = ["sh", "-c", command]
    if command is not None and (not isinstance(command, list) or not all(isinstance(c, str) for c in command)):
        raise SpecError("command", "must be a string or a list of strings")
    scale = raw.get("scale", 1)
    if not isinstance(scale, int) or isinstance(scale, bool) or not 0 <= scale <= MAX_SCALE:
        raise SpecError("scale", f"must be a whole number from 0 to {MAX_SCALE}")
    restart = raw.get("restart", "always")
    if restart not in RESTART_POLICIES:
        raise SpecError("restart", f"must be one of {', '.join(RESTART_POLICIES)}")
    cpus = raw.get("cpus", 0)
    if not isinstance(cpus, int | float) or isinstance(cpus, bool) or not 0 <= cpus <= 1024:
        raise SpecError("cpus", "must be a number of CPUs from 0 to 1024")
    placement = raw.get("placement") or {}
    if not isinstance(placement, Mapping):
        raise SpecError("placement", "must be a map")
    strategy = placement.get("strategy", "spread")
    if strategy not in STRATEGIES:
        raise SpecError("placement.strategy", "must be spread or pack")
    one_per_host = placement.get("one_per_host", False)
    if not isinstance(one_per_host, bool):
        raise SpecError("placement.one_per_host", "must be true or false")
    return {
        "image": image.strip(),
        "command": command,
        "environment": _str_map(raw.get("environment"), "environment"),
        "ports": _ports(raw.get("ports")),
        "labels": _str_map(raw.get("labels"), "labels"),
        "scale": scale,
        "restart": restart,
        "cpus": float(cpus),
        "memory": memory_bytes(raw.get("memory", 0), "memory"),
        "placement": {
            "must": _constraints(placement.get("constraints", placement.get("must")), "placement.constraints"),
            "should": _constraints(placement.get("preferences", placement.get("should")), "placement.preferences"),
            "strategy": strategy,
            "one_per_host": one_per_host,
        },
        "health_check": health_check(raw.get("health_check")),
    }
