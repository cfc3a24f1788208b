"""The change feed, and an idle cluster that stays idle: nothing wakes for a heartbeat or a status report.

The reconciler runs here against a fake engine (counting its container lists) and a state machine fed
by hand, as Raft would feed it: it passes when something assigned to its host changes, and not when
a report (its own) lands, another host's instances change, or Raft only ticks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from agent.cluster.feed import MAX_PENDING, Feed
from agent.model.changes import Change, Topic
from agent.model.commands import (
    Command,
    HostRegister,
    InstanceStatus,
    KvPut,
    PlacementsCommit,
    ServiceCreate,
    ServiceUpdate,
    StackCreate,
    encode,
)
from agent.model.entities import Status
from agent.model.state import ClusterState
from agent.node import reconciler as reconciler_module
from agent.node.docker import EngineUnreachable
from agent.node.plan import Observed
from agent.node.reconciler import DIE_RECHECK, DIE_RECHECKS, Reconciler
from mesh.raft import config as raft_config
from mesh.raft.core import RaftNode
from mesh.raft.driver import RaftDriver
from mesh.raft.storage import AsyncMemoryStorage
from mesh.raft.transport import RaftTransport
from mesh.waiting import until_async
from tests.unit.fakes import FakeContainer, FakeContainers, FakeEngine


def test_a_subscription_keeps_what_it_wants_and_collapses_when_it_falls_behind() -> None:
    feed = Feed()
    woken: list[int] = []
    hosts = feed.subscribe(lambda c: c.topic is Topic.HOST, "hosts", notify=lambda: woken.append(1))
    everything = feed.subscribe()
    feed.publish([Change(1, Topic.HOST, "h1"), Change(1, Topic.KV, "k")])
    assert hosts.take() == [Change(1, Topic.HOST, "h1")] and len(woken) == 1
    assert len(everything.take()) == 2
    feed.publish([Change(2, Topic.KV, "k")])
    assert hosts.take() == [] and len(woken) == 1, "an unwanted change does not wake"
    feed.publish([Change(3, Topic.HOST, f"h{i}") for i in range(MAX_PENDING + 5)])
    assert hosts.take() == [Change(3, Topic.ALL)], "a reader that fell behind is told to read everything"
    feed.publish([Change(4, Topic.ALL)])
    assert hosts.take() == [Change(4, Topic.ALL)], "a snapshot install reaches every subscriber"
    hosts.close()
    feed.publish([Change(5, Topic.HOST, "h1")])
    assert hosts.take() == [] and feed.subscribers == 1


async def test_next_waits_for_a_change_or_the_timeout() -> None:
    feed = Feed()
    sub = feed.subscribe()
    assert await sub.next(0.05) == []
    asyncio.get_running_loop().call_later(0.02, feed.publish, [Change(1, Topic.KV, "k")])
    assert await sub.next(2) == [Change(1, Topic.KV, "k")]


async def test_the_raft_driver_reports_applied_entries_never_heartbeats() -> None:
    cfg = raft_config.local()
    storage = AsyncMemoryStorage()
    core = RaftNode("n1", cfg, random.Random(3), state=await storage.load(), voters=("n1",))
    calls: list[int] = []
    transport = RaftTransport(("127.0.0.1", 0), _Plain(), lambda m: None)
    driver = RaftDriver(core, storage, ClusterState(), transport, cfg.tick_seconds, on_applied=calls.append)
    await transport.start()
    await driver.start()
    try:
        await until_async("the single voter leads", lambda: driver.is_leader, 10)
        await asyncio.sleep(0.1)
        settled = len(calls)  # the new leader's empty entry
        await asyncio.sleep(0.5)  # 50 ticks
        assert len(calls) == settled, "ticks and heartbeats apply nothing: no callback"
        await driver.propose(encode(KvPut("k", "v")))
        assert len(calls) == settled + 1 and calls[-1] == driver.applied
    finally:
        await driver.stop()
        await transport.close()


class _Plain:
    def seal(self, plaintext: bytes) -> bytes:
        return plaintext

    def open(self, sealed: bytes) -> bytes | None:
        return sealed


@dataclasses.dataclass
class Cluster:
    """A state machine fed by hand, publishing to a feed after each command, as the Raft driver does."""

    state: ClusterState = dataclasses.field(default_factory=ClusterState)
    feed: Feed = dataclasses.field(default_factory=Feed)
    index: int = 0

    def apply(self, cmd: Command) -> None:
        self.index += 1
        self.state.execute(cmd, self.index)
        self.feed.publish(self.state.take_changes())


@asynccontextmanager
async def reconciling(cluster: Cluster, engine: FakeEngine, reports: list[str]) -> AsyncIterator[Reconciler]:
    async def report(instance: str, observed: Observed) -> None:
        reports.append(instance)
        cluster.apply(InstanceStatus(instance, "h1", observed.status, observed.exit_code, observed.container_id,
                                     observed.ip, observed.ports, observed.error, observed.health,
                                     observed.health_detail))

    rec = Reconciler("h1", cluster.state, engine, report)
    async with rec.running(cluster.feed):
        yield rec


async def settle(rec: Reconciler, quiet: float = 0.3) -> int:
    """Until no pass ran for ``quiet`` seconds; the number of passes then."""
    while True:
        before = rec.passes
        await asyncio.sleep(quiet)
        if rec.passes == before:
            return before


@pytest.fixture
def slow_safety(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconciler_module, "SAFETY_PERIOD", 3600.0)


async def test_an_idle_host_lists_its_containers_only_when_something_changes(slow_safety: None) -> None:
    cluster, engine, reports = Cluster(), FakeEngine(), []
    for host in ("h1", "h2"):
        cluster.apply(HostRegister(host, f"10.77.0.1{host[1]}"))
    cluster.apply(StackCreate("web"))
    cluster.apply(ServiceCreate("st3", "nginx", {"image": "corral/base", "scale": 3}))
    cluster.apply(PlacementsCommit("sv4", ((1, "h1"), (2, "h1"), (3, "h2"))))
    async with reconciling(cluster, engine, reports) as rec:
        passes = await settle(rec)
        running = [c for c in engine.containers_by_id.values() if c.state == "running"]
        assert len(running) == 2, "h1's two instances run"
        # each reported twice: its address before it starts (its DNS name), then running
        assert sorted(reports) == ["c5-1", "c5-1", "c5-2", "c5-2"]
        assert all(cluster.state.instances[i].status == Status.RUNNING for i in ("c5-1", "c5-2"))
        lists = engine.calls["list"]

        await asyncio.sleep(0.5)
        assert (rec.passes, engine.calls["list"]) == (passes, lists), "idle: no pass, no list"

        cluster.apply(InstanceStatus("c5-3", "h2", Status.RUNNING))  # another host's report
        cluster.apply(ServiceUpdate("sv4", {"scale": 3}))  # the service record changes, not what it runs
        await asyncio.sleep(0.3)
        assert rec.passes == passes, "nothing of h1's changed"

        cluster.apply(PlacementsCommit("sv4", ((3, "h1"),)))  # slot 3 moves here
        passes = await settle(rec)
        assert len([c for c in engine.containers_by_id.values() if c.state == "running"]) == 3
        assert rec.passes <= passes

        before = rec.passes
        cluster.apply(ServiceUpdate("sv4", {"environment": {"MODE": "new"}}))  # a new spec: replace all
        await settle(rec)
        assert rec.passes > before
        assert len(engine.containers_by_id) == 3
        assert all("MODE=new" in c.config["Env"] for c in engine.containers_by_id.values())


async def test_a_docker_event_and_the_safety_period_each_bring_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconciler_module, "SAFETY_PERIOD", 0.5)
    cluster, engine, reports = Cluster(), FakeEngine(), []
    cluster.apply(HostRegister("h1", "10.77.0.11"))
    async with reconciling(cluster, engine, reports) as rec:
        await asyncio.sleep(0.2)
        first = rec.passes
        await asyncio.sleep(1.2)
        assert 1 <= rec.passes - first <= 3, "one pass per safety period"
        monkeypatch.setattr(reconciler_module, "SAFETY_PERIOD", 3600.0)
        await asyncio.sleep(0.6)  # the loop picks up the long period after its current wait
        quiet = rec.passes
        await engine.events.put({"Action": "exec_start: sh -c true"})  # a health check's exec: no pass
        await asyncio.sleep(0.2)
        assert rec.passes == quiet
        await engine.events.put({"Action": "die"})
        await asyncio.sleep(0.2)
        assert rec.passes == quiet + 1


async def test_a_container_that_died_but_is_still_listed_running_is_looked_at_again_soon(slow_safety: None) -> None:
    """Docker sends ``die`` before its container list shows the container stopped: the pass woken by
    the event can still see it running. It is looked at again shortly (not 30 s later at the safety
    pass) until the list shows it stopped, and only a bounded number of times."""
    cluster, engine, reports = Cluster(), FakeEngine(), []
    cluster.apply(HostRegister("h1", "10.77.0.11"))
    cluster.apply(StackCreate("web"))
    cluster.apply(ServiceCreate("st2", "app", {"image": "corral/base", "scale": 1, "restart": "no"}))
    cluster.apply(PlacementsCommit("sv3", ((1, "h1"),)))
    async with reconciling(cluster, engine, reports) as rec:
        await settle(rec)
        (container,) = engine.containers_by_id.values()
        assert cluster.state.instances["c4-1"].status == Status.RUNNING
        quiet = rec.passes
        await engine.events.put({"Action": "die", "id": container.id})  # the list still says running
        await asyncio.sleep(0.35)
        assert rec.passes >= quiet + 3, "looked at again, about every 0.1 s"
        container.state, container.exit_code = "exited", 1  # now the list shows it
        await until_async("the exit reported", lambda: cluster.state.instances["c4-1"].status == Status.EXITED, 2)
        stopped = await settle(rec)
        await asyncio.sleep(0.3)
        assert rec.passes == stopped, "seen stopped: no more looks"

        container.state = "running"
        await engine.events.put({"Action": "die", "id": container.id})  # a die the list never shows
        await asyncio.sleep(DIE_RECHECKS * DIE_RECHECK + 1.0)
        assert stopped + 1 < rec.passes <= stopped + 2 + DIE_RECHECKS, "a bounded number of looks"
        await engine.events.put({"Action": "die", "id": container.id})
        await engine.events.put({"Action": "start", "id": container.id})  # restarted by Docker itself
        await asyncio.sleep(0.4)
        last = rec.passes
        await asyncio.sleep(0.3)
        assert rec.passes == last, "a start after the die: nothing to look for"


async def test_a_restart_delay_counts_from_each_exit_not_the_first(slow_safety: None) -> None:
    """An on-failure service with a delay: each restart waits the delay after *that* exit (the exit's
    inspect is read again for every run of the container, not kept from the first), max_attempts times."""
    cluster, engine, reports = Cluster(), FakeEngine(), []
    cluster.apply(HostRegister("h1", "10.77.0.11"))
    cluster.apply(StackCreate("web"))
    cluster.apply(ServiceCreate("st2", "app", {"image": "corral/base", "scale": 1, "restart": "on-failure",
                                               "restart_delay": 0.4, "restart_max_attempts": 2}))
    cluster.apply(PlacementsCommit("sv3", ((1, "h1"),)))
    async with reconciling(cluster, engine, reports):
        (container,) = await until_async("the container", lambda: list(engine.containers_by_id.values()), 2)
        await until_async("its start", lambda: container.starts, 2)
        exits = []
        for attempt in (1, 2):
            await asyncio.sleep(0.2)  # it runs a while, then fails
            exits.append(time.time())
            container.state, container.exit_code = "exited", 1
            container.finished_at = datetime.datetime.fromtimestamp(exits[-1], datetime.UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.%f000Z")
            await engine.events.put({"Action": "die", "id": container.id})
            await until_async(f"restart {attempt}", lambda n=attempt: len(container.starts) > n, 3)
            assert container.starts[-1] - exits[-1] >= 0.4, f"restart {attempt} waited for the delay after its exit"
        container.state = "exited"
        await engine.events.put({"Action": "die", "id": container.id})
        await asyncio.sleep(1.0)
        assert len(container.starts) == 3, "max_attempts 2: no third restart"


async def test_a_new_container_gets_an_address_of_the_hosts_24_in_the_state_before_it_starts(
        slow_safety: None, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster, engine, reports = Cluster(), FakeEngine(), []
    cluster.apply(HostRegister("h1", "10.77.0.11"))
    subnet = cluster.state.hosts["h1"].subnet
    prefix = subnet.rsplit(".", 1)[0]
    cluster.apply(StackCreate("web"))
    cluster.apply(ServiceCreate("st2", "nginx", {"image": "corral/base", "scale": 3}))
    cluster.apply(PlacementsCommit("sv3", ((1, "h1"), (2, "h1"), (3, "h1"))))
    seen_at_start: dict[str, str | None] = {}
    start = FakeContainers.start

    async def start_and_look(self: FakeContainers, container_id: str) -> None:
        instance = engine.containers_by_id[container_id].config["Labels"]["corral.instance"]
        seen_at_start[instance] = cluster.state.instances[instance].ip
        await start(self, container_id)

    monkeypatch.setattr(FakeContainers, "start", start_and_look)
    async with reconciling(cluster, engine, reports) as rec:
        await settle(rec)
    addresses = {i: cluster.state.instances[i].ip for i in ("c4-1", "c4-2", "c4-3")}
    assert seen_at_start == addresses, "the state had each address before the container started"
    assert len(set(addresses.values())) == 3 and f"{prefix}.1" not in addresses.values()
    assert all(str(a).startswith(prefix + ".") for a in addresses.values())
    for c in engine.containers_by_id.values():
        asked = c.config["NetworkingConfig"]["EndpointsConfig"]["corral"]["IPAMConfig"]["IPv4Address"]
        assert asked == addresses[c.config["Labels"]["corral.instance"]]
        assert c.config["HostConfig"]["Dns"] == [f"{prefix}.1"]
        assert c.config["HostConfig"]["DnsSearch"] == ["web.default.corral.internal", "default.corral.internal"]


def _three_on_h1(cluster: Cluster) -> str:
    cluster.apply(HostRegister("h1", "10.77.0.11"))
    cluster.apply(StackCreate("web"))
    cluster.apply(ServiceCreate("st2", "nginx", {"image": "corral/base", "scale": 3}))
    cluster.apply(PlacementsCommit("sv3", ((1, "h1"), (2, "h1"), (3, "h1"))))
    return cluster.state.hosts["h1"].subnet.rsplit(".", 1)[0]


def _asked(c: FakeContainer) -> str:
    return str(c.config["NetworkingConfig"]["EndpointsConfig"]["corral"]["IPAMConfig"]["IPv4Address"])


async def test_an_address_held_by_a_container_corral_does_not_manage_is_not_given(slow_safety: None) -> None:
    """The drill's probe container (or a user's `docker run --network corral`) holds .2 and .3: Docker
    would refuse to start a container asking for either ("Address already in use"), forever."""
    cluster, engine, reports = Cluster(), FakeEngine(), []
    prefix = _three_on_h1(cluster)
    engine.foreign = {f"{prefix}.2", f"{prefix}.3"}
    async with reconciling(cluster, engine, reports) as rec:
        await settle(rec)
    asked = {_asked(c) for c in engine.containers_by_id.values()}
    assert len(asked) == 3 and not asked & engine.foreign
    assert all(c.state == "running" for c in engine.containers_by_id.values())
    assert rec.errors == {}


async def test_an_address_taken_between_the_look_and_the_start_is_given_up_for_another(
        slow_safety: None, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster, engine, reports = Cluster(), FakeEngine(), []
    _three_on_h1(cluster)
    start = FakeContainers.start
    stolen: list[str] = []

    async def someone_takes_it_first(self: FakeContainers, container_id: str) -> None:
        if not stolen:  # a foreign container starts on the very address the first of ours asked for
            stolen.append(_asked(engine.containers_by_id[container_id]))
            engine.foreign.add(stolen[0])
        await start(self, container_id)

    monkeypatch.setattr(FakeContainers, "start", someone_takes_it_first)
    async with reconciling(cluster, engine, reports) as rec:
        await settle(rec)
    containers = list(engine.containers_by_id.values())
    assert len(containers) == 3 and all(c.state == "running" for c in containers), "made again at once"
    assert stolen and stolen[0] not in {_asked(c) for c in containers}
    assert rec.errors == {}


async def test_a_start_the_engine_answers_too_late_is_not_taken_for_a_stolen_address(
        slow_safety: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loaded engine starts the container but its answer misses the client's timeout: the address
    on the network is the container's own, so it is kept, not removed and made again."""
    cluster, engine, reports = Cluster(), FakeEngine(), []
    _three_on_h1(cluster)
    start = FakeContainers.start
    late: list[str] = []

    async def starts_but_answers_late(self: FakeContainers, container_id: str) -> None:
        await start(self, container_id)
        if not late:
            late.append(container_id)
            raise EngineUnreachable("Docker Engine at fake://docker did not answer a container start within 5 s")

    monkeypatch.setattr(FakeContainers, "start", starts_but_answers_late)
    async with reconciling(cluster, engine, reports) as rec:
        await settle(rec)
    containers = list(engine.containers_by_id.values())
    assert late and late[0] in engine.containers_by_id, "the late one was kept"
    assert len(containers) == 3 and all(c.state == "running" for c in containers)
    assert engine.calls["create"] == 3, "nothing made again"
    assert rec.errors == {}


async def test_a_created_container_whose_address_was_taken_since_is_made_again() -> None:
    """Made (not started) by an earlier run of the agent; its address is someone else's now."""
    cluster, engine, reports = Cluster(), FakeEngine(), []
    prefix = _three_on_h1(cluster)
    async with reconciling(cluster, engine, reports) as rec:
        await settle(rec)
    first = next(c for c in engine.containers_by_id.values() if c.config["Labels"]["corral.instance"] == "c4-1")
    first.state = "created"
    engine.foreign.add(_asked(first))
    async with reconciling(cluster, engine, reports) as rec:
        for _ in range(100):
            await asyncio.sleep(0.05)
            mine = [c for c in engine.containers_by_id.values() if c.config["Labels"]["corral.instance"] == "c4-1"]
            if mine and mine[0].state == "running":
                break
    assert len(mine) == 1 and mine[0].id != first.id and _asked(mine[0]) not in engine.foreign
    assert _asked(mine[0]).startswith(prefix + ".")
