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

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from agent.cluster.feed import Feed, Subscription
from agent.model.changes import Topic
from agent.model.entities import Keyring as KeyringRecord
from agent.model.state import ClusterState
from mesh.aio import supervised
from mesh.files import write_private
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
    body = {"keys": [k.hex() for k in ring.installed()], "primary": ring.primary.hex()}
    write_private(data_dir / KEYRING_FILE, json.dumps(body).encode())


def sync(ring: Keyring, wanted: KeyringRecord | None, data_dir: Path) -> bool:
    """Bring the live ring in line with the replicated one (install, then use, then remove); True if changed."""
    if wanted is None:
        return False
    keys = [bytes.fromhex(k) for k in wanted.keys]
    primary = bytes.fromhex(wanted.primary)
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


@asynccontextmanager
async def following(state: ClusterState, feed: Feed, ring: Keyring, data_dir: Path,
                    changed: Callable[[], None]) -> AsyncIterator[None]:
    """Apply each replicated keyring change to the live ring and save it; ``changed`` runs after each."""
    changes = feed.subscribe(lambda c: c.topic in (Topic.KEYRING, Topic.ALL), name="keyring")

    async def follow(changes: Subscription) -> None:
        while True:
            try:
                if sync(ring, state.keyring, data_dir):
                    changed()
            except (KeyringError, ValueError, OSError) as exc:
                log.error("could not apply the replicated keyring: %s", exc)
            await changes.next()

    try:
        async with supervised(follow(changes), "keyring"):
            yield
    finally:
        changes.close()
