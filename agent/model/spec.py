"""What a service asks for, validated: the one place that says what a valid spec is.

:func:`parse` turns a request body (JSON: strings, numbers, lists, maps) into a frozen
:class:`ServiceSpec`, or raises :class:`~agent.model.errors.SpecError` naming the field. The API
parses before it proposes anything (so bad input gets a 400 naming the field); the state machine
parses again when it applies the command (so a log entry can never put a bad spec into the state).
:meth:`ServiceSpec.to_request` gives the request form back, which :func:`parse` accepts unchanged: a
change (``PATCH``) is the old spec's request form with the changed fields replaced, parsed again.

The wire form (:func:`agent.model.codec.to_wire`) of a spec is the normalised map the agent has
always stored: a container's fingerprint (``agent/node/containers.py``) is a hash of part of it, so
it must not change from one version to the next, or every container would be replaced.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from typing import TypeVar

from agent.model import mounts as mount_rules
from agent.model.errors import SpecError
from agent.model.mounts import Mount
from agent.model.scheduler import Constraint, Strategy

MAX_SCALE = 1000
MAX_CPUS = 1024
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
NAME_RE = re.compile(NAME_PATTERN)
PORT_NUMBER = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
PORT_PATTERN = rf"^(?:({PORT_NUMBER}):)?({PORT_NUMBER})(?:/(tcp|udp))?$"
PORT_RE = re.compile(PORT_PATTERN)
MEMORY_PATTERN = r"^\s*(\d{1,6}(?:\.\d{1,6})?)\s*([kmgKMG]i?[bB]?|[bB])?\s*$"  # at most 999999.999999g
MEMORY_RE = re.compile(MEMORY_PATTERN)
MEMORY_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
DURATION_PATTERN = r"^\s*(\d{1,9}(?:\.\d{1,9})?)\s*(ms|s|m|h)?\s*$"
DURATION_RE = re.compile(DURATION_PATTERN)
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_MEMORY = 2**50  # 1 PiB: any real host is smaller; keeps every figure inside msgpack's integers
SERVICE_FIELDS = ("image", "command", "environment", "ports", "labels", "scale", "restart", "cpus", "memory",
                  "placement", "health_check", "pull", "mounts", "on_host_loss", "mode")
MAX_IMAGE = 255
MAX_STRING = 4096
HEALTH_INTERVAL = (0.5, 3600.0)
HEALTH_TIMEOUT = (0.1, 3600.0)
HEALTH_START_PERIOD = (0.0, 3600.0)
HEALTH_RETRIES = (1, 100)


class RestartPolicy(enum.StrEnum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NO = "no"


class PullPolicy(enum.StrEnum):
    """When a host fetches the service's image: only when it has none of that name (the default), or
    before every container it creates (a tag that moves, ``:latest`` from a registry)."""

    IF_NOT_PRESENT = "if-not-present"
    ALWAYS = "always"


class ServiceMode(enum.StrEnum):
    """``replicated``: ``scale`` instances placed by the scheduler; ``global``: one on every host of the
    environment that its placement allows (compose's ``deploy.mode: global``)."""

    REPLICATED = "replicated"
    GLOBAL = "global"


class HostLoss(enum.StrEnum):
    """What happens to an instance whose volume lives on a host that is lost: it ``wait``s for that
    host (the default: never started elsewhere on an empty volume), or is ``recreate-empty`` on
    another host with a new, empty volume."""

    WAIT = "wait"
    RECREATE_EMPTY = "recreate-empty"


class Protocol(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"


class HealthType(enum.StrEnum):
    HTTP = "http"
    TCP = "tcp"
    COMMAND = "command"


class OnUnhealthy(enum.StrEnum):
    RECREATE = "recreate"
    NONE = "none"


@dataclasses.dataclass(frozen=True)
class Port:
    """A container port, published on the host (``published``; None: an ephemeral host port) or not."""

    target: int
    published: int | None
    protocol: Protocol = Protocol.TCP


@dataclasses.dataclass(frozen=True)
class HealthCheck:
    """``http``: a GET of ``path`` on the container's ``port`` answered 2xx/3xx; ``tcp``: the port
    accepts a connection — both made by the agent of the container's host to its overlay address, so
    they need nothing in the image (as Rancher's checks); ``command``: a shell command run in the
    container by Docker (exit 0 is healthy). ``retries`` failures in a row (after ``start_period``)
    make it unhealthy; ``on_unhealthy: recreate`` (the default) replaces such a container."""

    type: HealthType
    port: int | None
    path: str | None
    command: str | None
    interval: float
    timeout: float
    retries: int
    start_period: float
    on_unhealthy: OnUnhealthy

    def to_request(self) -> dict[str, object]:
        out: dict[str, object] = {"type": self.type.value}
        for key in ("port", "path", "command"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update(interval=self.interval, timeout=self.timeout, retries=self.retries,
                   start_period=self.start_period, on_unhealthy=self.on_unhealthy.value)
        return out


@dataclasses.dataclass(frozen=True)
class PlacementSpec:
    """``must`` constraints filter hosts, ``should`` ones rank them (``zone==a``, ``node.hostname!=h1``)."""

    must: tuple[str, ...] = ()
    should: tuple[str, ...] = ()
    strategy: Strategy = Strategy.SPREAD
    one_per_host: bool = False

    def to_request(self) -> dict[str, object]:
        return {"constraints": list(self.must), "preferences": list(self.should), "strategy": self.strategy.value,
                "one_per_host": self.one_per_host}


@dataclasses.dataclass(frozen=True)
class ServiceSpec:
    image: str
    command: tuple[str, ...] | None
    environment: Mapping[str, str]
    ports: tuple[Port, ...]
    labels: Mapping[str, str]
    scale: int
    restart: RestartPolicy
    cpus: float
    memory: int
    placement: PlacementSpec
    health_check: HealthCheck | None
    pull: PullPolicy = PullPolicy.IF_NOT_PRESENT
    mounts: tuple[Mount, ...] = ()
    on_host_loss: HostLoss = HostLoss.WAIT
    mode: ServiceMode = ServiceMode.REPLICATED

    def to_request(self) -> dict[str, object]:
        """The request form: :func:`parse` of it gives this spec back."""
        return {
            "image": self.image, "command": list(self.command) if self.command is not None else None,
            "environment": dict(self.environment),
            "ports": [{"target": p.target, "published": p.published, "protocol": p.protocol.value} for p in self.ports],
            "labels": dict(self.labels), "scale": self.scale, "restart": self.restart.value, "cpus": self.cpus,
            "memory": self.memory, "placement": self.placement.to_request(),
            "health_check": self.health_check.to_request() if self.health_check else None,
            "pull": self.pull.value, "mounts": [m.to_request() for m in self.mounts],
            "on_host_loss": self.on_host_loss.value, "mode": self.mode.value,
        }

    def changed(self, changes: Mapping[str, object]) -> ServiceSpec:
        """This spec with ``changes`` (request form) applied; a ``placement`` given replaces the whole one."""
        return parse({**self.to_request(), **changes})


# ---------------------------------------------------------------------- field rules


def name(value: object, field: str = "name") -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise SpecError(field, "must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'")
    return value


def memory_bytes(value: object, field: str) -> int:
    """``536870912``, ``"512m"``, ``"512MiB"``, ``"1g"`` → bytes."""
    size: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        match = MEMORY_RE.match(value)
        if match:
            unit = (match.group(2) or "").lower()[:1]
            size = int(float(match.group(1)) * MEMORY_UNITS[unit])
    if size is None:
        raise SpecError(field, f"{value!r} is not a size such as 512m")
    if not 0 <= size <= MAX_MEMORY:
        raise SpecError(field, f"must be from 0 to {MAX_MEMORY} bytes (1 PiB)")
    return size


def seconds(value: object, field: str, low: float, high: float) -> float:
    """``5``, ``2.5``, ``"500ms"``, ``"5s"``, ``"1m"`` → seconds, within [low, high]."""
    parsed: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        parsed = float(value)
    elif isinstance(value, str):
        match = DURATION_RE.match(value)
        if match:
            parsed = float(match.group(1)) * DURATION_UNITS[match.group(2)]
    if parsed is None:
        raise SpecError(field, f"{value!r} is not a duration such as 5s or 500ms")
    if not low <= parsed <= high:
        raise SpecError(field, f"must be from {low:g} s to {high:g} s")
    return parsed


def _whole(value: object, field: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SpecError(field, f"must be a whole number from {low} to {high}")
    return value


HEALTH_KEYS = ("type", "port", "path", "command", "interval", "timeout", "retries", "start_period", "on_unhealthy")


def health_check(value: object, field: str = "health_check") -> HealthCheck | None:
    """A service's health check, normalised; None for none (see :class:`HealthCheck`)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise SpecError(field, "must be a map with a type: http, tcp or command")
    unknown = sorted(str(k) for k in value if k not in HEALTH_KEYS)
    if unknown:
        raise SpecError(f"{field}.{unknown[0]}", "is not a field of a health check")
    kind = _enum(HealthType, value.get("type"), f"{field}.type")
    port = path = command = None
    if kind in (HealthType.HTTP, HealthType.TCP):
        raw_port = value.get("port")
        if not isinstance(raw_port, int) or isinstance(raw_port, bool) or not 1 <= raw_port <= 65535:
            raise SpecError(f"{field}.port", "must be the container's port, 1-65535")
        port = raw_port
        if kind == HealthType.HTTP:
            raw_path = value.get("path", "/")
            if not isinstance(raw_path, str) or not raw_path.startswith("/") or len(raw_path) > MAX_STRING \
                    or any(c in raw_path for c in " \r\n\t"):
                raise SpecError(f"{field}.path", "must be a URL path starting with /")
            path = raw_path
    else:
        raw_command = value.get("command")
        if not isinstance(raw_command, str) or not raw_command.strip() or len(raw_command) > MAX_STRING:
            raise SpecError(f"{field}.command", "is required for a command check (run with sh -c in the container)")
        command = raw_command
    for key, applies in (("port", port is not None), ("path", path is not None), ("command", command is not None)):
        if key in value and not applies:
            raise SpecError(f"{field}.{key}", f"does not apply to a {kind} check")
    interval = seconds(value.get("interval", 5), f"{field}.interval", *HEALTH_INTERVAL)
    timeout = seconds(value.get("timeout", min(2.0, interval)), f"{field}.timeout", *HEALTH_TIMEOUT)
    if timeout > interval:
        raise SpecError(f"{field}.timeout", "must not be longer than the interval")
    return HealthCheck(
        type=kind, port=port, path=path, command=command, interval=interval, timeout=timeout,
        retries=_whole(value.get("retries", 3), f"{field}.retries", *HEALTH_RETRIES),
        start_period=seconds(value.get("start_period", 0), f"{field}.start_period", *HEALTH_START_PERIOD),
        on_unhealthy=_enum(OnUnhealthy, value.get("on_unhealthy", "recreate"), f"{field}.on_unhealthy"),
    )


E = TypeVar("E", bound=enum.StrEnum)


def _enum(cls: type[E], value: object, field: str) -> E:
    for member in cls:
        if value == member.value:
            return member
    raise SpecError(field, "must be " + " or ".join(m.value for m in cls))


def str_map(value: object, field: str) -> dict[str, str]:
    """``{"K": "v"}`` or compose's ``["K=v", …]``; numbers are taken as their text."""
    if value is None:
        return {}
    if isinstance(value, list):
        out: dict[str, str] = {}
        for i, item in enumerate(value):
            if not isinstance(item, str) or "=" not in item or item.startswith("="):
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


def ports(value: object) -> tuple[Port, ...]:
    """``["8080:80", "53/udp", 80, {"published": 8080, "target": 80, "protocol": "tcp"}]``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SpecError("ports", "must be a list")
    out = []
    seen: set[tuple[int, str]] = set()
    for i, item in enumerate(value):
        field = f"ports[{i}]"
        target: object
        published: object
        if isinstance(item, str | int) and not isinstance(item, bool):
            match = PORT_RE.match(str(item))
            if not match:
                raise SpecError(field, f"{item!r} is not PUBLISHED:TARGET[/tcp|udp] with ports 1-65535")
            target = int(match.group(2))
            published = int(match.group(1)) if match.group(1) else None
            protocol: object = match.group(3) or "tcp"
        elif isinstance(item, Mapping):
            unknown = sorted(str(k) for k in item if k not in ("target", "published", "protocol"))
            if unknown:
                raise SpecError(f"{field}.{unknown[0]}", "is not a field of a port")
            target, published = item.get("target"), item.get("published")
            protocol = item.get("protocol", "tcp")
            if not isinstance(target, int) or isinstance(target, bool) or (
                    published is not None and (not isinstance(published, int) or isinstance(published, bool))):
                raise SpecError(field, "target and published must be port numbers")
        else:
            raise SpecError(field, "must be a string such as 8080:80 or a map")
        for port in (target, published):
            if isinstance(port, int) and not 1 <= port <= 65535:
                raise SpecError(field, f"port {port} is out of 1-65535")
        if protocol not in ("tcp", "udp"):
            raise SpecError(field, f"protocol {protocol!r} is not tcp or udp")
        proto = _enum(Protocol, protocol, f"{field}.protocol")
        assert isinstance(target, int) and (published is None or isinstance(published, int))
        if published is not None:
            if (published, proto.value) in seen:
                raise SpecError(field, f"port {published}/{proto.value} is published twice")
            seen.add((published, proto.value))
        out.append(Port(target, published, proto))
    return tuple(out)


def constraints(value: object, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SpecError(field, "must be a list of KEY==VALUE or KEY!=VALUE")
    out = []
    for i, item in enumerate(value):
        try:
            out.append(str(Constraint.parse(item if isinstance(item, str) else "")))
        except ValueError:
            raise SpecError(f"{field}[{i}]", f"{item!r} is not KEY==VALUE or KEY!=VALUE") from None
    return tuple(out)


PLACEMENT_KEYS = ("constraints", "preferences", "strategy", "one_per_host", "must", "should")


def placement(value: object) -> PlacementSpec:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise SpecError("placement", "must be a map")
    unknown = sorted(str(k) for k in value if k not in PLACEMENT_KEYS)
    if unknown:
        raise SpecError(f"placement.{unknown[0]}", "is not a field of a placement")
    one_per_host = value.get("one_per_host", False)
    if not isinstance(one_per_host, bool):
        raise SpecError("placement.one_per_host", "must be true or false")
    return PlacementSpec(
        must=constraints(value.get("constraints", value.get("must")), "placement.constraints"),
        should=constraints(value.get("preferences", value.get("should")), "placement.preferences"),
        strategy=_enum(Strategy, value.get("strategy", "spread"), "placement.strategy"),
        one_per_host=one_per_host,
    )


def parse(raw: object) -> ServiceSpec:
    """A normalised spec from a request body; SpecError naming the field if it is wrong."""
    if not isinstance(raw, Mapping):
        raise SpecError("spec", "must be a JSON object")
    unknown = sorted(str(k) for k in raw if k not in SERVICE_FIELDS and k != "name")
    if unknown:
        raise SpecError(unknown[0], "is not a field of a service")
    image = raw.get("image")
    if not isinstance(image, str) or not image.strip() or len(image) > MAX_IMAGE:
        raise SpecError("image", f"is required, at most {MAX_IMAGE} characters (for example corral/base)")
    command = raw.get("command")
    if isinstance(command, str):
        command = ["sh", "-c", command]
    if command is not None and (not isinstance(command, list) or not all(isinstance(c, str) for c in command)):
        raise SpecError("command", "must be a string or a list of strings")
    cpus = raw.get("cpus", 0)
    if not isinstance(cpus, int | float) or isinstance(cpus, bool) or not 0 <= cpus <= MAX_CPUS:
        raise SpecError("cpus", f"must be a number of CPUs from 0 to {MAX_CPUS}")
    return ServiceSpec(
        image=image.strip(),
        command=tuple(command) if command is not None else None,
        environment=str_map(raw.get("environment"), "environment"),
        ports=ports(raw.get("ports")),
        labels=str_map(raw.get("labels"), "labels"),
        scale=_whole(raw.get("scale", 1), "scale", 0, MAX_SCALE),
        restart=_enum(RestartPolicy, raw.get("restart", "always"), "restart"),
        cpus=float(cpus),
        memory=memory_bytes(raw.get("memory", 0), "memory"),
        placement=placement(raw.get("placement")),
        health_check=health_check(raw.get("health_check")),
        pull=_enum(PullPolicy, raw.get("pull", "if-not-present"), "pull"),
        mounts=mount_rules.mounts(raw.get("mounts"), memory_bytes),
        on_host_loss=_enum(HostLoss, raw.get("on_host_loss", "wait"), "on_host_loss"),
        mode=_enum(ServiceMode, raw.get("mode", "replicated"), "mode"),
    )


__all__ = [
    "MAX_SCALE", "NAME_RE", "HealthCheck", "HealthType", "HostLoss", "OnUnhealthy", "PlacementSpec", "Port",
    "Protocol", "PullPolicy", "RestartPolicy", "ServiceMode", "ServiceSpec", "health_check", "memory_bytes", "name",
    "parse", "seconds",
]
