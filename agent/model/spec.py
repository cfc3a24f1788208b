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
import functools
import ipaddress
import re
from collections.abc import Mapping
from typing import TypeVar

from agent.model import external as external_rules
from agent.model import lb as lb_rules
from agent.model import mounts as mount_rules
from agent.model.errors import SpecError
from agent.model.external import ExternalSpec
from agent.model.lb import LbSpec, ServiceKind
from agent.model.mounts import Mount
from agent.model.scheduler import Constraint, Strategy
from agent.model.strategy import UpdateStrategy
from agent.model.strategy import parse as strategy

MAX_SCALE = 1000
MAX_CPUS = 1024
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
NAME_RE = re.compile(NAME_PATTERN)
PORT_NUMBER = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
HOST_IP = r"(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]{2,45}\])"
PORT_PATTERN = rf"^(?:({HOST_IP}):(?=[0-9]*:))?(?:({PORT_NUMBER})?:)?({PORT_NUMBER})(?:/(tcp|udp))?$"
"""``[HOST_IP:][PUBLISHED:]TARGET[/tcp|udp]``: ``80``, ``8080:80``, ``127.0.0.1:8080:80``, ``127.0.0.1::80``
(an ephemeral port on that address), ``[::1]:8080:80``."""
PORT_RE = re.compile(PORT_PATTERN)
MEMORY_PATTERN = r"^\s*(\d{1,6}(?:\.\d{1,6})?)\s*([kmgKMG]i?[bB]?|[bB])?\s*$"  # at most 999999.999999g
MEMORY_RE = re.compile(MEMORY_PATTERN)
MEMORY_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
_NUMBER = r"\d{1,9}(?:\.\d{1,9})?"
_UNIT = r"(?:us|µs|ms|s|m|h)"
DURATION_PATTERN = rf"^\s*(?:{_NUMBER}\s*{_UNIT}?|(?:{_NUMBER}{_UNIT}){{2,4}})\s*$"
"""A number of seconds, or Go's duration syntax (as compose takes): ``5``, ``500ms``, ``1m30s``, ``1h``, ``2.5s``."""
DURATION_RE = re.compile(DURATION_PATTERN)
DURATION_PART_RE = re.compile(rf"({_NUMBER})\s*({_UNIT})?")
DURATION_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_MEMORY = 2**50  # 1 PiB: any real host is smaller; keeps every figure inside msgpack's integers
SERVICE_FIELDS = ("image", "command", "environment", "ports", "labels", "scale", "restart", "cpus", "memory",
                  "placement", "health_check", "pull", "mounts", "on_host_loss", "mode",
                  # since issue 16 (compose files as people write them); every one defaults to "not set"
                  "entrypoint", "user", "working_dir", "hostname", "cap_add", "cap_drop", "read_only", "init",
                  "sysctls", "ulimits", "extra_hosts", "dns", "stop_signal", "stop_grace_period", "shm_size",
                  "expose", "privileged", "tty", "stdin_open", "cpu_limit", "memory_limit",
                  "restart_max_attempts", "restart_delay", "restart_window", "depends_on", "service_labels",
                  "aliases", "no_new_privileges",
                  # since issue 17 (load balancers, external services, compose links)
                  "kind", "lb", "external", "links",
                  # since issue 18 (rolling upgrades)
                  "update_config", "rollback_config")
CAPABILITY_PATTERN = r"^(?:CAP_)?[A-Z][A-Z0-9_]{0,31}$"
SYSCTL_PATTERN = r"^[a-z0-9_][a-z0-9_./-]{0,127}$"
SIGNAL_PATTERN = r"^(?:SIG)?[A-Z][A-Z0-9+-]{0,15}$|^[1-9][0-9]?$"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_PATTERN = rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$"
HOSTNAME_RE = re.compile(HOSTNAME_PATTERN)
MAX_LIST = 256
EXTERNAL_IMAGE = "external"
"""What an external service's ``image`` says: it runs nothing."""
LB_IMAGE = "haproxy"
"""What a load balancer's ``image`` says when none is given: it runs Debian's haproxy on its host, not an image."""
MAX_STOP_GRACE = 3600.0
MAX_RESTART_ATTEMPTS = 10_000
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
    UNLESS_STOPPED = "unless-stopped"
    """As always for Corral (a stopped service is stopped by Corral, which then does not start it); Docker's
    ``unless-stopped`` on the container, so a container stopped by hand stays stopped over a daemon restart."""


class DependsOn(enum.StrEnum):
    """What a service waits for of another before its containers start (compose's ``depends_on``
    conditions ``service_started``, ``service_healthy``, ``service_completed_successfully``)."""

    STARTED = "started"
    HEALTHY = "healthy"
    COMPLETED = "completed"


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
    host_ip: str | None = None
    """The host address the port is published on (None: every address)."""

    def to_request(self) -> dict[str, object]:
        out: dict[str, object] = {"target": self.target, "published": self.published, "protocol": self.protocol.value}
        if self.host_ip is not None:
            out["host_ip"] = self.host_ip
        return out


@dataclasses.dataclass(frozen=True)
class Ulimit:
    soft: int
    hard: int


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
    spread: tuple[str, ...] = ()
    """Host label keys (``zone``) whose values the instances spread over, evenly, first key first
    (compose's ``preferences: [{spread: node.labels.zone}]``)."""

    def to_request(self) -> dict[str, object]:
        return {"constraints": list(self.must), "preferences": list(self.should), "strategy": self.strategy.value,
                "one_per_host": self.one_per_host, "spread": list(self.spread)}


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
    # Since issue 16; each default is Docker's own ("not set"), so a stored spec without them is unchanged.
    entrypoint: tuple[str, ...] | None = None
    user: str | None = None
    working_dir: str | None = None
    hostname: str | None = None
    """None: the container's name."""
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    read_only: bool = False
    init: bool | None = None
    sysctls: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ulimits: Mapping[str, Ulimit] = dataclasses.field(default_factory=dict)
    extra_hosts: tuple[str, ...] = ()
    """``HOST:IP`` lines added to the container's /etc/hosts."""
    dns: tuple[str, ...] = ()
    stop_signal: str | None = None
    stop_grace_period: float | None = None
    """Seconds between the stop signal and SIGKILL (None: Docker's 10 s)."""
    shm_size: int = 0
    """Bytes of /dev/shm (0: Docker's 64 MiB)."""
    expose: tuple[str, ...] = ()
    """Container ports declared but not published: ``80/tcp``."""
    privileged: bool = False
    tty: bool = False
    stdin_open: bool = False
    cpu_limit: float = 0.0
    """CPUs the container may use at most (0: no limit); ``cpus`` is what the scheduler reserves."""
    memory_limit: int = 0
    """Bytes the container may use at most (0: no limit); ``memory`` is what the scheduler reserves."""
    restart_max_attempts: int = 0
    """With ``on-failure``: Docker's MaximumRetryCount (0: no limit)."""
    restart_delay: float = 0.0
    """Seconds between restarts (recorded; Docker's own back-off applies, see docs/COMPOSE.md)."""
    restart_window: float = 0.0
    """Seconds a restart must run to count as one (recorded; not enforced, see docs/COMPOSE.md)."""
    depends_on: Mapping[str, DependsOn] = dataclasses.field(default_factory=dict)
    """Services of the same stack whose containers must be started/healthy/completed before these start."""
    service_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Labels of the service itself (compose's ``deploy.labels``), not put on its containers."""
    aliases: tuple[str, ...] = ()
    """More DNS names the service answers to on the stack's network."""
    no_new_privileges: bool = False
    """The container's processes cannot gain privileges (setuid binaries): Docker's ``no-new-privileges``."""
    # Since issue 17: a load balancer is a service whose instances are HAProxy processes, not containers.
    kind: ServiceKind = ServiceKind.CONTAINER
    lb: LbSpec | None = None
    """The load balancer's rules (``kind: load-balancer`` only)."""
    external: ExternalSpec | None = None
    """What an external service's name answers (``kind: external`` only)."""
    links: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Compose ``links``: ALIAS → SERVICE of the same stack; ``ALIAS`` resolves, in this service's
    containers only, to that service's addresses."""
    # Since issue 18: how an upgrade (and its rollback) replaces the containers; not in the fingerprint.
    update_config: UpdateStrategy | None = None
    rollback_config: UpdateStrategy | None = None
    """None: the update strategy's (or the defaults); a rollback starts at once whatever its interval."""

    def to_request(self) -> dict[str, object]:
        """The request form: :func:`parse` of it gives this spec back."""
        return {
            "image": self.image, "command": list(self.command) if self.command is not None else None,
            "environment": dict(self.environment),
            "ports": [p.to_request() for p in self.ports],
            "labels": dict(self.labels), "scale": self.scale, "restart": self.restart.value, "cpus": self.cpus,
            "memory": self.memory, "placement": self.placement.to_request(),
            "health_check": self.health_check.to_request() if self.health_check else None,
            "pull": self.pull.value, "mounts": [m.to_request() for m in self.mounts],
            "on_host_loss": self.on_host_loss.value, "mode": self.mode.value,
            "entrypoint": list(self.entrypoint) if self.entrypoint is not None else None, "user": self.user,
            "working_dir": self.working_dir, "hostname": self.hostname, "cap_add": list(self.cap_add),
            "cap_drop": list(self.cap_drop), "read_only": self.read_only, "init": self.init,
            "sysctls": dict(self.sysctls),
            "ulimits": {k: {"soft": u.soft, "hard": u.hard} for k, u in self.ulimits.items()},
            "extra_hosts": list(self.extra_hosts), "dns": list(self.dns), "stop_signal": self.stop_signal,
            "stop_grace_period": self.stop_grace_period, "shm_size": self.shm_size, "expose": list(self.expose),
            "privileged": self.privileged, "tty": self.tty, "stdin_open": self.stdin_open,
            "cpu_limit": self.cpu_limit, "memory_limit": self.memory_limit,
            "restart_max_attempts": self.restart_max_attempts, "restart_delay": self.restart_delay,
            "restart_window": self.restart_window, "depends_on": {k: v.value for k, v in self.depends_on.items()},
            "service_labels": dict(self.service_labels), "aliases": list(self.aliases),
            "no_new_privileges": self.no_new_privileges,
            "kind": self.kind.value, "lb": self.lb.to_request() if self.lb is not None else None,
            "external": self.external.to_request() if self.external is not None else None,
            "links": dict(self.links),
            "update_config": self.update_config.to_request() if self.update_config is not None else None,
            "rollback_config": self.rollback_config.to_request() if self.rollback_config is not None else None,
        }

    def changed(self, changes: Mapping[str, object]) -> ServiceSpec:
        """This spec with ``changes`` (request form) applied; a ``placement`` given replaces the whole one."""
        return parse({**self.to_request(), **changes})


# ---------------------------------------------------------------------- field rules


def name(value: object, field: str = "name") -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
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


def duration(text: str) -> float | None:
    """Seconds of ``"5"``, ``"5 s"``, ``"500ms"``, ``"1m30s"`` (Go's syntax, to four parts); None if it is none."""
    if not DURATION_RE.match(text):
        return None
    return sum(float(n) * DURATION_UNITS.get(u, 1.0) for n, u in DURATION_PART_RE.findall(text))


def seconds(value: object, field: str, low: float, high: float) -> float:
    """``5``, ``2.5``, ``"500ms"``, ``"5s"``, ``"1m30s"``, ``"1h"`` → seconds, within [low, high]."""
    parsed: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        parsed = float(value)
    elif isinstance(value, str):
        parsed = duration(value)
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


def host_ip(value: object, field: str) -> str:
    """An IPv4 or IPv6 address (``[::1]`` as in a port's short form, or bare)."""
    text = value.strip("[]") if isinstance(value, str) else ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise SpecError(field, f"{value!r} is not an IP address") from None


def ports(value: object) -> tuple[Port, ...]:
    """``["8080:80", "127.0.0.1:8080:80", "53/udp", 80, {"published": 8080, "target": 80, "host_ip": "127.0.0.1"}]``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SpecError("ports", "must be a list")
    out = []
    seen: set[tuple[str | None, int, str]] = set()
    for i, item in enumerate(value):
        field = f"ports[{i}]"
        target: object
        published: object
        address: object
        if isinstance(item, str | int) and not isinstance(item, bool):
            match = PORT_RE.match(str(item))
            if not match:
                raise SpecError(field, f"{item!r} is not [HOST_IP:][PUBLISHED:]TARGET[/tcp|udp] with ports 1-65535")
            address = match.group(1)
            target = int(match.group(3))
            published = int(match.group(2)) if match.group(2) else None
            protocol: object = match.group(4) or "tcp"
        elif isinstance(item, Mapping):
            unknown = sorted(str(k) for k in item if k not in ("target", "published", "protocol", "host_ip"))
            if unknown:
                raise SpecError(f"{field}.{unknown[0]}", "is not a field of a port")
            target, published, address = item.get("target"), item.get("published"), item.get("host_ip")
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
        ip = host_ip(address, f"{field}.host_ip") if address is not None else None
        assert isinstance(target, int) and (published is None or isinstance(published, int))
        if published is not None:
            if (ip, published, proto.value) in seen or (None, published, proto.value) in seen or (
                    ip is None and any(p == published and pr == proto.value for _, p, pr in seen)):
                raise SpecError(field, f"port {published}/{proto.value} is published twice")
            seen.add((ip, published, proto.value))
        out.append(Port(target, published, proto, ip))
    return tuple(out)


def _strings(value: object, field: str, pattern: re.Pattern[str] | None = None, what: str = "a string",
             limit: int = MAX_LIST, one: bool = False) -> tuple[str, ...]:
    """A list of strings (each matching ``pattern`` if given); with ``one``, a single string is a list of one."""
    if value is None:
        return ()
    if one and isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > limit:
        raise SpecError(field, f"must be a list of at most {limit} strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or len(item) > MAX_STRING or (pattern is not None and not pattern.match(item)):
            raise SpecError(f"{field}[{i}]", f"{item!r} is not {what}")
    return tuple(value)


def _optional_str(value: object, field: str, pattern: re.Pattern[str] | None = None, what: str = "a string",
                  limit: int = MAX_STRING) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit or (pattern and not pattern.match(value)):
        raise SpecError(field, f"{value!r} is not {what}")
    return value


def _bool(value: object, field: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SpecError(field, "must be true or false")
    return value


def _number(value: object, field: str, high: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= high:
        raise SpecError(field, f"must be a number from 0 to {high:g}")
    return float(value)


CAPABILITY_RE = re.compile(CAPABILITY_PATTERN)
SYSCTL_RE = re.compile(SYSCTL_PATTERN)
SIGNAL_RE = re.compile(SIGNAL_PATTERN)
ULIMIT_RE = re.compile(r"^[a-z]{1,16}$")
EXPOSE_RE = re.compile(rf"^({PORT_NUMBER})(?:/(tcp|udp))?$")


def sysctls(value: object) -> dict[str, str]:
    out = str_map(value, "sysctls")
    for key in out:
        if not SYSCTL_RE.match(key):
            raise SpecError(f"sysctls.{key}", "is not a kernel parameter such as net.core.somaxconn")
    return out


def ulimits(value: object) -> dict[str, Ulimit]:
    """``{"nofile": 1024}`` or ``{"nofile": {"soft": 1024, "hard": 2048}}``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError("ulimits", "must be a map of NAME: LIMIT or NAME: {soft, hard}")
    out = {}
    for key, limit in value.items():
        field = f"ulimits.{key}"
        if not isinstance(key, str) or not ULIMIT_RE.match(key):
            raise SpecError(field, "is not a resource limit such as nofile or nproc")
        if isinstance(limit, Mapping):
            if set(limit) != {"soft", "hard"}:
                raise SpecError(field, "must have soft and hard (and nothing else)")
            soft, hard = limit["soft"], limit["hard"]
        else:
            soft = hard = limit
        soft = _whole(soft, f"{field}.soft", -1, 2**63 - 1)
        hard = _whole(hard, f"{field}.hard", -1, 2**63 - 1)
        if hard != -1 and (soft == -1 or soft > hard):
            raise SpecError(field, "soft must not be above hard")
        out[key] = Ulimit(soft, hard)
    return out


def extra_hosts(value: object) -> tuple[str, ...]:
    """``["db.local:10.0.0.5"]`` (``HOST=IP`` too) → ``HOST:IP`` lines, as Docker's ExtraHosts."""
    out = []
    for i, item in enumerate(_strings(value, "extra_hosts")):
        host, sep, ip = item.partition("=") if "=" in item else item.partition(":")
        if not sep or not HOSTNAME_RE.match(host):
            raise SpecError(f"extra_hosts[{i}]", f"{item!r} is not HOST:IP")
        address = "host-gateway" if ip == "host-gateway" else host_ip(ip, f"extra_hosts[{i}]")
        out.append(f"{host}:{address}")
    return tuple(out)


def expose(value: object) -> tuple[str, ...]:
    out = []
    items = value if isinstance(value, list) else [] if value is None else None
    if items is None:
        raise SpecError("expose", "must be a list of ports such as 80 or 53/udp")
    for i, item in enumerate(items):
        match = EXPOSE_RE.match(str(item)) if isinstance(item, str | int) and not isinstance(item, bool) else None
        if not match:
            raise SpecError(f"expose[{i}]", f"{item!r} is not PORT[/tcp|udp]")
        out.append(f"{match.group(1)}/{match.group(2) or 'tcp'}")
    return tuple(dict.fromkeys(out))


def depends_on(value: object) -> dict[str, DependsOn]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError("depends_on", "must be a map of SERVICE: started, healthy or completed")
    return {name(k, f"depends_on.{k}"): _enum(DependsOn, v, f"depends_on.{k}") for k, v in value.items()}


def _optional_seconds(value: object, field: str, high: float) -> float | None:
    return None if value is None else seconds(value, field, 0.0, high)


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


PLACEMENT_KEYS = ("constraints", "preferences", "strategy", "one_per_host", "must", "should", "spread")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_./-]{0,254}$")


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
        spread=tuple(k.removeprefix("node.labels.") for k in _strings(
            value.get("spread"), "placement.spread", LABEL_KEY_RE, "a host label key such as zone", 8)),
    )


def parse(raw: object) -> ServiceSpec:
    """A normalised spec from a request body; SpecError naming the field if it is wrong."""
    if not isinstance(raw, Mapping):
        raise SpecError("spec", "must be a JSON object")
    unknown = sorted(str(k) for k in raw if k not in SERVICE_FIELDS and k != "name")
    if unknown:
        raise SpecError(unknown[0], "is not a field of a service")
    kind = _enum(ServiceKind, raw.get("kind", "container"), "kind")
    lb = None
    if kind is ServiceKind.LOAD_BALANCER:
        lb = lb_rules.parse(raw.get("lb"))
        raw = {"image": LB_IMAGE, **raw}
    elif raw.get("lb") is not None:
        raise SpecError("lb", "applies to kind: load-balancer only")
    external = None
    if kind is ServiceKind.EXTERNAL:
        external = external_rules.parse(raw.get("external"))
        _nothing_runs(raw)
        raw = {**raw, "image": EXTERNAL_IMAGE, "scale": 0}
    elif raw.get("external") is not None:
        raise SpecError("external", "applies to kind: external only")
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
    entrypoint = raw.get("entrypoint")
    if entrypoint is not None and (not isinstance(entrypoint, list) or not all(isinstance(c, str) for c in entrypoint)):
        raise SpecError("entrypoint", "must be a list of strings")
    working_dir = raw.get("working_dir")
    if working_dir is not None:
        working_dir = mount_rules.check_path(working_dir, "working_dir")
    init = raw.get("init")
    if init is not None and not isinstance(init, bool):
        raise SpecError("init", "must be true, false or null (the engine's default)")
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
        entrypoint=tuple(entrypoint) if entrypoint is not None else None,
        user=_optional_str(raw.get("user"), "user", re.compile(r"^[A-Za-z0-9_.-]{1,64}(:[A-Za-z0-9_.-]{1,64})?$"),
                           "USER[:GROUP] (names or numbers)"),
        working_dir=working_dir,
        hostname=_optional_str(raw.get("hostname"), "hostname", HOSTNAME_RE, "a host name"),
        cap_add=_strings(raw.get("cap_add"), "cap_add", CAPABILITY_RE, "a capability such as NET_ADMIN or ALL", 64),
        cap_drop=_strings(raw.get("cap_drop"), "cap_drop", CAPABILITY_RE, "a capability such as NET_RAW or ALL", 64),
        read_only=_bool(raw.get("read_only"), "read_only"),
        init=init,
        sysctls=sysctls(raw.get("sysctls")),
        ulimits=ulimits(raw.get("ulimits")),
        extra_hosts=extra_hosts(raw.get("extra_hosts")),
        dns=tuple(host_ip(d, f"dns[{i}]") for i, d in enumerate(_strings(raw.get("dns"), "dns", limit=8, one=True))),
        stop_signal=_optional_str(raw.get("stop_signal"), "stop_signal", SIGNAL_RE, "a signal such as SIGQUIT"),
        stop_grace_period=_optional_seconds(raw.get("stop_grace_period"), "stop_grace_period", MAX_STOP_GRACE),
        shm_size=memory_bytes(raw.get("shm_size", 0), "shm_size"),
        expose=expose(raw.get("expose")),
        privileged=_bool(raw.get("privileged"), "privileged"),
        tty=_bool(raw.get("tty"), "tty"),
        stdin_open=_bool(raw.get("stdin_open"), "stdin_open"),
        cpu_limit=_number(raw.get("cpu_limit", 0), "cpu_limit", MAX_CPUS),
        memory_limit=memory_bytes(raw.get("memory_limit", 0), "memory_limit"),
        restart_max_attempts=_whole(raw.get("restart_max_attempts", 0), "restart_max_attempts", 0,
                                    MAX_RESTART_ATTEMPTS),
        restart_delay=seconds(raw.get("restart_delay", 0), "restart_delay", 0.0, 3600.0),
        restart_window=seconds(raw.get("restart_window", 0), "restart_window", 0.0, 86400.0),
        depends_on=depends_on(raw.get("depends_on")),
        service_labels=str_map(raw.get("service_labels"), "service_labels"),
        aliases=_strings(raw.get("aliases"), "aliases", NAME_RE, "a DNS name (lowercase letters, digits, '-')", 32),
        no_new_privileges=_bool(raw.get("no_new_privileges"), "no_new_privileges"),
        kind=kind, lb=lb, external=external, links=links(raw.get("links")),
        update_config=strategy(raw.get("update_config"), "update_config"),
        rollback_config=strategy(raw.get("rollback_config"), "rollback_config"),
    )


def links(value: object) -> dict[str, str]:
    """Compose ``links`` in the request form: ``{"database": "db"}`` (ALIAS → SERVICE of the stack)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > 64:
        raise SpecError("links", "must be a map of at most 64 ALIAS: SERVICE (names of the same stack)")
    out = {}
    for alias, target in value.items():
        name(alias, f"links.{alias}")
        name(target, f"links.{alias}")
        out[str(alias)] = str(target)
    return out


def _nothing_runs(raw: Mapping[str, object]) -> None:
    """An external service runs nothing: a field that shapes containers or their placement is refused
    (naming it) unless it has its default value."""
    defaults = _external_defaults()
    for key, value in raw.items():
        if key in ("kind", "external", "name", "labels", "service_labels", "aliases", "links", "image"):
            continue
        if key == "scale" and value in (0, None):
            continue
        if key in defaults and value != defaults[key] and value is not None:
            raise SpecError(key, "does not apply to an external service: it runs no container")


@functools.cache
def _external_defaults() -> Mapping[str, object]:
    """The request form of a spec with every field at its default (made once, when first needed;
    ``scale`` is checked on its own)."""
    return parse({"image": EXTERNAL_IMAGE}).to_request()


__all__ = [
    "LB_IMAGE", "MAX_SCALE", "NAME_RE",
    "DependsOn", "HealthCheck", "HealthType", "HostLoss", "OnUnhealthy", "PlacementSpec",
    "Port",
    "Protocol", "PullPolicy", "RestartPolicy", "ServiceMode", "ServiceSpec", "Ulimit", "duration", "health_check",
    "memory_bytes", "name", "parse", "seconds",
]
