"""A service: its state, scale, containers with their health and reason, its upgrade's progress, and
the buttons (scale, stop/start, upgrade, pause/resume/rollback) for those who may deploy in its
environment. Every button calls the function the API's route calls (``agent.api.services.scale``,
``agent.api.upgrades.start`` …) with the caller as the actor: the same checks, the same command, the
same audit; the guard has checked the Origin and the CSRF token before."""

from __future__ import annotations

import json

from aiohttp import web

from agent.api import services as api_services
from agent.api import upgrades as api_upgrades
from agent.api.auth import grants
from agent.api.deps import DEPS
from agent.api.views import container_view, find_service, service_env, service_view, upgrade_view
from agent.errors import BadRequest
from agent.model.entities import Service, ServiceState
from agent.model.policy import Permission, allowed
from agent.model.upgrade import Control
from agent.ui.render import is_htmx, render

MAX_FORM_FIELD = 512


def _context(request: web.Request, service: Service | None = None) -> dict[str, object]:
    state = request.app[DEPS].replica.state
    if service is None:
        service = find_service(state, request.match_info["id"], grants(request))  # 404 if not the caller's
    else:
        service = state.services[service.id]
    up = state.current_upgrade(service.id)
    return {"service": service_view(state, service), "stack": state.stacks[service.stack],
            "upgrade": upgrade_view(state, up) if up is not None else None,
            "containers": [container_view(state, i) for i in state.instances_of(service.id)],
            "can_deploy": allowed(grants(request), Permission.DEPLOY, service_env(state, service))}


async def service_page(request: web.Request) -> web.StreamResponse:
    return render(request, "service.html", _context(request))


async def service_fragment(request: web.Request) -> web.StreamResponse:
    return render(request, "_service.html", _context(request))


async def _done(request: web.Request, service: Service, message: str) -> web.StreamResponse:
    """After an action: htmx gets the service's fresh status part; a plain form goes back to its page."""
    if not is_htmx(request):
        raise web.HTTPSeeOther(f"/services/{service.id}")
    response = render(request, "_service.html", _context(request, service))
    response.headers["HX-Trigger"] = json.dumps({"corral:done": message})  # ui.js says it in the flash line
    return response


async def _field(request: web.Request, name: str) -> str:
    value = (await request.post()).get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{name} is required", field=name)
    if len(value) > MAX_FORM_FIELD:
        raise BadRequest(f"{name} is at most {MAX_FORM_FIELD} characters", field=name)
    return value.strip()


async def scale(request: web.Request) -> web.StreamResponse:
    service = api_services.changing(request, request.match_info["id"])  # 404 / 403 before the form is read
    raw = await _field(request, "scale")
    value: object = int(raw) if raw.isascii() and raw.isdigit() else raw  # not a number: the spec's own 400 says so
    await api_services.scale(request, service, value)
    return await _done(request, service, f"{service.name}: scale set to {raw}")


async def stop(request: web.Request) -> web.StreamResponse:
    service = api_services.changing(request, request.match_info["id"])
    await api_services.set_state(request, service, ServiceState.STOPPED, restart=False)
    return await _done(request, service, f"{service.name}: stopping")


async def start(request: web.Request) -> web.StreamResponse:
    service = api_services.changing(request, request.match_info["id"])
    await api_services.set_state(request, service, ServiceState.ACTIVE, restart=False)
    return await _done(request, service, f"{service.name}: starting")


async def upgrade(request: web.Request) -> web.StreamResponse:
    service = api_services.changing(request, request.match_info["id"])
    image = await _field(request, "image")
    body: dict[str, object] = {"spec": {"image": image}}
    form = await request.post()
    strategy: dict[str, object] = {}
    for key in ("parallelism", "interval"):  # the rest of the strategy: the service's own, or the defaults
        value = form.get(key)
        if isinstance(value, str) and (text := value.strip()):
            strategy[key] = int(text) if text.isascii() and text.isdigit() else text  # else the model's 400
    if strategy:
        body["strategy"] = strategy
    await api_upgrades.start(request, service, body)
    return await _done(request, service, f"{service.name}: upgrading to {image}")


async def _control(request: web.Request, action: Control) -> web.StreamResponse:
    service = api_services.changing(request, request.match_info["id"])
    await api_upgrades.control(request, service, action)
    return await _done(request, service, f"{service.name}: upgrade {action}")


async def pause(request: web.Request) -> web.StreamResponse:
    return await _control(request, Control.PAUSE)


async def resume(request: web.Request) -> web.StreamResponse:
    return await _control(request, Control.RESUME)


async def rollback(request: web.Request) -> web.StreamResponse:
    return await _control(request, Control.ROLLBACK)


__all__ = ["pause", "resume", "rollback", "scale", "service_fragment", "service_page", "start", "stop", "upgrade"]
