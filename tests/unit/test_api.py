"""Every route of the API, on the real app over an in-memory cluster (single-voter Raft, fake engine):
status codes, bodies, pagination, filters, and every kind of error as a JSON body with its status."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agent.api.deps import DEPS
from agent.model.commands import InstanceStatus, KvPut, PlacementsCommit, decode_result, encode, encode_result
from agent.model.entities import Status
from agent.model.errors import CommandError
from agent.process.health import HealthMonitor
from tests.unit.fakes import Harness, running_api, running_pair


class Api:
    def __init__(self, harness: Harness, session: aiohttp.ClientSession) -> None:
        self.h = harness
        self.session = session

    async def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        async with self.session.request(method, self.h.url + path, data=data, headers=headers) as resp:
            text = await resp.read()
            try:
                payload = json.loads(text) if text else None
            except ValueError:
                payload = text
            return resp.status, payload, resp.headers

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, payload, _ = await self.call(method, path, body)
        assert got == status, (method, path, got, payload)
        return payload

    async def error(self, method: str, path: str, status: int, code: str, field: str | None = None,
                    body: Any = None, raw: bytes | None = None) -> str:
        got, payload, _ = await self.call(method, path, body, raw)
        assert got == status, (method, path, got, payload)
        assert isinstance(payload, dict) and payload["error"] == code and payload["message"], payload
        if field is not None:
            assert payload.get("details", {}).get("field") == field, payload
        return str(payload["message"])


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running_api() as harness, aiohttp.ClientSession(headers=harness.auth) as session:
        yield Api(harness, session)


async def web(api: Api, scale: int = 2) -> tuple[dict[str, Any], dict[str, Any]]:
    stack = await api.ok("POST", "/v1/stacks", {"name": "web-server"}, status=201)
    service = await api.ok("POST", "/v1/services", {"stack": "web-server", "name": "nginx", "image": "corral/base",
                                                     "scale": scale, "ports": ["8080:80"]}, status=201)
    return stack, service


# ---------------------------------------------------------------------- node and cluster


async def test_health_says_ok_and_names_a_failing_part(api: Api) -> None:
    body = await api.ok("GET", "/v1/health")
    assert body["status"] == "ok" and body["reasons"] == [] and body["checks"] == {"docker": "ok", "raft": "ok"}
    assert body["node"] == "h1" and body["docker"]["version"] == "fake"
    health = api.h.app[DEPS].health
    assert isinstance(health, HealthMonitor)
    health.add("reconciler", lambda: "3 reconcile passes in a row failed: engine gone")
    body = await api.ok("GET", "/v1/health")
    assert body["status"] == "degraded"
    assert body["reasons"] == ["reconciler: 3 reconcile passes in a row failed: engine gone"]


async def test_host_members_raft_overlay(api: Api) -> None:
    host = await api.ok("GET", "/v1/host")
    assert host["name"] == "h1" and host["node_id"] == "0123456789abcdef" and host["docker"]["NCPU"] == 2
    members = await api.ok("GET", "/v1/members")
    assert [m["name"] for m in members["items"]] == ["h1"] and members["counts"] == {"alive": 1}
    assert (await api.ok("GET", "/v1/members?state=dead"))["items"] == []
    await api.error("GET", "/v1/members?state=zombie", 400, "bad_request", "state")
    assert "core" in await api.ok("GET", "/v1/members/stats")
    raft = await api.ok("GET", "/v1/raft")
    assert raft["role"] == "leader" and raft["voters"] == ["h1"]
    assert (await api.ok("GET", "/v1/overlay"))["state"] == "off"


async def test_every_answer_carries_the_applied_index_and_the_leader(api: Api) -> None:
    _, _, headers = await api.call("GET", "/v1/raft")
    assert int(headers["X-Corral-Index"]) >= 1 and headers["X-Corral-Leader"] == "h1"
    _, _, headers = await api.call("GET", "/v1/nosuch")
    assert "X-Corral-Index" in headers


async def test_unknown_routes_and_methods_are_json_errors_with_allow(api: Api) -> None:
    await api.error("GET", "/v1/nosuch", 404, "not_found")
    for method in ("TRACE", "PUT"):
        got, payload, headers = await api.call(method, "/v1/stacks")
        assert got == 405 and payload["error"] == "method_not_allowed"
        assert set(headers["Allow"].split(",")) >= {"GET", "POST"}, headers


async def test_keys_install_and_refuse_bad_requests(api: Api) -> None:
    listed = await api.ok("GET", "/v1/keys")
    assert len(listed["keys"]) == 1 and listed["keys"][0]["primary"]
    key = base64.b64encode(b"n" * 32).decode()
    changed = await api.ok("POST", "/v1/keys", {"action": "install", "key": key})
    assert changed["action"] == "install" and len(changed["keys"]) == 2 and changed["index"] > 0
    await api.error("POST", "/v1/keys", 400, "bad_request", "action", {"action": "burn", "key": key})
    await api.error("POST", "/v1/keys", 400, "bad_request", "key", {"action": "use", "key": "short"})
    await api.error("POST", "/v1/keys", 400, "bad_request", "extra", {"action": "use", "key": key, "extra": 1})
    await api.error("POST", "/v1/keys", 400, "bad_request", "body", raw=b"[1, 2]")
    await api.error("POST", "/v1/keys", 400, "bad_request", "body", raw=b"{nope")


async def test_internal_propose_takes_only_sealed_commands(api: Api) -> None:
    got, payload, _ = await api.call("POST", "/v1/internal/propose", raw=encode(KvPut("k", "v")))
    assert got == 403 and payload["error"] == "forbidden"
    sealed = api.h.replica.sealer.seal(encode(KvPut("k", "v")))
    async with api.session.post(api.h.url + "/v1/internal/propose", data=sealed) as resp:
        assert resp.status == 200
        result = decode_result(await resp.read())
    assert not isinstance(result, CommandError) and result.index > 0
    refused = api.h.replica.sealer.seal(encode(InstanceStatus("nope", "h1", Status.RUNNING)))
    async with api.session.post(api.h.url + "/v1/internal/propose", data=refused) as resp:
        outcome = decode_result(await resp.read())
    assert not isinstance(outcome, CommandError) and outcome.stale, "a late report is answered, not refused"
    assert encode_result(outcome)


# ---------------------------------------------------------------------- kv


async def test_kv_put_get_delete_with_cas(api: Api) -> None:
    got, body, _ = await api.call("PUT", "/v1/kv/app/config", raw=b"hello")
    assert got == 200 and body["key"] == "app/config"
    first = body["index"]
    read = await api.ok("GET", "/v1/kv/app/config")
    assert read == {"key": "app/config", "value": "hello", "create_index": first, "modify_index": first,
                    "mode": "stale"}
    assert (await api.ok("GET", "/v1/kv/app/config?consistent=1"))["mode"] == "consistent"
    await api.error("PUT", "/v1/kv/app/config?cas=0", 409, "cas_failed", "cas", raw=b"x")
    got, _, _ = await api.call("PUT", f"/v1/kv/app/config?cas={first}", raw=b"again")
    assert got == 200
    got, body, _ = await api.call("PUT", "/v1/kv/bin", raw=bytes(range(256)))
    assert got == 200
    assert base64.b64decode((await api.ok("GET", "/v1/kv/bin"))["value_base64"]) == bytes(range(256))
    assert (await api.ok("DELETE", "/v1/kv/bin")) == {"key": "bin", "deleted": True}
    assert (await api.ok("DELETE", "/v1/kv/bin")) == {"key": "bin", "deleted": False}
    await api.error("GET", "/v1/kv/bin", 404, "not_found")


async def test_kv_refuses_what_its_document_refuses(api: Api) -> None:
    await api.error("PUT", "/v1/kv/k?cas=7215383226933762728396983101292544", 400, "bad_request", "cas", raw=b"x")
    await api.error("PUT", "/v1/kv/k?cas=-1", 400, "bad_request", "cas", raw=b"x")
    await api.error("PUT", "/v1/kv/" + "k" * 513, 400, "bad_request", "key", raw=b"x")
    await api.error("PUT", "/v1/kv/k", 400, "bad_request", "value", raw=b"x" * (512 * 1024 + 1))
    await api.error("GET", "/v1/kv/k?index=1&wait=soon", 400, "bad_request", "wait")
    await api.error("GET", "/v1/kv/k?index=x", 400, "bad_request", "index")
    await api.error("GET", "/v1/kv/k?consistent=maybe", 400, "bad_request", "consistent")


async def test_a_blocking_kv_read_returns_when_the_index_passes(api: Api) -> None:
    got, body, _ = await api.call("PUT", "/v1/kv/k", raw=b"1")
    index = body["index"]
    started = asyncio.get_running_loop().time()
    waiter = asyncio.ensure_future(api.call("GET", f"/v1/kv/k?index={index}&wait=5s"))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await api.call("PUT", "/v1/kv/k", raw=b"2")
    got, body, _ = await waiter
    assert got == 200 and body["value"] == "2" and asyncio.get_running_loop().time() - started < 4


# ---------------------------------------------------------------------- environments, hosts, stacks


async def test_environments_hosts_and_pagination(api: Api) -> None:
    envs = await api.ok("GET", "/v1/environments")
    assert envs == {"items": [{"name": "default", "created": 0, "role": "owner"}], "total": 1, "limit": 100,
                    "offset": 0}, "with the caller's role (an administrator owns every environment)"
    hosts = await api.ok("GET", "/v1/hosts")
    assert [h["name"] for h in hosts["items"]] == ["h1"] and hosts["items"][0]["containers"] == 0
    assert hosts["items"][0]["health"] == "ok", "as gossip metadata says"
    assert (await api.ok("GET", "/v1/hosts?state=disconnected"))["total"] == 0
    assert (await api.ok("GET", "/v1/hosts/h1"))["subnet"].endswith("/24")
    await api.error("GET", "/v1/hosts/h9", 404, "not_found", "host")
    for bad in ("limit=0", "limit=1001", "offset=-1", "limit=ten"):
        await api.error("GET", f"/v1/hosts?{bad}", 400, "bad_request", bad.split("=")[0])
    stats = await api.ok("GET", "/v1/hosts/h1/stats")
    assert stats["host"] == "h1" and stats["containers"] == {"running": 0, "sampled": 0}


async def test_stacks(api: Api) -> None:
    stack = await api.ok("POST", "/v1/stacks", {"name": "web-server"}, status=201)
    assert stack["name"] == "web-server" and stack["environment"] == "default" and stack["services"] == []
    await api.error("POST", "/v1/stacks", 409, "conflict", "name", {"name": "web-server"})
    await api.error("POST", "/v1/stacks", 400, "bad_request", "name", {"name": "Web Server"})
    await api.error("POST", "/v1/stacks", 404, "not_found", "environment", {"name": "x", "environment": "prod"})
    await api.error("POST", "/v1/stacks", 400, "bad_request", "description", {"name": "x", "description": "y"})
    assert (await api.ok("GET", "/v1/stacks/web-server"))["id"] == stack["id"]
    assert (await api.ok("GET", f"/v1/stacks/{stack['id']}"))["name"] == "web-server"
    assert (await api.ok("GET", "/v1/stacks?environment=default"))["total"] == 1
    assert (await api.ok("GET", "/v1/stacks?environment=prod"))["total"] == 0
    assert (await api.ok("DELETE", "/v1/stacks/web-server")) == {"removed": stack["id"]}
    await api.error("GET", "/v1/stacks/web-server", 404, "not_found", "stack")
    await api.error("DELETE", "/v1/stacks/web-server", 404, "not_found", "stack")


# ---------------------------------------------------------------------- services


async def test_services_create_change_scale_and_remove(api: Api) -> None:
    stack, service = await web(api)
    assert service["stack_name"] == "web-server" and service["scale"] == 2 and service["running"] == 0
    assert service["spec"]["ports"] == [{"target": 80, "published": 8080, "protocol": "tcp", "host_ip": None}]
    assert service["healthy"] is None, "no health check: no healthy count"
    assert (await api.ok("GET", "/v1/services?stack=web-server"))["total"] == 1
    assert (await api.ok("GET", f"/v1/services?stack={stack['id']}"))["total"] == 1
    assert (await api.ok("GET", "/v1/services?state=stopped"))["total"] == 0
    assert (await api.ok("GET", "/v1/services/nginx"))["id"] == service["id"]
    changed = await api.ok("PATCH", f"/v1/services/{service['id']}", {"environment": {"MODE": "new"}})
    assert changed["spec"]["environment"] == {"MODE": "new"} and changed["spec"]["ports"][0]["published"] == 8080
    assert (await api.ok("POST", f"/v1/services/{service['id']}/scale", {"scale": 5}))["scale"] == 5
    assert (await api.ok("POST", f"/v1/services/{service['id']}/stop"))["state"] == "stopped"
    assert (await api.ok("POST", f"/v1/services/{service['id']}/start"))["state"] == "active"
    assert (await api.ok("POST", f"/v1/services/{service['id']}/restart"))["state"] == "active"
    assert (await api.ok("DELETE", f"/v1/services/{service['id']}")) == {"removed": service["id"]}
    await api.error("GET", f"/v1/services/{service['id']}", 404, "not_found", "service")


async def test_a_service_with_a_health_check_can_be_scaled_and_changed(api: Api) -> None:
    """(Before the typed model, re-validating the stored spec refused the check's empty fields.)"""
    await api.ok("POST", "/v1/stacks", {"name": "s"}, status=201)
    service = await api.ok("POST", "/v1/services", {"stack": "s", "name": "web", "image": "corral/base",
                                                     "health_check": {"type": "http", "port": 80}}, status=201)
    assert service["healthy"] == 0
    assert (await api.ok("POST", f"/v1/services/{service['id']}/scale", {"scale": 3}))["scale"] == 3
    changed = await api.ok("PATCH", f"/v1/services/{service['id']}", {"labels": {"tier": "web"}})
    assert changed["spec"]["health_check"]["path"] == "/"


@pytest.mark.parametrize(("body", "status", "code", "field"), [
    ({"name": "x", "image": "corral/base"}, 400, "bad_request", "stack"),
    ({"stack": "nope", "name": "x", "image": "corral/base"}, 404, "not_found", "stack"),
    ({"stack": "web-server", "name": "nginx", "image": "corral/base"}, 409, "conflict", "name"),
    ({"stack": "web-server", "name": "X", "image": "corral/base"}, 400, "bad_request", "name"),
    ({"stack": "web-server", "name": "x"}, 400, "bad_request", "image"),
    ({"stack": "web-server", "name": "x", "image": "No Such/Image"}, 400, "bad_request", "image"),
    ({"stack": "web-server", "name": "x", "image": "corral/base", "scale": 1001}, 400, "bad_request", "scale"),
    ({"stack": "web-server", "name": "x", "image": "corral/base", "ports": ["99999:1"]}, 400, "bad_request",
     "ports[0]"),
    ({"stack": "web-server", "name": "x", "image": "corral/base", "ports": ["80", "80/udp", "8080:80", "8080:81"]},
     400, "bad_request", "ports[3]"),
    ({"stack": "web-server", "name": "x", "image": "corral/base", "volumes": ["a:/b"]}, 400, "bad_request",
     "volumes"),
    ({"stack": "web-server", "name": "x", "image": "corral/base", "health_check": {"type": "tcp", "port": 80,
                                                                                  "interval": "1s",
                                                                                  "timeout": "2s"}},
     400, "bad_request", "health_check.timeout"),
    ({"stack": "web-server", "name": "x", "image": "corral/base", "placement": {"constraints": ["zone"]}},
     400, "bad_request", "placement.constraints[0]"),
])
async def test_a_bad_service_is_refused_naming_the_field(api: Api, body: dict[str, Any], status: int, code: str,
                                                         field: str) -> None:
    await web(api)
    before = await api.ok("GET", "/v1/services")
    await api.error("POST", "/v1/services", status, code, field, body)
    assert await api.ok("GET", "/v1/services") == before, "nothing half-made"


async def test_service_changes_refuse_bad_input(api: Api) -> None:
    _, service = await web(api)
    path = f"/v1/services/{service['id']}"
    await api.error("PATCH", path, 400, "bad_request", "name", {"name": "other"})
    await api.error("PATCH", path, 400, "bad_request", "body", {})
    await api.error("PATCH", path, 400, "bad_request", "memory", {"memory": "lots"})
    await api.error("PATCH", path, 400, "bad_request", "image", {"image": "No Such/Image"})
    await api.error("POST", path + "/scale", 400, "bad_request", "scale", {"scale": "ten"})
    await api.error("POST", path + "/scale", 400, "bad_request", "scale", {})
    await api.error("POST", path + "/scale", 400, "bad_request", "extra", {"scale": 1, "extra": 1})
    for verb in ("scale", "stop", "start", "restart"):
        await api.error("POST", f"/v1/services/nosuch/{verb}", 404, "not_found", "service", {"scale": 1})
    await api.error("PATCH", "/v1/services/nosuch", 404, "not_found", "service", {"scale": 1})
    await api.error("DELETE", "/v1/services/nosuch", 404, "not_found", "service")


# ---------------------------------------------------------------------- containers and events


async def placed(api: Api, service: dict[str, Any]) -> list[dict[str, Any]]:
    await api.h.replica.write(PlacementsCommit(service["id"], ((1, "h1"), (2, "h1"))))
    return list((await api.ok("GET", f"/v1/containers?service={service['id']}"))["items"])


async def test_containers_list_get_filter_and_delete(api: Api) -> None:
    _, service = await web(api)
    items = await placed(api, service)
    assert [c["name"] for c in items] == ["web-server-nginx-1", "web-server-nginx-2"]
    assert {c["state"] for c in items} == {"pending"} and items[0]["stack_name"] == "web-server"
    assert (await api.ok("GET", "/v1/containers?host=h1&state=pending"))["total"] == 2
    assert (await api.ok("GET", "/v1/containers?host=h2"))["total"] == 0
    assert (await api.ok("GET", "/v1/containers?stack=web-server&limit=1"))["items"][0]["slot"] == 1
    assert (await api.ok("GET", "/v1/containers?stack=web-server&limit=1&offset=1"))["items"][0]["slot"] == 2
    one = await api.ok("GET", "/v1/containers/web-server-nginx-2")
    assert one["id"] == items[1]["id"]
    assert (await api.ok("GET", f"/v1/containers/{one['id']}"))["name"] == "web-server-nginx-2"
    assert (await api.ok("DELETE", f"/v1/containers/{one['id']}")) == {"removed": one["id"]}
    await api.error("GET", f"/v1/containers/{one['id']}", 404, "not_found", "container")
    await api.error("DELETE", "/v1/containers/nosuch", 404, "not_found", "container")


async def test_logs_and_stats_come_from_the_engine_of_the_containers_host(api: Api) -> None:
    _, service = await web(api)
    first = (await placed(api, service))[0]
    await api.error("GET", f"/v1/containers/{first['id']}/logs", 404, "not_found", "id")
    await api.error("GET", "/v1/containers/nosuch/logs", 404, "not_found", "container")
    cid = await api.h.engine.containers.create("web-server-nginx-1", {"Image": "corral/base",
                                                                      "Labels": {"corral.instance": first["id"]}})
    api.h.engine.containers_by_id[cid].logs = ["one\n", "two\n", "three\n"]
    await api.h.replica.write(InstanceStatus(first["id"], "h1", Status.RUNNING, container_id=cid))
    got, text, _ = await api.call("GET", f"/v1/containers/{first['id']}/logs?tail=2")
    assert got == 200 and text == b"two\nthree\n"
    await api.error("GET", f"/v1/containers/{first['id']}/logs?tail=many", 400, "bad_request", "tail")
    await api.error("GET", f"/v1/containers/{first['id']}/logs?follow=sometimes", 400, "bad_request", "follow")
    stats = await api.ok("GET", f"/v1/containers/{first['id']}/stats")
    assert stats["cpu_percent"] == 40.0 and stats["memory"]["usage"] == 2**20


async def test_events_filter_wait_and_stream(api: Api) -> None:
    await web(api)
    events = (await api.ok("GET", "/v1/events"))["items"]
    assert [e["kind"] for e in events] == ["host.registered", "user.created", "key.created", "stack.created",
                                           "service.created"], "the bootstrap's admin and key come before the stack"
    assert [e["actor"] for e in events][-2:] == ["admin", "admin"], "a user's writes say who made them"
    audit = (await api.ok("GET", "/v1/events?audit=1"))["items"]
    assert [e["kind"] for e in audit] == ["stack.created", "service.created"]
    assert all(e["source"] == "127.0.0.1 via h1" and e["credential"] for e in audit)
    last = events[-1]["index"]
    assert (await api.ok("GET", f"/v1/events?index={last}"))["items"] == []
    assert (await api.ok("GET", "/v1/events?kind=stack.created"))["total"] == 1
    await api.error("GET", "/v1/events?wait=junk", 400, "bad_request", "wait")
    await api.error("GET", "/v1/events?index=-3", 400, "bad_request", "index")
    started = asyncio.get_running_loop().time()
    assert (await api.ok("GET", f"/v1/events?index={last}&wait=0.2s"))["items"] == []
    assert asyncio.get_running_loop().time() - started < 2
    waiter = asyncio.ensure_future(api.ok("GET", f"/v1/events?index={last}&wait=5s"))
    await asyncio.sleep(0.1)
    await api.ok("POST", "/v1/stacks", {"name": "more"}, status=201)
    assert [e["kind"] for e in (await waiter)["items"]] == ["stack.created"]
    async with api.session.get(api.h.url + f"/v1/events?stream=1&index={last}") as resp:
        assert resp.headers["Content-Type"].startswith("application/x-ndjson")
        first = json.loads(await asyncio.wait_for(resp.content.readline(), 5))
        assert first["kind"] == "stack.created"
        await api.ok("POST", "/v1/stacks", {"name": "streamed"}, status=201)
        second = json.loads(await asyncio.wait_for(resp.content.readline(), 5))
        assert second["message"] == "stack streamed created"


async def test_writes_without_a_leader_fail_at_once_with_the_reason() -> None:
    async with running_api(leads=False) as harness, aiohttp.ClientSession(headers=harness.auth) as session:
        api = Api(harness, session)
        message = await api.error("POST", "/v1/stacks", 503, "no_leader", body={"name": "x"})
        assert "no leader" in message
        got, _, headers = await api.call("GET", "/v1/stacks")
        assert got == 200 and "X-Corral-Stale" in headers, "reads are answered, flagged as possibly behind"
        await api.error("GET", "/v1/kv/k?consistent=1", 503, "no_leader")


async def test_a_follower_commits_writes_through_the_leader_in_batches_and_answers_from_its_replica() -> None:
    async with running_pair() as (h1, h2), aiohttp.ClientSession(headers=h1.auth) as session:
        follower = Api(h2, session)
        assert not h2.replica.is_leader
        stack = await follower.ok("POST", "/v1/stacks", {"name": "web-server"}, status=201)
        assert stack["name"] == "web-server", "the follower answers with its own replica, which holds the write"
        assert stack["id"] in h1.replica.state.stacks
        await follower.error("POST", "/v1/stacks", 409, "conflict", "name", {"name": "web-server"})
        before = h2.replica.batches_sent
        answers = await asyncio.gather(*(follower.call("PUT", f"/v1/kv/k{i}", raw=str(i).encode())
                                         for i in range(50)))
        assert all(status == 200 for status, _, _ in answers)
        for _status, body, headers in answers:
            assert int(headers["X-Corral-Index"]) >= body["index"], "answered once applied on the follower"
        assert len({body["index"] for _, body, _ in answers}) == 50
        assert h2.replica.batches_sent - before < 50, "concurrent writes travel to the leader together"
        assert {k: v.value for k, v in h1.replica.state.kv.items()} == {f"k{i}": str(i).encode() for i in range(50)}
        await follower.error("PUT", "/v1/kv/k1?cas=1", 409, "cas_failed", "cas", raw=b"x")
