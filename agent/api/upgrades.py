"""A service's upgrade: ``/v1/services/{id}/upgrade`` (the current one and the last ones), start, pause,
resume, rollback. The record and its rules are the model's (``agent/model/upgrade.py``); every request
is checked against this node's replica before it is proposed (a 400 naming the field, a 404, a 409
that says why), and checked again when applied."""

from __future__ import annotations

import time

from aiohttp import web

from agent.api.auth import authorize, grants, write
from agent.api.body import json_object
from agent.api.deps import DEPS
from agent.api.params import ID
from agent.api.services import check_image
from agent.api.views import find_service, service_env
from agent.errors import BadRequest
from agent.model import upgrade as upgrade_rules
from agent.model import upgrades
from agent.model.codec import to_wire
from agent.model.commands import UpgradeControl, UpgradeStart
from agent.model.entities import Service
from agent.model.errors import conflict
from agent.model.policy import Permission
from agent.model.spec import SERVICE_FIELDS
from agent.model.state import ClusterState
from agent.model.upgrade import Control, Upgrade

UPGRADE_BODY = ("spec", "strategy", "rollback_strategy")


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
    counts = {phase.value: sum(1 for p in up.slots if p.phase is phase) for phase in upgrade_rules.Phase}
    return {"id": up.id, "service": up.service, "state": up.state.value, "reason": up.reason,
            "rolling_back": up.rolling_back, "changes": changes, "previous_version": up.previous_version,
            "next_version": up.next_version, "image": [up.previous.image, up.next.image],
            "strategy": up.strategy.to_request(), "rollback_strategy": up.rollback_strategy.to_request(),
            "batch": up.batch, "failures": up.failures, "slots": slots, "counts": counts, "notes": list(up.notes),
            "started_at": up.started_at, "updated_at": up.updated_at, "finished_at": up.finished_at,
            "next_batch_at": up.next_batch_at, "by": up.by, "created": up.created, "updated": up.updated}


def _service(request: web.Request, permission: Permission) -> Service:
    state = request.app[DEPS].replica.state
    service = find_service(state, ID.get(request), grants(request))
    if permission is not Permission.READ:
        authorize(request, permission, service_env(state, service))
    return service


async def get_upgrade(request: web.Request) -> web.Response:
    state = request.app[DEPS].replica.state
    service = _service(request, Permission.READ)
    history = state.upgrades.get(service.id, ())
    return web.json_response({"service": service.id, "current": upgrade_view(state, history[-1]) if history else None,
                              "history": [upgrade_view(state, u) for u in reversed(history)]})


async def start_upgrade(request: web.Request) -> web.Response:
    service = _service(request, Permission.DEPLOY)
    body = await json_object(request, UPGRADE_BODY)
    return web.json_response(await start(request, service, body), status=201)


async def start(request: web.Request, service: Service, body: dict[str, object]) -> dict[str, object]:
    """Begin an upgrade of ``service`` for the caller (the API's route and the web UI's form): checked
    against this node's replica first (a 400 naming the field, a 409 saying why), then proposed; the
    upgrade's view once this node has applied it."""
    deps = request.app[DEPS]
    spec = body.get("spec")
    if not isinstance(spec, dict) or not spec:
        raise BadRequest("spec names the fields to change (image, environment…): a non-empty object", field="spec")
    unknown = sorted(k for k in spec if k not in SERVICE_FIELDS)
    if unknown:
        raise BadRequest(f"{unknown[0]} is not a field of a service", field=f"spec.{unknown[0]}")
    for key in ("strategy", "rollback_strategy"):
        if body.get(key) is not None and not isinstance(body[key], dict):
            raise BadRequest(f"{key} must be an object", field=key)
    strategy = body.get("strategy")
    rollback = body.get("rollback_strategy")
    cmd = UpgradeStart(service.id, spec, strategy if isinstance(strategy, dict) else None,
                       rollback if isinstance(rollback, dict) else None, time.time())
    state = deps.replica.state
    checked_service, next_spec = upgrades.check_start(state, cmd)  # 400/409 naming the field, before proposing
    upgrades.strategies_for(state, checked_service, next_spec, cmd)
    if "image" in spec:
        try:
            await check_image(deps.engine, next_spec.image)
        except BadRequest as exc:
            raise BadRequest(exc.message, field="spec.image") from None
    outcome = await write(request, cmd)
    up = deps.replica.state.current_upgrade(service.id)
    assert up is not None and up.id == outcome.id
    return upgrade_view(deps.replica.state, up)


async def control(request: web.Request, service: Service, action: Control) -> dict[str, object]:
    """Pause, resume or roll back ``service``'s upgrade for the caller (the API's routes and the web UI's
    buttons): a 409 saying why before anything is proposed; the upgrade's view once applied."""
    deps = request.app[DEPS]
    up = deps.replica.state.current_upgrade(service.id)
    if up is None:
        raise conflict(f"service {service.name} has no upgrade to {action}"
                       + (": there is nothing to roll back to" if action is Control.ROLLBACK else ""), "action")
    upgrade_rules.control(up, action)  # a 409 that says why, before anything is proposed
    await write(request, UpgradeControl(service.id, action, time.time()))
    current = deps.replica.state.current_upgrade(service.id)
    assert current is not None
    return upgrade_view(deps.replica.state, current)


async def _control(request: web.Request, action: Control) -> web.Response:
    return web.json_response(await control(request, _service(request, Permission.DEPLOY), action))


async def pause_upgrade(request: web.Request) -> web.Response:
    return await _control(request, Control.PAUSE)


async def resume_upgrade(request: web.Request) -> web.Response:
    return await _control(request, Control.RESUME)


async def rollback_upgrade(request: web.Request) -> web.Response:
    return await _control(request, Control.ROLLBACK)


__all__ = ["control", "get_upgrade", "pause_upgrade", "resume_upgrade", "rollback_upgrade", "start", "start_upgrade",
           "upgrade_view"]
