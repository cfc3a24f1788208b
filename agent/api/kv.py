"""The key-value area ``/v1/kv/{key}``, on every node.

- ``GET``: ``?consistent=1`` for a linearizable read (ReadIndex via the leader), stale (local)
  otherwise; ``?index=N&wait=30s`` first waits until this node has applied past N.
- ``PUT`` (body: the value, at most 512 KiB) and ``DELETE`` (not of a key under ``corral/``, the
  cluster's own: a 400): ``?cas=INDEX`` succeeds only if the key's
  modify index is INDEX (0: the key must not exist); a mismatch is a 409.
"""

from __future__ import annotations

from aiohttp import web

from agent.api.auth import write
from agent.api.deps import DEPS
from agent.api.params import CAS, CONSISTENT, INDEX, KEY, WAIT
from agent.api.views import kv_view
from agent.errors import BadRequest, NotFound
from agent.model.commands import KvDelete, KvPut

MAX_VALUE = 512 * 1024
RESERVED_PREFIX = "corral/"
"""Keys the cluster keeps for itself (the last drill report, :mod:`agent.api.drills`): not written here."""


async def get(request: web.Request) -> web.Response:
    replica = request.app[DEPS].replica
    key = KEY.get(request)
    wait_index = INDEX.find(request)
    if wait_index is not None:
        await replica.wait_applied(wait_index + 1, WAIT.get(request))
    mode = "consistent" if CONSISTENT.get(request) else "stale"
    if mode == "consistent":
        await replica.consistent()
    entry = replica.state.kv.get(key)
    if entry is None:
        raise NotFound(f"no key {key!r}", mode=mode)
    return web.json_response({**kv_view(key, entry), "mode": mode})


def _writable(key: str) -> str:
    if key.startswith(RESERVED_PREFIX):
        raise BadRequest(f"keys under {RESERVED_PREFIX} are the cluster's own (the last drill report: "
                         "PUT /v1/drills/report)", field="key")
    return key


async def put(request: web.Request) -> web.Response:
    key, cas = _writable(KEY.get(request)), CAS.find(request)
    body = await request.read()
    if len(body) > MAX_VALUE:
        raise BadRequest(f"a value is at most {MAX_VALUE} bytes", field="value")
    outcome = await write(request, KvPut(key, body, cas))
    return web.json_response({"key": key, "index": outcome.index})


async def delete(request: web.Request) -> web.Response:
    key, cas = _writable(KEY.get(request)), CAS.find(request)
    outcome = await write(request, KvDelete(key, cas))
    return web.json_response({"key": key, "deleted": outcome.deleted})


__all__ = ["MAX_VALUE", "RESERVED_PREFIX", "delete", "get", "put"]
