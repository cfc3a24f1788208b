"""Health checks: the spec, the counting, real probes on loopback, the prober, and what the plan does."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.model import spec as specs
from agent.model.codec import to_wire
from agent.model.errors import SpecError
from agent.model.spec import RestartPolicy
from agent.node.docker import EngineContainer
from agent.node.health import HEALTHY, STARTING, UNHEALTHY, HealthProber, Track, probe
from agent.node.plan import Desired, plan

HTTP = {"type": "http", "port": 80, "path": "/healthz", "interval": "1s", "timeout": "500ms", "retries": 2}


# ---------------------------------------------------------------------- the spec

def test_a_check_is_normalised_with_defaults_and_durations() -> None:
    assert to_wire(specs.health_check(HTTP)) == {
        "type": "http", "port": 80, "path": "/healthz", "command": None, "interval": 1.0, "timeout": 0.5,
        "retries": 2, "start_period": 0.0, "on_unhealthy": "recreate"}
    tcp = specs.health_check({"type": "tcp", "port": 5432})
    assert tcp is not None and (tcp.interval, tcp.timeout, tcp.retries, tcp.path) == (5.0, 2.0, 3, None)
    cmd = specs.health_check({"type": "command", "command": "test -f /ready", "start_period": "1m",
                              "on_unhealthy": "none"})
    assert cmd is not None and cmd.start_period == 60.0 and cmd.on_unhealthy == "none" and cmd.port is None
    assert specs.health_check(None) is None
    check = specs.parse({"image": "corral/base", "health_check": HTTP}).health_check
    assert check is not None and check.timeout == 0.5


@pytest.mark.parametrize(("check", "field"), [
    ("GET /", "health_check"),
    ({"port": 80}, "health_check.type"),
    ({"type": "grpc", "port": 80}, "health_check.type"),
    ({"type": "http"}, "health_check.port"),
    ({"type": "http", "port": 70000}, "health_check.port"),
    ({"type": "tcp", "port": True}, "health_check.port"),
    ({"type": "http", "port": 80, "path": "healthz"}, "health_check.path"),
    ({"type": "http", "port": 80, "path": "/a b"}, "health_check.path"),
    ({"type": "command"}, "health_check.command"),
    ({"type": "command", "command": "true", "port": 80}, "health_check.port"),
    ({"type": "tcp", "port": 80, "path": "/"}, "health_check.path"),
    ({"type": "tcp", "port": 80, "interval": "fast"}, "health_check.interval"),
    ({"type": "tcp", "port": 80, "interval": "10ms"}, "health_check.interval"),
    ({"type": "tcp", "port": 80, "interval": "1s", "timeout": "2s"}, "health_check.timeout"),
    ({"type": "tcp", "port": 80, "retries": 0}, "health_check.retries"),
    ({"type": "tcp", "port": 80, "on_unhealthy": "restart"}, "health_check.on_unhealthy"),
    ({"type": "tcp", "port": 80, "start_period": -1}, "health_check.start_period"),
    ({"type": "tcp", "port": 80, "grace": 5}, "health_check.grace"),
])
def test_a_bad_check_is_refused_naming_the_field(check: Any, field: str) -> None:
    with pytest.raises(SpecError) as err:
        specs.parse({"image": "corral/base", "health_check": check})
    assert err.value.field == field, err.value


# ---------------------------------------------------------------------- counting

def test_failures_count_only_after_the_start_period_or_a_first_success() -> None:
    track = Track(retries=2, start_period=10.0, started=0.0)
    assert track.state == STARTING
    for t in (1.0, 2.0, 3.0):
        assert not track.result(False, t, "refused")
    assert track.state == STARTING and track.last_error == "refused", "the start period forgives"
    assert track.result(True, 4.0) and track.state == HEALTHY and track.last_error is None
    assert not track.result(False, 5.0, "500"), "one failure is not enough"
    assert track.result(False, 6.0, "500") and track.state == UNHEALTHY
    assert not track.result(False, 7.0, "500")
    assert track.result(True, 8.0) and track.state == HEALTHY and track.failures == 0


def test_without_a_start_period_a_container_that_never_answers_turns_unhealthy() -> None:
    track = Track(retries=3, start_period=0.0, started=0.0)
    changes = [track.result(False, t, "refused") for t in (1.0, 2.0, 3.0)]
    assert changes == [False, False, True] and track.state == UNHEALTHY


# ---------------------------------------------------------------------- real probes on loopback

@pytest.fixture
async def server() -> AsyncIterator[dict[str, Any]]:
    """An HTTP server on 127.0.0.1 whose /healthz answers with ``box['status']``."""
    box: dict[str, Any] = {"status": 200, "hits": 0}

    async def healthz(_request: web.Request) -> web.Response:
        box["hits"] += 1
        return web.Response(status=box["status"], text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    box["port"] = runner.addresses[0][1]
    yield box
    await runner.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_probes_answer_none_when_healthy_and_say_why_not(server: dict[str, Any]) -> None:
    http = specs.health_check({**HTTP, "port": server["port"]})
    tcp = specs.health_check({"type": "tcp", "port": server["port"], "timeout": "1s", "interval": "1s"})
    closed = specs.health_check({"type": "tcp", "port": free_port(), "timeout": "1s", "interval": "1s"})
    assert http and tcp and closed
    async with aiohttp.ClientSession() as session:
        assert await probe(http, "127.0.0.1", session) is None
        assert await probe(tcp, "127.0.0.1", session) is None
        server["status"] = 503
        assert await probe(http, "127.0.0.1", session) == "GET /healthz answered 503"
        refused = f"cannot connect to port {closed.port}: connection refused"
        assert await probe(closed, "127.0.0.1", session) == refused
        assert await probe(dataclasses.replace(http, port=closed.port), "127.0.0.1", session) == refused


async def test_the_prober_reports_a_container_turning_unhealthy_and_back(server: dict[str, Any]) -> None:
    check = specs.health_check({**HTTP, "port": server["port"], "interval": "0.5s", "timeout": "0.4s"})
    assert check
    changed = asyncio.Event()
    prober = HealthProber(changed.set)
    try:
        prober.sync({"c1": (check, "127.0.0.1")})
        await asyncio.wait_for(changed.wait(), 5)
        assert prober.health("c1") == HEALTHY and prober.detail("c1") is None
        changed.clear()
        server["status"] = 500
        await asyncio.wait_for(changed.wait(), 5)
        assert prober.health("c1") == UNHEALTHY
        assert prober.detail("c1") == "GET /healthz answered 500"
        changed.clear()
        server["status"] = 200
        await asyncio.wait_for(changed.wait(), 5)
        assert prober.health("c1") == HEALTHY
        prober.sync({})  # the container is gone: no more probes, no health
        assert prober.health("c1") is None
        hits = server["hits"]
        await asyncio.sleep(1.2)
        assert server["hits"] == hits
    finally:
        await prober.close()


async def test_a_container_just_started_is_probed_at_once_one_found_running_at_its_phase(
        server: dict[str, Any]) -> None:
    check = specs.health_check({**HTTP, "port": server["port"], "interval": "30s", "timeout": "1s"})
    assert check
    phases: list[float] = []
    changed = asyncio.Event()
    prober = HealthProber(changed.set, stagger=lambda interval: phases.append(interval) or interval)
    try:
        prober.sync({"old": (check, "127.0.0.1"), "new": (check, "127.0.0.1")}, fresh={"new"})
        await asyncio.wait_for(changed.wait(), 5)  # long before the 30 s phase
        assert prober.health("new") == HEALTHY and prober.health("old") == "starting"
        assert phases == [30.0], "only the container found running waits for a phase"
    finally:
        await prober.close()


# ---------------------------------------------------------------------- the plan

def want(instance: str, on_unhealthy: str = "recreate") -> Desired:
    check = specs.health_check({**HTTP, "on_unhealthy": on_unhealthy})
    return Desired(instance, f"web-{instance}", True, RestartPolicy.ALWAYS, {"Labels": {"corral.spec": "f1"}}, check)


def seen(cid: str, instance: str, health: str | None) -> EngineContainer:
    return EngineContainer(cid, f"web-{instance}", "corral/base", {"corral.instance": instance, "corral.spec": "f1"},
                           "running", health=health)


def test_an_unhealthy_container_is_replaced_unless_the_service_says_none() -> None:
    actions = plan({"i1": want("i1")}, [seen("c1", "i1", UNHEALTHY)])
    assert [(a.kind, a.container, a.reason) for a in actions] == [
        ("remove", "c1", "unhealthy"), ("create", None, "replace the unhealthy one")]
    assert plan({"i1": want("i1", "none")}, [seen("c1", "i1", UNHEALTHY)]) == []
    for health in (HEALTHY, STARTING, None):
        assert plan({"i1": want("i1")}, [seen("c1", "i1", health)]) == []


def test_replacing_an_instance_that_never_turns_healthy_backs_off() -> None:
    from agent.node.health import ReplaceBackoff

    b = ReplaceBackoff(first=10, cap=60)
    assert b.wait("i1", 0) == 0, "the first replacement is at once"
    b.replaced("i1", 0)
    assert b.wait("i1", 3) == 7 and b.wait("i1", 10) == 0
    b.replaced("i1", 10)
    assert b.wait("i1", 10) == 20, "doubles"
    for t in (30, 70, 140, 300):
        b.replaced("i1", t)
    assert b.wait("i1", 300) == 60 and b.streak("i1") == 6, "capped"
    assert b.wait("i2", 300) == 0, "per instance"
    b.healthy("i1")
    assert b.wait("i1", 301) == 0 and b.streak("i1") == 0, "turning healthy starts over"
    b.replaced("i1", 301)
    b.forget_except(set())
    assert b.streak("i1") == 0, "a removed instance is forgotten"


async def test_a_host_with_many_checked_containers_does_not_queue_its_probes_into_timeouts() -> None:
    """150 containers answering in 1.5 s with a 2.5 s timeout: every probe must run at once (a pool of
    100 connections would hold 50 back for 1.5 s, so they would end after 3 s, time out and be called
    unhealthy). The margins are 1 s of load either way: at 0.6 s / 1 s a loaded machine (the suite's end,
    labs going down) starved the one event loop that runs both sides into 150 timeouts."""
    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)  # one server stands in for 150 containers
    await site.start()
    check = specs.health_check({**HTTP, "port": runner.addresses[0][1], "interval": "6s", "timeout": "2.5s",
                                "retries": 1})
    assert check
    prober = HealthProber(lambda: None, stagger=lambda _interval: 0.0)  # the worst case: all at once
    try:
        prober.sync({f"c{i}": (check, "127.0.0.1") for i in range(150)})
        await asyncio.sleep(4.0)
        states = Counter(prober.health(f"c{i}") for i in range(150))
        assert states == Counter({HEALTHY: 150}), states
    finally:
        await prober.close()
        await runner.cleanup()


async def test_the_first_probes_of_many_containers_are_spread_over_the_interval(server: dict[str, Any]) -> None:
    """After an agent restart every container is new to the prober: their probes must not fire together."""
    hits: list[float] = []
    check = specs.health_check({**HTTP, "port": server["port"], "interval": "1s", "timeout": "0.5s"})
    assert check
    loop = asyncio.get_running_loop()
    prober = HealthProber(lambda: hits.append(loop.time()))  # on_change: each container's first success
    try:
        start = loop.time()
        prober.sync({f"c{i}": (check, "127.0.0.1") for i in range(20)})
        await asyncio.sleep(1.5)
        assert len(hits) == 20, "every container probed once within its interval"
        assert max(hits) - min(hits) > 0.3 and max(hits) - start < 1.5, [round(h - start, 2) for h in hits]
    finally:
        await prober.close()
