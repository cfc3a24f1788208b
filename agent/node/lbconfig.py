"""A load balancer's rules as HAProxy sees them: its config file, its runtime commands, drain order.

Pure (no I/O, no clock: ``now`` is an argument): :mod:`agent.node.lb` runs HAProxy and feeds it what
these functions compute.

- :func:`backends` — the servers each target should have: the target service's instances that are
  running with an address and, when the service has a health check, healthy.
- :func:`render` — ``haproxy.cfg``: master-worker, a stats socket with ``expose-fd listeners`` (so a
  reload hands the listening sockets over: no connection refused), one frontend per listen port, one
  backend per (target, port, mode), the current servers, checks every 250 ms (two failures: out
  within ~0.5 s), retries with redispatch for connections a dead server refused.
- :func:`runtime_commands` — what changes the backends without a reload: ``add server`` (dynamic
  servers, HAProxy ≥ 2.5) + ``enable health`` + ``enable server`` for a new container; ``set server
  … state drain`` for one that left.
- :func:`drained` — drain ordering: a draining server is deleted (``set server … state maint``,
  ``shutdown sessions``, ``del server``) once it has no sessions or its drain timeout has passed.
- :func:`hold_for_drain` — the other side: a host keeps a container an LB sends to for the drain
  timeout after it was scaled away or its service stopped, before it stops it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence

from agent.model.entities import Desired, Health, Service, Status
from agent.model.lb import LbProtocol, LbRule, LbSpec, ServiceKind, Target
from agent.model.state import ClusterState

CHECK = "check inter 250ms fastinter 250ms downinter 500ms fall 2 rise 1"
COOKIE = "CORRAL_LB"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclasses.dataclass(frozen=True)
class Server:
    """One container a backend sends to: ``name`` is unique per address (a replaced container is a new server)."""

    backend: str
    name: str
    address: str
    port: int


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    mode: LbProtocol
    target: Target
    service: str | None
    """The target's service id (None: no such service now: an empty backend, so HAProxy answers 503)."""


def backend_name(target: Target, own_stack: str, mode: LbProtocol) -> str:
    return _SAFE.sub("_", f"b_{target.stack or own_stack}_{target.service}_{target.port}_{mode.value}")


def server_name(instance: str, address: str) -> str:
    return _SAFE.sub("_", f"{instance}_{address}")


def backend_list(spec: LbSpec, own_stack: str, state: ClusterState, environment: str) -> list[Backend]:
    """Every backend of the load balancer, in the order of first use (rules, then the default)."""
    modes: list[tuple[Target, LbProtocol]] = [(r.target, r.protocol) for r in spec.rules]
    if spec.default is not None:
        modes.append((spec.default, LbProtocol.HTTP))
    out: dict[str, Backend] = {}
    for target, mode in modes:
        name = backend_name(target, own_stack, mode)
        if name not in out:
            service = find_target(state, environment, target.stack or own_stack, target.service)
            out[name] = Backend(name, mode, target, service.id if service else None)
    return list(out.values())


def find_target(state: ClusterState, environment: str, stack: str, name: str) -> Service | None:
    for service in state.services.values():
        st = state.stacks.get(service.stack)
        if st is not None and st.environment == environment and st.name == stack and service.name == name \
                and service.spec.kind is ServiceKind.CONTAINER:
            return service
    return None


def backends(state: ClusterState, items: Sequence[Backend]) -> dict[str, Server]:
    """The servers every backend should have now (by server key ``backend/name``): instances of the
    target service that are wanted running, are running with an address, and are healthy when the
    service has a health check."""
    out: dict[str, Server] = {}
    for b in items:
        if b.service is None or b.service not in state.services:
            continue
        for inst in sorted(state.instances_of(b.service), key=lambda i: i.slot):
            if inst.desired != Desired.RUNNING or inst.status != Status.RUNNING or not inst.ip:
                continue
            # the instance's own spec: during an upgrade the old and the new ones may differ in their check
            if state.spec_of(inst).health_check is not None and inst.health != Health.HEALTHY:
                continue
            server = Server(b.name, server_name(inst.id, inst.ip), inst.ip, b.target.port)
            out[f"{b.name}/{server.name}"] = server
    return out


def _order(rules: Sequence[LbRule]) -> list[LbRule]:
    """Priority first, then specificity (an exact hostname, then wildcards, then none; longer paths
    first), then the order given."""
    def key(item: tuple[int, LbRule]) -> tuple[int, int, int, int]:
        i, r = item
        host = 0 if r.hostname is None else 1 if "*" in r.hostname else 2
        return (-r.priority, -host, -len(r.path or ""), i)
    return [r for _, r in sorted(enumerate(rules), key=key)]


def _host_acl(pattern: str) -> str:
    header = "req.hdr(host),field(1,:)"
    if pattern.startswith("*."):
        return f"{header} -m end -i {pattern[1:]}"
    if pattern.endswith(".*"):
        return f"{header} -m beg -i {pattern[:-1]}"
    return f"{header} -m str -i {pattern}"


def render(spec: LbSpec, own_stack: str, items: Sequence[Backend], servers: Iterable[Server],
           socket: str, pidfile: str, cookie_key: str = "corral", bind: str = "") -> str:
    """The whole ``haproxy.cfg`` of one load balancer instance, with ``servers`` as its current servers."""
    by_backend: dict[str, list[Server]] = {}
    for s in servers:
        by_backend.setdefault(s.backend, []).append(s)
    lines = [
        "# written by the corral agent: a load balancer's rules (agent/node/lbconfig.py)",
        "global",
        "    master-worker",
        f"    stats socket {socket} mode 600 level admin expose-fd listeners",
        f"    pidfile {pidfile}",
        "    maxconn 4096",
        "    hard-stop-after 60s",
        "",
        "defaults",
        "    timeout connect 1s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        "    retries 3",
        "    option redispatch 1",
        "",
    ]
    ports: dict[int, list[LbRule]] = {}
    for r in spec.rules:
        ports.setdefault(r.port, []).append(r)
    for port, rules in sorted(ports.items()):
        mode = rules[0].protocol
        lines += [f"frontend f_{port}", f"    mode {mode.value}", f"    bind {bind}:{port}"]
        if mode is LbProtocol.HTTP:
            lines.append("    option http-keep-alive")
            if spec.forwarded_for:
                lines += ["    option forwardfor", "    http-request set-header X-Forwarded-Proto http"]
            default = None
            for n, r in enumerate(_order(rules)):
                conditions = []
                if r.hostname is not None:
                    lines.append(f"    acl r{n}_host {_host_acl(r.hostname)}")
                    conditions.append(f"r{n}_host")
                if r.path is not None:
                    lines.append(f"    acl r{n}_path path_beg {r.path}")
                    conditions.append(f"r{n}_path")
                name = backend_name(r.target, own_stack, mode)
                if conditions:
                    lines.append(f"    use_backend {name} if {' '.join(conditions)}")
                elif default is None:
                    default = name
            if default is None and spec.default is not None:
                default = backend_name(spec.default, own_stack, LbProtocol.HTTP)
            if default is not None:
                lines.append(f"    default_backend {default}")
        else:
            lines.append(f"    default_backend {backend_name(rules[0].target, own_stack, mode)}")
        lines.append("")
    for b in items:
        lines += [f"backend {b.name}", f"    mode {b.mode.value}", "    balance roundrobin"]
        if b.mode is LbProtocol.HTTP:
            lines.append("    retry-on conn-failure empty-response")
            if spec.stickiness:  # the cookie is a hash of the server's address and the key: the same on every
                # instance of the load balancer, and given to servers added at run time too (``dynamic``)
                lines += [f"    cookie {COOKIE} insert indirect nocache dynamic",
                          f"    dynamic-cookie-key {cookie_key}"]
        for s in sorted(by_backend.get(b.name, []), key=lambda s: s.name):
            lines.append(f"    server {s.name} {server_line(s, b.mode, spec)}")
        lines.append("")
    return "\n".join(lines)


def server_line(server: Server, mode: LbProtocol, spec: LbSpec) -> str:
    """What follows ``server NAME`` in the config and ``add server BACKEND/NAME`` at run time."""
    extra = ""
    if mode is LbProtocol.TCP and spec.proxy_protocol:
        extra += " send-proxy"
    return f"{server.address}:{server.port} {CHECK}{extra}"


@dataclasses.dataclass(frozen=True)
class Draining:
    server: Server
    since: float


def runtime_commands(have: Mapping[str, Server], draining: Mapping[str, Draining], want: Mapping[str, Server],
                     modes: Mapping[str, LbProtocol], spec: LbSpec) -> tuple[list[str], list[str], list[str]]:
    """(commands, servers added, servers to drain) that take HAProxy's servers from ``have`` (in use)
    to ``want``, without a reload. A wanted server that is draining is made ready again."""
    commands: list[str] = []
    added, drain = [], []
    for key, s in sorted(want.items()):
        if key in have:
            continue
        if key in draining:
            commands.append(f"set server {key} state ready")
        else:
            commands.append(f"add server {key} {server_line(s, modes[s.backend], spec)}")
            if spec.stickiness and modes[s.backend] is LbProtocol.HTTP:  # its cookie (HAProxy 2.6 makes none itself)
                commands.append(f"enable dynamic-cookie backend {s.backend}")
            commands += [f"enable health {key}", f"enable server {key}"]
        added.append(key)
    for key in sorted(have):
        if key not in want:
            commands.append(f"set server {key} state drain")
            drain.append(key)
    return commands, added, drain


def drained(draining: Mapping[str, Draining], sessions: Mapping[str, int], now: float, timeout: float) -> list[str]:
    """Drain ordering: the draining servers that may go now — none of their sessions left, or the
    drain timeout passed (in-flight requests beyond it are cut). A server whose sessions are unknown
    waits for its timeout."""
    return sorted(key for key, d in draining.items()
                  if sessions.get(key, -1) == 0 or now - d.since >= timeout)


def delete_commands(key: str) -> list[str]:
    return [f"set server {key} state maint", f"shutdown sessions server {key}", f"del server {key}"]


def next_drain_deadline(draining: Mapping[str, Draining], timeout: float) -> float | None:
    return min((d.since + timeout for d in draining.values()), default=None)


def summarize(rows: Sequence[Mapping[str, str]]) -> dict[str, object]:
    """HAProxy's ``show stat`` rows as the API shows a load balancer instance: current sessions,
    requests per second (frontends' rates over the last second), errors (refused requests, failed
    connections and responses, 5xx answers), and every backend's servers with their state."""
    def num(row: Mapping[str, str], key: str) -> int:
        value = row.get(key, "")
        return int(value) if value.isdigit() else 0
    frontends = [r for r in rows if r.get("svname") == "FRONTEND"]
    out_backends: dict[str, dict[str, object]] = {}
    errors = sum(num(r, "ereq") for r in frontends)
    for r in rows:
        name = r.get("pxname", "")
        if r.get("svname") in ("FRONTEND",) or not name.startswith("b_"):
            continue
        entry = out_backends.setdefault(name, {"name": name, "servers": []})
        if r.get("svname") == "BACKEND":
            entry.update(state=r.get("status", ""), sessions=num(r, "scur"))
            errors += num(r, "econ") + num(r, "eresp") + num(r, "hrsp_5xx")
            continue
        servers = entry["servers"]
        assert isinstance(servers, list)
        servers.append({"name": r.get("svname", ""), "address": r.get("addr", ""), "state": r.get("status", ""),
                        "sessions": num(r, "scur"), "requests": num(r, "stot"),
                        "errors": num(r, "econ") + num(r, "eresp")})
    return {"sessions": sum(num(r, "scur") for r in frontends),
            "requests_per_s": sum(num(r, "req_rate") if r.get("mode") == "http" or r.get("req_rate") else
                                  num(r, "rate") for r in frontends),
            "errors": errors, "backends": list(out_backends.values())}


# ---------------------------------------------------------------------- the target's host


def drain_timeout_of(state: ClusterState, service_id: str) -> float | None:
    """The longest drain timeout of the load balancers that send to ``service_id`` (None: none does)."""
    service = state.services.get(service_id)
    stack = state.stacks.get(service.stack) if service else None
    if service is None or stack is None:
        return None
    found: float | None = None
    for lb in state.services.values():
        lb_stack = state.stacks.get(lb.stack)
        if lb.spec.lb is None or lb_stack is None or lb_stack.environment != stack.environment:
            continue
        if any((t.stack or lb_stack.name, t.service) == (stack.name, service.name) for t in lb.spec.lb.targets()):
            found = max(found or 0.0, lb.spec.lb.drain_timeout)
    return found


def hold_for_drain(leaving: Mapping[str, float | None], first_seen: dict[str, float], now: float
                   ) -> tuple[set[str], float | None]:
    """Drain ordering on the target's host: of the containers about to be stopped (container id →
    drain timeout of the LBs sending to it, None: no LB does), those to keep for now, and when to look
    again. ``first_seen`` (when each was first seen leaving) is updated: entries no longer leaving go."""
    for gone in [c for c in first_seen if c not in leaving]:
        del first_seen[gone]
    held: set[str] = set()
    wake: float | None = None
    for container, timeout in leaving.items():
        if not timeout:
            continue
        since = first_seen.setdefault(container, now)
        if now < since + timeout:
            held.add(container)
            wake = min(wake, since + timeout) if wake is not None else since + timeout
    return held, wake


__all__ = ["Backend", "Draining", "Server", "backend_list", "backend_name", "backends", "delete_commands",
           "drain_timeout_of", "drained", "hold_for_drain", "render", "runtime_commands", "server_line", "server_name",
           "summarize"]
