"""The cluster secret and the join token that carries it.

``corral agent --bootstrap`` makes a 32-byte cluster secret, stores it 0600 in the data dir and
prints a join token; ``--join ADDR --token TOKEN`` stores the secret a token carries. Gossip and Raft
keys are derived from the secret (mesh.keyring), so a node without the token cannot seal or open a
single packet of the cluster's.

A token is ``corral1.`` + base64url(secret ‖ crc32(secret)): the checksum turns a mistyped or
truncated token into a clear error instead of a node that silently cannot talk to anyone.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import zlib
from pathlib import Path

from agent.errors import BadRequest, DataDirError
from mesh.files import write_private

TOKEN_PREFIX = "corral1."
SECRET_BYTES = 32
SECRET_FILE = "cluster-secret"
TOKEN_FILE = "join-token"


class TokenError(BadRequest):
    code = "bad_token"


def encode_token(secret: bytes) -> str:
    crc = zlib.crc32(secret).to_bytes(4, "big")
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secret + crc).decode().rstrip("=")


def decode_token(token: str) -> bytes:
    """The secret a token carries; TokenError saying what is wrong with it otherwise."""
    token = token.strip()
    if not token.startswith(TOKEN_PREFIX):
        raise TokenError(f"a join token starts with {TOKEN_PREFIX!r}")
    body = token[len(TOKEN_PREFIX):]
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TokenError("the join token is not valid base64url") from exc
    if len(raw) != SECRET_BYTES + 4:
        raise TokenError(f"the join token is {len(raw)} bytes long, not {SECRET_BYTES + 4}: is it cut short?")
    secret, crc = raw[:SECRET_BYTES], raw[SECRET_BYTES:]
    if zlib.crc32(secret).to_bytes(4, "big") != crc:
        raise TokenError("the join token's checksum does not match: is it mistyped?")
    return secret


def load_secret(data_dir: Path) -> bytes | None:
    path = data_dir / SECRET_FILE
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(secret) != SECRET_BYTES:
        raise DataDirError(f"{path} is {len(secret)} bytes, not {SECRET_BYTES}: the cluster secret is damaged")
    return secret


def establish_secret(data_dir: Path, bootstrap: bool, token: str | None) -> bytes:
    """The secret this node uses, from its data dir, a new bootstrap, or a join token.

    A node that already has a secret keeps it (a restart needs no token); a token for another
    cluster, or ``--bootstrap`` on a node of an existing cluster, is refused rather than obeyed.
    """
    existing = load_secret(data_dir)
    offered = decode_token(token) if token else None
    if existing is not None:
        if bootstrap:
            raise DataDirError(f"{data_dir} already belongs to a cluster: --bootstrap would make another")
        if offered is not None and offered != existing:
            raise TokenError("this node belongs to another cluster than the token's (its data dir has a secret)")
        return existing
    if bootstrap and offered is not None:
        raise BadRequest("--bootstrap makes a new cluster; --token joins an existing one: give one of them")
    if bootstrap:
        secret = secrets.token_bytes(SECRET_BYTES)
    elif offered is not None:
        secret = offered
    else:
        raise BadRequest("this node has no cluster secret: start it with --bootstrap or with --join ADDR --token TOKEN")
    write_private(data_dir / SECRET_FILE, secret)
    write_private(data_dir / TOKEN_FILE, (encode_token(secret) + "\n").encode())
    return secret
