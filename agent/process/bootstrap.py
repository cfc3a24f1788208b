"""What a new cluster starts with: its CA, its first join token and its first administrator — made by
``corral agent --bootstrap`` (the administrator alone, on a cluster that has no user yet — one upgraded
from before access control — by ``--bootstrap-admin``).

Before the agent starts, the node makes the CA (and its own certificate from it) and a join token,
hashes the administrator's password (given in a file or on standard input, or made up and printed
once) and makes its API key (printed once, or written to ``--admin-key-file``), and keeps the
resulting commands in its data dir (``bootstrap-admin``, 0600: hashes and the sealed CA key only). Once
a leader is elected the node proposes them in order; the state machine applies a CA and a first
administrator only while the cluster has none, so a second bootstrap (or a replay) can never make
another. The file is removed once all are applied.
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
import msgpack

from agent.api.auth import new_key
from agent.api.join import JOIN_TTL, new_join_token
from agent.api.passwords import ARGON2, Passwords
from agent.cluster.replica import NoLeader, Replica
from agent.errors import BadRequest
from agent.model.commands import AdminBootstrap, CaSet, Command, JoinTokenCreate, KeyCreate, UserCreate, decode, encode
from agent.model.errors import CommandError
from agent.process.certs import NodeCerts
from agent.process.credentials import TOKEN_FILE
from mesh import pki
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


def prepare(data_dir: Path, password_source: Path | None, key_file: Path | None) -> list[Command]:
    """The first administrator's command (and say its secrets once)."""
    password = read_password(password_source)
    shown = password is None
    if password is None:
        password = secrets.token_urlsafe(18)
    password_hash = argon2.PasswordHasher(**ARGON2, type=argon2.Type.ID).hash(password)  # type: ignore[arg-type]
    key_id, secret_hash, token = new_key()
    cmd = AdminBootstrap(UserCreate(ADMIN, password_hash, admin=True),
                         KeyCreate(key_id, ADMIN, secret_hash, "made by --bootstrap"), at=time.time())
    if key_file is not None:
        write_private(key_file, (token + "\n").encode())
    lines = [f"the first administrator is {ADMIN!r}"]
    if shown:
        lines.append(f"  its password (shown once): {password}")
    lines.append(f"  its API key was written to {key_file}" if key_file else f"  its API key (shown once): {token}")
    log.warning("%s", "\n".join(lines))
    return [cmd]


def new_cluster(data_dir: Path, secret: bytes, certs: NodeCerts, name: str, address: str
                ) -> tuple[list[Command], str]:
    """A new cluster's CA (and this node's certificate from it) and its first join token (24 h, any
    number of hosts): the commands, and the token (:func:`keep` writes it to ``join-token``, 0600, for
    whoever brings up the next hosts, once the commands are kept)."""
    now = time.time()
    ca_pem, ca_key = pki.make_ca(name, now)
    fingerprint = pki.fingerprint(ca_pem)
    issued = pki.sign(ca_pem, ca_key, certs.csr(name), name, "manager", [address], now)
    certs.store(ca_pem, issued.cert_pem)
    token_id, token_hash, token = new_join_token(fingerprint)
    log.warning("new cluster, CA fingerprint %s; join other hosts with --join %s --token %s (valid 24 h; "
                "`corral token create` makes more)", fingerprint, address, token)
    return [CaSet(ca_pem.decode(), pki.seal_ca_key(secret, ca_key), fingerprint),
            JoinTokenCreate(token_id, token_hash, now + JOIN_TTL, None, "made by --bootstrap")], token


def keep(data_dir: Path, commands: list[Command], join_token: str | None = None) -> None:
    """What the first leader must propose, in order, kept in the data dir (0600) until it is applied;
    then the new cluster's join token (so whoever waits for the token finds the commands kept first)."""
    path = data_dir / PENDING_FILE
    if commands and not path.exists():
        write_private(path, bytes(msgpack.packb([encode(c) for c in commands], use_bin_type=True)))
    if join_token is not None:
        write_private(data_dir / TOKEN_FILE, (join_token + "\n").encode())


def pending(data_dir: Path) -> list[Command]:
    path = data_dir / PENDING_FILE
    try:
        raw = msgpack.unpackb(path.read_bytes(), raw=False)
        if not isinstance(raw, list) or not all(isinstance(c, bytes) for c in raw):
            raise ValueError("not a list of commands")
        return [decode(c) for c in raw]
    except FileNotFoundError:
        return []
    except (ValueError, CommandError, msgpack.UnpackException) as exc:
        raise BadRequest(f"{path} cannot be read ({exc}): remove it and bootstrap the admin again") from None


async def _propose(data_dir: Path, replica: Replica, commands: list[Command]) -> None:
    changes = replica.feed.subscribe(lambda _c: True, name="bootstrap")
    try:
        todo = list(commands)
        while todo:
            if replica.leader is not None:
                try:
                    await replica.write(todo[0])
                    todo.pop(0)
                    continue
                except CommandError as exc:  # applied already (a restart before the file went): next
                    log.info("bootstrap: %s refused (%s): going on", type(todo[0]).__name__, exc.message)
                    todo.pop(0)
                    continue
                except NoLeader:
                    pass
            await changes.next(1.0)
        (data_dir / PENDING_FILE).unlink(missing_ok=True)
        log.info("the new cluster's CA, first join token and administrator are in the state: %s removed",
                 PENDING_FILE)
    finally:
        changes.close()


@contextlib.asynccontextmanager
async def proposing(data_dir: Path, replica: Replica) -> AsyncIterator[None]:
    """While the agent runs, propose the pending first administrator (if any) until the cluster has one."""
    commands = pending(data_dir)
    if not commands:
        yield
        return
    async with supervised(_propose(data_dir, replica, commands), "bootstrap"):
        yield


__all__ = ["ADMIN", "PENDING_FILE", "keep", "new_cluster", "pending", "prepare", "proposing", "read_password"]
