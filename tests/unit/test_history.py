"""The stats history: its pure core (rings, rates, windows, downsampling) as tables, the sampler's
parsers of kernel files, and ``…/stats?since=`` through the API, forwarded from another node."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from agent.api.deps import DEPS
from agent.cli.main import cli
from agent.cli.stats import sparkline
from agent.model.commands import InstanceStatus, PlacementsCommit
from agent.model.entities import Status
from agent.node import sampler
from agent.node.docker import EngineContainer
from agent.node.history import (
    SINCE_PATTERN,
    SPAN,
    BadSince,
    History,
    Reading,
    Ring,
    Sample,
    capacity,
    cpu_percent,
    downsample,
    rate,
    window_start,
)
from agent.node.stats import Stats
from mesh.waiting import until_async
from tests.unit.fakes import running_api, running_pair

NOW = 1_800_000_000.0


def s(t: float, cpu: float = 0.0, mem: int = 0, rx: int = 0) -> Sample:
    return Sample(t, Stats(cpu, mem, 1000, rx, 0, 0, 0))


def r(t: float, cpu_ns: int, rx: int = 0, mem: int = 10) -> Reading:
    return Reading(t, cpu_ns, Stats(0.0, mem, 100, rx, 0, 0, 0))


# ---------------------------------------------------------------------- pure maths


@pytest.mark.parametrize(("before", "after", "seconds", "expected"), [
    (0, 100, 10, 10.0),
    (100, 100, 10, 0.0),
    (500, 100, 10, 0.0),  # the counter went back (a restart): no made-up rate
    (0, 100, 0, 0.0),  # no time passed
    (0, 100, -1, 0.0),
])
def test_rate_of_a_counter(before: int, after: int, seconds: float, expected: float) -> None:
    assert rate(before, after, seconds) == expected


@pytest.mark.parametrize(("cpu_ns", "seconds", "expected"), [
    (10 * 10**9, 10.0, 100.0),  # one CPU busy
    (20 * 10**9, 10.0, 200.0),  # two: as docker stats counts
    (5 * 10**8, 10.0, 5.0),
    (0, 10.0, 0.0),
])
def test_cpu_percent_is_cpu_time_per_wall_time(cpu_ns: int, seconds: float, expected: float) -> None:
    assert cpu_percent(r(NOW, 10**9), r(NOW + seconds, 10**9 + cpu_ns)) == pytest.approx(expected)


@pytest.mark.parametrize(("interval", "expected"), [(10.0, 361), (1.0, 3601), (7.0, 516), (300.0, 13)])
def test_capacity_covers_the_span_both_ends(interval: float, expected: int) -> None:
    assert capacity(interval) == expected


@pytest.mark.parametrize(("since", "expected"), [
    ("15m", NOW - 900),
    ("3600s", NOW - 3600),
    ("1h", NOW - 3600),
    ("1m30s", NOW - 90),
    ("900", NOW - 900),  # a bare small number: seconds back
    (" 10s ", NOW - 10),
    ("0", NOW),
    (str(int(NOW - 60)), NOW - 60),  # a unix time
    (str(NOW - 0.5), NOW - 0.5),
    (str(int(NOW)), NOW),
])
def test_window_start_of_a_duration_or_a_unix_time(since: str, expected: float) -> None:
    assert window_start(since, NOW) == pytest.approx(expected)


@pytest.mark.parametrize(("since", "problem"), [
    ("2h", "holds the last 3600 s"),
    ("3601s", "holds the last 3600 s"),
    ("3601", "holds the last 3600 s"),
    (str(int(NOW - 3601)), "ago: the history holds"),
    (str(int(NOW + 5)), "in the future"),
    ("yesterday", "neither a duration"),
    ("", "neither a duration"),
    ("-5m", "neither a duration"),
    ("15x", "neither a duration"),
    ("1e9", "neither a duration"),
])
def test_window_start_refuses_what_the_history_cannot_answer(since: str, problem: str) -> None:
    with pytest.raises(BadSince, match=problem):
        window_start(since, NOW)


def test_ring_keeps_the_newest_in_order_and_finds_a_window() -> None:
    ring = Ring(4)
    assert len(ring) == 0 and ring.newest() is None and ring.since(0) == []
    for t in range(1, 7):
        ring.append(s(NOW + t, cpu=t, mem=t * 10))
    assert len(ring) == 4 and [x.t - NOW for x in ring] == [3, 4, 5, 6], "the oldest two overwritten"
    assert ring.newest() == s(NOW + 6, cpu=6, mem=60)
    assert [x.t - NOW for x in ring.since(NOW + 4.5)] == [5, 6]
    assert [x.t - NOW for x in ring.since(NOW + 4)] == [4, 5, 6], "the start is included"
    assert ring.since(NOW + 7) == [] and len(ring.since(0)) == 4
    with pytest.raises(ValueError, match="older"):
        ring.append(s(NOW + 1))
    assert ring.nbytes() == 4 * 8 * 8


def test_ring_stores_counters_as_unsigned_64_bit() -> None:
    ring = Ring(2)
    ring.append(Sample(NOW, Stats(1.5, 2**63, 2**64 - 1, -5, 0, 0, 0)))
    got = ring.newest()
    assert got is not None and got.stats == Stats(1.5, 2**63, 2**64 - 1, 0, 0, 0, 0)


@pytest.mark.parametrize(("count", "points", "expected_times"), [
    (6, 10, [1, 2, 3, 4, 5, 6]),
    (6, 6, [1, 2, 3, 4, 5, 6]),
    (6, 3, [2, 4, 6]),
    (6, 4, [2, 4, 6]),  # groups of two: fewer than asked rather than unequal groups
    (7, 3, [3, 6, 7]),
    (6, 1, [6]),
])
def test_downsample_groups_consecutive_samples(count: int, points: int, expected_times: list[int]) -> None:
    samples = [s(NOW + t, cpu=t, mem=100 - t, rx=t * 1000) for t in range(1, count + 1)]
    got = downsample(samples, points)
    assert [x.t - NOW for x in got] == expected_times


def test_downsample_averages_cpu_keeps_peak_memory_and_last_counter() -> None:
    got = downsample([s(NOW + 1, cpu=10, mem=5, rx=100), s(NOW + 2, cpu=30, mem=50, rx=200),
                      s(NOW + 3, cpu=20, mem=7, rx=300)], 1)
    assert got == [Sample(NOW + 3, Stats(20.0, 50, 1000, 300, 0, 0, 0))]
    with pytest.raises(ValueError):
        downsample([], 0)


def test_history_primes_on_the_first_reading_and_forgets_what_is_gone() -> None:
    history = History(10.0)
    history.record({History.HOST: r(NOW, 0), "c1": r(NOW, 0)}, NOW)
    assert history.rings == {}, "one reading makes no sample: the CPU % needs two"
    history.record({History.HOST: r(NOW + 10, 5 * 10**9), "c1": r(NOW + 10, 10**9, rx=7)}, NOW + 10)
    assert [x.stats.cpu_percent for x in history.query("c1", 0)] == [10.0]
    assert history.query(History.HOST, 0)[0].stats.cpu_percent == 50.0
    history.record({History.HOST: r(NOW + 20, 5 * 10**9)}, NOW + 20)  # c1 stopped
    history.record({History.HOST: r(NOW + 30, 5 * 10**9), "c1": r(NOW + 30, 0)}, NOW + 30)  # restarted
    assert len(history.query("c1", 0)) == 1, "a container back after a gap starts its rate again"
    history.record({History.HOST: r(NOW + SPAN + 5, 0)}, NOW + SPAN + 5)
    assert "c1" in history.rings, "its last hour is kept after it stopped"
    history.record({History.HOST: r(NOW + SPAN + 15, 0)}, NOW + SPAN + 15)
    assert "c1" not in history.rings, "dropped once its newest sample is older than the span"
    assert history.query("nosuch", 0) == []


def test_history_answer_is_the_single_samples_shape_plus_t() -> None:
    history = History(10.0)
    history.record({"c": r(NOW, 0)}, NOW)
    history.record({"c": Reading(NOW + 10, 10**9, Stats(0.0, 2048, 4096, 1, 2, 3, 4))}, NOW + 10)
    assert history.answer("c", NOW - 60) == {"interval_seconds": 10.0, "samples": [
        {"t": NOW + 10, "cpu_percent": 10.0, "memory": {"usage": 2048, "limit": 4096},
         "network": {"rx_bytes": 1, "tx_bytes": 2}, "block_io": {"read_bytes": 3, "write_bytes": 4}}]}
    with pytest.raises(ValueError, match="interval"):
        History(0.5)


# ---------------------------------------------------------------------- the sampler's parsers

NET_DEV = b"""Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier
    lo:    7719      80    0    0    0     0          0         0     7719      80    0    0    0     0       0 0
  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0
vethab12: 50 1 0 0 0 0 0 0 60 1 0 0 0 0 0 0
corral-br: 70 1 0 0 0 0 0 0 80 1 0 0 0 0 0 0
corral-tun: 90 1 0 0 0 0 0 0 95 1 0 0 0 0 0 0
  ens4: 1 1 0 0 0 0 0 0 2 1 0 0 0 0 0 0
"""


def test_net_dev_sums_interfaces_but_the_ones_left_out() -> None:
    assert sampler.net_dev(NET_DEV) == (1000 + 50 + 70 + 90 + 1, 2000 + 60 + 80 + 95 + 2), "a container: all but lo"
    assert sampler.net_dev(NET_DEV, sampler.VIRTUAL_PREFIXES) == (1001, 2002), "a host: its own interfaces"


def test_block_io_files_of_cgroup_v1_and_v2_and_diskstats() -> None:
    v1 = b"8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\n8:16 Read 1\nTotal 12289\n"
    assert sampler.blkio_v1(v1) == (4097, 8192)
    v2 = b"8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=1 wbytes=2 rios=1 wios=1\n"
    assert sampler.io_stat_v2(v2) == (101, 202)
    disks = (b" 252       0 vda 100 0 8 0 50 0 16 0 0 0 0\n"
             b" 252       1 vda1 100 0 8 0 50 0 16 0 0 0 0\n"
             b"   7       0 loop0 1 0 2 0 0 0 0 0 0 0 0\n")
    assert sampler.diskstats(disks, frozenset({"vda"})) == (8 * 512, 16 * 512), "partitions and loops left out"


V2 = {"cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n", "memory.current": "1048576\n",
      "memory.max": "max\n", "memory.stat": "anon 1000\nfile 524288\ninactive_file 262144\nactive_file 0\n",
      "io.stat": "8:0 rbytes=10 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n"}
V1 = {"cpuacct.usage": "123456789\n", "memory.usage_in_bytes": "4096000\n",
      "memory.limit_in_bytes": "9223372036854771712\n", "memory.stat": "cache 0\nrss 10\ntotal_inactive_file 96000\n",
      "blkio": "8:0 Read 7\n8:0 Write 9\nTotal 16\n"}
V1_LIMITED = {**V1, "memory.limit_in_bytes": "268435456\n"}


@pytest.mark.parametrize(("files", "v2", "expected"), [
    (V2, True, (2_500_000_000, 1048576 - 262144, 2**30, 10, 20)),  # no limit: the host's memory
    (V1, False, (123456789, 4000000, 2**30, 7, 9)),  # v1's "no limit" is a huge number
    (V1_LIMITED, False, (123456789, 4000000, 2**28, 7, 9)),
])
def test_a_container_read_from_its_cgroup_files(tmp_path: Path, files: dict[str, str], v2: bool,
                                                expected: tuple[int, ...]) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    paths = [str(tmp_path / name) for name in files]
    reading = sampler.ContainerFiles(1, paths[0], v2, paths[1], paths[2], paths[3], paths[4], v2).reading(NOW, 2**30)
    f = reading.figures
    assert (reading.cpu_ns, f.memory_usage, f.memory_limit, f.read_bytes, f.write_bytes) == expected
    assert f.rx_bytes >= 0, "the network from /proc/1/net/dev (this test's own namespace)"


def test_the_hosts_own_reading_from_proc() -> None:
    first = sampler.host_reading(time.time(), sampler.whole_disks())
    assert first.figures.memory_limit > first.figures.memory_usage > 0 and first.cpu_ns > 0


# ---------------------------------------------------------------------- the API


async def test_since_answers_the_history_and_without_it_the_current_sample() -> None:
    async with running_api() as h, aiohttp.ClientSession(headers=h.auth) as session:
        history = h.app[DEPS].history
        assert history is not None
        now = time.time()
        for k in range(5):
            history.record({History.HOST: Reading(now - 50 + 10 * k, k * 10**9, Stats(0.0, 100 + k, 1000, k, k, k, k))},
                           now)
        async with session.get(h.url + "/v1/hosts/h1/stats?since=15m") as resp:
            body = await resp.json()
        assert resp.status == 200 and body["interval_seconds"] == 10.0
        assert [x["cpu_percent"] for x in body["samples"]] == [10.0] * 4
        assert body["samples"][-1]["memory"] == {"usage": 104, "limit": 1000}
        async with session.get(h.url + "/v1/hosts/h1/stats?since=15m&points=2") as resp:
            assert len((await resp.json())["samples"]) == 2
        async with session.get(h.url + f"/v1/hosts/h1/stats?since={int(now - 25)}") as resp:
            assert len((await resp.json())["samples"]) == 2, "a unix time: the samples from then on"
        async with session.get(h.url + "/v1/hosts/h1/stats") as resp:
            assert "containers" in await resp.json(), "no since: today's answer, unchanged"
        for bad in ("2h", "3601s", str(int(now + 60)), str(int(now - 7200)), "soon", "1" * 41):
            async with session.get(h.url + f"/v1/hosts/h1/stats?since={bad}") as resp:
                body = await resp.json()
            assert resp.status == 400 and body["details"]["field"] == "since" and "since=" in body["message"], bad
        async with session.get(h.url + "/v1/hosts/h1/stats?since=5m&points=0") as resp:
            assert resp.status == 400 and (await resp.json())["details"]["field"] == "points"
        async with session.get(h.url + "/v1/hosts/h9/stats?since=5m") as resp:
            assert resp.status == 404


async def test_a_containers_history_is_answered_from_another_node() -> None:
    async with running_pair() as (h1, h2), aiohttp.ClientSession(headers=h1.auth) as session:
        async with session.get(h2.url + "/v1/containers/nosuch/stats?since=5m") as resp:
            assert resp.status == 404
        stack = await (await session.post(h1.url + "/v1/stacks", json={"name": "web"})).json()
        service = await (await session.post(h1.url + "/v1/services", json={
            "stack": stack["id"], "name": "busy", "image": "corral/base", "scale": 1})).json()
        await h1.replica.write(PlacementsCommit(service["id"], ((1, "h1"),)))
        inst = next(i for i in h1.replica.state.instances.values() if i.service == service["id"])
        await h1.replica.write(InstanceStatus(inst.id, "h1", Status.RUNNING, container_id="c" * 64))
        async with session.get(h2.url + f"/v1/containers/{inst.id}/stats?since=5m") as resp:
            body = await resp.json()
        assert resp.status == 200 and body == {"interval_seconds": 10.0, "samples": []}, "not sampled yet"
        history = h1.app[DEPS].history
        assert history is not None
        now = time.time()
        history.record({"c" * 64: r(now - 10, 0)}, now)
        history.record({"c" * 64: r(now, 25 * 10**8)}, now)
        h2_history = h2.app[DEPS].history
        assert h2_history is not None and h2_history.rings == {}, "h2 holds none of it: it asks h1"
        async with session.get(h2.url + f"/v1/containers/{inst.id}/stats?since=1m") as resp:
            body = await resp.json()
        assert resp.status == 200 and [x["cpu_percent"] for x in body["samples"]] == [25.0]
        async with session.get(h2.url + f"/v1/containers/{inst.id}/stats?since=1h1s") as resp:
            assert resp.status == 400 and (await resp.json())["details"]["field"] == "since"


@pytest.mark.parametrize("since", ["15m", "900", "1h", "0.5s", " 10s ", "1m30s", "1799999990", "1799999990.25",
                                   "123456789012", "0000000001", "999999999", "2h", "1e9", "yesterday", "-5m", "15x",
                                   "", "1799999990.1234567890", "1m 30s", "١٥m"])
def test_the_documents_pattern_and_the_parser_agree_on_the_syntax(since: str) -> None:
    """What the OpenAPI pattern allows is what the parser reads (it may still be out of the window)."""
    try:
        window_start(since, NOW)
        syntax_ok = True
    except BadSince as exc:
        syntax_ok = "neither" not in str(exc)
    assert bool(re.search(SINCE_PATTERN, since)) == syntax_ok


@pytest.mark.parametrize(("values", "expected"), [([0, 5, 10], "▁▅█"), ([0, 0], "▁▁"), ([], ""), ([3], "█")])
def test_sparkline_scales_to_the_largest(values: list[float], expected: str) -> None:
    assert sparkline(values) == expected


async def test_corral_stats_prints_the_history_and_refuses_bad_input() -> None:
    async with running_api() as h:
        history = h.app[DEPS].history
        assert history is not None
        now = time.time()
        for k in range(4):
            history.record({History.HOST: Reading(now - 40 + 10 * k, k * k * 10**9,
                                                  Stats(0.0, 2**20, 2**30, k * 10240, 0, 0, 0))}, now)

        def corral(*args: str) -> tuple[int, str, str]:
            result = CliRunner().invoke(cli, [*args, "--host", h.url], env={"CORRAL_TOKEN": h.token})
            return result.exit_code, result.stdout, result.stderr

        code, out, err = await asyncio.to_thread(corral, "stats", "h1", "--since", "5m")
        assert code == 0, err
        assert "3 samples, every 10 s" in out and "▂▅█" in out and "1.0 KiB/s" in out, out
        code, out, _ = await asyncio.to_thread(corral, "stats", "h1", "--since", "5m", "--json")
        assert code == 0 and len(json.loads(out)["samples"]) == 3
        code, out, err = await asyncio.to_thread(corral, "stats", "h1")
        assert code == 0 and "cpu %" in out, err
        code, _, err = await asyncio.to_thread(corral, "stats", "h1", "--since", "2h")
        assert code == 1 and err.startswith("corral: since='2h' asks for 7200 s"), err
        code, _, err = await asyncio.to_thread(corral, "stats", "nosuch", "--since", "5m")
        assert (code, err.strip()) == (1, "corral: no host or container named 'nosuch'")


class EventEngine:
    """An engine with running containers, their events (a queue; None breaks the stream) and pids."""

    def __init__(self, running: list[str]) -> None:
        self.running, self.queue = running, asyncio.Queue[dict[str, Any] | None]()
        self.containers = self

    async def list(self, label: str = "") -> list[EngineContainer]:
        return [EngineContainer(id=c, name=c, image="", labels={}, state="running") for c in self.running]

    async def inspect(self, container_id: str) -> dict[str, Any]:
        return {"State": {"Pid": 1000 + len(container_id)}}

    async def events(self, label: str = "") -> AsyncIterator[dict[str, Any]]:
        while (event := await self.queue.get()) is not None:
            yield event
        raise ConnectionError("the engine went away")


class ReadableFiles:
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def reading(self, t: float, host_memory: int) -> Reading:
        return Reading(t, int(t * 10**8), Stats(0.0, 1, host_memory, 0, 0, 0, 0))  # 10 % of a CPU


async def test_the_sampler_keeps_the_running_set_from_events_and_lists_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampler.ContainerFiles, "of", classmethod(lambda cls, pid, mounts: ReadableFiles(pid)))
    monkeypatch.setattr(sampler.Mounts, "read", classmethod(lambda cls: sampler.Mounts({}, None)))
    engine = EventEngine(["a"])
    ticks = iter(range(0, 10**6, 10))
    s = sampler.Sampler(engine, History(10.0), clock=lambda: NOW + next(ticks))  # type: ignore[arg-type]
    watcher = asyncio.create_task(s.watch())
    try:
        await s.sample()
        await s.sample()
        assert s.lists == 1 and [x.stats.cpu_percent for x in s.history.query("a", 0)] == [10.0]
        engine.running = ["a", "b"]  # the engine's own list now says b, but the sampler hears of b by its event
        await engine.queue.put({"Action": "start", "id": "b"})
        await engine.queue.put({"Action": "die", "Actor": {"ID": "a"}})
        await asyncio.sleep(0)
        await s.sample()
        await s.sample()
        assert s.lists == 1, "no list between two relists: the events kept the set"
        assert len(s.history.query("b", 0)) == 1 and len(s.history.query("a", 0)) == 1, "a stopped, b began"
        for _ in range(sampler.RELIST_EVERY):
            await s.sample()
        assert s.lists == 2 and len(s.history.query("a", 0)) > 1, "the list found a running after all"
        await engine.queue.put(None)  # the stream breaks: the next pass lists
        await until_async("the watcher saw the break", lambda: s._running is None, 5)
        await s.sample()
        assert s.lists == 3
    finally:
        watcher.cancel()


async def test_a_load_balancers_haproxy_has_no_history() -> None:
    async with running_api() as h, aiohttp.ClientSession(headers=h.auth) as session:
        await session.post(h.url + "/v1/stacks", json={"name": "web"})
        await session.post(h.url + "/v1/services", json={"stack": "web", "name": "nginx-cluster",
                                                          "image": "corral/base", "scale": 1})
        async with session.post(h.url + "/v1/services", json={
                "stack": "web", "name": "front", "kind": "load-balancer", "scale": 1,
                "lb": {"rules": [{"port": 80, "target": "nginx-cluster", "target_port": 80}]}}) as resp:
            front = await resp.json()
            assert resp.status == 201, front
        await h.replica.write(PlacementsCommit(front["id"], ((1, "h1"),)))
        inst = next(i for i in h.replica.state.instances.values() if i.service == front["id"])
        async with session.get(h.url + f"/v1/containers/{inst.id}/stats?since=5m") as resp:
            body = await resp.json()
        assert resp.status == 404 and body["details"]["field"] == "since" and "no stats history" in body["message"]
