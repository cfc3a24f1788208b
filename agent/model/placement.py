"""What the leader commits so that every active service has its instances placed.

Pure: from the replicated state and the set of hosts lost for longer than the grace period, it
returns :class:`~agent.model.commands.PlacementsCommit` commands (one per service that needs any). A
slot needs a host when it has no instance, or when its instance sits on a lost host; the scheduler
picks the host and explains the slots it cannot place, which the state keeps as the service's
``unplaced`` reason.
"""

from __future__ import annotations

from collections.abc import Set

from agent.model.commands import PlacementsCommit
from agent.model.entities import HostState, Service, ServiceState
from agent.model.scheduler import Constraint, HostFacts, Request, Rules, Running, schedule
from agent.model.state import ClusterState


def host_facts(state: ClusterState, lost: Set[str]) -> list[HostFacts]:
    return [
        HostFacts(name=h.name, schedulable=h.state == HostState.ACTIVE and h.name not in lost, labels=h.labels,
                  cpus=h.cpus, memory=h.memory,
                  state=HostState.DISCONNECTED.value if h.name in lost else h.state.value)
        for h in state.hosts.values()
    ]


def _request(service: Service, slots: tuple[int, ...]) -> Request:
    spec = service.spec
    rules = Rules(must=tuple(Constraint.parse(c) for c in spec.placement.must),
                  should=tuple(Constraint.parse(c) for c in spec.placement.should),
                  strategy=spec.placement.strategy, one_per_host=spec.placement.one_per_host)
    return Request(service.id, slots, cpus=spec.cpus, memory=spec.memory, rules=rules)


def decide(state: ClusterState, lost: Set[str]) -> list[PlacementsCommit]:
    """A ``PlacementsCommit`` for every active service that is short of instances (or whose reason changed)."""
    running = [
        Running(i.service, i.host, state.services[i.service].spec.cpus, state.services[i.service].spec.memory)
        for i in state.instances.values()
        if i.service in state.services and i.host not in lost
    ]
    hosts = host_facts(state, lost)
    commands = []
    for service in sorted(state.services.values(), key=lambda s: s.created):
        if service.state != ServiceState.ACTIVE:
            continue
        have = {i.slot for i in state.instances_of(service.id) if i.host not in lost}
        missing = tuple(s for s in range(1, service.spec.scale + 1) if s not in have)
        if not missing:
            if service.unplaced:
                commands.append(PlacementsCommit(service.id, (), None))
            continue
        decision = schedule([_request(service, missing)], hosts, running)
        for p in decision.placements:  # later services see this one's new reservations
            running.append(Running(p.service, p.host, service.spec.cpus, service.spec.memory))
        unplaced = tuple((u.slot, u.reason) for u in decision.unplaced) or None
        if decision.placements or unplaced != service.unplaced:
            commands.append(PlacementsCommit(service.id, tuple((p.slot, p.host) for p in decision.placements),
                                             unplaced))
    return commands


__all__ = ["decide", "host_facts"]
