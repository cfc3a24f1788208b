"""What the leader commits so that every active service has its instances placed.

Pure: from the replicated state and the set of hosts lost for longer than the grace period, it
returns ``placements.commit`` commands (one per service that needs any). A slot needs a host when
it has no instance, or when its instance sits on a lost host; the scheduler picks the host and
explains the slots it cannot place, which the state keeps as the service's ``unplaced`` reason.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

from agent.scheduler import Constraint, HostFacts, Request, Rules, Running, schedule
from agent.state import ClusterState


def host_facts(state: ClusterState, lost: Set[str]) -> list[HostFacts]:
    return [
        HostFacts(name=h["name"], schedulable=h["state"] == "active" and h["name"] not in lost,
                  labels=h["labels"], cpus=h["cpus"], memory=h["memory"],
                  state="disconnected" if h["name"] in lost else h["state"])
        for h in state.hosts.values()
    ]


def _request(service: dict[str, Any], slots: tuple[int, ...]) -> Request:
    spec = service["spec"]
    placement = spec["placement"]
    rules = Rules(must=tuple(Constraint.parse(c) for c in placement["must"]),
                  should=tuple(Constraint.parse(c) for c in placement["should"]),
                  strategy=placement["strategy"], one_per_host=placement["one_per_host"])
    return Request(service["id"], slots, cpus=spec["cpus"], memory=spec["memory"], rules=rules)


def decide(state: ClusterState, lost: Set[str]) -> list[dict[str, Any]]:
    """``placements.commit`` commands for every active service that is short of instances."""
    running = [
        Running(i["service"], i["host"], state.services[i["service"]]["spec"]["cpus"],
                state.services[i["service"]]["spec"]["memory"])
        for i in state.instances.values()
        if i["service"] in state.services and i["host"] not in lost
    ]
    hosts = host_facts(state, lost)
    commands = []
    for service in sorted(state.services.values(), key=lambda s: s["created"]):
        if service["state"] != "active":
            continue
        have = {i["slot"]: i for i in state.instances_of(service["id"]) if i["host"] not in lost}
        missing = tuple(s for s in range(1, service["spec"]["scale"] + 1) if s not in have)
        if not missing:
            if service.get("unplaced"):
                commands.append({"op": "placements.commit", "service": service["id"], "placements": [],
                                 "unplaced": None})
            continue
        decision = schedule([_request(service, missing)], hosts, running)
        for p in decision.placements:  # later services see this one's new reservations
            running.append(Running(p.service, p.host, service["spec"]["cpus"], service["spec"]["memory"]))
        unplaced = [[u.slot, u.reason] for u in decision.unplaced] or None
        if decision.placements or unplaced != service.get("unplaced"):
            commands.append({"op": "placements.commit", "service": service["id"],
                             "placements": [[p.slot, p.host] for p in decision.placements], "unplaced": unplaced})
    return commands
