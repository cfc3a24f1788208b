"""A stack's topology page: the graph (:mod:`agent.model.topology`) drawn as SVG on the server
(:mod:`agent.ui.diagram`), fetched again when the live feed says a service, container or host changed.
It needs what ``GET /v1/stacks/{id}`` needs: read in the stack's environment (a 404 without a role there)."""

from __future__ import annotations

from aiohttp import web
from markupsafe import Markup

from agent.api.auth import grants
from agent.api.deps import DEPS
from agent.api.views import find_stack
from agent.model import topology
from agent.model.topology import Node, Topology
from agent.ui.diagram import render as draw
from agent.ui.render import render


def _graph(request: web.Request) -> tuple[str, Topology]:
    state = request.app[DEPS].replica.state
    stack = find_stack(state, request.match_info["id"], grants(request))
    return stack.id, topology.build(state, stack.id)


def _href(node: Node) -> str | None:
    return f"/services/{node.service_id}" if node.service_id else None


def _context(stack_id: str, graph: Topology) -> dict[str, object]:
    return {"graph": graph, "stack_id": stack_id, "svg": Markup(draw(graph, _href))}  # draw escapes every name


async def topology_page(request: web.Request) -> web.StreamResponse:
    return render(request, "topology.html", _context(*_graph(request)))


async def topology_fragment(request: web.Request) -> web.StreamResponse:
    return render(request, "_topology.html", _context(*_graph(request)))


__all__ = ["topology_fragment", "topology_page"]
