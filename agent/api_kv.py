"""``/v1/raft`` and the key-value area ``/v1/kv/{key}``, on every node.

- ``GET /v1/kv/{key}``: ``?consistent`` for a linearizable read (ReadIndex via the leader), stale
  (local) otherwise; ``?index=N&wait=30s`` blocks until the applied index passes N.
- ``PUT /v1/kv/{key}`` (body: the value) and ``DELETE``: ``?cas=INDEX`` succeeds only if the key's
  modify index is INDEX (0: the key must not exist).
- A write that reaches a follower is forwarded to the leader's API; with no leader it fails at once
  with 503 and a JSON body saying so. Every response carries ``X-Corral-Index`` (applied index).
"""

from __future__ import annotations

import base64
import re
from typing import Any

import aiohttp
import msgpack
from aiohttp import web

from agent.cluster import INTERNAL_PROPOSE, Cluster, NoLeader
from agent.errors import BadRequest, Conflict, NotFound
from agent.state import command

CLUSTER_KEY = web.AppKey("cluster", Cluster)
FORWARDED = "X-Corral-Forwarded"
MAX_VALUE = 512 * 1024
MAX_WAIT = 300.0
WAIT_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")


def _wait_seconds(text: str) -> float:
    match = WAIT_RE.match(text)
    if not match:
        raise BadRequest(f"wait={text!r} is not a duration such as 30s or 500ms", field="wait")
    value = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]
    return min(value, MAX_WAIT)


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise BadRequest(f"{name}={raw!r} is not a log index (a whole number ≥ 0)", field=name)
    return int(raw)


@web.middleware
async def index_header(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    cluster = request.app.get(CLUSTER_KEY)
    if cluster is not None and not response.prepared:
        response.headers["X-Corral-Index"] = str(cluster.applied_index)
        leader = cluster.raft.core.leader
        response.headers["X-Corral-Leader"] = leader or ""
        if leader is None:  # a read answered now may miss writes: say so on every response
            response.headers["X-Corral-Stale"] = "no leader known: this node's replica may be behind"
    return response


async def forward_to_leader(request: web.Request, cluster: Cluster) -> web.Response:
    """Replay a write on the leader's API and hand its answer back unchanged."""
    if request.headers.get(FORWARDED):
        raise NoLeader("forwarded write reached a node that is not the leader; leadership is changing, retry")
    url = cluster.leader_api()
    if url is None:
        raise NoLeader("no leader is elected (or known to this node): writes cannot be accepted now")
    body = await request.read()
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.request(
            request.method, url + request.path_qs, data=body,
            headers={FORWARDED: "1", "Content-Type": request.content_type},
        ) as resp:
            payload = await resp.read()
            out = web.Response(status=resp.status, body=payload, content_type=resp.content_type)
            if "X-Corral-Index" in resp.headers:
                out.headers["X-Corral-Leader-Index"] = resp.headers["X-Corral-Index"]
            return out
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise NoLeader(f"the leader's API at {url} did not answer: {exc}") from exc


def _kv_json(key: str, entry: dict[str, Any]) -> dict[str, Any]:
    value = entry["value"]
    if isinstance(value, bytes):
        try:
            return {"key": key, "value": value.decode(), "create_index": entry["create_index"],
                    "modify_index": entry["modify_index"]}
        except UnicodeDecodeError:
            return {"key": key, "value_base64": base64.b64encode(value).decode(),
                    "create_index": entry["create_index"], "modify_index": entry["modify_index"]}
    return {"key": key, "value": value, "create_index": entry["create_index"], "modify_index": entry["modify_index"]}


async def kv_get(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    key = request.match_info["key"]
    wait_index = _int_param(request, "index")
    if wait_index is not None:
        await cluster.raft.wait_applied(wait_index + 1, _wait_seconds(request.query.get("wait", "30s")))
    mode = "consistent" if "consistent" in request.query else "stale"
    if mode == "consistent":
        await cluster.consistent()
    entry = cluster.state.kv.get(key)
    if entry is None:
        raise NotFound(f"no key {key!r}", mode=mode)
    body = _kv_json(key, entry)
    body["mode"] = mode
    return web.json_response(body)


async def kv_put(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    if not cluster.is_leader:
        return await forward_to_leader(request, cluster)
    body = await request.read()
    if len(body) > MAX_VALUE:
        raise BadRequest(f"a value is at most {MAX_VALUE} bytes", field="value")
    key = request.match_info["key"]
    result = await cluster.write(command("kv.put", key=key, value=body, cas=_int_param(request, "cas")))
    return _result(result, key)


async def kv_delete(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    if not cluster.is_leader:
        return await forward_to_leader(request, cluster)
    key = request.match_info["key"]
    result = await cluster.write(command("kv.delete", key=key, cas=_int_param(request, "cas")))
    return _result(result, key)


def _result(result: dict[str, Any], key: str) -> web.Response:
    if result.get("ok"):
        return web.json_response({"key": key, **{k: v for k, v in result.items() if k != "ok"}})
    if result.get("error") == "cas_failed":
        raise Conflict(result["message"], field="cas")
    raise BadRequest(result.get("message", "refused"), field=result.get("field"))


async def internal_propose(request: web.Request) -> web.Response:
    """A sealed command from another member (a reconciler's status report, say), proposed here."""
    cluster = request.app[CLUSTER_KEY]
    body = await request.read()
    plain = cluster.sealer.open(body) if cluster.sealer is not None else None
    if plain is None:
        return web.json_response({"error": "forbidden", "message": "not sealed with the cluster's key"}, status=403)
    result = await cluster.write(plain)
    return web.Response(body=msgpack.packb(result, use_bin_type=True), content_type="application/octet-stream")


async def raft_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[CLUSTER_KEY].raft.status())


def add_routes(app: web.Application, cluster: Cluster) -> None:
    app[CLUSTER_KEY] = cluster
    app.router.add_get("/v1/raft", raft_status)
    app.router.add_post(INTERNAL_PROPOSE, internal_propose)
    app.router.add_get("/v1/kv/{key:.+}", kv_get)
    app.router.add_put("/v1/kv/{key:.+}", kv_put)
    app.router.add_delete("/v1/kv/{key:.+}", kv_delete)
