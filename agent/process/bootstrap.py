"""The cluster's first administrator: made by ``corral agent --bootstrap`` (or, on a cluster that has
no user yet — one upgraded from before access control — by ``--bootstrap-admin``).

Before the agent starts, the node hashes the password (given in a file or on standard input, or
made up and printed once), makes an API key (its token printed once, or written to
``--admin-key-file``), and keeps the resulting command in its data dir (``bootstrap-admin``, 0600:
hashes only). Once a leader is elected, the node proposes it; the state machine applies it only while
the cluster has no user at all, so a second bootstrap (or a replay) can never make another admin.
The file is removed once the cluster has users.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import argon2

from agent.api.auth import new_key
from agent.api.passwords import ARGON2, Passwords
from agent.cluster.replica import NoLeader, Replica
from agent.errors import BadRequest
from agent.model.commands import AdminBootstrap, KeyCreate, UserCreate, decode, encode
from agent.model.errors import CommandError
from mesh.aio import supervised
from mesh.files import write_private

log = logging.getLogger("corral.bootstrap")

PENDING_FILE = "bootstrap-admin"
ADMIN = "admin"


def read_password(source: Path | None) -> str | None:
    """The first line of ``source`` (``-``: standard input); None: make one up."""
    if source is None:
        return None
    text = sys.stdin.readline() if str(source) == "-" else source.read_text()
    return Passwords.check(text.splitlines()[0] if text.strip() else "", "admin password")


def prepare(data_dir: Path, password_source: Path | None, key_file: Path | None) -> None:
    """Keep the first administrator's command in the data dir, and say its secrets once."""
    pending = data_dir / PENDING_FILE
    if pending.exists():
        return
    password = read_password(password_source)
    shown = password is None
    if password is None:
        password = secrets.token_urlsafe(18)
    password_hash = argon2.PasswordHasher(**ARGON2, type=argon2.Type.ID).hash(password)  # type: ignore[arg-type]
    key_id, secret_hash, token = new_key()
    cmd = AdminBootstrap(UserCreate(ADMIN, password_hash, admin=True),
                         KeyCreate(key_id, ADMIN, secret_hash, "made by --bootstrap"), at=time.time())
    write_private(pending, encode(cmd))
    if key_file is not None:
        write_private(key_file, (token + "\n").encode())
    lines = [f"the first administrator is {ADMIN!r}"]
    if shown:
        lines.append(f"  its password (shown once): {password}")
    lines.append(f"  its API key was written to {key_file}" if key_file else f"  its API key (shown once): {token}")
    log.warning("%s", "\n".join(lines))


def pending(data_dir: Path) -> AdminBootstrap | None:
    path = data_dir / PENDING_FILE
    try:
        cmd = decode(path.read_bytes())
    except FileNotFoundError:
        return None
    except CommandError as exc:
        raise BadRequest(f"{path} cannot be read ({exc.message}): remove it and bootstrap the admin again") from None
    if not isinstance(cmd, AdminBootstrap):
        raise BadRequest(f"{path} does not hold an admin bootstrap: remove it")
    return cmd


async def _propose(data_dir: Path, replica: Replica, cmd: AdminBootstrap) -> None:
    changes = replica.feed.subscribe(lambda _c: True, name="bootstrap")
    try:
        while True:
            if replica.state.access.users:
                (data_dir / PENDING_FILE).unlink(missing_ok=True)
                log.info("the cluster has its administrator: %s removed", PENDING_FILE)
                return
            if replica.leader is not None:
                try:
                    await replica.write(cmd)
                    continue
                except CommandError as exc:
                    log.warning("the first administrator was refused: %s", exc.message)
                except NoLeader:
                    pass
            await changes.next(1.0)
    finally:
        changes.close()


@contextlib.asynccontextmanager
async def proposing(data_dir: Path, replica: Replica) -> AsyncIterator[None]:
    """While the agent runs, propose the pending first administrator (if any) until the cluster has one."""
    cmd = pending(data_dir)
    if cmd is None:
        yield
        return
    async with supervised(_propose(data_dir, replica, cmd), "bootstrap admin"):
        yield


__all__ = ["ADMIN", "PENDING_FILE", "pending", "prepare", "proposing", "read_password"]
