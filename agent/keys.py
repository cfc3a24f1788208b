"""Gossip and Raft key rotation: ``corral keys list|generate|install|use|remove``, replicated by Raft.

The keyring (:mod:`mesh.keyring`) starts as the one key derived from the cluster secret. An operator
rotates as with Serf: ``install`` a new key (every node can now open it), ``use`` it (every node seals
with it), ``remove`` the old one. Each step is one Raft command carrying the whole resulting ring, so
every node applies the same ring in the same order; each node then brings its live keyring in line
and saves it (0600) in its data dir, because after a restart it needs the keys *before* it can hear
Raft. A node that was away while an old key was removed cannot rejoin until it is given the current
ring (as in Serf); ``corral keys list`` shows how many nodes hold each key so you can wait for all.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.api_kv import CLUSTER_KEY, forward_to_leader
from agent.api_members import GOSSIP_KEY
from agent.errors import BadRequest
from agent.state import command
from mesh.keyring import Keyring, KeyringError, key_id

log = logging.getLogger("corral.keys")

KEYRING_FILE = "keyring.json"


def load(data_dir: Path, secret: bytes) -> Keyring:
    """The saved ring, or the one derived from the cluster secret."""
    path = data_dir / KEYRING_FILE
    try:
        saved = json.loads(path.read_text())
        keys = [bytes.fromhex(k) for k in saved["keys"]]
        return Keyring(keys, bytes.fromhex(saved["primary"]))
    except FileNotFoundError:
        return Keyring.from_secret(secret)
    except (ValueError, KeyError, TypeError, KeyringError) as exc:
        log.warning("%s is damaged (%s); starting from the key derived from the cluster secret", path, exc)
        return Keyring.from_secret(secret)


def save(data_dir: Path, ring: Keyring) -> None:
    path = data_dir / KEYRING_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"keys": [k.hex() for k in ring.installed()], "primary": ring.primary.hex()}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sync(ring: Keyring, wanted: dict[str, Any], data_dir: Path) -> bool:
    """Bring the live ring in line with the replicated one (install, then use, then remove); True if changed."""
    if not wanted:
        return False
    keys = [bytes.fromhex(k) for k in wanted["keys"]]
    primary = bytes.fromhex(wanted["primary"])
    if set(ring.installed()) == set(keys) and ring.primary == primary:
        return False
    for key in keys:
        if key not in ring.installed():
            ring.install(key)
    ring.use(primary)
    for key in ring.installed():
        if key not in keys:
            ring.remove(key)
    save(data_dir, ring)
    log.info("keyring now %d key(s), primary %s", len(keys), key_id(primary).hex())
    return True


def ids(ring: Keyring) -> list[str]:
    return [key_id(k).hex() for k in ring.installed()]


RING_KEY = web.AppKey("keyring", Keyring)


def _decode_key(text: Any) -> bytes:
    if not isinstance(text, str):
        raise BadRequest("key is required: 32 bytes, base64", field="key")
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("key is not base64", field="key") from None
    if len(key) != 32:
        raise BadRequest(f"key must be 32 bytes, not {len(key)}", field="key")
    return key


async def list_keys(request: web.Request) -> web.Response:
    """The replicated ring (ids only, never key material) and how many live members hold each key."""
    ring = request.app[RING_KEY]
    cluster = request.app[CLUSTER_KEY]
    holders: dict[str, int] = {}
    members = [m for m in request.app[GOSSIP_KEY].members() if m.state.value == "alive"]
    for m in members:
        for kid in m.meta.get("key_ids") or ():
            holders[str(kid)] = holders.get(str(kid), 0) + 1
    return web.json_response({
        "keys": [{"id": kid, "primary": i == 0, "members": holders.get(kid, 0)} for i, kid in enumerate(ids(ring))],
        "live_members": len(members),
        "replicated_index": cluster.state.keyring.get("index", 0),
    })


async def change_keys(request: web.Request) -> web.StreamResponse:
    """``{"action": "install"|"use"|"remove", "key": BASE64}``: one Raft command with the resulting ring."""
    cluster = request.app[CLUSTER_KEY]
    if not cluster.is_leader:
        return await forward_to_leader(request, cluster)
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the request body is not JSON", field="body") from None
    action = body.get("action") if isinstance(body, dict) else None
    if action not in ("install", "use", "remove"):
        raise BadRequest("action must be install, use or remove", field="action")
    key = _decode_key(body.get("key"))
    current = request.app[RING_KEY]
    trial = Keyring(current.installed(), current.primary)
    try:
        getattr(trial, action)(key)
    except KeyringError as exc:
        raise BadRequest(str(exc), field="key") from None
    result = await cluster.write(command("keys.set", keys=[k.hex() for k in trial.installed()],
                                         primary=trial.primary.hex()))
    if not result.get("ok"):
        raise BadRequest(result.get("message", "refused"), field=result.get("field"))
    return web.json_response({"action": action, "key_id": key_id(key).hex(), "index": result["index"],
                              "keys": [key_id(k).hex() for k in trial.installed()]})


def add_routes(app: web.Application, ring: Keyring) -> None:
    app[RING_KEY] = ring
    app.router.add_get("/v1/keys", list_keys)
    app.router.add_post("/v1/keys", change_keys)
