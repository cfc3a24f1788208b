"""How the API shows the model's records: their wire form plus what a reader wants beside it
(names next to ids, counts), and one paginated, filtered collection format.

Collections answer ``{"items": […], "total": N, "limit": L, "offset": O}``; a filter matches a row
whose field equals the value, or whose ``<field>_name`` does (``?stack=web-server`` or ``?stack=st3``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from aiohttp import web

from agent.api.params import LIMIT, OFFSET, StrParam
from agent.model.codec import to_wire
from agent.model.entities import Event, Health, Host, Instance, KvEntry, Service, Stack, Status
from agent.model.errors import not_found
from agent.model.policy import Grants, role_in
from agent.model.spec import ServiceMode
from agent.model.state import ClusterState
from agent.model.upgrade import Phase, Upgrade

Row = dict[str, object]


def wire(record: object) -> Row:
    out = to_wire(record)
    assert isinstance(out, dict)
    return out


def host_view(state: ClusterState, host: Host) -> Row:
    return {**wire(host), "containers": state.count_on(host.name)}


def stack_view(state: ClusterState, stack: Stack) -> Row:
    return {**wire(stack), "services": [s.id for s in state.services_of(stack.id)]}


def service_view(state: ClusterState, service: Service) -> Row:
    instances = state.instances_of(service.id)
    running = [i for i in instances if i.status == Status.RUNNING]
    healthy = sum(1 for i in running if i.health == Health.HEALTHY)
    scale = len(instances) if service.spec.mode == ServiceMode.GLOBAL else service.spec.scale
    up = state.current_upgrade(service.id)
    upgrade = None if up is None else {
        "id": up.id, "state": up.state.value, "reason": up.reason,
        "done": sum(1 for p in up.slots if p.phase.value == "done"), "slots": len(up.slots)}
    return {**wire(service), "stack_name": state.stacks[service.stack].name, "scale": scale,
            "running": len(running), "healthy": healthy if service.spec.health_check else None,
            "containers": [i.id for i in instances], "upgrade": upgrade}


def container_view(state: ClusterState, inst: Instance) -> Row:
    service = state.services.get(inst.service)
    stack = state.stacks.get(service.stack) if service else None
    waiting = next((why for slot, why in (service.unplaced or ()) if slot == inst.slot), None) if service else None
    host = state.hosts.get(inst.host)
    return {**wire(inst), "name": state.container_name(inst) if service else inst.id,
            "service_name": service.name if service else None, "stack": service.stack if service else None,
            "stack_name": stack.name if stack else None, "state": inst.status.value,
            "host_state": host.state.value if host else None, "waiting": waiting,
            "image": state.spec_of(inst).image if service else None}


def upgrade_view(state: ClusterState, up: Upgrade) -> dict[str, object]:
    """The record as users read it: what changes (field: [from, to]), the strategies, every slot's
    progress with its containers' names, counts, and the notes (a slot done another way than asked)."""
    before, after = up.previous.to_request(), up.next.to_request()
    changes = {k: [before[k], after[k]] for k in after if before.get(k) != after[k]}
    service = state.services.get(up.service)
    slots = []
    for p in up.slots:
        row = to_wire(p)
        assert isinstance(row, dict)
        for key in ("new", "old"):
            inst = state.instances.get(row[key] or "")
            row[f"{key}_name"] = state.container_name(inst) if inst is not None and service is not None else None
        slots.append(row)
    counts = {phase.value: sum(1 for p in up.slots if p.phase is phase) for phase in Phase}
    return {"id": up.id, "service": up.service, "state": up.state.value, "reason": up.reason,
            "rolling_back": up.rolling_back, "changes": changes, "previous_version": up.previous_version,
            "next_version": up.next_version, "image": [up.previous.image, up.next.image],
            "strategy": up.strategy.to_request(), "rollback_strategy": up.rollback_strategy.to_request(),
            "batch": up.batch, "failures": up.failures, "slots": slots, "counts": counts, "notes": list(up.notes),
            "started_at": up.started_at, "updated_at": up.updated_at, "finished_at": up.finished_at,
            "next_batch_at": up.next_batch_at, "by": up.by, "created": up.created, "updated": up.updated}


def event_view(event: Event) -> Row:
    return wire(event)


def kv_view(key: str, entry: KvEntry) -> Row:
    out: Row = {"key": key, "create_index": entry.create_index, "modify_index": entry.modify_index}
    value = entry.value
    if isinstance(value, bytes):
        try:
            out["value"] = value.decode()
        except UnicodeDecodeError:
            out["value_base64"] = base64.b64encode(value).decode()
    else:
        out["value"] = value
    return out


def page(request: web.Request, rows: Iterable[Row], filters: Sequence[StrParam] = ()) -> web.Response:
    """One page of ``rows``, filtered by the query's ``filters``."""
    limit, offset = LIMIT.get(request), OFFSET.get(request)
    wanted = [(p.name, value) for p in filters if (value := p.find(request)) is not None]
    matching = [r for r in rows if all(str(r.get(k)) == v or r.get(f"{k}_name") == v for k, v in wanted)]
    return web.json_response({"items": matching[offset:offset + limit], "total": len(matching), "limit": limit,
                              "offset": offset})


# ---------------------------------------------------------------------- finding what a path names


R = TypeVar("R")


def _find(collection: Mapping[str, R], key: str, what: str, named: Callable[[R], bool]) -> R:
    """The record with id ``key``, else the one record ``named`` accepts; 404 otherwise (none, or several)."""
    if key in collection:
        return collection[key]
    matches = [r for r in collection.values() if named(r)]
    if len(matches) == 1:
        return matches[0]
    raise not_found(what, key)


def stack_env(state: ClusterState, stack: Stack) -> str:
    return stack.environment


def service_env(state: ClusterState, service: Service) -> str | None:
    stack = state.stacks.get(service.stack)
    return stack.environment if stack else None


def container_env(state: ClusterState, inst: Instance) -> str | None:
    return state.environment_of_service(inst.service)


def readable(grants: Grants, environment: str | None) -> bool:
    """A record in an environment the caller has no role in is not shown, and not found by name."""
    return environment is not None and role_in(grants, environment) is not None


def find_stack(state: ClusterState, key: str, grants: Grants) -> Stack:
    """By id or by name, among the stacks the caller may see."""
    stacks = {k: s for k, s in state.stacks.items() if readable(grants, s.environment)}
    return _find(stacks, key, "stack", lambda s: s.name == key)


def find_service(state: ClusterState, key: str, grants: Grants) -> Service:
    """By id, ``stack/service`` or a service name that is unique among those the caller may see."""
    stack_name, slash, name = key.rpartition("/")
    services = {k: s for k, s in state.services.items() if readable(grants, service_env(state, s))}
    return _find(services, key, "service", lambda s: s.name == name and (
        not slash or state.stacks[s.stack].name == stack_name))


def find_container(state: ClusterState, key: str, grants: Grants) -> Instance:
    """By instance id or container name (``stack-service-slot``), among those the caller may see."""
    instances = {k: i for k, i in state.instances.items() if readable(grants, container_env(state, i))}
    return _find(instances, key, "container",
                 lambda i: i.service in state.services and state.container_name(i) == key)


def find_host(state: ClusterState, key: str) -> Host:
    return _find(state.hosts, key, "host", lambda _h: False)
