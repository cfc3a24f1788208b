"""Who is asking, and may they: the credential on every request, the password check behind a login,
and the helpers handlers use to ask the policy (:mod:`agent.model.policy`).

A credential is ``Authorization: Bearer crl_<id>_<secret>``: a 16-hex-digit public id (what lists,
events and revocations name) and a 256-bit secret, base64url, shown once to whoever made it and kept
by the cluster only as its SHA-256 — an API key, or the session a login opened (a key with a short
expiry). Checking one costs a dictionary lookup and a hash: no Argon2 on the request path.

Passwords and failed logins: :mod:`agent.api.passwords`.

A resource in an environment the caller has no role in does not exist as far as it can tell (404,
not 403, so names do not leak); one it may see but not change is a 403.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

from aiohttp import web

from agent.api.deps import DEPS
from agent.errors import Forbidden, Unauthorized
from agent.model.access import Access, ApiKey, User
from agent.model.commands import Actor, Command, Outcome
from agent.model.entities import ACCESS_EVENTS, Event
from agent.model.errors import not_found
from agent.model.policy import Grants, Permission, allowed, is_admin, role_in

TOKEN_PREFIX = "crl_"
TOKEN_RE = re.compile(r"^crl_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")



def new_key() -> tuple[str, str, str]:
    """(id, hash of the secret, the token to hand out once)."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_bytes(32)
    token = f"{TOKEN_PREFIX}{key_id}_{base64.urlsafe_b64encode(secret).decode().rstrip('=')}"
    return key_id, hashlib.sha256(secret).hexdigest(), token


def parse_token(token: str) -> tuple[str, str]:
    """(id, hash of the secret) of a token; Unauthorized saying what is wrong with its form."""
    match = TOKEN_RE.match(token)
    if match is None:
        raise Unauthorized("the token is malformed: a Corral token is crl_<16 hex digits>_<43 characters>",
                           reason="malformed")
    try:
        secret = base64.urlsafe_b64decode(match.group(2) + "=")
    except (binascii.Error, ValueError):
        raise Unauthorized("the token is malformed", reason="malformed") from None
    return match.group(1), hashlib.sha256(secret).hexdigest()


@dataclasses.dataclass(frozen=True)
class Principal:
    user: User
    key: ApiKey
    grants: Grants


PRINCIPAL = web.RequestKey("principal", Principal)
"""The authenticated caller, set on the request before its handler runs."""


def source_of(request: web.Request) -> str:
    return request.remote or "unknown"


def authenticate(request: web.Request) -> Principal:
    """The caller a request's bearer token names; Unauthorized (401) saying why not otherwise."""
    header = request.headers.get("Authorization")
    if header is None:
        return authenticate_token(request, None, "authentication required: send Authorization: Bearer <token> "
                                  "(corral login, or an API key in CORRAL_TOKEN)")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return authenticate_token(request, "", "the Authorization header must be: Bearer <token>")
    return authenticate_token(request, token.strip())


def authenticate_token(request: web.Request, token: str | None, missing: str = "authentication required") -> Principal:
    """The caller ``token`` names (an API key or a login session, wherever the request carried it: the
    API's bearer header, the web UI's session cookie); Unauthorized (401) saying why not otherwise.
    ``None`` is no credential at all, ``""`` one in the wrong form; ``missing`` says how to send one."""
    deps = request.app[DEPS]
    state_access: Access = deps.replica.state.access
    auth = deps.auth
    try:
        if token is None:
            raise Unauthorized(missing, reason="missing")
        if not token:
            raise Unauthorized(missing, reason="malformed")
        key_id, secret_hash = parse_token(token)
        key = state_access.keys.get(key_id)
        if key is None:
            raise Unauthorized("the token is not valid (unknown or revoked)", reason="unknown")
        if not hmac.compare_digest(key.secret_hash, secret_hash):
            raise Unauthorized("the token is not valid (unknown or revoked)", reason="bad_secret")
        if key.expires is not None and auth.clock() >= key.expires:
            raise Unauthorized("the token has expired: log in again, or make a new key", reason="expired")
        user = state_access.users.get(key.owner)
        if user is None:
            raise Unauthorized("the token's user no longer exists", reason="unknown")
    except Unauthorized as exc:
        auth.stats.rejected[str(exc.details.pop("reason", "other"))] += 1
        raise
    auth.stats.authenticated += 1
    return Principal(user, key, state_access.grants(user, key))


def principal(request: web.Request) -> Principal:
    found = request.get(PRINCIPAL)
    assert isinstance(found, Principal), "the route table authenticates every route that is not public"
    return found


def grants(request: web.Request) -> Grants:
    return principal(request).grants


def actor(request: web.Request, node: str) -> Actor:
    """Who the command a handler is about to propose is for (it is authorized again when applied)."""
    p = principal(request)
    return Actor(p.user.name, p.key.id, node, source_of(request), request.app[DEPS].auth.clock())


async def write(request: web.Request, cmd: Command) -> Outcome:
    """Commit ``cmd`` for the caller: every user-facing write goes through here, so the state machine
    knows whose it is (and records it in the events)."""
    deps = request.app[DEPS]
    return await deps.replica.write(cmd, actor=actor(request, deps.node.name))


def authorize(request: web.Request, permission: Permission, environment: str | None = None,
              hidden: tuple[str, str] | None = None) -> None:
    """403 unless the caller has ``permission`` (in ``environment``); ``hidden=(what, key)``: a 404
    instead when the caller has no role at all in that environment."""
    g = grants(request)
    if allowed(g, permission, environment):
        return
    request.app[DEPS].auth.stats.forbidden += 1
    if hidden is not None and environment is not None and role_in(g, environment) is None:
        raise not_found(*hidden)
    where = f" in environment {environment}" if environment else ""
    raise Forbidden(f"{principal(request).user.name} may not do this{where}: it needs {permission.value}"
                    + (" (a cluster administrator)" if permission is Permission.ADMIN else ""),
                    permission=permission.value)


def may_read(request: web.Request, environment: str | None) -> bool:
    return environment is not None and role_in(grants(request), environment) is not None


def visible_events(request: web.Request, events: Iterable[Event]) -> Iterable[Event]:
    """An administrator sees every event; anyone else those of the environments it may read and the
    cluster's own (hosts), but not who holds which credentials."""
    g = grants(request)
    if is_admin(g):
        return events
    me = principal(request).user.name
    return (e for e in events if (e.environment is None and (e.kind not in ACCESS_EVENTS or e.refs.get("user") == me))
            or (e.environment is not None and role_in(g, e.environment) is not None))


__all__ = ["PRINCIPAL", "TOKEN_PREFIX", "Principal", "actor", "authenticate", "authenticate_token", "authorize",
           "grants", "may_read", "new_key", "parse_token", "principal", "source_of", "visible_events", "write"]
