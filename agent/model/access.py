"""Users, their credentials, teams, and who holds which role in which environment: replicated like
everything else, so a key revoked on one node is refused by every node as soon as it has applied the
revocation (milliseconds after the commit).

Secrets never enter the state: a password is kept as its Argon2id hash, an API key as the SHA-256 of
its 256-bit secret (random keys need no slow hash), both made by the node that took the request.
A login session is an API key with ``session`` set and a short expiry.

Nothing here reads a clock: a command carries the time its node took it (``Actor.at``), and expiry is
judged against that time when it is applied, and against the node's clock when a request comes in.
"""

from __future__ import annotations

import dataclasses
import hmac
import re
from collections.abc import Mapping
from typing import Protocol

from agent.model.changes import Topic
from agent.model.codec import WireError, from_wire, to_wire
from agent.model.commands import (
    Actor,
    AdminBootstrap,
    CaRetire,
    CaRotate,
    CaSet,
    JoinTokenCreate,
    JoinTokenRevoke,
    JoinTokenUse,
    KeyCreate,
    KeyRevoke,
    Outcome,
    RoleSet,
    TeamRemove,
    TeamSet,
    UserCreate,
    UserRemove,
    UserUpdate,
)
from agent.model.entities import EventKind
from agent.model.errors import bad_request, conflict, forbidden, not_found
from agent.model.policy import RANK, Grants, Role, is_admin, may_delegate
from agent.model.spec import name as check_name

PASSWORD_HASH_PREFIX = "$argon2id$"
MAX_PASSWORD_HASH = 256
KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")
SECRET_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_KEYS_PER_USER = 100
"""Named API keys a user may hold (sessions aside)."""
MAX_SESSIONS_PER_USER = 32
"""Login sessions a user may hold: the oldest ends when a new one would pass this."""
MAX_TEAM_MEMBERS = 1000
MAX_DESCRIPTION = 200
EXPIRED_KEPT = 24 * 3600.0
"""An expired key is dropped from the state this long after it expired (seconds)."""


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    password_hash: str
    admin: bool
    created: int
    updated: int


@dataclasses.dataclass(frozen=True)
class ApiKey:
    id: str
    owner: str
    secret_hash: str
    description: str
    environment: str | None
    """The one environment the key acts in; None: the owner's whole account."""
    role: Role | None
    """The most the key may do in an environment; None: what its owner may."""
    expires: float | None
    """Unix time; None: until revoked."""
    created_at: float
    created: int
    session: bool = False
    metrics: bool = False
    """A metrics key: it scrapes ``/metrics`` (while its owner is an administrator) and does nothing else."""


@dataclasses.dataclass(frozen=True)
class Team:
    name: str
    members: tuple[str, ...]
    created: int


@dataclasses.dataclass(frozen=True)
class JoinToken:
    id: str
    secret_hash: str
    expires: float
    uses_left: int | None
    description: str
    created: int
    environment: str = "default"


@dataclasses.dataclass(frozen=True)
class Authority:
    """The cluster CA: its certificate (public) and its key, sealed (``mesh.pki.seal_ca_key``). While a
    rotation is under way, the CA it replaces is still trusted (``previous``) and ``cross_pem`` is this
    CA's certificate issued by that one (``mesh.pki.cross_sign``)."""

    cert_pem: str
    sealed_key: bytes
    fingerprint: str
    created: int
    generation: int = 1
    previous: str = ""
    """The retiring CA's certificate, trusted until the rotation is finished ("" when none is)."""
    previous_fingerprint: str = ""
    cross_pem: str = ""

    @property
    def trusted_pem(self) -> str:
        """What a node trusts: this CA, and the retiring one while a rotation is under way."""
        return self.cert_pem + self.previous

    @property
    def fingerprints(self) -> tuple[str, ...]:
        """The trusted CAs' fingerprints (a join token made before a rotation carries the old one)."""
        return (self.fingerprint, self.previous_fingerprint) if self.previous else (self.fingerprint,)


MAX_JOIN_TOKENS = 100
UNKNOWN_JOIN_TOKEN = "the join token is not valid (unknown, revoked or used up)"


def user_subject(name: str) -> str:
    return f"user:{name}"


def team_subject(name: str) -> str:
    return f"team:{name}"


SUBJECT_RE = re.compile(r"^(user|team):([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)$")


def check_password_hash(value: str) -> str:
    if not value.startswith(PASSWORD_HASH_PREFIX) or len(value) > MAX_PASSWORD_HASH:
        raise bad_request("a password is kept as an Argon2id hash", "password_hash")
    return value


def check_key_fields(key_id: str, secret_hash: str, description: str) -> None:
    if not KEY_ID_RE.match(key_id):
        raise bad_request("a key id is 16 lowercase hex digits", "id")
    if not SECRET_HASH_RE.match(secret_hash):
        raise bad_request("a key's secret is kept as its SHA-256, 64 lowercase hex digits", "secret_hash")
    if len(description) > MAX_DESCRIPTION:
        raise bad_request(f"a description is at most {MAX_DESCRIPTION} characters", "description")


class Sink(Protocol):
    """Where applying an access command records what it did (the state machine's events and outbox)."""

    def event(self, index: int, kind: EventKind, message: str, **refs: str) -> None: ...

    def change(self, index: int, topic: Topic, key: str, removed: bool = False) -> None: ...


class Access:
    """The access part of the cluster's state; :class:`agent.model.state.ClusterState` applies the
    commands, this holds the records and answers questions about them."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.keys: dict[str, ApiKey] = {}
        self.teams: dict[str, Team] = {}
        self.bindings: dict[str, dict[str, Role]] = {}
        """environment → subject (``user:NAME`` / ``team:NAME``) → role."""
        self.join_tokens: dict[str, JoinToken] = {}
        self.authority: Authority | None = None

    def teams_of(self, user: str) -> list[str]:
        return [t.name for t in self.teams.values() if user in t.members]

    def roles_of(self, user: str) -> dict[str, Role]:
        """Each environment's role for ``user``: its own or one of its teams', the highest."""
        subjects = {user_subject(user), *(team_subject(t) for t in self.teams_of(user))}
        roles: dict[str, Role] = {}
        for env, members in self.bindings.items():
            for subject, role in members.items():
                if subject in subjects and (env not in roles or RANK[role] > RANK[roles[env]]):
                    roles[env] = role
        return roles

    def grants(self, user: User, key: ApiKey | None) -> Grants:
        if key is not None and key.metrics:
            return Grants(admin=user.admin, scraper=True)
        return Grants(admin=user.admin, roles=self.roles_of(user.name),
                      scope=key.environment if key else None, cap=key.role if key else None)

    def keys_of(self, owner: str) -> list[ApiKey]:
        return sorted((k for k in self.keys.values() if k.owner == owner), key=lambda k: k.created)

    def subject_exists(self, subject: str) -> bool:
        kind, _, name = subject.partition(":")
        return name in (self.users if kind == "user" else self.teams)

    def credential(self, actor: Actor) -> tuple[User, ApiKey | None]:
        """The user (and key) a command was asked with, still valid when it is applied; CommandError
        (forbidden) when the user was removed or the key revoked or expired meanwhile."""
        user = self.users.get(actor.user)
        if user is None:
            raise forbidden(f"user {actor.user!r} no longer exists")
        if actor.key is None:
            return user, None
        key = self.keys.get(actor.key)
        if key is None or key.owner != user.name:
            raise forbidden(f"key {actor.key} was revoked")
        if key.expires is not None and actor.at >= key.expires:
            raise forbidden(f"key {actor.key} had expired")
        return user, key

    # -------------------------------------------------------------- applying the access commands

    def bootstrap(self, cmd: AdminBootstrap, index: int, sink: Sink) -> Outcome:
        if self.users:
            raise conflict("the cluster has users already: bootstrap makes only the first administrator", "user")
        if cmd.key.owner != cmd.user.name:
            raise bad_request("the first key is the first administrator's", "key.owner")
        self.user_create(dataclasses.replace(cmd.user, admin=True), index, sink)
        self.key_create(cmd.key, index, cmd.at, None, sink)
        return Outcome(index, id=cmd.user.name)

    def user_create(self, cmd: UserCreate, index: int, sink: Sink) -> Outcome:
        name = check_name(cmd.name)
        if name in self.users:
            raise conflict(f"user {name!r} exists", "name")
        self.users[name] = User(name, check_password_hash(cmd.password_hash), cmd.admin, index, index)
        sink.change(index, Topic.ACCESS, f"user:{name}")
        sink.event(index, EventKind.USER_CREATED, f"user {name} created" + (" (admin)" if cmd.admin else ""),
                   user=name)
        return Outcome(index, id=name)

    def user_update(self, cmd: UserUpdate, index: int, sink: Sink) -> Outcome:
        user = self.users.get(cmd.name)
        if user is None:
            raise not_found("user", cmd.name, "name")
        if cmd.admin is False and user.admin and sum(u.admin for u in self.users.values()) == 1:
            raise conflict(f"{user.name} is the last administrator", "admin")
        new = dataclasses.replace(
            user, updated=index, admin=user.admin if cmd.admin is None else cmd.admin,
            password_hash=user.password_hash if cmd.password_hash is None else check_password_hash(cmd.password_hash))
        self.users[user.name] = new
        if cmd.password_hash is not None:  # a new password ends the sessions the old one opened
            for key in [k for k in self.keys.values() if k.owner == user.name and k.session]:
                del self.keys[key.id]
        what = [w for w, changed in (("password", cmd.password_hash is not None),
                                     ("admin" if new.admin else "not admin", cmd.admin is not None)) if changed]
        sink.change(index, Topic.ACCESS, f"user:{user.name}")
        sink.event(index, EventKind.USER_UPDATED, f"user {user.name} changed: {', '.join(what) or 'nothing'}",
                   user=user.name)
        return Outcome(index, id=user.name)

    def user_remove(self, cmd: UserRemove, index: int, sink: Sink) -> Outcome:
        user = self.users.get(cmd.name)
        if user is None:
            raise not_found("user", cmd.name, "name")
        if user.admin and sum(u.admin for u in self.users.values()) == 1:
            raise conflict(f"{user.name} is the last administrator", "name")
        del self.users[user.name]
        for key in [k for k in self.keys.values() if k.owner == user.name]:
            del self.keys[key.id]
        for team in list(self.teams.values()):
            if user.name in team.members:
                self.teams[team.name] = dataclasses.replace(
                    team, members=tuple(m for m in team.members if m != user.name))
        for members in self.bindings.values():
            members.pop(user_subject(user.name), None)
        sink.change(index, Topic.ACCESS, f"user:{user.name}", removed=True)
        sink.event(index, EventKind.USER_REMOVED, f"user {user.name} removed, with its keys", user=user.name)
        return Outcome(index, id=user.name, deleted=True)

    def key_create(self, cmd: KeyCreate, index: int, at: float, grants: Grants | None, sink: Sink,
                   environments: Mapping[str, object] | None = None) -> Outcome:
        check_key_fields(cmd.id, cmd.secret_hash, cmd.description)
        if cmd.owner not in self.users:
            raise not_found("user", cmd.owner, "owner")
        if cmd.id in self.keys:
            raise conflict(f"key {cmd.id} exists", "id")
        if environments is not None and cmd.environment is not None and cmd.environment not in environments:
            raise not_found("environment", cmd.environment, "environment")
        if grants is not None and not may_delegate(grants, cmd.environment, cmd.role):
            raise forbidden("a key cannot make a key that may do more than itself", "role")
        if cmd.expires is not None and cmd.expires <= at:
            raise bad_request("the key would have expired already", "expires")
        if cmd.metrics:
            self._check_metrics_key(cmd, grants)
        self._prune(cmd.owner, at, cmd.session)
        self.keys[cmd.id] = ApiKey(cmd.id, cmd.owner, cmd.secret_hash, cmd.description, cmd.environment, cmd.role,
                                   cmd.expires, at, index, cmd.session, cmd.metrics)
        sink.change(index, Topic.ACCESS, f"key:{cmd.id}")
        what = "session started" if cmd.session else f"API key {cmd.id} created"
        sink.event(index, EventKind.KEY_CREATED, f"{what} for {cmd.owner}", user=cmd.owner, key=cmd.id)
        return Outcome(index, id=cmd.id)

    def _check_metrics_key(self, cmd: KeyCreate, grants: Grants | None) -> None:
        """A metrics key is an administrator's, made by an administrator, for the whole cluster: what it
        scrapes is every part of the agent, not one environment's."""
        if cmd.environment is not None or cmd.role is not None or cmd.session:
            raise bad_request("a metrics key has no environment, role or session: it only scrapes", "metrics")
        if not self.users[cmd.owner].admin:
            raise bad_request(f"a metrics key is an administrator's: {cmd.owner} is not one", "metrics")
        if grants is not None and not is_admin(grants):
            raise forbidden("only an administrator makes metrics keys", "metrics")

    def _prune(self, owner: str, at: float, session: bool) -> None:
        """Keys long expired go; a user at its limit of keys is refused, at its limit of sessions loses
        the oldest."""
        for key in [k for k in self.keys.values() if k.expires is not None and k.expires + EXPIRED_KEPT < at]:
            del self.keys[key.id]
        mine = [k for k in self.keys_of(owner) if k.session == session]
        if session:
            for key in mine[:max(0, len(mine) - MAX_SESSIONS_PER_USER + 1)]:
                del self.keys[key.id]
        elif len(mine) >= MAX_KEYS_PER_USER:
            raise conflict(f"{owner} has {len(mine)} API keys, the most one user may hold: revoke one", "owner")

    def key_revoke(self, cmd: KeyRevoke, index: int, sink: Sink) -> Outcome:
        key = self.keys.pop(cmd.id, None)
        if key is None:
            raise not_found("key", cmd.id, "id")
        sink.change(index, Topic.ACCESS, f"key:{key.id}", removed=True)
        what = "session ended" if key.session else f"API key {key.id} revoked"
        sink.event(index, EventKind.KEY_REVOKED, f"{what} for {key.owner}", user=key.owner, key=key.id)
        return Outcome(index, id=key.id, deleted=True)

    def team_set(self, cmd: TeamSet, index: int, sink: Sink) -> Outcome:
        name = check_name(cmd.name)
        members = tuple(dict.fromkeys(cmd.members))
        if len(members) > MAX_TEAM_MEMBERS:
            raise bad_request(f"a team has at most {MAX_TEAM_MEMBERS} members", "members")
        for i, member in enumerate(members):
            if member not in self.users:
                raise not_found("user", member, f"members[{i}]")
        old = self.teams.get(name)
        self.teams[name] = Team(name, members, old.created if old else index)
        sink.change(index, Topic.ACCESS, f"team:{name}")
        sink.event(index, EventKind.TEAM_CHANGED, f"team {name}: {', '.join(members) or 'no members'}", team=name)
        return Outcome(index, id=name)

    def team_remove(self, cmd: TeamRemove, index: int, sink: Sink) -> Outcome:
        if self.teams.pop(cmd.name, None) is None:
            raise not_found("team", cmd.name, "name")
        for members in self.bindings.values():
            members.pop(team_subject(cmd.name), None)
        sink.change(index, Topic.ACCESS, f"team:{cmd.name}", removed=True)
        sink.event(index, EventKind.TEAM_REMOVED, f"team {cmd.name} removed", team=cmd.name)
        return Outcome(index, id=cmd.name, deleted=True)

    def role_set(self, cmd: RoleSet, index: int, environments: Mapping[str, object], sink: Sink) -> Outcome:
        if cmd.environment not in environments:
            raise not_found("environment", cmd.environment, "environment")
        if not SUBJECT_RE.match(cmd.subject):
            raise bad_request("a subject is user:NAME or team:NAME", "subject")
        if not self.subject_exists(cmd.subject):
            kind, _, name = cmd.subject.partition(":")
            raise not_found(kind, name, "subject")
        members = self.bindings.setdefault(cmd.environment, {})
        if cmd.role is None:
            if members.pop(cmd.subject, None) is None:
                raise not_found(f"role in {cmd.environment} for", cmd.subject, "subject")
        else:
            members[cmd.subject] = cmd.role
        sink.change(index, Topic.ACCESS, f"role:{cmd.environment}:{cmd.subject}", removed=cmd.role is None)
        what = cmd.role.value if cmd.role else "no longer a member"
        sink.event(index, EventKind.ROLE_CHANGED, f"{cmd.subject} is {what} in {cmd.environment}",
                   environment=cmd.environment, subject=cmd.subject)
        return Outcome(index, id=cmd.subject)

    # -------------------------------------------------------------- joining: the CA and join tokens

    def ca_set(self, cmd: CaSet, index: int, sink: Sink) -> Outcome:
        if self.authority is not None:
            raise conflict("the cluster has its certificate authority already", "cert_pem")
        if not cmd.cert_pem.startswith("-----BEGIN CERTIFICATE-----") or not SECRET_HASH_RE.match(cmd.fingerprint):
            raise bad_request("a CA is a PEM certificate and its SHA-256 fingerprint", "cert_pem")
        self.authority = Authority(cmd.cert_pem, cmd.sealed_key, cmd.fingerprint, index)
        sink.change(index, Topic.ACCESS, "ca")
        return Outcome(index, id=cmd.fingerprint[:16])

    def ca_rotate(self, cmd: CaRotate, index: int, sink: Sink) -> Outcome:
        old = self.authority
        if old is None:
            raise conflict("the cluster has no certificate authority to rotate", "cert_pem")
        if old.previous:
            raise conflict(f"a rotation is under way already (from CA {old.previous_fingerprint[:16]}): finish it "
                           "first (`corral ca rotate --finish`)", "cert_pem")
        for pem in (cmd.cert_pem, cmd.cross_pem):
            if not pem.startswith("-----BEGIN CERTIFICATE-----") or not SECRET_HASH_RE.match(cmd.fingerprint):
                raise bad_request("a CA is a PEM certificate, its cross-signed copy and its SHA-256 fingerprint",
                                  "cert_pem")
        if cmd.fingerprint == old.fingerprint:
            raise conflict("the new CA is the one the cluster has", "fingerprint")
        self.authority = Authority(cmd.cert_pem, cmd.sealed_key, cmd.fingerprint, index, old.generation + 1,
                                   old.cert_pem, old.fingerprint, cmd.cross_pem)
        sink.change(index, Topic.ACCESS, "ca")
        sink.event(index, EventKind.CA_ROTATED, f"CA rotation begun: {old.fingerprint[:16]} is retiring, "
                   f"{cmd.fingerprint[:16]} signs")
        return Outcome(index, id=cmd.fingerprint[:16])

    def ca_retire(self, cmd: CaRetire, index: int, sink: Sink) -> Outcome:
        now = self.authority
        if now is None or not now.previous:
            raise conflict("no CA rotation is under way", "fingerprint")
        if cmd.fingerprint != now.previous_fingerprint:
            raise conflict(f"the retiring CA is {now.previous_fingerprint[:16]}, not {cmd.fingerprint[:16]}",
                           "fingerprint")
        self.authority = dataclasses.replace(now, previous="", previous_fingerprint="", cross_pem="")
        sink.change(index, Topic.ACCESS, "ca")
        sink.event(index, EventKind.CA_ROTATED, f"CA rotation finished: {cmd.fingerprint[:16]} is trusted no more")
        return Outcome(index, id=cmd.fingerprint[:16])

    def join_token_create(self, cmd: JoinTokenCreate, index: int, at: float, sink: Sink) -> Outcome:
        check_key_fields(cmd.id, cmd.secret_hash, cmd.description)
        if cmd.id in self.join_tokens:
            raise conflict(f"join token {cmd.id} exists", "id")
        if cmd.uses is not None and not 1 <= cmd.uses <= 10_000:
            raise bad_request("uses is 1 to 10000 (or none: until it expires)", "uses")
        for token in [t for t in self.join_tokens.values() if t.expires + EXPIRED_KEPT < at]:
            del self.join_tokens[token.id]
        if len(self.join_tokens) >= MAX_JOIN_TOKENS:
            raise conflict(f"the cluster has {len(self.join_tokens)} join tokens: revoke some", "id")
        self.join_tokens[cmd.id] = JoinToken(cmd.id, cmd.secret_hash, cmd.expires, cmd.uses, cmd.description, index,
                                             cmd.environment)
        sink.change(index, Topic.ACCESS, f"join_token:{cmd.id}")
        sink.event(index, EventKind.JOIN_TOKEN_CREATED, f"join token {cmd.id} created" + (
            f" for {cmd.uses} host(s)" if cmd.uses else ""), token=cmd.id)
        return Outcome(index, id=cmd.id)

    def join_token_revoke(self, cmd: JoinTokenRevoke, index: int, sink: Sink) -> Outcome:
        if self.join_tokens.pop(cmd.id, None) is None:
            raise not_found("join token", cmd.id, "id")
        sink.change(index, Topic.ACCESS, f"join_token:{cmd.id}", removed=True)
        sink.event(index, EventKind.JOIN_TOKEN_REVOKED, f"join token {cmd.id} revoked", token=cmd.id)
        return Outcome(index, id=cmd.id, deleted=True)

    def join_token_known(self, token_id: str, secret_hash: str) -> bool:
        """Does the cluster hold this token (its id, with this secret)? Expired or not."""
        token = self.join_tokens.get(token_id)
        return token is not None and hmac.compare_digest(token.secret_hash, secret_hash)

    def join_token_check(self, token_id: str, secret_hash: str, at: float) -> JoinToken:
        """The token a joining host presents, if it may join with it now; CommandError (forbidden) saying
        why not otherwise (the same words for an unknown token and a wrong secret)."""
        token = self.join_tokens.get(token_id)
        if token is None or not self.join_token_known(token_id, secret_hash):
            raise forbidden(UNKNOWN_JOIN_TOKEN, "token")
        if at >= token.expires:
            raise forbidden("the join token has expired: make a new one with `corral token create`", "token")
        return token

    def join_token_use(self, cmd: JoinTokenUse, index: int, sink: Sink) -> tuple[Outcome, str]:
        """The outcome and the environment the joining host belongs to."""
        token = self.join_token_check(cmd.id, cmd.secret_hash, cmd.at)
        if token.uses_left is not None:
            if token.uses_left <= 1:
                del self.join_tokens[token.id]
            else:
                self.join_tokens[token.id] = dataclasses.replace(token, uses_left=token.uses_left - 1)
        sink.change(index, Topic.ACCESS, f"join_token:{token.id}")
        sink.event(index, EventKind.HOST_JOINED, f"host {cmd.host} joined environment {token.environment} with "
                   f"join token {token.id}", host=cmd.host, token=token.id)
        return Outcome(index, id=token.id), token.environment

    # -------------------------------------------------------------- snapshots

    def to_wire(self) -> dict[str, object]:
        return {
            "users": [to_wire(u) for u in self.users.values()],
            "keys": [to_wire(k) for k in self.keys.values()],
            "teams": [to_wire(t) for t in self.teams.values()],
            "bindings": {env: {s: r.value for s, r in members.items()} for env, members in self.bindings.items()},
            "join_tokens": [to_wire(t) for t in self.join_tokens.values()],
            "authority": to_wire(self.authority) if self.authority else None,
        }

    @classmethod
    def from_wire(cls, raw: object) -> Access:
        """The access part of a snapshot; an empty one for snapshots made before access control."""
        access = cls()
        if raw is None:
            return access
        if not isinstance(raw, Mapping):
            raise WireError("access", "must be a map")
        for u in _list(raw, "users"):
            user = from_wire(User, u, "access.users")
            access.users[user.name] = user
        for k in _list(raw, "keys"):
            key = from_wire(ApiKey, k, "access.keys")
            access.keys[key.id] = key
        for t in _list(raw, "teams"):
            team = from_wire(Team, t, "access.teams")
            access.teams[team.name] = team
        for t in _list(raw, "join_tokens"):
            token = from_wire(JoinToken, t, "access.join_tokens")
            access.join_tokens[token.id] = token
        if raw.get("authority") is not None:
            access.authority = from_wire(Authority, raw["authority"], "access.authority")
        bindings = raw.get("bindings") or {}
        if not isinstance(bindings, Mapping):
            raise WireError("access.bindings", "must be a map")
        for env, members in bindings.items():
            if not isinstance(members, Mapping):
                raise WireError(f"access.bindings.{env}", "must be a map")
            try:
                access.bindings[str(env)] = {str(s): Role(r) for s, r in members.items()}
            except ValueError as exc:
                raise WireError(f"access.bindings.{env}", str(exc)) from None
        return access


def _list(raw: Mapping[object, object], key: str) -> list[object]:
    value = raw.get(key) or []
    if not isinstance(value, list):
        raise WireError(f"access.{key}", "must be a list")
    return value


__all__ = [
    "EXPIRED_KEPT",
    "MAX_DESCRIPTION",
    "MAX_JOIN_TOKENS",
    "MAX_KEYS_PER_USER",
    "MAX_SESSIONS_PER_USER",
    "MAX_TEAM_MEMBERS",
    "PASSWORD_HASH_PREFIX",
    "SUBJECT_RE",
    "Access",
    "ApiKey",
    "Authority",
    "JoinToken",
    "Sink",
    "Team",
    "User",
    "check_key_fields",
    "check_password_hash",
    "team_subject",
    "user_subject",
]
