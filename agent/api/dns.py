"""``GET /v1/dns``: this node's DNS server (where it listens, its counters) and, with ``name=``, the
answer its own records give, for debugging (``corral dns query``)."""

from __future__ import annotations

from aiohttp import web

from agent.api.auth import grants, may_read
from agent.api.deps import DEPS
from agent.api.params import DNS_NAME, DNS_TYPE
from agent.model.dns import SUFFIX, Answer, DnsIndex, Rcode, normalise, zone_of
from agent.model.policy import is_admin


async def query(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    server = deps.dns
    name = DNS_NAME.find(request)
    out: dict[str, object] = {"node": deps.node.name, "server": server.to_view() if server is not None else None}
    if name is not None:
        if server is not None:
            index = server.index
        else:  # no server on this node (an agent run without one): the same records, built now
            index = DnsIndex()
            index.rebuild(deps.replica.state)
        answer = index.answer(name, DNS_TYPE.find(request) or "A")
        if not _visible(request, answer):
            answer = Answer(answer.name, answer.type, Rcode.NXDOMAIN, zone=zone_of(answer.name))
        out["answer"] = answer.to_view()
    return web.json_response(out)


def _visible(request: web.Request, answer: Answer) -> bool:
    """A caller sees the names of the environments it has a role in (an administrator: all)."""
    if answer.rcode is Rcode.OUTSIDE or is_admin(grants(request)):
        return True
    names = [answer.name, *(r.value for r in answer.records if r.type == "PTR")]
    for name in names:
        name = normalise(name)
        if name.endswith("." + SUFFIX):
            environment = name[:-len(SUFFIX) - 1].rsplit(".", 1)[-1]
            if not may_read(request, environment):
                return False
    return True
