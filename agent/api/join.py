"""Hosts joining the cluster: join tokens, the join exchange, and node certificates.

A join token is ``corral2.<id>.<secret>.<CA fingerprint>``: a public id, a 256-bit secret (kept by the
cluster only as its SHA-256) and the SHA-256 of the cluster CA's certificate, so the joining host can
tell it reached the cluster the token is for (as Swarm's tokens do). Tokens expire (24 h unless told),
may be limited to a number of hosts (``--uses 1``: single use) and can be revoked; using one is a Raft
command, so two hosts racing for a single-use token cannot both win.

``POST /v1/join`` (no API credential: the token is one) takes the token, the host's name and address
and a CSR for its own key, and answers with the CA certificate, the host's certificate and the cluster
secret (over TLS; the joining host checks the CA against the token's fingerprint and this node's
certificate against the CA before it believes a word). A name a live member already has is refused.

``POST /v1/internal/certificate`` is how a member that already has the cluster secret gets (or renews)
its certificate: a CSR sealed with the cluster's Raft key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
import secrets

import msgpack
from aiohttp import web

from agent.api.auth import write
from agent.api.body import json_object
from agent.api.ca import authority_of
from agent.api.deps import DEPS, ApiDeps
from agent.api.params import ID
from agent.api.passwords import ttl_seconds
from agent.api.views import page
from agent.errors import BadRequest, Conflict, Forbidden
from agent.model import spec as specs
from agent.model.access import UNKNOWN_JOIN_TOKEN, JoinToken
from agent.model.commands import JoinTokenCreate, JoinTokenRevoke, JoinTokenUse
from agent.model.errors import CommandError, not_found
from mesh import pki

JOIN_PREFIX = "corral2."
JOIN_RE = re.compile(r"^corral2\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})\.([0-9a-f]{64})$")
JOIN_TTL = 24 * 3600.0


class UnknownJoinToken(Forbidden):
    """A token the cluster does not know (wrong secret, revoked, used up — or, on a cluster still
    committing its bootstrap, not known yet: the joining host asks again for a while)."""

    code = "unknown_join_token"


def new_join_token(fingerprint: str) -> tuple[str, str, str]:
    """(id, hash of the secret, the token to hand out once)."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_bytes(32)
    token = f"{JOIN_PREFIX}{token_id}.{base64.urlsafe_b64encode(secret).decode().rstrip('=')}.{fingerprint}"
    return token_id, hashlib.sha256(secret).hexdigest(), token


def parse_join_token(token: object) -> tuple[str, str, str]:
    """(id, hash of the secret, CA fingerprint); BadRequest saying what is wrong with the token's form."""
    match = JOIN_RE.match(token.strip()) if isinstance(token, str) else None
    if match is None:
        raise BadRequest("the join token is malformed: corral2.<16 hex>.<43 characters>.<64 hex> "
                         "(`corral token create` makes one)", field="token")
    try:
        secret = base64.urlsafe_b64decode(match.group(2) + "=")
    except (binascii.Error, ValueError):
        raise BadRequest("the join token is malformed", field="token") from None
    return match.group(1), hashlib.sha256(secret).hexdigest(), match.group(3)




def issue(deps: ApiDeps, csr: object, name: str, address: str, manager: bool, now: float) -> pki.Issued:
    """Sign a node's CSR with the cluster CA; BadRequest naming what is wrong with it."""
    authority = authority_of(deps)
    if not isinstance(csr, str):
        raise BadRequest("csr is required: a PEM certificate signing request", field="csr")
    try:
        ca_key = pki.open_ca_key(deps.secret, authority.sealed_key)
        return pki.sign(authority.cert_pem.encode(), ca_key, csr.encode(), name,
                        "manager" if manager else "worker", [address], now)
    except pki.PkiError as exc:
        raise BadRequest(f"csr: {exc}", field="csr") from None


def token_view(token: JoinToken) -> dict[str, object]:
    return {"id": token.id, "expires": token.expires, "uses_left": token.uses_left,
            "description": token.description, "environment": token.environment, "created": token.created}


async def join(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    now = deps.auth.clock()
    body = await json_object(request, ("token", "name", "address", "csr", "manager"))
    token_id, secret_hash, fingerprint = parse_join_token(body.get("token"))
    name = specs.name(body.get("name"))
    address = body.get("address")
    try:
        ipaddress.ip_address(address if isinstance(address, str) else "")
    except ValueError:
        raise BadRequest("address is required: the joining host's underlay IP address", field="address") from None
    assert isinstance(address, str)
    manager = body.get("manager", False)
    if not isinstance(manager, bool):
        raise BadRequest("manager is true or false", field="manager")
    authority = authority_of(deps)
    try:
        if fingerprint not in authority.fingerprints:
            raise Forbidden("the join token is for another cluster (its CA fingerprint is not this cluster's)",
                            field="token")
        if not deps.replica.state.access.join_token_known(token_id, secret_hash):
            raise UnknownJoinToken(UNKNOWN_JOIN_TOKEN, field="token")
        deps.replica.state.access.join_token_check(token_id, secret_hash, now)  # expired: a 403 forbidden
    except (Forbidden, CommandError):
        deps.auth.stats.rejected["join"] += 1
        raise
    for member in deps.gossip.members():
        if member.name == name and member.state.value == "alive" and member.address[0] != address:
            raise Conflict(f"a live host is named {name} already (at {member.address[0]}): pick another name, "
                           "or stop that host first", field="name")
    issued = issue(deps, body.get("csr"), name, address, manager, now)  # a bad CSR does not use the token up
    await deps.replica.write(JoinTokenUse(token_id, secret_hash, name, now))
    return web.json_response({"ca": authority.trusted_pem, "cert": issued.cert_pem.decode() + authority.cross_pem,
                              "secret": base64.b64encode(deps.secret).decode(), "fingerprint": authority.fingerprint,
                              "role": "manager" if manager else "worker"})


async def list_tokens(request: web.Request) -> web.Response:
    tokens = sorted(request.app[DEPS].replica.state.access.join_tokens.values(), key=lambda t: t.created)
    return page(request, (token_view(t) for t in tokens))


async def create_token(request: web.Request) -> web.Response:
    """``{"ttl": "24h", "uses": 1, "description": …}``: the token is shown once."""
    deps = request.app[DEPS]
    body = await json_object(request, ("ttl", "uses", "description", "environment"))
    environment = specs.name(body.get("environment", "default"), "environment")
    if environment not in deps.replica.state.environments:
        raise not_found("environment", environment)
    ttl = ttl_seconds(body["ttl"]) if body.get("ttl") is not None else JOIN_TTL
    uses = body.get("uses")
    if isinstance(uses, float) and uses.is_integer():  # JSON's 3.0 is the integer 3
        uses = int(uses)
    if uses is not None and (not isinstance(uses, int) or isinstance(uses, bool) or not 1 <= uses <= 10_000):
        raise BadRequest("uses is how many hosts may join with the token: 1 to 10000", field="uses")
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > 200:
        raise BadRequest("description is a string of at most 200 characters", field="description")
    authority = authority_of(deps)
    token_id, secret_hash, token = new_join_token(authority.fingerprint)
    await write(request, JoinTokenCreate(token_id, secret_hash, deps.auth.clock() + ttl, uses, description,
                                         environment))
    made = deps.replica.state.access.join_tokens[token_id]
    return web.json_response({**token_view(made), "token": token}, status=201)


async def revoke_token(request: web.Request) -> web.Response:
    token_id = ID.get(request)
    if token_id not in request.app[DEPS].replica.state.access.join_tokens:
        raise not_found("join token", token_id)
    await write(request, JoinTokenRevoke(token_id))
    return web.json_response({"revoked": token_id})


async def internal_certificate(request: web.Request) -> web.Response:
    """A member's CSR, sealed with the cluster's Raft key: its certificate, sealed back."""
    deps = request.app[DEPS]
    plain = deps.replica.sealer.open(await request.read())
    try:
        ask = msgpack.unpackb(plain, raw=False) if plain is not None else None
    except Exception:  # msgpack raises several unrelated types on garbage
        ask = None
    if not isinstance(ask, dict) or not all(isinstance(ask.get(k), str) for k in ("name", "address", "csr")):
        return web.json_response({"error": "forbidden", "message": "not a certificate request sealed with the "
                                  "cluster's key"}, status=403)
    issued = issue(deps, ask["csr"], specs.name(ask["name"]), ask["address"], bool(ask.get("manager")),
                   deps.auth.clock())
    authority = authority_of(deps)
    answer = msgpack.packb({"cert": issued.cert_pem + authority.cross_pem.encode(),
                            "ca": authority.trusted_pem.encode()}, use_bin_type=True)
    return web.Response(body=deps.replica.sealer.seal(bytes(answer)), content_type="application/octet-stream")


__all__ = ["JOIN_PREFIX", "JOIN_TTL", "create_token", "internal_certificate", "issue", "join", "list_tokens",
           "new_join_token", "parse_join_token", "revoke_token"]
