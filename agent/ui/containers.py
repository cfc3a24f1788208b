"""The containers page: server-side filtering (stack, service, host, state, a name's part) and
pagination, so a cluster of thousands of containers is a page of fifty, rendered from this node's
replica in milliseconds (Rancher's hosts page broke at 1,000-2,000 containers, rancher/rancher#8393).
The filters are the query string, so a filtered page is a link; the table is fetched again (same
query) when the live feed says instances changed."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from agent.api.deps import DEPS
from agent.api.views import container_view
from agent.errors import BadRequest
from agent.model.entities import Instance, Status
from agent.model.state import ClusterState
from agent.ui.render import render
from agent.ui.scope import shown

FILTERS = ("stack", "service", "host", "state", "q")
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
MAX_FILTER = 256


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise BadRequest(f"{name} is a whole number from {low} to {high}", field=name)
    return int(raw)


def filters(request: web.Request) -> dict[str, str]:
    out = {}
    for name in FILTERS:
        value = request.query.get(name, "").strip()
        if len(value) > MAX_FILTER:
            raise BadRequest(f"{name} is at most {MAX_FILTER} characters", field=name)
        if value:
            out[name] = value
    if "state" in out and out["state"] not in {s.value for s in Status}:
        raise BadRequest("state is one of " + ", ".join(s.value for s in Status), field="state")
    return out


def _matches(state: ClusterState, inst: Instance, wanted: dict[str, str]) -> bool:
    service = state.services.get(inst.service)
    if service is None:
        return False
    stack = state.stacks.get(service.stack)
    if "stack" in wanted and wanted["stack"] not in (service.stack, stack.name if stack else None):
        return False
    if "service" in wanted and wanted["service"] not in (service.id, service.name):
        return False
    if "host" in wanted and inst.host != wanted["host"]:
        return False
    if "state" in wanted and inst.status.value != wanted["state"]:
        return False
    return "q" not in wanted or wanted["q"].lower() in state.container_name(inst).lower()


def listing(request: web.Request) -> dict[str, object]:
    state, visible = request.app[DEPS].replica.state, shown(request)
    wanted = filters(request)
    limit = _int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int(request, "offset", 0, 0, 10**9)
    matching = [i for i in state.instances.values()
                if visible(state.environment_of_service(i.service)) and _matches(state, i, wanted)]
    matching.sort(key=lambda i: (state.container_name(i), i.id))
    rows = [container_view(state, i) for i in matching[offset:offset + limit]]

    def link(at: int) -> str:
        return "/containers?" + urlencode({**wanted, "limit": limit, "offset": at})

    return {"containers": rows, "total": len(matching), "limit": limit, "offset": offset, "filters": wanted,
            "query": urlencode({**wanted, "limit": limit, "offset": offset}),
            "previous": link(max(0, offset - limit)) if offset > 0 else None,
            "next": link(offset + limit) if offset + limit < len(matching) else None,
            "states": [s.value for s in Status],
            "hosts": sorted(h.name for h in state.hosts.values() if visible(h.environment))}


async def containers_page(request: web.Request) -> web.StreamResponse:
    return render(request, "containers.html", listing(request))


async def containers_fragment(request: web.Request) -> web.StreamResponse:
    return render(request, "_containers.html", listing(request))


__all__ = ["containers_fragment", "containers_page", "filters", "listing"]
