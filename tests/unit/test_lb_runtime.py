"""The agent's load-balancer runtime against a real HAProxy (Debian's, skipped where it is missing):
started from the state, servers added and drained through the admin socket with no reload, a rule
change reloaded without refusing a connection, a config HAProxy refuses never loaded.

The containers are aiohttp servers on 127.0.0.2-5 (one port, as containers of one service have)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.model.entities import Status
from agent.node.lb import LoadBalancers, haproxy_binary
from agent.node.lbconfig import server_name, summarize
from agent.node.plan import Observed
from mesh.waiting import until_async
from tests.unit.test_model_state import Log

pytestmark = pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def containers() -> AsyncIterator[tuple[int, dict[str, int]]]:
    """Four 'containers' answering with their address; how many requests each got."""
    port = free_port()
    hits: dict[str, int] = {}
    runners = []
    for n in range(2, 6):
        address = f"127.0.0.{n}"

        async def answer(request: web.Request, address: str = address) -> web.Response:
            hits[address] = hits.get(address, 0) + 1
            if request.query.get("slow"):
                await asyncio.sleep(float(request.query["slow"]))
            return web.Response(text=address)
        app = web.Application()
        app.router.add_get("/{tail:.*}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, address, port).start()
        runners.append(runner)
    yield port, hits
    for runner in runners:
        await runner.cleanup()


def world(port: int, listen: int, scale: int = 2, **lb: Any) -> tuple[Log, str, str]:
    log = Log()
    assert log("host.register", name="h1", address="127.0.0.1", cpus=2, memory=2**30)["ok"]
    stack = log("stack.create", name="shop")["id"]
    web_id = log("service.create", stack=stack, name="web", spec={"image": "corral/base", "scale": 4})["id"]
    placed = log("placements.commit", service=web_id, placements=[[s, "h1"] for s in range(1, 5)])["placed"]
    for n, inst in enumerate(placed):
        status = "running" if n < scale else "created"
        assert log("instance.status", id=inst, host="h1", status=status, ip=f"127.0.0.{n + 2}")["ok"]
    front = log("service.create", stack=stack, name="front", spec={"kind": "load-balancer", "lb": {
        "rules": [{"port": listen, "target": "web", "target_port": port}], "drain_timeout": 2, **lb}})
    assert front["ok"], front
    assert log("placements.commit", service=front["id"], placements=[[1, "h1"]])["ok"]
    return log, web_id, front["id"]


async def get(session: aiohttp.ClientSession, listen: int, path: str = "/") -> str:
    async with session.get(f"http://127.0.0.1:{listen}{path}") as r:
        assert r.status == 200, await r.text()
        return await r.text()


async def test_servers_change_without_a_reload_and_leave_by_draining(
        containers: tuple[int, dict[str, int]], tmp_path: Path) -> None:
    port, hits = containers
    listen = free_port()
    log, web_id, _ = world(port, listen)
    reports: list[tuple[str, Observed]] = []

    async def report(instance: str, observed: Observed) -> None:
        reports.append((instance, observed))
    lbs = LoadBalancers("h1", log.state, tmp_path, report, haproxy_binary())
    try:
        await lbs.sync_once()
        (balancer,) = lbs.balancers.values()
        master = balancer.master()
        assert master is not None and reports[-1][1].status is Status.RUNNING, reports
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            seen = {await get(session, listen) for _ in range(8)}
            assert seen == {"127.0.0.2", "127.0.0.3"}
            worker = await lbs._worker(balancer)
            # two more containers start: added at run time, same worker (no reload)
            for inst in log.state.instances_of(web_id)[2:]:
                assert log("instance.status", id=inst.id, host="h1", status="running", ip=inst.ip)["ok"]
            await lbs.sync_once()
            assert await lbs._worker(balancer) == worker, "no reload for a new server"
            seen = {await get(session, listen) for _ in range(12)}
            assert seen == {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}
            # scale to 1 while a slow request is in flight on each: drained, the slow ones finish
            slow = [asyncio.create_task(get(session, listen, "/?slow=1")) for _ in range(4)]
            await asyncio.sleep(0.2)
            assert log("service.scale", id=web_id, scale=1)["ok"]
            await lbs.sync_once()
            assert len(balancer.draining) == 3 and await lbs._worker(balancer) == worker
            before = dict(hits)
            quick = [await get(session, listen) for _ in range(6)]
            assert set(quick) == {"127.0.0.2"}, "no new request to a draining server"
            assert sorted(await asyncio.gather(*slow)) == ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
            assert hits["127.0.0.2"] == before["127.0.0.2"] + 6
            await until_async("the drained servers deleted", lambda: _synced_empty(lbs), timeout=5, every=0.2)
            stat = await lbs.stats(balancer.instance)
            (kept,) = log.state.instances_of(web_id)
            assert [r["svname"] for r in stat if r["pxname"].startswith("b_")] == [
                server_name(kept.id, "127.0.0.2"), "BACKEND"], "the drained servers were deleted"
            figures = summarize(stat)
            (backend,) = figures["backends"]  # type: ignore[misc]
            assert backend["state"] == "UP" and backend["servers"][0]["state"] == "UP"
            assert backend["servers"][0]["requests"] >= 6 and figures["errors"] == 0 and figures["sessions"] == 0
    finally:
        for b in lbs.balancers.values():
            await lbs.stop_and_wait(b)


async def _synced_empty(lbs: LoadBalancers) -> bool:
    await lbs.sync_once()
    return not any(b.draining for b in lbs.balancers.values())


async def test_a_rule_change_reloads_without_refusing_connections_and_a_refused_config_is_kept_out(
        containers: tuple[int, dict[str, int]], tmp_path: Path) -> None:
    port, _ = containers
    listen, second = free_port(), free_port()
    log, _, front = world(port, listen)

    async def report(instance: str, observed: Observed) -> None:
        return None
    lbs = LoadBalancers("h1", log.state, tmp_path, report, haproxy_binary())
    failures: list[str] = []
    done = asyncio.Event()

    async def steady() -> int:
        count = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            while not done.is_set():
                try:
                    await get(session, listen)
                    count += 1
                except Exception as exc:
                    failures.append(repr(exc))
        return count
    try:
        await lbs.sync_once()
        (balancer,) = lbs.balancers.values()
        master, worker = balancer.master(), await lbs._worker(balancer)
        load = asyncio.create_task(steady())
        await asyncio.sleep(0.3)
        assert log("service.update", id=front, spec={"lb": {"rules": [
            {"port": listen, "target": "web", "target_port": port},
            {"port": second, "target": "web", "target_port": port}], "drain_timeout": 2}})["ok"]
        await lbs.sync_once()
        assert balancer.master() == master and await lbs._worker(balancer) != worker, "reloaded by the same master"
        await asyncio.sleep(0.3)
        done.set()
        assert await load > 10 and failures == []
        async with aiohttp.ClientSession() as session:
            assert await get(session, second) in ("127.0.0.2", "127.0.0.3"), "the new listener serves"
        # a config HAProxy refuses (the port is taken by someone else here) is never loaded
        with socket.socket() as taken:
            taken.bind(("0.0.0.0", 0))
            taken.listen()
            busy = taken.getsockname()[1]
            assert log("service.update", id=front, spec={"lb": {"rules": [
                {"port": listen, "target": "web", "target_port": port},
                {"port": busy, "target": "web", "target_port": port}]}})["ok"]
            await lbs.sync_once()
            assert balancer.error is not None and "haproxy" in balancer.error, balancer.error
            async with aiohttp.ClientSession() as session:
                assert await get(session, listen), "the running HAProxy keeps serving"
    finally:
        for b in lbs.balancers.values():
            await lbs.stop_and_wait(b)


async def test_a_port_in_use_is_the_reason_and_the_start_is_retried_with_a_back_off(
        containers: tuple[int, dict[str, int]], tmp_path: Path) -> None:
    """HAProxy cannot bind its port (another program holds it): the instance's error is HAProxy's own
    alert, not tried again at every pass but after a back-off, and it starts once the port is free."""
    port, _ = containers
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind(("0.0.0.0", 0))
    taken.listen()
    listen = int(taken.getsockname()[1])
    log, _, _ = world(port, listen)
    reports: list[tuple[str, Observed]] = []

    async def report(instance: str, observed: Observed) -> None:
        reports.append((instance, observed))
    lbs = LoadBalancers("h1", log.state, tmp_path, report, haproxy_binary())
    try:
        await lbs.sync_once()
        (balancer,) = lbs.balancers.values()
        assert balancer.master() is None and balancer.failures == 1
        assert "cannot bind socket" in (balancer.error or "") and f":{listen}" in (balancer.error or ""), \
            balancer.error
        assert reports[-1][1].error == balancer.error and reports[-1][1].status is not Status.RUNNING
        for _ in range(5):  # passes in a row (each report wakes one): no new start before the back-off
            await lbs.sync_once()
        assert balancer.failures == 1, "not retried at every pass"
        taken.close()
        await asyncio.sleep(max(0.0, balancer.retry_at - asyncio.get_running_loop().time()) + 0.05)
        await lbs.sync_once()
        assert balancer.master() is not None and balancer.error is None and balancer.failures == 0
        assert reports[-1][1].status is Status.RUNNING
    finally:
        taken.close()
        for b in lbs.balancers.values():
            await lbs.stop_and_wait(b)


async def test_a_rule_on_one_of_the_agents_own_ports_is_refused_on_its_host(
        containers: tuple[int, dict[str, int]], tmp_path: Path) -> None:
    """A rule listening on the agent's API port (8080 by default) would take it from the agent or fail
    to bind: no HAProxy is started, and the instance says why."""
    port, _ = containers
    listen = free_port()
    log, _, _ = world(port, listen)
    reports: list[tuple[str, Observed]] = []

    async def report(instance: str, observed: Observed) -> None:
        reports.append((instance, observed))
    lbs = LoadBalancers("h1", log.state, tmp_path, report, haproxy_binary(), {listen: "the Corral agent's API port"})
    await lbs.sync_once()
    (balancer,) = lbs.balancers.values()
    assert balancer.master() is None and not (balancer.folder / "haproxy.cfg").exists()
    assert reports[-1][1].status is not Status.RUNNING
    assert reports[-1][1].error == (f"port {listen} is the Corral agent's API port on this host: a load balancer "
                                    "cannot listen there (change the rule's port)")
