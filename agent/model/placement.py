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
    rules = Rules(must=tuple(Constraint.parse(c) for c in spec.placement.must),
                  should=tuple(Constraint.parse(c) for c in spec.placement.should),
                  strategy=spec.placement.strategy, one_per_host=spec.placement.one_per_host,
                  spread=spec.placement.spread)
    return Request(service.id, slots, cpus=spec.cpus, memory=spec.memory, rules=rules)


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
        # a slot on a lost host, or on a host that left the service's environment, is placed again
        have = {i.slot for i in state.instances_of(service.id)
                if i.host not in lost and ((h := state.hosts.get(i.host)) is None or h.environment == environment)}
        missing = tuple(s for s in range(1, service.spec.scale + 1) if s not in have)
        if not missing:
            if service.unplaced:
                commands.append(PlacementsCommit(service.id, (), None))
            continue
        decision = schedule([_request(service, missing)], hosts[environment], running)
        for p in decision.placements:  # later services see this one's new reservations
            running.append(Running(p.service, p.host, service.spec.cpus, service.spec.memory))
        unplaced = tuple((u.slot, u.reason) for u in decision.unplaced) or None
        stranded = {i.slot for i in state.instances_of(service.id) if i.host not in lost
                    and (h := state.hosts.get(i.host)) is not None and h.environment != environment}
        evict = tuple(sorted(stranded & {u.slot for u in decision.unplaced}))
        if decision.placements or unplaced != service.unplaced or evict:
            commands.append(PlacementsCommit(service.id, tuple((p.slot, p.host) for p in decision.placements),
                                             unplaced, evict))
    return commands


__all__ = ["decide", "host_facts"]
