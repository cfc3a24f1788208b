"""Logins, users, API keys, teams, and who holds which role in which environment.

A secret is shown once, in the answer that made it (a login's token, a new key's token), and is kept
nowhere; lists show ids, owners, scopes and expiries, never a hash. What only administrators may do is
marked in the route table; the rest is checked here (a user changes its own password, makes and revokes
its own keys, and an environment's owner gives roles in it).
"""

from __future__ import annotations

import dataclasses

from aiohttp import web

from agent.api.auth import authorize, grants, new_key, principal, source_of, write
from agent.api.body import json_object
from agent.api.deps import DEPS
from agent.api.params import ID, NAME, SUBJECT, USER
from agent.api.passwords import KEY_TTL, Passwords, ttl_seconds
from agent.api.views import page, wire
from agent.errors import BadRequest, Conflict, NotFound, TooManyRequests, Unauthorized
from agent.model import spec as specs
from agent.model.access import MAX_DESCRIPTION, ApiKey, User
from agent.model.commands import (
    Actor,
    EnvCreate,
    KeyCreate,
    KeyRevoke,
    RoleSet,
    TeamRemove,
    TeamSet,
    UserCreate,
    UserRemove,
    UserUpdate,
)
from agent.model.errors import not_found
from agent.model.policy import Permission, Role, is_admin, may_delegate, role_in


def user_view(state_user: User, keys: int) -> dict[str, object]:
    return {"name": state_user.name, "admin": state_user.admin, "created": state_user.created,
            "updated": state_user.updated, "keys": keys}


def key_view(key: ApiKey) -> dict[str, object]:
    return {"id": key.id, "owner": key.owner, "description": key.description, "environment": key.environment,
            "role": key.role.value if key.role else None, "expires": key.expires, "created_at": key.created_at,
            "session": key.session}


def _role(value: object, field: str = "role") -> Role:
    try:
        return Role(str(value)) if isinstance(value, str) else Role("")
    except ValueError:
        raise BadRequest(f"{field} must be one of " + ", ".join(r.value for r in Role), field=field) from None


# ---------------------------------------------------------------------- sessions


@dataclasses.dataclass(frozen=True)
class Session:
    """A login session just opened: its token is shown once (the API's answer, the UI's cookie)."""

    token: str
    id: str
    user: User
    expires: float


async def open_session(request: web.Request, name: object, password: object, ttl: float | None = None) -> Session:
    """Check a user name and password (through the login limiter, the same Argon2 work whether or not the
    user exists) and open a session: the one way in for the API's login and the web UI's."""
    deps = request.app[DEPS]
    auth = deps.auth
    if not isinstance(name, str) or not 1 <= len(name) <= 63:
        raise BadRequest("user is required: a user name", field="user")
    checked = Passwords.check(password)
    source, now = source_of(request), auth.clock()
    try:
        auth.limiter.check(name, source, now)
    except TooManyRequests:
        auth.stats.logins_limited += 1
        raise
    user = deps.replica.state.access.users.get(name)
    # the same Argon2 work whether or not the user exists: the answer's timing does not say which
    good = await auth.passwords.verify(user.password_hash if user else auth.passwords.dummy, checked)
    if user is None or not good:
        auth.limiter.failed(name, source, auth.clock())
        auth.stats.login_failures += 1
        raise Unauthorized("wrong user name or password")
    auth.limiter.succeeded(name)
    auth.stats.logins += 1
    key_id, secret_hash, token = new_key()
    expires = now + (auth.session_ttl if ttl is None else ttl)
    await deps.replica.write(KeyCreate(key_id, name, secret_hash, f"login from {source}", expires=expires,
                                       session=True), actor=Actor(name, None, deps.node.name, source, now))
    return Session(token, key_id, user, expires)


async def end_session(request: web.Request) -> str:
    """End the login session the request was made with (a 400 for an API key: those are revoked by id)."""
    key = principal(request).key
    if not key.session:
        raise BadRequest(f"this request used API key {key.id}, not a login session: revoke keys with "
                         f"DELETE /v1/apikeys/{key.id}", field="Authorization")
    await write(request, KeyRevoke(key.id))
    return key.id


async def login(request: web.Request) -> web.Response:
    """``{"user", "password"[, "ttl"]}`` → a session token (12 h unless ``ttl`` says less or more)."""
    body = await json_object(request, ("user", "password", "ttl"))
    ttl = ttl_seconds(body["ttl"]) if body.get("ttl") is not None else None
    session = await open_session(request, body.get("user"), body.get("password"), ttl)
    return web.json_response({"token": session.token, "id": session.id, "user": session.user.name,
                              "admin": session.user.admin, "expires": session.expires})


async def logout(request: web.Request) -> web.Response:
    return web.json_response({"ended": await end_session(request)})


async def whoami(request: web.Request) -> web.Response:
    p = principal(request)
    access = request.app[DEPS].replica.state.access
    roles = {env: r.value for env in request.app[DEPS].replica.state.environments
             if (r := role_in(p.grants, env)) is not None}
    return web.json_response({"user": p.user.name, "admin": is_admin(p.grants), "key": key_view(p.key),
                              "roles": roles, "teams": access.teams_of(p.user.name)})


async def auth_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[DEPS].auth.stats.to_json())


# ---------------------------------------------------------------------- users


async def list_users(request: web.Request) -> web.Response:
    access = request.app[DEPS].replica.state.access
    return page(request, (user_view(u, len(access.keys_of(u.name))) for u in sorted(
        access.users.values(), key=lambda u: u.name)))


def _user(request: web.Request) -> User:
    """The user the path names: oneself, or anyone for an administrator (404 for others)."""
    name = NAME.get(request)
    access = request.app[DEPS].replica.state.access
    user = access.users.get(name)
    if user is None or (user.name != principal(request).user.name and not is_admin(grants(request))):
        raise not_found("user", name)
    return user


async def get_user(request: web.Request) -> web.Response:
    user = _user(request)
    access = request.app[DEPS].replica.state.access
    return web.json_response({**user_view(user, len(access.keys_of(user.name))), "teams": access.teams_of(user.name)})


async def create_user(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    body = await json_object(request, ("name", "password", "admin"))
    name = specs.name(body.get("name"))
    password = Passwords.check(body.get("password"))
    admin = body.get("admin", False)
    if not isinstance(admin, bool):
        raise BadRequest("admin is true or false", field="admin")
    if name in deps.replica.state.access.users:
        raise Conflict(f"user {name!r} exists", field="name")
    outcome = await write(request, UserCreate(name, await deps.auth.passwords.hash(password), admin))
    user = deps.replica.state.access.users[str(outcome.id)]
    return web.json_response(user_view(user, 0), status=201)


async def update_user(request: web.Request) -> web.Response:
    """``{"password", "current_password"}`` (one's own: the current one too) and ``{"admin"}`` (administrators)."""
    deps = request.app[DEPS]
    user = _user(request)
    body = await json_object(request, ("password", "current_password", "admin"))
    admin = body.get("admin")
    if admin is not None and not isinstance(admin, bool):
        raise BadRequest("admin is true or false", field="admin")
    if admin is not None:
        authorize(request, Permission.ADMIN)
    new_hash = None
    if "current_password" in body:
        Passwords.check(body.get("current_password"), "current_password")
    if "password" in body:
        password = Passwords.check(body.get("password"))
        if not is_admin(grants(request)):
            current = Passwords.check(body.get("current_password"), "current_password")
            if not await deps.auth.passwords.verify(user.password_hash, current):
                deps.auth.stats.login_failures += 1
                raise BadRequest("current_password is not the user's password", field="current_password")
        new_hash = await deps.auth.passwords.hash(password)
    if new_hash is None and admin is None:
        raise BadRequest("name at least one field to change: password or admin", field="body")
    await write(request, UserUpdate(user.name, new_hash, admin))
    access = deps.replica.state.access
    return web.json_response(user_view(access.users[user.name], len(access.keys_of(user.name))))


async def delete_user(request: web.Request) -> web.Response:
    name = NAME.get(request)
    if name not in request.app[DEPS].replica.state.access.users:
        raise not_found("user", name)
    await write(request, UserRemove(name))
    return web.json_response({"removed": name})


# ---------------------------------------------------------------------- API keys


async def list_keys(request: web.Request) -> web.Response:
    """One's own keys and sessions; an administrator's ``?user=NAME`` (or every user's, without it)."""
    access = request.app[DEPS].replica.state.access
    me, wanted = principal(request).user.name, USER.find(request)
    if not is_admin(grants(request)):
        if wanted not in (None, me):
            raise not_found("user", str(wanted))
        wanted = me
    keys = sorted(access.keys.values(), key=lambda k: (k.owner, k.created))
    return page(request, (key_view(k) for k in keys if wanted is None or k.owner == wanted))


async def create_key(request: web.Request) -> web.Response:
    """``{"description", "environment", "role", "ttl", "user"}``: a key for oneself (an administrator: for
    anyone), acting in one environment or the whole account, with at most a role; the token once."""
    deps = request.app[DEPS]
    state = deps.replica.state
    body = await json_object(request, ("description", "environment", "role", "ttl", "user"))
    me = principal(request).user.name
    owner = body.get("user", me)
    if not isinstance(owner, str):
        raise BadRequest("user is a user name", field="user")
    if owner != me:
        authorize(request, Permission.ADMIN)
        if owner not in state.access.users:
            raise not_found("user", owner)
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise BadRequest(f"description is a string of at most {MAX_DESCRIPTION} characters", field="description")
    environment = body.get("environment")
    if environment is not None:
        environment = specs.name(environment, "environment")
        if environment not in state.environments or role_in(grants(request), environment) is None:
            raise not_found("environment", environment)
    role = _role(body["role"]) if body.get("role") is not None else None
    if not may_delegate(grants(request), environment, role):
        raise BadRequest("this credential is limited: a key it makes has the same environment and no higher a role",
                         field="role")
    ttl = ttl_seconds(body["ttl"]) if body.get("ttl") is not None else (None if "ttl" in body else KEY_TTL)
    now = deps.auth.clock()
    key_id, secret_hash, token = new_key()
    await write(request, KeyCreate(key_id, owner, secret_hash, description, environment, role,
                                   now + ttl if ttl is not None else None))
    return web.json_response({**key_view(state.access.keys[key_id]), "token": token}, status=201)


async def revoke_key(request: web.Request) -> web.Response:
    key_id = ID.get(request)
    key = request.app[DEPS].replica.state.access.keys.get(key_id)
    if key is None or (key.owner != principal(request).user.name and not is_admin(grants(request))):
        raise not_found("key", key_id)
    await write(request, KeyRevoke(key.id))
    return web.json_response({"revoked": key.id})


# ---------------------------------------------------------------------- teams


def _members(body: dict[str, object]) -> tuple[str, ...]:
    members = body.get("members", [])
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise BadRequest("members is a list of user names", field="members")
    return tuple(str(m) for m in members)


async def list_teams(request: web.Request) -> web.Response:
    teams = request.app[DEPS].replica.state.access.teams
    return page(request, (wire(t) for t in sorted(teams.values(), key=lambda t: t.name)))


async def create_team(request: web.Request) -> web.Response:
    body = await json_object(request, ("name", "members"))
    name = specs.name(body.get("name"))
    if name in request.app[DEPS].replica.state.access.teams:
        raise Conflict(f"team {name!r} exists", field="name")
    await write(request, TeamSet(name, _members(body)))
    return web.json_response(wire(request.app[DEPS].replica.state.access.teams[name]), status=201)


async def set_team(request: web.Request) -> web.Response:
    name = NAME.get(request)
    if name not in request.app[DEPS].replica.state.access.teams:
        raise not_found("team", name)
    body = await json_object(request, ("members",))
    if "members" not in body:
        raise BadRequest("members is required: the team's user names", field="members")
    await write(request, TeamSet(name, _members(body)))
    return web.json_response(wire(request.app[DEPS].replica.state.access.teams[name]))


async def delete_team(request: web.Request) -> web.Response:
    name = NAME.get(request)
    if name not in request.app[DEPS].replica.state.access.teams:
        raise not_found("team", name)
    await write(request, TeamRemove(name))
    return web.json_response({"removed": name})


# ---------------------------------------------------------------------- environments and their members


async def create_environment(request: web.Request) -> web.Response:
    body = await json_object(request, ("name",))
    name = specs.name(body.get("name"))
    await write(request, EnvCreate(name))
    return web.json_response(_environment_view(request, name), status=201)


def _environment_view(request: web.Request, name: str) -> dict[str, object]:
    state = request.app[DEPS].replica.state
    role = role_in(grants(request), name)
    members = state.access.bindings.get(name, {})
    return {**wire(state.environments[name]), "role": role.value if role else None,
            "members": {s: r.value for s, r in sorted(members.items())},
            "hosts": sorted(h.name for h in state.hosts.values() if h.environment == name)}


def _readable_environment(request: web.Request) -> str:
    name = NAME.get(request)
    if name not in request.app[DEPS].replica.state.environments or role_in(grants(request), name) is None:
        raise not_found("environment", name)
    return name


async def get_environment(request: web.Request) -> web.Response:
    return web.json_response(_environment_view(request, _readable_environment(request)))


async def set_member(request: web.Request) -> web.Response:
    """``PUT /v1/environments/{name}/members/{subject}`` ``{"role": …}``: the environment's owner (or an
    administrator) gives a user or a team a role in it."""
    name = _readable_environment(request)
    authorize(request, Permission.MANAGE, name)
    body = await json_object(request, ("role",))
    role = _role(body.get("role"))
    await write(request, RoleSet(name, SUBJECT.get(request), role))
    return web.json_response(_environment_view(request, name))


async def remove_member(request: web.Request) -> web.Response:
    name = _readable_environment(request)
    authorize(request, Permission.MANAGE, name)
    subject = SUBJECT.get(request)
    if subject not in request.app[DEPS].replica.state.access.bindings.get(name, {}):
        raise NotFound(f"{subject} has no role in {name}", field="subject")
    await write(request, RoleSet(name, subject, None))
    return web.json_response(_environment_view(request, name))


__all__ = ["auth_stats", "create_environment", "create_key", "create_team", "create_user", "delete_team",
           "delete_user", "end_session", "get_environment", "get_user", "list_keys", "list_teams", "list_users",
           "login", "logout", "open_session", "remove_member", "revoke_key", "set_member", "set_team", "ttl_seconds",
           "update_user", "whoami"]
