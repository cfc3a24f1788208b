"""The scheduler: where each missing instance of a service should run, and why not when it can't.

Pure: it takes the hosts as the cluster sees them, what already runs where, and the instances to
place; it returns placements and, for every instance it could not place, the reason in words a
user can act on. It never reads the clock, draws randomness or does I/O, so the leader's decision
is reproducible from the committed state alone.

Filters, in order (the first one a host fails is the reason given for it):
  0. a request pinned to a host (its volumes live there) fits that host only;
  1. the host is schedulable (alive and active, as gossip sees it);
  2. every ``must`` constraint holds (``zone==a``, ``zone!=b``, ``node.hostname==h1``);
  3. ``one_per_host``: no instance of the service is there yet;
  4. the CPU and memory reservations fit beside what is reserved there already.
Then the survivors are ranked: most ``should`` constraints met first; then, for each ``spread`` label key,
fewest instances of the service on hosts with the same value of it; then, for ``spread`` (the
default), fewest instances of this service, fewest instances in all, most free memory; for
``pack``, the most loaded host that still fits. Ties go to the host name, so the order is total.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

HOSTNAME_KEY = "node.hostname"
ROLE_KEY = "node.role"
"""``manager`` for a host that is a Raft voter candidate, else ``worker`` (never a host label)."""
# KEY (label-key characters, compose's ``node.labels.`` prefix dropped), == or !=, a VALUE on one line.
CONSTRAINT_PATTERN = (r"^\s*(?:node\.labels\.)?(?P<key>[A-Za-z0-9_-][A-Za-z0-9_./-]{0,254})\s*(?P<op>==|!=)\s*"
                      r"(?P<value>[^\s=!](?:[^\r\n]{0,1022}[^\s])?)\s*$")
CONSTRAINT_RE = re.compile(CONSTRAINT_PATTERN)


class Strategy(enum.StrEnum):
    SPREAD = "spread"
    PACK = "pack"


@dataclasses.dataclass(frozen=True)
class Constraint:
    """``key op value`` over a host's labels (``node.hostname`` is the host's name)."""

    key: str
    op: Literal["==", "!="]
    value: str

    def holds(self, host: HostFacts) -> bool:
        if self.key == HOSTNAME_KEY:
            actual: str | None = host.name
        elif self.key == ROLE_KEY:
            actual = "manager" if host.manager else "worker"
        else:
            actual = host.labels.get(self.key)
        return (actual == self.value) if self.op == "==" else (actual != self.value)

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """``zone==a``, ``node.labels.zone != a``, ``node.hostname==h1`` (compose's spelling too)."""
        match = CONSTRAINT_RE.match(text)
        if match is None:
            raise ValueError(f"constraint {text!r} is not KEY==VALUE or KEY!=VALUE")
        op: Literal["==", "!="] = "==" if match.group("op") == "==" else "!="
        return cls(match.group("key"), op, match.group("value"))


@dataclasses.dataclass(frozen=True)
class Rules:
    must: tuple[Constraint, ...] = ()
    should: tuple[Constraint, ...] = ()
    strategy: Strategy = Strategy.SPREAD
    one_per_host: bool = False
    spread: tuple[str, ...] = ()
    """Label keys whose values the service's instances spread over evenly (hosts without the label are
    one group of their own), first key first; ranked after ``should``, before the strategy."""


@dataclasses.dataclass(frozen=True)
class HostFacts:
    name: str
    schedulable: bool
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    cpus: float = 0.0
    memory: int = 0
    state: str = "active"
    manager: bool = False


@dataclasses.dataclass(frozen=True)
class Running:
    """An instance already placed (committed), which holds its reservation on its host."""

    service: str
    host: str
    cpus: float = 0.0
    memory: int = 0


@dataclasses.dataclass(frozen=True)
class Request:
    """Instances (by slot) of one service that need a host."""

    service: str
    slots: tuple[int, ...]
    cpus: float = 0.0
    memory: int = 0
    rules: Rules = Rules()
    pin: str | None = None
    """The only host the slots may go to (where their volumes live), and why (``pin_reason``)."""
    pin_reason: str = ""


@dataclasses.dataclass(frozen=True)
class Placement:
    service: str
    slot: int
    host: str


@dataclasses.dataclass(frozen=True)
class Unplaced:
    service: str
    slot: int
    reason: str


@dataclasses.dataclass(frozen=True)
class Decision:
    placements: tuple[Placement, ...]
    unplaced: tuple[Unplaced, ...]


@dataclasses.dataclass
class _Load:
    cpus: float = 0.0
    memory: int = 0
    total: int = 0
    per_service: dict[str, int] = dataclasses.field(default_factory=dict)

    def add(self, service: str, cpus: float, memory: int) -> None:
        self.cpus += cpus
        self.memory += memory
        self.total += 1
        self.per_service[service] = self.per_service.get(service, 0) + 1


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def _why_not(host: HostFacts, load: _Load, req: Request) -> str | None:
    """The first filter ``host`` fails for ``req``, in words; None when it fits."""
    if req.pin is not None and host.name != req.pin:
        return f"{host.name} is not {req.pin}, where {req.pin_reason}"
    if not host.schedulable:
        return f"{host.name} is {host.state if host.state != 'active' else 'not schedulable'}"
    for rule in req.rules.must:
        if not rule.holds(host):
            return f"{host.name} does not match {rule}"
    if req.rules.one_per_host and load.per_service.get(req.service, 0):
        return f"{host.name} already runs one (one per host)"
    if req.cpus and load.cpus + req.cpus > host.cpus + 1e-9:
        return f"{host.name} has {max(host.cpus - load.cpus, 0):g} CPUs free, needs {req.cpus:g}"
    if req.memory and load.memory + req.memory > host.memory:
        return f"{host.name} has {_mib(max(host.memory - load.memory, 0))} free, needs {_mib(req.memory)}"
    return None


def _rank(host: HostFacts, load: _Load, req: Request, spread: tuple[int, ...] = ()) -> tuple[float | str, ...]:
    should = -sum(rule.holds(host) for rule in req.rules.should)
    free_memory = host.memory - load.memory
    if req.rules.strategy == Strategy.PACK:
        return (should, *spread, -load.per_service.get(req.service, 0), -load.total, free_memory, host.name)
    return (should, *spread, load.per_service.get(req.service, 0), load.total, -free_memory, host.name)


def _spread(host: HostFacts, req: Request, hosts: Mapping[str, HostFacts],
            loads: Mapping[str, _Load]) -> tuple[int, ...]:
    """For each spread key: how many of the service's instances run on hosts with ``host``'s value of it."""
    return tuple(sum(loads[h.name].per_service.get(req.service, 0) for h in hosts.values()
                     if h.labels.get(key) == host.labels.get(key)) for key in req.rules.spread)


def schedule(requests: Sequence[Request], hosts: Iterable[HostFacts], running: Iterable[Running]) -> Decision:
    """Place every requested slot, in request order then slot order; never over-commit a host."""
    by_name = {h.name: h for h in hosts}
    loads = {name: _Load() for name in by_name}
    for inst in running:
        if inst.host in loads:
            loads[inst.host].add(inst.service, inst.cpus, inst.memory)
    placements: list[Placement] = []
    unplaced: list[Unplaced] = []
    for req in requests:
        for slot in sorted(req.slots):
            fitting = [h for h in by_name.values() if _why_not(h, loads[h.name], req) is None]
            if not fitting:
                unplaced.append(Unplaced(req.service, slot, _reason(req, by_name, loads)))
                continue
            best = min(fitting, key=lambda h: _rank(h, loads[h.name], req, _spread(h, req, by_name, loads)))
            loads[best.name].add(req.service, req.cpus, req.memory)
            placements.append(Placement(req.service, slot, best.name))
    return Decision(tuple(placements), tuple(unplaced))


def _reason(req: Request, hosts: Mapping[str, HostFacts], loads: Mapping[str, _Load]) -> str:
    if not hosts:
        return "no hosts in the cluster"
    if req.pin is not None and req.pin in hosts:
        return f"{req.pin_reason}, which does not fit: {_why_not(hosts[req.pin], loads[req.pin], req)}"
    reasons = [_why_not(hosts[name], loads[name], req) for name in sorted(hosts)]
    return "no host fits: " + "; ".join(r for r in reasons if r)
