"""A load balancer's rules, validated: what a service of kind ``load-balancer`` asks for.

A load balancer is a service whose instances run HAProxy (Debian's package, on the host) instead of a
container. Its ``lb`` field holds port rules: each says which listen port, for http which hostname
pattern and path prefix, go to which service's port. Pure: :func:`parse` turns the request form into
an :class:`LbSpec` or raises :class:`SpecError` naming the field; what needs the state (does the target
exist, is the port free) is :func:`check_against`, called by the state machine with the stack's
services.

Hostname patterns: an exact name (``www.example.com``), a leading wildcard (``*.example.com``: any
name ending in ``.example.com``) or a trailing one (``example.*``: any name starting ``example.``).
Rules are tried by priority (higher first), then the more specific first (an exact hostname before a
wildcard, a longer path before a shorter one), then in the order given; http requests no rule
matches go to ``default`` (a 503 when there is none).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Mapping

from agent.model.errors import SpecError

NAME = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
TARGET_RE = re.compile(rf"^(?:(?P<stack>{NAME})/)?(?P<service>{NAME})$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EXACT_HOST_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
PATH_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,1023}$")
MAX_RULES = 64
MAX_PRIORITY = 1000
DRAIN_TIMEOUT = (0.0, 3600.0)
RULE_KEYS = ("port", "protocol", "hostname", "path", "target", "target_port", "priority")
LB_KEYS = ("rules", "default", "stickiness", "forwarded_for", "proxy_protocol", "drain_timeout")
HAPROXY_LABEL = "corral.haproxy"
"""The host label an agent sets (``yes``/``missing``) to say whether the host has HAProxy: load
balancers are placed only where it is ``yes``."""


class LbProtocol(enum.StrEnum):
    HTTP = "http"
    TCP = "tcp"


class ServiceKind(enum.StrEnum):
    """``container``: instances are containers of ``image``; ``load-balancer``: instances are HAProxy
    processes on their hosts, sending traffic to other services' containers (``lb``); ``external``: no
    instances, a DNS name for addresses or a host name outside the cluster (``external``)."""

    CONTAINER = "container"
    LOAD_BALANCER = "load-balancer"
    EXTERNAL = "external"


@dataclasses.dataclass(frozen=True)
class Target:
    """A service (``stack`` None: the load balancer's own stack) and its container port."""

    service: str
    port: int
    stack: str | None = None

    def ref(self) -> str:
        return f"{self.stack}/{self.service}" if self.stack else self.service


@dataclasses.dataclass(frozen=True)
class LbRule:
    port: int
    protocol: LbProtocol
    target: Target
    hostname: str | None = None
    path: str | None = None
    priority: int = 0

    def to_request(self) -> dict[str, object]:
        return {"port": self.port, "protocol": self.protocol.value, "hostname": self.hostname, "path": self.path,
                "target": self.target.ref(), "target_port": self.target.port, "priority": self.priority}


@dataclasses.dataclass(frozen=True)
class LbSpec:
    rules: tuple[LbRule, ...]
    default: Target | None = None
    """Where http requests that no rule matches go (None: a 503)."""
    stickiness: bool = False
    """A cookie (``CORRAL_LB``) keeps a client on the container it first reached (http only)."""
    forwarded_for: bool = True
    """http: ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are added to requests."""
    proxy_protocol: bool = False
    """tcp: connections to the containers start with a PROXY protocol v1 line (the client's address)."""
    drain_timeout: float = 10.0
    """Seconds a container being stopped, replaced or scaled away keeps its in-flight requests (no new ones)."""

    def to_request(self) -> dict[str, object]:
        return {"rules": [r.to_request() for r in self.rules],
                "default": {"target": self.default.ref(), "port": self.default.port} if self.default else None,
                "stickiness": self.stickiness, "forwarded_for": self.forwarded_for,
                "proxy_protocol": self.proxy_protocol, "drain_timeout": self.drain_timeout}

    def ports(self) -> tuple[int, ...]:
        """The host ports the load balancer listens on."""
        return tuple(sorted({r.port for r in self.rules}))

    def targets(self) -> tuple[Target, ...]:
        """Every target (rules' and the default), once each, in order."""
        found = [r.target for r in self.rules] + ([self.default] if self.default else [])
        return tuple(dict.fromkeys(found))


def host_pattern(value: object, field: str) -> str:
    """``www.example.com``, ``*.example.com`` or ``example.*`` (lowercased), else SpecError."""
    if not isinstance(value, str):
        raise SpecError(field, "must be a hostname pattern: www.example.com, *.example.com or example.*")
    text = value.lower()
    core = text[2:] if text.startswith("*.") else text[:-2] if text.endswith(".*") else text
    if (text.startswith("*.") and text.endswith(".*")) or not EXACT_HOST_RE.match(core):
        raise SpecError(field, f"{value!r} is not a hostname pattern: www.example.com, *.example.com or example.*")
    return text


def _port(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise SpecError(field, "must be a port number, 1-65535")
    return value


def target(value: object, port: object, field: str, port_field: str) -> Target:
    if not isinstance(value, str) or not TARGET_RE.match(value):
        raise SpecError(field, f"{value!r} is not SERVICE or STACK/SERVICE")
    match = TARGET_RE.match(value)
    assert match is not None
    return Target(match.group("service"), _port(port, port_field), match.group("stack"))


def rule(value: object, field: str) -> LbRule:
    if not isinstance(value, Mapping):
        raise SpecError(field, "must be a map with port, target and target_port")
    unknown = sorted(str(k) for k in value if k not in RULE_KEYS)
    if unknown:
        raise SpecError(f"{field}.{unknown[0]}", "is not a field of a load balancer rule")
    protocol = value.get("protocol", "http")
    if protocol not in ("http", "tcp"):
        raise SpecError(f"{field}.protocol", "must be http or tcp")
    proto = LbProtocol(protocol)
    hostname = value.get("hostname")
    path = value.get("path")
    if proto is LbProtocol.TCP and (hostname is not None or path is not None):
        raise SpecError(f"{field}.hostname" if hostname is not None else f"{field}.path",
                        "applies to http rules only (a tcp rule routes a whole port)")
    if path is not None and (not isinstance(path, str) or not PATH_RE.match(path)):
        raise SpecError(f"{field}.path", f"{path!r} is not a URL path prefix starting with /")
    priority = value.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= MAX_PRIORITY:
        raise SpecError(f"{field}.priority", f"must be a whole number from 0 to {MAX_PRIORITY}")
    return LbRule(
        port=_port(value.get("port"), f"{field}.port"), protocol=proto,
        target=target(value.get("target"), value.get("target_port"), f"{field}.target", f"{field}.target_port"),
        hostname=host_pattern(hostname, f"{field}.hostname") if hostname is not None else None,
        path=path, priority=priority)


def _bool(value: object, field: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SpecError(field, "must be true or false")
    return value


def parse(value: object, field: str = "lb") -> LbSpec:
    """The ``lb`` field of a load balancer's spec, normalised; SpecError naming the field otherwise."""
    if not isinstance(value, Mapping):
        raise SpecError(field, "a load balancer needs lb: {rules: [...]}")
    unknown = sorted(str(k) for k in value if k not in LB_KEYS)
    if unknown:
        raise SpecError(f"{field}.{unknown[0]}", "is not a field of a load balancer")
    raw_rules = value.get("rules")
    if not isinstance(raw_rules, list) or not 1 <= len(raw_rules) <= MAX_RULES:
        raise SpecError(f"{field}.rules", f"must be a list of 1 to {MAX_RULES} rules")
    rules = tuple(rule(r, f"{field}.rules[{i}]") for i, r in enumerate(raw_rules))
    protocols: dict[int, LbProtocol] = {}
    seen: set[tuple[int, str | None, str | None]] = set()
    for i, r in enumerate(rules):
        if protocols.setdefault(r.port, r.protocol) is not r.protocol:
            raise SpecError(f"{field}.rules[{i}].protocol", f"port {r.port} has rules of both http and tcp")
        key = (r.port, r.hostname, r.path)
        if key in seen:
            raise SpecError(f"{field}.rules[{i}]", f"port {r.port} has two rules for the same hostname and path")
        seen.add(key)
    default = value.get("default")
    default_target = None
    if default is not None:
        if not isinstance(default, Mapping) or set(default) - {"target", "port"}:
            raise SpecError(f"{field}.default", "must be {target: SERVICE or STACK/SERVICE, port: PORT}")
        default_target = target(default.get("target"), default.get("port"), f"{field}.default.target",
                                f"{field}.default.port")
    drain = value.get("drain_timeout", 10.0)
    low, high = DRAIN_TIMEOUT
    if not isinstance(drain, int | float) or isinstance(drain, bool) or not low <= drain <= high:
        raise SpecError(f"{field}.drain_timeout", f"must be seconds from {low:g} to {high:g}")
    return LbSpec(rules=rules, default=default_target,
                  stickiness=_bool(value.get("stickiness"), f"{field}.stickiness", False),
                  forwarded_for=_bool(value.get("forwarded_for"), f"{field}.forwarded_for", True),
                  proxy_protocol=_bool(value.get("proxy_protocol"), f"{field}.proxy_protocol", False),
                  drain_timeout=float(drain))


RULE_TEXT_KEYS = {"port": int, "protocol": str, "hostname": str, "path": str, "target": str,
                  "target_port": int, "priority": int}


def rule_from_text(text: str, field: str = "rule") -> dict[str, object]:
    """The CLI's ``--rule``: ``80=web:8080``, ``80/http=web:80``, ``443/tcp=db:5432``, with
    ``,hostname=*.example.com,path=/api,priority=10`` after it. Returns the request form of the rule."""
    head, _, rest = text.partition(",")
    listen, eq, dest = head.partition("=")
    port_text, _, protocol = listen.partition("/")
    service, colon, target_port = dest.rpartition(":")
    if not eq or not colon or not port_text.isdigit() or not target_port.isdigit():
        raise SpecError(field, f"{text!r} is not PORT[/http|tcp]=SERVICE:PORT[,hostname=H][,path=/P][,priority=N]")
    out: dict[str, object] = {"port": int(port_text), "target": service, "target_port": int(target_port)}
    if protocol:
        out["protocol"] = protocol
    for part in filter(None, rest.split(",")):
        key, eq, val = part.partition("=")
        if not eq or key not in ("hostname", "path", "priority"):
            raise SpecError(field, f"{part!r} is not hostname=H, path=/P or priority=N")
        if key == "priority" and not val.isdigit():
            raise SpecError(field, f"priority {val!r} is not a whole number")
        out[key] = int(val) if key == "priority" else val
    return out


# ---------------------------------------------------------------------- against the state


@dataclasses.dataclass(frozen=True)
class Peer:
    """Another service of the environment, as far as the checks here need it."""

    stack: str
    name: str
    kind: ServiceKind
    host_ports: tuple[int, ...]
    """The host ports it binds: its published tcp ports, or a load balancer's listen ports."""


def check_against(spec: LbSpec, own_stack: str, peers: Iterable[Peer], field: str = "lb") -> None:
    """Every target is an existing container service, and no listen port is bound by another service of
    the environment (a load balancer may be placed on any of its hosts, so any of them could clash)."""
    peers = list(peers)
    names = {(p.stack, p.name): p for p in peers}
    for i, r in enumerate(spec.rules):
        _check_target(r.target, own_stack, names, f"{field}.rules[{i}].target")
    if spec.default is not None:
        _check_target(spec.default, own_stack, names, f"{field}.default.target")
    for i, r in enumerate(spec.rules):
        for p in peers:
            if r.port in p.host_ports:
                raise SpecError(f"{field}.rules[{i}].port",
                                f"port {r.port} is bound already by service {p.stack}/{p.name} in this environment")


def _check_target(t: Target, own_stack: str, names: Mapping[tuple[str, str], Peer], field: str) -> None:
    peer = names.get((t.stack or own_stack, t.service))
    if peer is None:
        raise SpecError(field, f"no service {t.stack or own_stack}/{t.service} to send traffic to")
    if peer.kind is not ServiceKind.CONTAINER:
        what = "a load balancer" if peer.kind is ServiceKind.LOAD_BALANCER else "an external service (it runs nothing)"
        raise SpecError(field, f"{t.ref()} is {what}, not a service of containers")


__all__ = ["HAPROXY_LABEL", "LbProtocol", "LbRule", "LbSpec", "Peer", "ServiceKind", "Target", "check_against",
           "host_pattern", "parse", "rule_from_text"]
