"""The cluster's machinery: gossip members, Raft, the overlay, the gossip/Raft keyring, and the sealed
endpoint other members propose through."""

from __future__ import annotations

import base64
import binascii
import datetime

from aiohttp import web

from agent.api.auth import write
from agent.api.body import json_object
from agent.api.deps import DEPS
from agent.api.params import MEMBER_STATE
from agent.errors import BadRequest
from agent.model.commands import KeysSet, Outcome, encode_result
from agent.model.errors import CommandError
from agent.node import keyring as keyring_files
from mesh.gossip.node import GossipNode
from mesh.gossip.swim import Member
from mesh.keyring import Keyring, KeyringError, key_id


def member_json(node: GossipNode, m: Member) -> dict[str, object]:
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


async def members(request: web.Request) -> web.Response:
    node = request.app[DEPS].gossip
    state = MEMBER_STATE.find(request)
    everyone = sorted(node.members(), key=lambda m: m.name)
    items = [member_json(node, m) for m in everyone if state is None or m.state.value == state]
    counts: dict[str, int] = {}
    for m in everyone:
        counts[m.state.value] = counts.get(m.state.value, 0) + 1
    return web.json_response({"node": node.name, "items": items, "total": len(items), "counts": counts})


async def member_stats(request: web.Request) -> web.Response:
    node = request.app[DEPS].gossip
    return web.json_response({"node": node.name, **node.stats()})


async def raft(request: web.Request) -> web.Response:
    replica = request.app[DEPS].replica
    return web.json_response({**replica.raft.status(), "forwarded": {
        "batches": replica.batches_sent, "commands": replica.commands_sent}})


async def overlay(request: web.Request) -> web.Response:
    return web.json_response(request.app[DEPS].overlay.status())


async def list_keys(request: web.Request) -> web.Response:
    """The replicated ring (ids only, never key material) and how many live members hold each key."""
    deps = request.app[DEPS]
    holders: dict[str, int] = {}
    alive = [m for m in deps.gossip.members() if m.state.value == "alive"]
    for m in alive:
        held = m.meta.get("key_ids")
        for kid in held if isinstance(held, list | tuple) else ():
            holders[str(kid)] = holders.get(str(kid), 0) + 1
    ids = keyring_files.ids(deps.ring)
    record = deps.replica.state.keyring
    return web.json_response({
        "keys": [{"id": kid, "primary": i == 0, "members": holders.get(kid, 0)} for i, kid in enumerate(ids)],
        "live_members": len(alive),
        "replicated_index": record.index if record else 0,
    })


def _decode_key(text: object) -> bytes:
    if not isinstance(text, str):
        raise BadRequest("key is required: 32 bytes, base64", field="key")
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("key is not base64", field="key") from None
    if len(key) != 32:
        raise BadRequest(f"key must be 32 bytes, not {len(key)}", field="key")
    return key


async def change_keys(request: web.Request) -> web.Response:
    """``{"action": "install"|"use"|"remove", "key": BASE64}``: one Raft command with the resulting ring."""
    deps = request.app[DEPS]
    body = await json_object(request, ("action", "key"))
    action = body.get("action")
    if action not in ("install", "use", "remove"):
        raise BadRequest("action must be install, use or remove", field="action")
    key = _decode_key(body.get("key"))
    trial = Keyring(deps.ring.installed(), deps.ring.primary)
    try:
        {"install": trial.install, "use": trial.use, "remove": trial.remove}[str(action)](key)
    except KeyringError as exc:
        raise BadRequest(str(exc), field="key") from None
    outcome = await write(request, KeysSet(tuple(k.hex() for k in trial.installed()), trial.primary.hex()))
    return web.json_response({"action": action, "key_id": key_id(key).hex(), "index": outcome.index,
                              "keys": [key_id(k).hex() for k in trial.installed()]})


async def internal_batch(request: web.Request) -> web.Response:
    """Sealed commands from another member (writes its users made, its status reports), proposed here."""
    answer = await request.app[DEPS].replica.propose_batch(await request.read())
    if answer is None:
        return web.json_response({"error": "forbidden", "message": "not a list of commands sealed with the "
                                  "cluster's key"}, status=403)
    return web.Response(body=answer, content_type="application/octet-stream")


async def internal_propose(request: web.Request) -> web.Response:
    """A sealed command from another member, proposed here (the form agents before batching send)."""
    result = await request.app[DEPS].replica.propose_sealed(await request.read())
    if result is None:
        return web.json_response({"error": "forbidden", "message": "not sealed with the cluster's key"}, status=403)
    if not isinstance(result, Outcome | CommandError):
        raise TypeError(f"the state machine answered {result!r}")
    return web.Response(body=encode_result(result), content_type="application/octet-stream")


__all__ = ["change_keys", "internal_batch", "internal_propose", "list_keys", "member_json", "member_stats", "members",
           "overlay", "raft"]
