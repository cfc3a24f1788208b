"""The cluster secret: what gossip and Raft keys are derived from (mesh.keyring), and what opens the
CA's key (mesh.pki).

``corral agent --bootstrap`` makes a 32-byte secret and stores it 0600 in the data dir. A host that
joins gets it from a member, over TLS, in exchange for a join token (``corral2.…``, see
:mod:`agent.api.join` and :mod:`agent.process.joining`) — the token itself carries no secret, so it
can expire, be used up or be revoked.

Tokens of earlier versions (``corral1.`` + base64url(secret ‖ crc32)) carried the secret itself and
never expired: a node that already belongs to a cluster ignores the one it is given; a new host is
refused with one, and told to ask for a new token.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from agent.errors import BadRequest, DataDirError
from mesh.files import write_private

OLD_TOKEN_PREFIX = "corral1."
SECRET_BYTES = 32
SECRET_FILE = "cluster-secret"
TOKEN_FILE = "join-token"
"""The join token the bootstrapping node made (0600), for the operator who brings up the next hosts."""


class TokenError(BadRequest):
    code = "bad_token"


def load_secret(data_dir: Path) -> bytes | None:
    path = data_dir / SECRET_FILE
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(secret) != SECRET_BYTES:
        raise DataDirError(f"{path} is {len(secret)} bytes, not {SECRET_BYTES}: the cluster secret is damaged")
    return secret


def check_new_join(token: str | None) -> None:
    """A host that has no secret yet joins with a ``corral2.`` token; anything else is refused here."""
    if token is not None and token.strip().startswith(OLD_TOKEN_PREFIX):
        raise TokenError("this join token was made by an earlier Corral: it carries the cluster secret and never "
                         "expires, so it is no longer accepted; make one with `corral token create`")


def establish_secret(data_dir: Path, bootstrap: bool, joined: bytes | None) -> bytes:
    """The secret this node uses: from its data dir, a new bootstrap, or a join that just gave it.

    A node that already has a secret keeps it (a restart needs no token); ``--bootstrap`` on a node of
    an existing cluster is refused rather than obeyed.
    """
    existing = load_secret(data_dir)
    if existing is not None:
        if bootstrap:
            raise DataDirError(f"{data_dir} already belongs to a cluster: --bootstrap would make another")
        return existing
    if bootstrap and joined is not None:
        raise BadRequest("--bootstrap makes a new cluster; --token joins an existing one: give one of them")
    if bootstrap:
        secret = secrets.token_bytes(SECRET_BYTES)
    elif joined is not None:
        if len(joined) != SECRET_BYTES:
            raise TokenError(f"the member sent a {len(joined)}-byte secret, not {SECRET_BYTES}")
        secret = joined
    else:
        raise BadRequest("this node has no cluster secret: start it with --bootstrap or with --join ADDR --token TOKEN")
    write_private(data_dir / SECRET_FILE, secret)
    return secret


__all__ = ["OLD_TOKEN_PREFIX", "SECRET_BYTES", "SECRET_FILE", "TOKEN_FILE", "TokenError", "check_new_join",
           "establish_secret", "load_secret"]
