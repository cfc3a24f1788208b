"""What the leader commits so that every active service has its instances placed.

Pure: from the replicated state and the set of hosts lost for longer than the grace period, it
returns :class:`~agent.model.commands.PlacementsCommit` commands (one per service that needs any). A
slot needs a host when it has no instance, or when its instance sits on a lost host; the scheduler
picks the host and explains the slots it cannot place, which the state keeps as the service's
``unplaced`` reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Set

from agent.model.commands import PlacementsCommit
from agent.model.entities import HostState, Service, ServiceState
from agent.model.lb import HAPROXY_LABEL, ServiceKind
from agent.model.mounts import VolumeScope, volume_key
from agent.model.scheduler import (
    Constraint,
    Decision,
    HostFacts,
    Placement,
    Request,
    Rules,
    Running,
    Unplaced,
    schedule,
)
from agent.model.spec import HostLoss, ServiceMode
from agent.model.state import ClusterState


def host_facts(state: ClusterState, lost: Set[str], environment: str | None = None) -> list[HostFacts]:
    """The hosts a service of ``environment`` may be placed on: its environment's (a host moving in
    takes the new environment's containers only once the old one's have left it)."""
    return [
        HostFacts(name=h.name, schedulable=h.state == HostState.ACTIVE and h.name not in lost
                  and not state.foreign_on(h.name), labels=h.labels, cpus=h.cpus, memory=h.memory, manager=h.manager,
                  state=HostState.DISCONNECTED.value if h.name in lost else h.state.value)
        for h in state.hosts.values() if environment is None or h.environment == environment
    ]


def _request(service: Service, slots: tuple[int, ...]) -> Request:
    spec = service.spec
    # a load balancer runs HAProxy on its host: only hosts that have it (their agent says so in a label)
    lb = (Constraint(HAPROXY_LABEL, "==", "yes"),) if spec.kind is ServiceKind.LOAD_BALANCER else ()
    # and one per host: two HAProxies of one load balancer on a host would bind the same ports (with
    # SO_REUSEPORT both succeed, so nothing would say so), and it would not be two load balancers
    rules = Rules(must=(*lb, *(Constraint.parse(c) for c in spec.placement.must)),
                  should=tuple(Constraint.parse(c) for c in spec.placement.should),
                  strategy=spec.placement.strategy,
                  one_per_host=spec.placement.one_per_host or spec.kind is ServiceKind.LOAD_BALANCER,
                  spread=spec.placement.spread)
    return Request(service.id, slots, cpus=spec.cpus, memory=spec.memory, rules=rules)


def _pins(state: ClusterState, service: Service, slots: tuple[int, ...], facts: list[HostFacts],
          ) -> tuple[dict[str | None, list[int]], dict[str, str], list[tuple[int, str]]]:
    """Slots grouped by the host their volumes pin them to (None: free to go anywhere), the reason of
    each pin, and the slots that cannot be placed at all, with why (a volume on a host that is down,
    volumes on two hosts, a volume being removed)."""
    stack = state.stacks[service.stack]
    schedulable = {h.name: h for h in facts}
    recreate = service.spec.on_host_loss == HostLoss.RECREATE_EMPTY
    groups: dict[str | None, list[int]] = {}
    reasons: dict[str, str] = {}
    stuck: list[tuple[int, str]] = []
    for slot in slots:
        where: dict[str, str] = {}
        problem = None
        shared = None
        for mount, volume in state.storage.volumes_of(stack.environment, stack.name, service.spec, slot):
            if volume is None or volume.host is None:
                if mount.scope != VolumeScope.INSTANCE:
                    shared = shared or volume_key(stack.name, mount, slot)
                continue
            if volume.removing:
                problem = f"volume {volume.name} is being removed"
                break
            host = schedulable.get(volume.host)
            if host is None or not host.schedulable:
                if recreate:
                    continue  # made again, empty, wherever the slot goes (on_host_loss: recreate-empty)
                state_word = host.state if host is not None else "not in this environment"
                problem = (f"volume {volume.name} lives on {volume.host}, which is {state_word} "
                           "(on_host_loss: wait; recreate-empty would start it elsewhere on an empty volume)")
                break
            where.setdefault(volume.host, volume.name)
        if problem is None and len(where) > 1:
            problem = "its volumes live on different hosts: " + ", ".join(
                f"{v} on {h}" for h, v in sorted(where.items()))
        if problem is not None:
            stuck.append((slot, problem))
            continue
        pin = next(iter(where), None)
        if pin is not None:
            reasons[pin] = f"volume {where[pin]} lives"
            groups.setdefault(pin, []).append(slot)
        else:  # slots sharing a volume not made yet go where the first of them goes
            groups.setdefault(SHARED + shared if shared else None, []).append(slot)
    return groups, reasons, stuck


SHARED = "\0shared:"
"""A group key: slots that share a volume no host holds yet (``SHARED`` + its name)."""


def _schedule_groups(service: Service, groups: dict[str | None, list[int]], reasons: dict[str, str],
                     facts: list[HostFacts], running: list[Running]) -> Decision:
    """Schedule each group of slots: pinned ones on their host; those sharing a new volume all where
    the first one goes; the rest anywhere."""
    placements: list[Placement] = []
    unplaced: list[Unplaced] = []
    base = _request(service, ())
    for key, slots in sorted(groups.items(), key=lambda g: min(g[1])):
        ordered = tuple(sorted(slots))
        if key is not None and key.startswith(SHARED):
            first = schedule([dataclasses.replace(base, slots=ordered[:1])], facts, running)
            _add(service, first, running, placements, unplaced)
            if not first.placements:
                unplaced += [Unplaced(service.id, s, first.unplaced[0].reason) for s in ordered[1:]]
                continue
            key, reasons = first.placements[0].host, {**reasons, first.placements[0].host:
                                                      f"volume {key[len(SHARED):]} will live"}
            ordered = ordered[1:]
            if not ordered:
                continue
        req = dataclasses.replace(base, slots=ordered, pin=key, pin_reason=reasons.get(key, "") if key else "")
        _add(service, schedule([req], facts, running), running, placements, unplaced)
    return Decision(tuple(placements), tuple(unplaced))


def _add(service: Service, decision: Decision, running: list[Running], placements: list[Placement],
         unplaced: list[Unplaced]) -> None:
    for p in decision.placements:  # later requests see this one's new reservations
        running.append(Running(p.service, p.host, service.spec.cpus, service.spec.memory))
    placements += decision.placements
    unplaced += decision.unplaced


def _global_slots(state: ClusterState, service: Service, facts: list[HostFacts], lost: Set[str]
                  ) -> tuple[dict[str, int], tuple[int, ...]]:
    """A global service: the hosts that should get an instance (host → a free slot), and the slots
    whose instance is on a host that no longer fits (left the environment, lost its label)."""
    rules = _request(service, ()).rules
    have = {i.host: i for i in state.instances_of(service.id)}
    fits = {h.name for h in facts if all(r.holds(h) for r in rules.must)}
    evict = tuple(sorted(i.slot for host, i in have.items() if (host not in fits and host not in lost)
                         or host not in state.hosts))
    used = {i.slot for i in have.values()}
    wanted: dict[str, int] = {}
    slot = 0
    for h in sorted(facts, key=lambda f: f.name):
        if h.name in fits and h.name not in have and h.schedulable:
            slot += 1
            while slot in used:
                slot += 1
            wanted[h.name] = slot
    return wanted, evict


def _decide_global(state: ClusterState, service: Service, facts: list[HostFacts], lost: Set[str],
                   running: list[Running]) -> PlacementsCommit | None:
    wanted, evict = _global_slots(state, service, facts, lost)
    placements, unplaced = [], []
    base = _request(service, ())
    for host, slot in sorted(wanted.items()):
        req = dataclasses.replace(base, slots=(slot,), pin=host, pin_reason="a global service runs one on each host")
        decision = schedule([req], facts, running)
        for p in decision.placements:
            running.append(Running(p.service, p.host, service.spec.cpus, service.spec.memory))
            placements.append((p.slot, p.host))
        unplaced += [(u.slot, f"{host}: {u.reason}") for u in decision.unplaced]
    why = tuple(unplaced) or None
    if placements or evict or why != service.unplaced:
        return PlacementsCommit(service.id, tuple(placements), why, evict)
    return None


def decide(state: ClusterState, lost: Set[str]) -> list[PlacementsCommit]:
    """A ``PlacementsCommit`` for every active service that is short of instances (or whose reason changed)."""
    running = [
        Running(i.service, i.host, state.services[i.service].spec.cpus, state.services[i.service].spec.memory)
        for i in state.instances.values()
        if i.service in state.services and i.host not in lost
    ]
    hosts: dict[str | None, list[HostFacts]] = {}
    commands = []
    for service in sorted(state.services.values(), key=lambda s: s.created):
        if service.state != ServiceState.ACTIVE:
            continue
        environment = state.environment_of_service(service.id)
        if environment not in hosts:
            hosts[environment] = host_facts(state, lost, environment)
        if service.spec.mode == ServiceMode.GLOBAL:
            command = _decide_global(state, service, hosts[environment], lost, running)
            if command is not None:
                commands.append(command)
            continue
        # a slot on a lost host, or on a host that left the service's environment, is placed again
        have = {i.slot for i in state.instances_of(service.id)
                if i.host not in lost and ((h := state.hosts.get(i.host)) is None or h.environment == environment)}
        missing = tuple(s for s in range(1, service.spec.scale + 1) if s not in have)
        if not missing:
            if service.unplaced:
                commands.append(PlacementsCommit(service.id, (), None))
            continue
        groups, pin_reasons, stuck = _pins(state, service, missing, hosts[environment])
        decision = _schedule_groups(service, groups, pin_reasons, hosts[environment], running)
        unplaced = tuple(sorted([*((u.slot, u.reason) for u in decision.unplaced), *stuck])) or None
        stranded = {i.slot for i in state.instances_of(service.id) if i.host not in lost
                    and (h := state.hosts.get(i.host)) is not None and h.environment != environment}
        evict = tuple(sorted(stranded & {slot for slot, _ in unplaced or ()}))
        if decision.placements or unplaced != service.unplaced or evict:
            commands.append(PlacementsCommit(service.id, tuple((p.slot, p.host) for p in decision.placements),
                                             unplaced, evict))
    return commands


__all__ = ["decide", "host_facts"]
