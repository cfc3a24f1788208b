"""Access control: the pure policy (every permission × every role), token and password formats, the
login limiter and the hasher's bounds, the state machine re-checking what it applies, and — on the real
app over an in-memory cluster — every route of the API called as every kind of caller."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import re
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.api import exec_wire as wire
from agent.api.auth import new_key, parse_token
from agent.api.drills import REPORT_KEY
from agent.api.passwords import ARGON2, LoginLimiter, Passwords
from agent.api.routes import ROUTES
from agent.errors import TooManyRequests, Unauthorized, Unavailable
from agent.model.commands import (
    Actor,
    EnvCreate,
    InstanceStatus,
    KeyCreate,
    KvPut,
    PlacementsCommit,
    RoleSet,
    StackCreate,
    UserCreate,
    UserUpdate,
)
from agent.model.entities import Status
from agent.model.errors import CommandError, ErrorCode
from agent.model.policy import Grants, Permission, Role, allowed, best_role, is_admin, may_delegate, readable, role_in
from agent.model.state import ClusterState
from mesh import pki
from tests.unit.fakes import ADMIN_PASSWORD, Harness, running_api
from tests.unit.test_images import save_tarball

# ---------------------------------------------------------------------- the pure policy

R, P = Role, Permission
CALLERS: dict[str, Grants] = {
    "nobody": Grants(),
    "read-only": Grants(roles={"dev": R.READ_ONLY}),
    "restricted": Grants(roles={"dev": R.RESTRICTED}),
    "member": Grants(roles={"dev": R.MEMBER}),
    "owner": Grants(roles={"dev": R.OWNER}),
    "owner's read-only key": Grants(roles={"dev": R.OWNER}, cap=R.READ_ONLY),
    "owner's key for prod": Grants(roles={"dev": R.OWNER, "prod": R.MEMBER}, scope="prod"),
    "admin": Grants(admin=True),
    "admin's dev key": Grants(admin=True, scope="dev"),
    "admin's read-only key": Grants(admin=True, cap=R.READ_ONLY),
    "admin's metrics key": Grants(admin=True, scraper=True),
    "a former admin's metrics key": Grants(scraper=True),
}
SCRAPERS = {"admin's metrics key", "a former admin's metrics key"}
# permission → the callers allowed it in environment "dev" (the rest are refused)
IN_DEV: dict[Permission, set[str]] = {
    P.READ: {"read-only", "restricted", "member", "owner", "owner's read-only key", "admin", "admin's dev key",
             "admin's read-only key"},
    P.DEPLOY: {"restricted", "member", "owner", "admin", "admin's dev key"},
    P.INFRA: {"member", "owner", "admin", "admin's dev key"},
    P.MANAGE: {"owner", "admin", "admin's dev key"},
    P.ADMIN: {"admin"},
    P.SYSTEM: set(),
    P.PUBLIC: set(CALLERS),
    P.AUTHENTICATED: set(CALLERS) - SCRAPERS,
    P.METRICS: {"admin", "admin's metrics key"},
}


@pytest.mark.parametrize("permission", list(Permission))
@pytest.mark.parametrize("caller", list(CALLERS))
def test_the_policy_table(caller: str, permission: Permission) -> None:
    env = "dev" if permission in (P.READ, P.DEPLOY, P.INFRA, P.MANAGE) else None
    assert allowed(CALLERS[caller], permission, env) == (caller in IN_DEV[permission]), (caller, permission)


def test_roles_outside_their_environment_and_scopes() -> None:
    owner = CALLERS["owner"]
    assert role_in(owner, "dev") is R.OWNER and role_in(owner, "prod") is None
    assert not allowed(owner, P.READ, "prod"), "a role in dev says nothing of prod"
    prod_key = CALLERS["owner's key for prod"]
    assert role_in(prod_key, "dev") is None, "a key for one environment acts there only"
    assert allowed(prod_key, P.INFRA, "prod") and not allowed(prod_key, P.MANAGE, "prod")
    assert role_in(CALLERS["admin"], "anything") is R.OWNER, "an administrator owns every environment"
    assert allowed(CALLERS["member"], P.DEPLOY), "without an environment: has it anywhere"


def test_a_key_never_makes_a_key_that_may_do_more() -> None:
    capped, scoped, full = CALLERS["owner's read-only key"], CALLERS["owner's key for prod"], CALLERS["owner"]
    assert may_delegate(full, None, None) and may_delegate(full, "dev", R.MEMBER)
    assert may_delegate(capped, None, R.READ_ONLY) and may_delegate(capped, "dev", R.READ_ONLY)
    assert not may_delegate(capped, None, None) and not may_delegate(capped, None, R.MEMBER)
    assert may_delegate(scoped, "prod", None) and not may_delegate(scoped, None, None)
    assert not may_delegate(scoped, "dev", None)
    assert not any(may_delegate(CALLERS[k], None, R.READ_ONLY) for k in SCRAPERS), "a metrics key makes no key"


def test_a_metrics_key_has_no_role_anywhere() -> None:
    for name in SCRAPERS:
        key = CALLERS[name]
        assert role_in(key, "dev") is None and best_role(key) is None and not is_admin(key), name
        assert readable(key, {"dev", "prod"}) == frozenset(), name


# ---------------------------------------------------------------------- tokens, passwords, limits


def test_tokens_carry_a_public_id_and_a_secret_kept_only_as_its_hash() -> None:
    key_id, secret_hash, token = new_key()
    assert token.startswith(f"crl_{key_id}_") and len(token) == 4 + 16 + 1 + 43
    assert parse_token(token) == (key_id, secret_hash)
    assert secret_hash not in token and len(secret_hash) == 64
    assert new_key()[2] != token
    for bad in ("", "crl_", token[:-1], token + "x", token.replace("crl_", "crk_"), token.upper(),
                f"crl_{key_id}_{'!' * 43}", "Bearer " + token):
        with pytest.raises(Unauthorized) as err:
            parse_token(bad)
        assert "malformed" in err.value.message


async def test_passwords_are_argon2id_at_owasp_parameters_and_checked_off_the_loop() -> None:
    passwords = Passwords()
    hashed = await passwords.hash("a fine passphrase")
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert ARGON2["memory_cost"] == 19 * 1024 and ARGON2["time_cost"] == 2 and ARGON2["parallelism"] == 1
    assert await passwords.verify(hashed, "a fine passphrase")
    assert not await passwords.verify(hashed, "a fine passphrasE")
    assert not await passwords.verify("not a hash", "x" * 10), "a broken hash is a failed check, not a crash"
    for bad in (None, 7, "short", "x" * 257):
        with pytest.raises(Exception, match="password"):
            Passwords.check(bad)


async def test_a_burst_of_password_checks_is_bounded() -> None:
    passwords = Passwords(concurrency=1, queue=1, memory_cost=8 * 1024)
    results = await asyncio.gather(*(passwords.hash(f"password {i}") for i in range(4)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, Unavailable)]
    assert len(refused) == 2, "one hashing, one waiting, the rest refused at once (503), not queued without end"
    assert all(isinstance(r, str) for r in results if r not in refused)


def test_failed_logins_are_limited_per_user_and_per_source() -> None:
    limiter = LoginLimiter(per_user=3, per_source=5, window=60)
    for i in range(3):
        limiter.check("alice", "10.0.0.1", i)
        limiter.failed("alice", "10.0.0.1", i)
    with pytest.raises(TooManyRequests) as err:
        limiter.check("alice", "10.0.0.9", 3)
    assert err.value.headers["Retry-After"] == "57", "until the oldest failure leaves the window"
    limiter.check("bob", "10.0.0.1", 3)
    for i in range(2):
        limiter.failed(f"user{i}", "10.0.0.1", 4)
    with pytest.raises(TooManyRequests):
        limiter.check("carol", "10.0.0.1", 5)  # five failures from this address, whoever they were for
    limiter.check("carol", "10.0.0.1", 64)  # the window moved on past the first three
    limiter.succeeded("alice")
    limiter.check("alice", "10.0.0.2", 5)
    small = LoginLimiter(max_tracked=10)
    for i in range(100):
        small.failed(f"u{i}", f"s{i}", 0)
    assert len(small._failures) <= 10, "memory is bounded whatever an attacker sends"


# ---------------------------------------------------------------------- the state machine checks again


def _state_with_users() -> ClusterState:
    state = ClusterState()
    state.execute(EnvCreate("dev"), 1)
    state.execute(UserCreate("root", "$argon2id$x", admin=True), 2)
    state.execute(UserCreate("alice", "$argon2id$x"), 3)
    state.execute(RoleSet("dev", "user:alice", Role.READ_ONLY), 4)
    state.execute(KeyCreate("a" * 16, "alice", "b" * 64, expires=100.0), 5, Actor("alice", None, at=1.0))
    return state


def test_commands_are_authorized_again_when_applied() -> None:
    state = _state_with_users()
    alice = Actor("alice", "a" * 16, "h1", "10.0.0.5", at=50.0)
    with pytest.raises(CommandError) as err:
        state.execute(StackCreate("web", "dev"), 6, alice)
    assert err.value.code is ErrorCode.FORBIDDEN, "read-only in dev: a forwarded write is refused when applied"
    with pytest.raises(CommandError):
        state.execute(UserUpdate("alice", admin=True), 6, alice)
    with pytest.raises(CommandError):
        state.execute(PlacementsCommit("sv1", ()), 6, alice)
    with pytest.raises(CommandError):
        state.execute(InstanceStatus("i1", "h1", Status.RUNNING), 6, alice)
    state.execute(RoleSet("dev", "user:alice", Role.MEMBER), 7)
    state.execute(StackCreate("web", "dev"), 8, alice)
    event = state.events[-1]
    assert (event.actor, event.credential, event.source, event.environment) == (
        "alice", "a" * 16, "10.0.0.5 via h1", "dev")
    late = dataclasses.replace(alice, at=100.0)
    with pytest.raises(CommandError, match="expired"):
        state.execute(StackCreate("web2", "dev"), 9, late)
    state.execute(KvPut("k", b"v"), 10)  # an agent's own command: no actor
    with pytest.raises(CommandError):
        state.execute(KvPut("k", b"v"), 11, alice)  # alice has no role in default
    before = state.snapshot()
    with pytest.raises(CommandError):
        state.execute(StackCreate("web3", "dev"), 12, Actor("mallory", None, at=1.0))
    assert state.snapshot() == before, "a refused command changes nothing"


def test_the_access_records_survive_a_snapshot() -> None:
    state = _state_with_users()
    copy = ClusterState()
    copy.restore(state.snapshot())
    assert copy.access.users == state.access.users and copy.access.keys == state.access.keys
    assert copy.access.bindings == {"dev": {"user:alice": Role.READ_ONLY}}


# ---------------------------------------------------------------------- every route × every caller

# route → what it needs: public, system, any (any valid credential; lists are filtered), read, deploy,
# manage (in the caller's environment dev; the same request about prod is a 404), admin, self (one's own
# record; another's is a 404 but for administrators)
NEEDS: dict[tuple[str, str], str] = {
    ("GET", "/v1/openapi.json"): "any", ("GET", "/v1/health"): "public", ("GET", "/v1/host"): "any",
    ("GET", "/metrics"): "metrics",
    ("GET", "/v1/members"): "any", ("GET", "/v1/members/stats"): "any", ("GET", "/v1/raft"): "any",
    ("GET", "/v1/overlay"): "any", ("GET", "/v1/dns"): "any",
    ("GET", "/v1/keys"): "admin", ("POST", "/v1/keys"): "admin",
    ("POST", "/v1/internal/propose"): "system", ("POST", "/v1/internal/propose-batch"): "system",
    ("GET", "/v1/kv/{key}"): "read", ("PUT", "/v1/kv/{key}"): "deploy", ("DELETE", "/v1/kv/{key}"): "deploy",
    ("GET", "/v1/drills/report"): "read", ("PUT", "/v1/drills/report"): "admin",
    ("GET", "/v1/environments"): "any", ("GET", "/v1/hosts"): "any", ("GET", "/v1/hosts/{name}"): "read",
    ("GET", "/v1/hosts/{name}/stats"): "read", ("POST", "/v1/hosts/{name}/move"): "admin",
    ("GET", "/v1/stacks"): "any", ("POST", "/v1/stacks"): "deploy",
    ("GET", "/v1/stacks/{id}"): "read", ("DELETE", "/v1/stacks/{id}"): "deploy", ("GET", "/v1/services"): "any",
    ("POST", "/v1/services"): "deploy", ("GET", "/v1/services/{id}"): "read", ("PATCH", "/v1/services/{id}"): "deploy",
    ("DELETE", "/v1/services/{id}"): "deploy", ("POST", "/v1/services/{id}/scale"): "deploy",
    ("POST", "/v1/services/{id}/stop"): "deploy", ("POST", "/v1/services/{id}/start"): "deploy",
    ("POST", "/v1/services/{id}/restart"): "deploy", ("GET", "/v1/containers"): "any",
    ("GET", "/v1/services/{id}/upgrade"): "read", ("POST", "/v1/services/{id}/upgrade"): "deploy",
    ("POST", "/v1/services/{id}/upgrade/pause"): "deploy", ("POST", "/v1/services/{id}/upgrade/resume"): "deploy",
    ("POST", "/v1/services/{id}/upgrade/rollback"): "deploy",
    ("GET", "/v1/containers/{id}"): "read", ("DELETE", "/v1/containers/{id}"): "deploy",
    ("GET", "/v1/containers/{id}/logs"): "read", ("GET", "/v1/containers/{id}/stats"): "read",
    ("GET", "/v1/containers/{id}/exec"): "deploy",
    ("GET", "/v1/events"): "any", ("POST", "/v1/auth/login"): "public", ("POST", "/v1/auth/logout"): "any",
    ("GET", "/v1/auth/whoami"): "any", ("GET", "/v1/auth/stats"): "admin", ("GET", "/v1/users"): "admin",
    ("POST", "/v1/users"): "admin", ("GET", "/v1/users/{name}"): "self", ("PATCH", "/v1/users/{name}"): "self",
    ("DELETE", "/v1/users/{name}"): "admin", ("GET", "/v1/apikeys"): "any", ("POST", "/v1/apikeys"): "any",
    ("DELETE", "/v1/apikeys/{id}"): "self", ("GET", "/v1/teams"): "admin", ("POST", "/v1/teams"): "admin",
    ("PUT", "/v1/teams/{name}"): "admin", ("DELETE", "/v1/teams/{name}"): "admin",
    ("POST", "/v1/environments"): "admin", ("GET", "/v1/environments/{name}"): "read",
    ("PUT", "/v1/environments/{name}/members/{subject}"): "manage",
    ("DELETE", "/v1/environments/{name}/members/{subject}"): "manage",
    ("GET", "/v1/ca"): "public", ("GET", "/v1/ca/hosts"): "admin", ("POST", "/v1/ca/rotate"): "admin",
    ("POST", "/v1/ca/finish"): "admin", ("POST", "/v1/join"): "public", ("GET", "/v1/jointokens"): "admin",
    ("POST", "/v1/jointokens"): "admin", ("DELETE", "/v1/jointokens/{id}"): "admin",
    ("POST", "/v1/internal/certificate"): "system",
    ("GET", "/v1/registries"): "admin", ("POST", "/v1/registries"): "admin",
    ("DELETE", "/v1/registries/{name}"): "admin", ("GET", "/v1/images"): "any",
    ("POST", "/v1/images"): "deploy-anywhere", ("DELETE", "/v1/images/{id}"): "admin",
    ("POST", "/v1/images/{id}/fetch"): "deploy-anywhere",
    ("POST", "/v1/builds"): "deploy-anywhere", ("GET", "/v1/host/images"): "any",
    ("GET", "/v1/internal/images/{id}"): "system",
    ("GET", "/v2/"): "grant", ("GET", "/v2/corral/peer/manifests/{id}"): "grant",
    ("HEAD", "/v2/corral/peer/manifests/{id}"): "grant", ("GET", "/v2/corral/peer/blobs/{id}"): "grant",
    ("HEAD", "/v2/corral/peer/blobs/{id}"): "grant",
    ("POST", "/v1/stacks/{id}/deploy"): "deploy", ("GET", "/v1/volumes"): "any", ("POST", "/v1/volumes"): "deploy",
    ("GET", "/v1/volumes/{name}"): "read", ("DELETE", "/v1/volumes/{name}"): "deploy", ("GET", "/v1/configs"): "any",
    ("POST", "/v1/configs"): "deploy", ("GET", "/v1/configs/{name}"): "read",
    ("DELETE", "/v1/configs/{name}"): "deploy", ("GET", "/v1/settings"): "any", ("PATCH", "/v1/settings"): "admin",
}
ROLE_OF = {"read-only": Role.READ_ONLY, "restricted": Role.RESTRICTED, "member": Role.MEMBER, "owner": Role.OWNER}
ALLOWED: dict[str, set[str]] = {
    "read": {"read-only", "restricted", "member", "owner", "admin", "capped"},
    "deploy": {"restricted", "member", "owner", "admin"},
    "manage": {"owner", "admin"},
    "admin": {"admin"},
}
CALLER_NAMES = ["anonymous", "forged", "nobody", "read-only", "restricted", "member", "owner", "capped", "admin",
                "scraper"]
"""forged: a well-formed token no one made; capped: the owner's key capped at read-only; scraper: the
administrator's metrics key (it scrapes, and may do nothing else)."""


def test_the_table_names_every_route_as_the_route_table_does() -> None:
    assert set(NEEDS) == {(r.method, r.path) for r in ROUTES}, "a new route needs its row here"
    as_permission = {"public": {P.PUBLIC}, "system": {P.SYSTEM}, "grant": {P.SYSTEM}, "any": {P.AUTHENTICATED, P.READ},
                     "read": {P.READ}, "deploy": {P.DEPLOY}, "manage": {P.MANAGE}, "admin": {P.ADMIN},
                     "self": {P.AUTHENTICATED}, "deploy-anywhere": {P.DEPLOY}, "metrics": {P.METRICS}}
    for route in ROUTES:
        assert route.permission in as_permission[NEEDS[(route.method, route.path)]], (route.method, route.path)


@dataclasses.dataclass
class World:
    h: Harness
    session: aiohttp.ClientSession
    tokens: dict[str, str]
    counter: int = 0

    async def call(self, caller: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[caller]}"} if caller in self.tokens else {}
        data = json.dumps(body).encode() if body is not None else None
        async with self.session.request(method, self.h.url + path, data=data, headers=headers) as resp:
            text = await resp.read()
            try:
                return resp.status, json.loads(text) if text else None
            except ValueError:
                return resp.status, text

    async def exec(self, caller: str, path: str) -> tuple[int, Any]:
        """A websocket route: 200 for an exec that ran to its end, else the status of the refusal."""
        headers = {"Authorization": f"Bearer {self.tokens[caller]}"} if caller in self.tokens else {}
        async with aiohttp.ClientSession(middlewares=(wire.refused_upgrades,)) as session:
            try:
                async with session.ws_connect(self.h.url + path, headers=headers) as ws:
                    controls = [wire.server_control(m.data) async for m in ws if m.type is aiohttp.WSMsgType.TEXT]
            except wire.UpgradeRefused as exc:
                return exc.status, json.loads(exc.body)
        assert controls == [wire.Exited(0)], controls
        return 200, controls

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = await self.call("admin", method, path, body)
        assert status < 300, (method, path, status, payload)
        return payload

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    async def service(self, env: str) -> dict[str, Any]:
        stack = await self.admin("POST", "/v1/stacks", {"name": self.fresh("st"), "environment": env})
        return await self.admin("POST", "/v1/services", {"stack": stack["id"], "name": "web",
                                                          "image": "corral/base", "scale": 1})

    async def container(self, env: str) -> str:
        service = await self.service(env)
        outcome = await self.h.replica.write(PlacementsCommit(service["id"], ((1, "h1"),)))
        inst = outcome.placed[0]
        cid = await self.h.engine.containers.create(self.fresh("c"), {"Image": "corral/base",
                                                                      "Labels": {"corral.instance": inst}})
        await self.h.replica.write(InstanceStatus(inst, "h1", Status.RUNNING, container_id=cid))
        return inst


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with running_api() as h, aiohttp.ClientSession() as session:
        w = World(h, session, {"admin": h.token, "forged": new_key()[2]})
        for env in ("dev", "prod"):
            await w.admin("POST", "/v1/environments", {"name": env})
        for name in ("nobody", *ROLE_OF):
            await w.admin("POST", "/v1/users", {"name": name.replace("-", ""), "password": ADMIN_PASSWORD})
            made = await w.admin("POST", "/v1/apikeys", {"user": name.replace("-", "")})
            w.tokens[name] = made["token"]
        for name, role in ROLE_OF.items():
            for env in ("default", "dev"):  # dev for stacks and services, default for the kv store
                await w.admin("PUT", f"/v1/environments/{env}/members/user:{name.replace('-', '')}",
                              {"role": role.value})
        capped = await w.call("owner", "POST", "/v1/apikeys", {"role": "read-only"})
        w.tokens["capped"] = capped[1]["token"]
        w.tokens["scraper"] = (await w.admin("POST", "/v1/apikeys", {"metrics": True}))["token"]
        yield w


Request = tuple[str, Any]
Builder = Callable[[World, str, str], Awaitable[Request]]


async def _kv(w: World, env: str, caller: str) -> Request:
    key = w.fresh("k")
    await w.h.replica.write(KvPut(key, b"v"))
    return f"/v1/kv/{key}", b"value"


REPORT = {"seed": 7, "hosts": 4, "drills": [{"name": "leader-kill", "verdict": "PASS", "happened": ["x"],
                                           "figures": {"election_s": 1.2}}]}


async def _drill_report(w: World, env: str, caller: str) -> Request:
    await w.h.replica.write(KvPut(REPORT_KEY, json.dumps(REPORT).encode()))
    return "/v1/drills/report", REPORT


async def _stack(w: World, env: str, caller: str) -> Request:
    stack = await w.admin("POST", "/v1/stacks", {"name": w.fresh("st"), "environment": env})
    return f"/v1/stacks/{stack['id']}", None


async def _service(w: World, env: str, caller: str) -> Request:
    return f"/v1/services/{(await w.service(env))['id']}", None


async def _upgrading(w: World, env: str, caller: str) -> Request:
    """A service with an upgrade under way (started by the administrator)."""
    path = f"/v1/services/{(await w.service(env))['id']}"
    await w.admin("POST", path + "/upgrade", {"spec": {"image": "corral/base:v2"}})
    return path, None


async def _container(w: World, env: str, caller: str) -> Request:
    return f"/v1/containers/{await w.container(env)}", None


async def _running_container(w: World, env: str, caller: str) -> Request:
    inst = await w.container(env)
    await w.h.engine.containers.start(w.h.replica.state.instances[inst].container_id or "")
    return f"/v1/containers/{inst}", None


async def _user(w: World, env: str, caller: str) -> Request:
    name = w.fresh("u")
    await w.admin("POST", "/v1/users", {"name": name, "password": ADMIN_PASSWORD})
    return f"/v1/users/{name}", None


async def _team(w: World, env: str, caller: str) -> Request:
    name = w.fresh("t")
    await w.admin("POST", "/v1/teams", {"name": name, "members": []})
    return f"/v1/teams/{name}", {"members": []}


async def _own_key(w: World, env: str, caller: str) -> Request:
    who = caller if caller in w.tokens and caller not in ("forged", "capped", "scraper") else "admin"
    made = await w.call(who if caller != "capped" else "owner", "POST", "/v1/apikeys", {"role": "read-only"})
    return f"/v1/apikeys/{made[1]['id']}", None


def _self(caller: str) -> str:
    return {"capped": "owner", "anonymous": "admin", "forged": "admin", "scraper": "admin"}.get(
        caller, caller).replace("-", "")


async def _member(w: World, env: str, caller: str) -> Request:
    name = w.fresh("m")
    await w.admin("POST", "/v1/users", {"name": name, "password": ADMIN_PASSWORD})
    await w.admin("PUT", f"/v1/environments/{env}/members/user:{name}", {"role": "member"})
    return f"/v1/environments/{env}/members/user:{name}", {"role": "read-only"}


def _fixed(path: str, body: Any = None) -> Builder:
    async def build(w: World, env: str, caller: str) -> Request:
        return path.replace("{env}", env), body
    return build


def _then(builder: Builder, suffix: str, body: Any = None) -> Builder:
    async def build(w: World, env: str, caller: str) -> Request:
        path, _ = await builder(w, env, caller)
        return path + suffix, body
    return build


async def _new_stack(w: World, env: str, caller: str) -> Request:
    return "/v1/stacks", {"name": w.fresh("st"), "environment": env}


async def _new_service(w: World, env: str, caller: str) -> Request:
    stack = await w.admin("POST", "/v1/stacks", {"name": w.fresh("st"), "environment": env})
    return "/v1/services", {"stack": stack["id"], "name": "web", "image": "corral/base"}


async def _new_user(w: World, env: str, caller: str) -> Request:
    return "/v1/users", {"name": w.fresh("u"), "password": ADMIN_PASSWORD}


async def _new_team(w: World, env: str, caller: str) -> Request:
    return "/v1/teams", {"name": w.fresh("t")}


async def _new_env(w: World, env: str, caller: str) -> Request:
    return "/v1/environments", {"name": w.fresh("e")}


async def _own_user(w: World, env: str, caller: str) -> Request:
    return f"/v1/users/{_self(caller)}", None


async def _own_password(w: World, env: str, caller: str) -> Request:
    return f"/v1/users/{_self(caller)}", {"password": ADMIN_PASSWORD, "current_password": ADMIN_PASSWORD}


async def _join_token(w: World, env: str, caller: str) -> Request:
    made = await w.admin("POST", "/v1/jointokens", {})
    return f"/v1/jointokens/{made['id']}", None


async def _join(w: World, env: str, caller: str) -> Request:
    made = await w.admin("POST", "/v1/jointokens", {"uses": 1})
    name = w.fresh("n")
    csr = pki.make_csr(name, pki.new_key()).decode()
    return "/v1/join", {"token": made["token"], "name": name, "address": "10.9.9.9", "csr": csr}


async def _image(w: World, env: str, caller: str) -> Request:
    """An image in the catalog (loaded by the administrator), by its id."""
    data, image_id = save_tarball(payload=w.fresh("payload").encode())
    async with w.session.post(w.h.url + "/v1/images", data=data, headers={
            "Authorization": f"Bearer {w.tokens['admin']}", "Content-Type": "application/x-tar"}) as resp:
        assert resp.status == 201, await resp.text()
    return f"/v1/images/{image_id}", None


async def _build_context(w: World, env: str, caller: str) -> Request:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        text = b"FROM corral/base\nRUN true\n"
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    return f"/v1/builds?tag=test/built:{w.fresh('v')}", out.getvalue()


async def _new_image(w: World, env: str, caller: str) -> Request:
    return "/v1/images", save_tarball(payload=w.fresh("payload").encode())[0]


async def _deploy(w: World, env: str, caller: str) -> Request:
    return f"/v1/stacks/{w.fresh('st')}/deploy", {"environment": env, "services": {"web": {"image": "corral/base"}}}


async def _new_volume(w: World, env: str, caller: str) -> Request:
    return "/v1/volumes", {"name": w.fresh("vol"), "environment": env}


async def _volume(w: World, env: str, caller: str) -> Request:
    made = await w.admin("POST", "/v1/volumes", {"name": w.fresh("vol"), "environment": env})
    return f"/v1/volumes/{made['name']}?environment={env}", None


CONFIG_FILES = [{"path": "", "data": "aGVsbG8="}]


async def _new_config(w: World, env: str, caller: str) -> Request:
    return "/v1/configs", {"name": w.fresh("conf"), "environment": env, "files": CONFIG_FILES}


async def _config(w: World, env: str, caller: str) -> Request:
    made = await w.admin("POST", "/v1/configs", {"name": w.fresh("conf"), "environment": env, "files": CONFIG_FILES})
    return f"/v1/configs/{made['name']}?environment={env}", None


KEY = "A" * 43 + "="
BUILD: dict[tuple[str, str], Builder] = {
    ("GET", "/v1/openapi.json"): _fixed("/v1/openapi.json"), ("GET", "/v1/health"): _fixed("/v1/health"),
    ("GET", "/metrics"): _fixed("/metrics"),
    ("GET", "/v1/host"): _fixed("/v1/host"), ("GET", "/v1/members"): _fixed("/v1/members"),
    ("GET", "/v1/members/stats"): _fixed("/v1/members/stats"), ("GET", "/v1/raft"): _fixed("/v1/raft"),
    ("GET", "/v1/overlay"): _fixed("/v1/overlay"), ("GET", "/v1/dns"): _fixed("/v1/dns?name=x.corral.internal"),
    ("GET", "/v1/keys"): _fixed("/v1/keys"),
    ("POST", "/v1/keys"): _fixed("/v1/keys", {"action": "install", "key": KEY}),
    ("POST", "/v1/internal/propose"): _fixed("/v1/internal/propose", {}),
    ("POST", "/v1/internal/propose-batch"): _fixed("/v1/internal/propose-batch", {}),
    ("GET", "/v1/kv/{key}"): _kv, ("PUT", "/v1/kv/{key}"): _kv, ("DELETE", "/v1/kv/{key}"): _kv,
    ("GET", "/v1/drills/report"): _drill_report, ("PUT", "/v1/drills/report"): _drill_report,
    ("GET", "/v1/environments"): _fixed("/v1/environments"), ("GET", "/v1/hosts"): _fixed("/v1/hosts"),
    ("GET", "/v1/hosts/{name}"): _fixed("/v1/hosts/h1"),
    ("GET", "/v1/hosts/{name}/stats"): _fixed("/v1/hosts/h1/stats"),
    ("POST", "/v1/hosts/{name}/move"): _fixed("/v1/hosts/h1/move", {"environment": "default"}),
    ("GET", "/v1/stacks"): _fixed("/v1/stacks"), ("POST", "/v1/stacks"): _new_stack,
    ("GET", "/v1/stacks/{id}"): _stack, ("DELETE", "/v1/stacks/{id}"): _stack,
    ("GET", "/v1/services"): _fixed("/v1/services"), ("POST", "/v1/services"): _new_service,
    ("GET", "/v1/services/{id}"): _service, ("PATCH", "/v1/services/{id}"): _then(_service, "", {"scale": 2}),
    ("DELETE", "/v1/services/{id}"): _service,
    ("POST", "/v1/services/{id}/scale"): _then(_service, "/scale", {"scale": 3}),
    ("POST", "/v1/services/{id}/stop"): _then(_service, "/stop"),
    ("POST", "/v1/services/{id}/start"): _then(_service, "/start"),
    ("POST", "/v1/services/{id}/restart"): _then(_service, "/restart"),
    ("GET", "/v1/services/{id}/upgrade"): _then(_upgrading, "/upgrade"),
    ("POST", "/v1/services/{id}/upgrade"): _then(_service, "/upgrade", {"spec": {"image": "corral/base:v2"}}),
    ("POST", "/v1/services/{id}/upgrade/pause"): _then(_upgrading, "/upgrade/pause"),
    ("POST", "/v1/services/{id}/upgrade/resume"): _then(_upgrading, "/upgrade/resume"),
    ("POST", "/v1/services/{id}/upgrade/rollback"): _then(_upgrading, "/upgrade/rollback"),
    ("GET", "/v1/containers"): _fixed("/v1/containers"), ("GET", "/v1/containers/{id}"): _container,
    ("DELETE", "/v1/containers/{id}"): _container, ("GET", "/v1/containers/{id}/logs"): _then(_container, "/logs"),
    ("GET", "/v1/containers/{id}/stats"): _then(_container, "/stats"), ("GET", "/v1/events"): _fixed("/v1/events"),
    ("GET", "/v1/containers/{id}/exec"): _then(_running_container, "/exec?cmd=exitwith&cmd=0"),
    ("POST", "/v1/auth/login"): _fixed("/v1/auth/login", {"user": "admin", "password": ADMIN_PASSWORD}),
    ("POST", "/v1/auth/logout"): _fixed("/v1/auth/logout"), ("GET", "/v1/auth/whoami"): _fixed("/v1/auth/whoami"),
    ("GET", "/v1/auth/stats"): _fixed("/v1/auth/stats"), ("GET", "/v1/users"): _fixed("/v1/users"),
    ("POST", "/v1/users"): _new_user, ("GET", "/v1/users/{name}"): _own_user,
    ("PATCH", "/v1/users/{name}"): _own_password, ("DELETE", "/v1/users/{name}"): _user,
    ("GET", "/v1/apikeys"): _fixed("/v1/apikeys"),
    ("POST", "/v1/apikeys"): _fixed("/v1/apikeys", {"role": "read-only"}),
    ("DELETE", "/v1/apikeys/{id}"): _own_key, ("GET", "/v1/teams"): _fixed("/v1/teams"),
    ("POST", "/v1/teams"): _new_team, ("PUT", "/v1/teams/{name}"): _team, ("DELETE", "/v1/teams/{name}"): _team,
    ("POST", "/v1/environments"): _new_env, ("GET", "/v1/environments/{name}"): _fixed("/v1/environments/{env}"),
    ("PUT", "/v1/environments/{name}/members/{subject}"): _member,
    ("DELETE", "/v1/environments/{name}/members/{subject}"): _member,
    ("GET", "/v1/ca"): _fixed("/v1/ca"), ("GET", "/v1/ca/hosts"): _fixed("/v1/ca/hosts"),
    # the route table has rotate before finish: the administrator's rotation is the one finished (forced:
    # the harness's API is plain HTTP, so its host shows no certificate)
    ("POST", "/v1/ca/rotate"): _fixed("/v1/ca/rotate"),
    ("POST", "/v1/ca/finish"): _fixed("/v1/ca/finish", {"force": True}),
    ("POST", "/v1/join"): _join,
    ("GET", "/v1/jointokens"): _fixed("/v1/jointokens"),
    ("POST", "/v1/jointokens"): _fixed("/v1/jointokens", {"uses": 1}), ("DELETE", "/v1/jointokens/{id}"): _join_token,
    ("POST", "/v1/internal/certificate"): _fixed("/v1/internal/certificate", {}),
    ("GET", "/v1/registries"): _fixed("/v1/registries"),
    ("POST", "/v1/registries"): _fixed("/v1/registries", {"host": "r.example:5000", "username": "u", "password": "p"}),
    ("DELETE", "/v1/registries/{name}"): _fixed("/v1/registries/r.example:5000"),
    ("GET", "/v1/images"): _fixed("/v1/images"), ("POST", "/v1/images"): _new_image,
    ("DELETE", "/v1/images/{id}"): _image, ("POST", "/v1/images/{id}/fetch"): _then(_image, "/fetch"),
    ("GET", "/v1/host/images"): _fixed("/v1/host/images"), ("POST", "/v1/builds"): _build_context,
    ("GET", "/v1/internal/images/{id}"): _fixed("/v1/internal/images/" + "a" * 64),
    ("GET", "/v2/"): _fixed("/v2/"),
    ("GET", "/v2/corral/peer/manifests/{id}"): _fixed("/v2/corral/peer/manifests/" + "a" * 64),
    ("HEAD", "/v2/corral/peer/manifests/{id}"): _fixed("/v2/corral/peer/manifests/" + "a" * 64),
    ("GET", "/v2/corral/peer/blobs/{id}"): _fixed("/v2/corral/peer/blobs/sha256:" + "a" * 64),
    ("HEAD", "/v2/corral/peer/blobs/{id}"): _fixed("/v2/corral/peer/blobs/sha256:" + "a" * 64),
    ("POST", "/v1/stacks/{id}/deploy"): _deploy, ("GET", "/v1/volumes"): _fixed("/v1/volumes"),
    ("POST", "/v1/volumes"): _new_volume, ("GET", "/v1/volumes/{name}"): _volume,
    ("DELETE", "/v1/volumes/{name}"): _volume, ("GET", "/v1/configs"): _fixed("/v1/configs"),
    ("POST", "/v1/configs"): _new_config, ("GET", "/v1/configs/{name}"): _config,
    ("DELETE", "/v1/configs/{name}"): _config, ("GET", "/v1/settings"): _fixed("/v1/settings"),
    ("PATCH", "/v1/settings"): _fixed("/v1/settings", {"bind_paths": ["/srv"]}),
}


def _expected(need: str, caller: str, env: str, path: str) -> str:
    """ok, 400 (a logout with an API key, not a session), 401, 403 or 404."""
    if need == "public":
        return "ok"
    if need == "system":
        return "403"
    if need == "grant":  # a peer's engine with a pull grant (agent/node/peerpull.py): no user credential is one
        return "401"
    if caller in ("anonymous", "forged"):
        return "401"
    if need == "metrics":
        return "ok" if caller in ("admin", "scraper") else "403"
    if caller == "scraper":
        return "403"
    if path == "/v1/auth/logout":
        return "400"
    if need in ("any", "self"):
        return "ok"
    if need == "deploy-anywhere":  # cluster-wide (images): a role that may deploy in any environment
        return "ok" if caller in ALLOWED["deploy"] else "403"
    if need == "admin":
        return "ok" if caller == "admin" else "403"
    if caller == "admin":
        return "ok"
    if path.startswith(("/v1/kv/", "/v1/drills/")):
        env = "default"  # the kv store is the default environment's: a role there, or a 403
        if caller == "nobody":
            return "403"
    if path.startswith("/v1/hosts/"):
        env = "default"  # the harness's one host is in the default environment
    if env == "prod" or caller == "nobody":
        return "404"  # an environment the caller has no role in: nothing there exists for it
    return "ok" if caller in ALLOWED[need] else "403"


async def test_every_route_answers_every_caller_as_the_policy_says(world: World) -> None:
    mismatches = []
    for route in ROUTES:
        need = NEEDS[(route.method, route.path)]
        envs = ("dev", "prod") if need in ("read", "deploy", "manage") else ("dev",)
        for env in envs:
            for caller in CALLER_NAMES:
                path, body = await BUILD[(route.method, route.path)](world, env, caller)
                index = world.h.replica.applied_index
                if route.websocket:
                    status, payload = await world.exec(caller, path)
                elif isinstance(body, bytes):
                    headers = {"Authorization": f"Bearer {world.tokens[caller]}"} if caller in world.tokens else {}
                    async with world.session.request(route.method, world.h.url + path, data=body,
                                                     headers=headers) as resp:
                        status, payload = resp.status, await resp.read()
                else:
                    status, payload = await world.call(caller, route.method, path, body)
                want = _expected(need, caller, env, path)
                got = "ok" if status < 300 else str(status)
                if got != want:
                    mismatches.append((route.method, path, env, caller, want, status, payload))
                elif status >= 400 and world.h.replica.applied_index != index:
                    mismatches.append((route.method, path, env, caller, "refused before anything was proposed",
                                       status, payload))
                if status in (401, 403, 404) and isinstance(payload, dict):
                    assert payload.get("error") and payload.get("message"), (route.method, path, payload)
    assert not mismatches, "\n".join(map(str, mismatches))


async def test_hidden_means_hidden_and_a_revoked_key_is_refused_at_once(world: World) -> None:
    prod = await world.service("prod")
    status, body = await world.call("owner", "GET", f"/v1/services/{prod['id']}")
    assert status == 404 and "prod" not in json.dumps(body), "a 404 that does not say where it is"
    listed = (await world.call("owner", "GET", "/v1/services"))[1]
    assert prod["id"] not in {s["id"] for s in listed["items"]}, "lists show only what the caller may read"
    events = (await world.call("owner", "GET", "/v1/events?limit=1000"))[1]["items"]
    assert not [e for e in events if e.get("environment") == "prod"], "nor do the events"
    accounts = [e["refs"]["user"] for e in events if e["kind"] in ("user.created", "key.created")]
    assert accounts and set(accounts) == {"owner"}, "who has which account is for administrators (and oneself)"
    key = await world.call("member", "POST", "/v1/apikeys", {"description": "ci"})
    token, key_id = key[1]["token"], key[1]["id"]
    world.tokens["ci"] = token
    assert (await world.call("ci", "GET", "/v1/auth/whoami"))[0] == 200
    assert (await world.call("member", "DELETE", f"/v1/apikeys/{key_id}"))[0] == 200
    status, body = await world.call("ci", "GET", "/v1/auth/whoami")
    assert status == 401 and "revoked" in body["message"]
    assert (await world.call("read-only", "POST", "/v1/stacks", {"name": "nope", "environment": "dev"}))[0] == 403
    stats = await world.admin("GET", "/v1/auth/stats")
    assert stats["rejected"] == {"unknown": 1} and stats["forbidden"] == 1


async def login(world: World, user: str, password: str) -> tuple[int, Any]:
    return await world.call("anonymous", "POST", "/v1/auth/login", {"user": user, "password": password})


async def test_login_sessions_logout_and_brute_force(world: World) -> None:
    status, body = await login(world, "member", ADMIN_PASSWORD)
    assert status == 200 and body["token"].startswith("crl_") and body["expires"] > 0
    world.tokens["session"] = body["token"]
    me = (await world.call("session", "GET", "/v1/auth/whoami"))[1]
    assert me["user"] == "member" and me["key"]["session"] and me["roles"] == {"default": "member", "dev": "member"}
    assert (await world.call("session", "POST", "/v1/auth/logout"))[0] == 200
    assert (await world.call("session", "GET", "/v1/auth/whoami"))[0] == 401, "the session ended everywhere"
    statuses = []
    for _ in range(7):
        status, body = await login(world, "owner", "wrong" * 3)
        statuses.append(status)
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429], statuses
    status, body = await login(world, "owner", ADMIN_PASSWORD)
    assert status == 429, "even the right password waits out the lock: a brute force learns nothing"
    assert (await world.call("anonymous", "POST", "/v1/auth/login", {"user": "ghost", "password": ADMIN_PASSWORD}))[0] \
        == 401, "an unknown user is a plain wrong password"
    for bad in ({"user": "owner"}, {"user": "owner", "password": "x" * 300}, {"user": 3, "password": ADMIN_PASSWORD},
                {"user": "owner", "password": ADMIN_PASSWORD, "role": "admin"}):
        status, body = await world.call("anonymous", "POST", "/v1/auth/login", bad)
        assert status == 400 and body["error"] == "bad_request", bad
    stats = await world.admin("GET", "/v1/auth/stats")
    assert stats["logins"] >= 1 and stats["login_failures"] >= 6 and stats["logins_limited"] >= 3
    assert "owner" not in json.dumps(stats)


async def test_bad_input_to_the_access_routes(world: World) -> None:
    cases = [
        ("POST", "/v1/users", {"name": "Bad Name", "password": ADMIN_PASSWORD}, 400, "name"),
        ("POST", "/v1/users", {"name": "member", "password": ADMIN_PASSWORD}, 409, "name"),
        ("POST", "/v1/users", {"name": "x1", "password": "short"}, 400, "password"),
        ("POST", "/v1/apikeys", {"role": "superuser"}, 400, "role"),
        ("POST", "/v1/apikeys", {"environment": "nosuch"}, 404, "environment"),
        ("POST", "/v1/apikeys", {"ttl": 0}, 400, "ttl"),
        ("POST", "/v1/apikeys", {"ttl": "11y"}, 400, "ttl"),
        ("POST", "/v1/apikeys", {"ttl": "forever"}, 400, "ttl"),
        ("POST", "/v1/apikeys", {"user": "ghost"}, 404, "user"),
        ("PUT", "/v1/environments/dev/members/user:ghost", {"role": "owner"}, 404, "subject"),
        ("PUT", "/v1/environments/dev/members/user:member", {"role": "god"}, 400, "role"),
        ("PUT", "/v1/environments/dev/members/robot:x", {"role": "owner"}, 400, "subject"),
        ("PUT", "/v1/environments/nosuch/members/user:member", {"role": "owner"}, 404, "environment"),
        ("POST", "/v1/teams", {"name": "ops", "members": ["ghost"]}, 404, "members[0]"),
        ("PATCH", "/v1/users/admin", {"admin": False}, 409, "admin"),
        ("DELETE", "/v1/users/admin", None, 409, "name"),
    ]
    before = world.h.replica.state.snapshot()
    for method, path, body, status, field in cases:
        got, answer = await world.call("admin", method, path, body)
        assert got == status and answer.get("details", {}).get("field") == field, (method, path, body, got, answer)
    assert world.h.replica.state.access.to_wire() == _access_of(before), "nothing changed"
    got, answer = await world.call("member", "PATCH", "/v1/users/member",
                                   {"password": "a new password", "current_password": "not it at all"})
    assert got == 400 and answer["details"]["field"] == "current_password"
    got, answer = await world.call("member", "PATCH", "/v1/users/member", {"admin": True})
    assert got == 403, "only an administrator makes administrators (Rancher CVE-2017-7297)"
    got, answer = await world.call("capped", "POST", "/v1/apikeys", {})
    assert got == 400 and answer["details"]["field"] == "role", "a capped key cannot make an uncapped one"


def _access_of(snapshot: bytes) -> dict[str, object]:
    state = ClusterState()
    state.restore(snapshot)
    return state.access.to_wire()


def test_the_policy_table_in_the_docs_is_the_route_table() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "ACCESS.md").read_text()
    rows = re.findall(r"^\| `(\w+ /\S*)` \| ([^|]+?) \|", text, re.MULTILINE)
    # the UI's table (second column `UI page`, `UI action`…) is tests/unit/test_ui.py's to check
    documented = {route: need for route, need in rows if not need.startswith("UI ")}
    routes = {f"{r.method} {r.path}": r.permission.value + (f" in `{r.environment}`" if r.environment else "")
              for r in ROUTES}
    assert documented == routes, "docs/ACCESS.md's table must name every route with its permission"


def test_every_ui_route_is_a_row_of_the_page_table_with_a_users_permission() -> None:
    """The web UI's routes are outside the API's route table: each is a row of ``agent.ui.pages.PAGES``
    (the app registers nothing else: tests/unit/test_openapi.py), naming a permission a user can hold;
    what each role sees and may do there is tests/unit/test_ui.py's."""
    from agent.ui.pages import PAGES, Kind

    assert PAGES and len({(p.method, p.path) for p in PAGES}) == len(PAGES)
    for page in PAGES:
        assert isinstance(page.permission, Permission) and page.permission is not Permission.SYSTEM, page.path
        assert (page.permission is Permission.PUBLIC) == (page.kind is Kind.PUBLIC), page.path
        assert page.method == "GET" or page.kind in (Kind.ACTION, Kind.PUBLIC), page.path
