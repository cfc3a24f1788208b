"""Gossip membership as the rest of the agent sees it, and ``GET /v1/members`` (+ ``/stats``).

:class:`GossipMembership` adapts :class:`mesh.node.GossipNode` to the runtime's ``Membership``
protocol: members as :class:`agent.leader.MemberInfo` and a change callback per gossip event.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from aiohttp import web

from agent.leader import MemberInfo
from mesh.node import GossipNode
from mesh.swim import Event, Member

GOSSIP_KEY = web.AppKey("gossip", GossipNode)


class GossipMembership:
    def __init__(self, node: GossipNode) -> None:
        self.node = node

    def members(self) -> list[MemberInfo]:
        return [MemberInfo(m.name, m.address[0], m.state.value, m.meta) for m in self.node.members()]

    def on_change(self, callback: Callable[[], None]) -> None:
        def on_event(_event: Event) -> None:
            callback()

        self.node.subscribe(on_event)


def member_json(node: GossipNode, m: Member) -> dict[str, Any]:
    changed = datetime.datetime.fromtimestamp(node.monotonic_to_wall(m.changed_at), tz=datetime.UTC)
    return {
        "name": m.name,
        "address": f"{m.address[0]}:{m.address[1]}",
        "state": m.state.value,
        "incarnation": m.incarnation,
        "meta": dict(m.meta),
        "changed_at": changed.isoformat(timespec="milliseconds"),
        "self": m.name == node.name,
    }


async def list_members(request: web.Request) -> web.Response:
    node = request.app[GOSSIP_KEY]
    state = request.query.get("state")
    items = [member_json(node, m) for m in sorted(node.members(), key=lambda m: m.name)]
    if state:
        items = [i for i in items if i["state"] == state]
    counts: dict[str, int] = {}
    for m in node.members():
        counts[m.state.value] = counts.get(m.state.value, 0) + 1
    return web.json_response({"node": node.name, "items": items, "total": len(items), "counts": counts})


async def member_stats(request: web.Request) -> web.Response:
    node = request.app[GOSSIP_KEY]
    return web.json_response({"node": node.name, **node.stats()})


def add_routes(app: web.Application, node: GossipNode) -> None:
    app[GOSSIP_KEY] = node
    app.router.add_get("/v1/members", list_members)
    app.router.add_get("/v1/members/stats", member_stats)
