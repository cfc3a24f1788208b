"""The cluster's DNS names and their answers, kept from the replicated state one change at a time (pure).

Theory of operation. Every name lives under ``ENVIRONMENT.corral.internal`` (``.internal`` is the
top-level domain ICANN reserved for private use in 2024: it never collides with a real one, and a
query leaked outside is answered NXDOMAIN by the root, never by someone else's server):

    SERVICE.STACK.ENV.corral.internal          A: the service's eligible containers' 10.42 addresses
    ALIAS.STACK.ENV.corral.internal            the same, for each of the service's ``aliases``
    LINK.SERVICE.STACK.ENV.corral.internal     the same as the linked service, for each compose ``links``
                                               alias (in SERVICE's containers' search list only)
    NAME.STACK.ENV.corral.internal             of an external service: A (its addresses) or CNAME
    STACK-SERVICE-SLOT.STACK.ENV.corral.internal   A: that container's address (from its placement on)
    _PORT._PROTO.SERVICE.STACK.ENV.corral.internal SRV 0 0 PORT CONTAINER-NAME, per eligible container
    Y.X.42.10.in-addr.arpa                     PTR: the container's own name

A container's search list is ``STACK.ENV.corral.internal``, ``ENV.corral.internal``, so ``db`` (same
stack), ``db.other`` (another stack) and the container names resolve as written; the server only
ever sees fully qualified names. *Eligible* means running and, when the service has a health check,
healthy, on a host that is not disconnected (a host declared dead by gossip takes its containers out
of the answers at once, in the same change as its state, not when they are rescheduled seconds later;
a merely suspected host keeps them: a false suspicion must not flap every name).

An external service (``kind: external``) has no containers: its name answers the addresses it was
given, or a CNAME to its host name, which the server follows upstream (a stub resolver would not).
A compose link ``links: [db:database]`` in service ``web`` is the name ``database.web.STACK…``:
``web``'s containers have ``web.STACK.ENV.corral.internal`` first in their search list, so ``database``
resolves there and nowhere else, with no per-client view in the server.

A service with no eligible container still exists: its name is answered with no records (NOERROR, no
data, the SOA as authority) rather than NXDOMAIN, which a client may cache as "this name does not
exist", or SERVFAIL, which makes stub resolvers wait and try again.

:class:`DnsIndex` holds names → owners (services, instances) and each service's eligible addresses.
:meth:`DnsIndex.apply` takes the change feed's records: an instance change touches that instance and
its service's address set, a service change that service's names, so the work per change does not
grow with the state. It returns the names whose answers changed (the server's wire cache drops
those). :meth:`DnsIndex.answer` builds one :class:`Answer`; ``turn`` rotates the A records.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Iterable

from agent.model.changes import Change, Topic
from agent.model.entities import Health, HostState, Instance, Status
from agent.model.state import ClusterState

SUFFIX = "corral.internal"
REVERSE = "42.10.in-addr.arpa"
TTL = 1
"""Seconds: long enough that a burst of lookups of one name costs one answer each second, short
enough that a stopped container leaves the answers within the propagation target (1 s)."""
SOA_MNAME = "ns." + SUFFIX
SOA_RNAME = "hostmaster." + SUFFIX


class Rcode(enum.StrEnum):
    NOERROR = "NOERROR"
    NXDOMAIN = "NXDOMAIN"
    OUTSIDE = "OUTSIDE"
    """Not a name of the cluster's zones: the server forwards it upstream."""


@dataclasses.dataclass(frozen=True)
class Record:
    name: str
    type: str
    """A, SRV, PTR or CNAME."""
    value: str
    """A: the address; SRV: ``PRIORITY WEIGHT PORT TARGET``; PTR, CNAME: the name."""
    ttl: int = TTL

    def to_view(self) -> dict[str, object]:
        return {"name": self.name, "type": self.type, "ttl": self.ttl, "value": self.value}


@dataclasses.dataclass(frozen=True)
class Answer:
    name: str
    type: str
    rcode: Rcode
    records: tuple[Record, ...] = ()
    zone: str | None = None
    """The zone whose SOA goes into the authority section of an empty answer or an NXDOMAIN."""

    def to_view(self) -> dict[str, object]:
        return {"name": self.name, "type": self.type, "rcode": self.rcode.value,
                "answers": [r.to_view() for r in self.records], "zone": self.zone}


def normalise(name: str) -> str:
    """Lowercase, without the trailing dot."""
    return name.rstrip(".").lower()


def zone_of(name: str) -> str | None:
    """The cluster zone a (normalised) name falls in, or None when it is someone else's."""
    for zone in (SUFFIX, REVERSE):
        if name == zone or name.endswith("." + zone):
            return zone
    return None


def reverse_name(ip: str) -> str:
    return ipaddress.IPv4Address(ip).reverse_pointer


@dataclasses.dataclass(frozen=True)
class _Inst:
    service: str
    name: str
    """Its fully qualified container name."""
    ip: str | None
    eligible: bool


@dataclasses.dataclass(frozen=True)
class _Svc:
    names: tuple[str, ...]
    """Its fully qualified name and aliases."""
    srv: tuple[tuple[str, int], ...]
    """(SRV owner name, port) for each declared container port."""
    health_checked: bool
    external: tuple[str, ...] = ()
    """An external service's addresses (answered whatever their health: nothing checks them)."""
    cname: str | None = None
    """An external service's host name."""
    links: tuple[tuple[str, str], ...] = ()
    """(link name, the linked service's name) for each compose link of this service."""


class DnsIndex:
    """Names → owners, kept from the change feed (see the module's theory of operation)."""

    def __init__(self) -> None:
        self._services: dict[str, _Svc] = {}
        self._instances: dict[str, _Inst] = {}
        self._eligible: dict[str, dict[str, str]] = {}
        """service → {instance id: address} of its eligible containers, in the order they became so."""
        self._owners: dict[str, set[str]] = {}
        """name → owner keys: ``s:ID`` (a service's name), ``i:ID`` (a container's), ``p:ID`` (a PTR),
        ``r:ID:PORT`` (a service's SRV name)."""
        self._by_name: dict[str, str] = {}
        """A service's fully qualified names (its own and its aliases) → its id: what a link resolves to."""
        self._links_to: dict[str, set[str]] = {}
        """A service's name → the link names that answer as it does (their answers change with it)."""
        self._domains: dict[str, int] = {}
        """Every name and the domains above it, counted: a name with no records of its own but names
        under it exists (NOERROR, no data), anything else under the suffix is NXDOMAIN."""
        self.updates = 0
        """Owner records touched so far (a benchmark shows it does not grow with the state)."""

    # -------------------------------------------------------------- following the state

    def rebuild(self, state: ClusterState) -> set[str]:
        """Everything again (a snapshot was installed); returns every name known before or now."""
        before = set(self._owners)
        self.__init__()  # type: ignore[misc]
        for service_id in state.services:
            self._put_service(state, service_id)
        for inst in state.instances.values():
            self._put_instance(state, inst.id)
        return before | set(self._owners)

    def apply(self, state: ClusterState, changes: Iterable[Change]) -> set[str]:
        """Follow ``changes`` (already applied to ``state``); the names whose answers may have changed."""
        touched: set[str] = set()
        for change in changes:
            if change.topic is Topic.ALL:
                return self.rebuild(state)
            if change.topic is Topic.SERVICE:
                touched |= self._put_service(state, change.key)
            elif change.topic is Topic.INSTANCE:
                touched |= self._put_instance(state, change.key)
            elif change.topic is Topic.HOST:  # connected or not: the work is that host's containers
                for inst in state.instances_on(change.key):
                    touched |= self._put_instance(state, inst.id)
        return touched

    @staticmethod
    def wants(change: Change) -> bool:
        """The feed's filter: the changes that can change a name (stacks and environments change only
        with their services; a host's, its containers' eligibility)."""
        return change.topic in (Topic.ALL, Topic.SERVICE, Topic.INSTANCE, Topic.HOST)

    def _link(self, name: str, owner: str) -> None:
        owners = self._owners.setdefault(name, set())
        if owner in owners:
            return
        owners.add(owner)
        for domain in _domains(name):
            self._domains[domain] = self._domains.get(domain, 0) + 1

    def _unlink(self, name: str, owner: str) -> None:
        owners = self._owners.get(name)
        if owners is None or owner not in owners:
            return
        owners.discard(owner)
        if not owners:
            del self._owners[name]
        for domain in _domains(name):
            self._domains[domain] -= 1
            if not self._domains[domain]:
                del self._domains[domain]

    def _put_service(self, state: ClusterState, service_id: str) -> set[str]:
        self.updates += 1
        old = self._services.pop(service_id, None)
        touched: set[str] = set()
        if old is not None:
            for name in old.names:
                self._unlink(name, "s:" + service_id)
                if self._by_name.get(name) == service_id:
                    del self._by_name[name]
                touched |= self._links_to.get(name, set())
            for name, port in old.srv:
                self._unlink(name, f"r:{service_id}:{port}")
            for name, target in old.links:
                self._unlink(name, "k:" + target)
                linked = self._links_to.get(target)
                if linked is not None:
                    linked.discard(name)
                    if not linked:
                        del self._links_to[target]
            touched |= set(old.names) | {n for n, _ in old.srv} | {n for n, _ in old.links}
        service = state.services.get(service_id)
        if service is None:
            self._eligible.pop(service_id, None)
            return touched
        stack = state.stacks[service.stack]
        domain = f"{stack.name}.{stack.environment}.{SUFFIX}"
        names = tuple(dict.fromkeys(f"{n}.{domain}" for n in (service.name, *service.spec.aliases)))
        ports = [(p.target, p.protocol.value) for p in service.spec.ports]
        for expose in service.spec.expose:
            number, _, proto = expose.partition("/")
            ports.append((int(number), proto or "tcp"))
        srv = tuple(dict.fromkeys((f"_{port}._{proto}.{service.name}.{domain}", port) for port, proto in ports))
        links = tuple((f"{alias}.{service.name}.{domain}", f"{target}.{domain}")
                      for alias, target in sorted(service.spec.links.items()))
        external = service.spec.external
        new = _Svc(names, srv, service.spec.health_check is not None,
                   external.addresses if external else (), external.hostname if external else None, links)
        self._services[service_id] = new
        for name in names:
            self._link(name, "s:" + service_id)
            self._by_name.setdefault(name, service_id)
            touched |= self._links_to.get(name, set())
        for name, port in srv:
            self._link(name, f"r:{service_id}:{port}")
        for name, target in links:
            self._link(name, "k:" + target)
            self._links_to.setdefault(target, set()).add(name)
        touched |= set(names) | {n for n, _ in srv} | {n for n, _ in links}
        if old is not None and old.health_checked != new.health_checked:
            for inst in state.instances_of(service_id):  # eligibility is decided anew: rare (a spec change)
                touched |= self._put_instance(state, inst.id)
        return touched

    def _put_instance(self, state: ClusterState, instance_id: str) -> set[str]:
        self.updates += 1
        touched: set[str] = set()
        old = self._instances.pop(instance_id, None)
        if old is not None:
            self._unlink(old.name, "i:" + instance_id)
            touched.add(old.name)
            if old.ip is not None:
                self._unlink(reverse_name(old.ip), "p:" + instance_id)
                touched.add(reverse_name(old.ip))
            if old.eligible:
                self._eligible.get(old.service, {}).pop(instance_id, None)
                touched |= self._service_names(old.service)
        inst = state.instances.get(instance_id)
        svc = self._services.get(inst.service) if inst is not None else None
        if inst is None or svc is None:
            return touched
        name = f"{state.container_name(inst)}.{svc.names[0].split('.', 1)[1]}"
        host = state.hosts.get(inst.host)
        # its own spec's check: during an upgrade that adds one, the old containers (never checked) still answer
        eligible = (_eligible(inst, state.spec_of(inst).health_check is not None)
                    and (host is None or host.state != HostState.DISCONNECTED))
        new = _Inst(inst.service, name, inst.ip, eligible)
        self._instances[instance_id] = new
        self._link(name, "i:" + instance_id)
        touched.add(name)
        if inst.ip is not None:
            self._link(reverse_name(inst.ip), "p:" + instance_id)
            touched.add(reverse_name(inst.ip))
        if eligible and inst.ip is not None:
            self._eligible.setdefault(inst.service, {})[instance_id] = inst.ip
            touched |= self._service_names(inst.service)
        return touched

    def _service_names(self, service_id: str) -> set[str]:
        """The names whose answers follow this service's containers: its own, its SRV names, the links to it."""
        svc = self._services.get(service_id)
        if svc is None:
            return set()
        out = set(svc.names) | {n for n, _ in svc.srv}
        for name in svc.names:
            out |= self._links_to.get(name, set())
        return out

    # -------------------------------------------------------------- answering

    def answer(self, qname: str, qtype: str, turn: int = 0) -> Answer:
        """The answer to one question; ``turn`` (a counter the server keeps) rotates the A records."""
        name, qtype = normalise(qname), qtype.upper()
        zone = zone_of(name)
        if zone is None:
            return Answer(name, qtype, Rcode.OUTSIDE)
        owners = self._owners.get(name)
        if not owners:
            exists = name in self._domains or name == zone
            return Answer(name, qtype, Rcode.NOERROR if exists else Rcode.NXDOMAIN, zone=zone)
        records: list[Record] = []
        for owner in sorted(owners):
            kind, _, key = owner.partition(":")
            if kind == "s":
                records += self._service_records(name, key, qtype)
            elif kind == "k":  # a link: answered as the service it names, if that exists
                target = self._by_name.get(key)
                if target is not None:
                    records += self._service_records(name, target, qtype)
            elif kind == "i" and qtype in ("A", "ANY"):
                ip = self._instances[key].ip
                if ip is not None:
                    records.append(Record(name, "A", ip))
            elif kind == "p" and qtype in ("PTR", "ANY"):
                records.append(Record(name, "PTR", self._instances[key].name))
            elif kind == "r" and qtype in ("SRV", "ANY"):
                service, _, port = key.partition(":")
                records += [Record(name, "SRV", f"0 0 {port} {self._instances[i].name}")
                            for i in self._eligible.get(service, {})]
        records = list(dict.fromkeys(records))
        if len(records) > 1 and turn:
            shift = turn % len(records)
            records = records[shift:] + records[:shift]
        return Answer(name, qtype, Rcode.NOERROR, tuple(records), None if records else zone)

    def _service_records(self, name: str, service_id: str, qtype: str) -> list[Record]:
        svc = self._services.get(service_id)
        if svc is None:
            return []
        if svc.cname is not None:  # the only record of a CNAME's owner, whatever the type asked
            return [Record(name, "CNAME", svc.cname)]
        if qtype not in ("A", "ANY"):
            return []
        if svc.external:
            return [Record(name, "A", ip) for ip in svc.external]
        return [Record(name, "A", ip) for ip in self._eligible.get(service_id, {}).values()]

    @property
    def names(self) -> int:
        return len(self._owners)


def _eligible(inst: Instance, health_checked: bool) -> bool:
    return inst.status == Status.RUNNING and (not health_checked or inst.health == Health.HEALTHY)


def _domains(name: str) -> list[str]:
    """``a.b.c.corral.internal`` → itself, ``b.c.corral.internal``, ``c.corral.internal`` (not the zone)."""
    zone = zone_of(name) or ""
    labels = name.split(".")
    out = []
    for i in range(len(labels)):
        domain = ".".join(labels[i:])
        if domain == zone or len(domain) <= len(zone):
            break
        out.append(domain)
    return out


__all__ = ["REVERSE", "SOA_MNAME", "SOA_RNAME", "SUFFIX", "TTL", "Answer", "DnsIndex", "Rcode", "Record",
           "normalise", "reverse_name", "zone_of"]
