"""What the stats history costs (issue 19): the sampler's CPU per pass and the history's memory, at
1,000 containers, against Docker's stats API measured in the same run.

Run as root: ``python -m bench.history [--containers 250] [--cgroups 1000] [--passes 5]``. It builds its
own 1-host lab (``CORRAL_LAB_ID=3`` unless set) and takes it down at the end.

1. **Real containers** (``--containers``, busybox ``sleep`` on the lab host's dockerd, each on Docker's
   default bridge, so each has its own network namespace): the sampler's steady passes (every
   container's cgroup files and ``/proc/PID/net/dev``; which containers run from the engine's events,
   with a list every ``RELIST_EVERY`` passes, measured apart and amortized) against the reference, Docker's
   stats API for the same containers (``GET /containers/{id}/stats?stream=false&one-shot=true``, 8 in
   flight, as an agent asking the engine would). Both: this process's CPU, dockerd's CPU (from
   ``/proc/PID/stat``) and the wall time of one pass.
2. **1,000 cgroups** (``--cgroups``): 1,000 Docker containers at once are more than this shared 2-core
   machine takes (13 MB of containerd-shim each and minutes to start), so the same sampler reads 1,000
   real cgroups the benchmark makes (v1: cpuacct, memory and blkio; v2: cpu, memory and io), each
   holding a real process in a network namespace of its own (``unshare -n sleep``), listed by a stub
   engine (the one part that is not real: the list's cost is taken from step 1, per container).
   Memory: ``tracemalloc`` of the history once every one of the 1,000 rings holds its full hour
   (361 samples at 10 s, replayed from the real readings), against the reference of the same samples
   kept as the API's JSON dicts (what a plain list of answers would cost).

Targets: ≤ 2 % of one core for the sampling at 10 s, ≤ 50 MB for the history, at 1,000 containers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent.lab import procs
from agent.node.docker import DockerEngine, EngineContainer
from agent.node.history import History, Reading, capacity
from agent.node.sampler import RELIST_EVERY, Mounts, Sampler
from bench.labutil import Lab, lab_up, log, machine_load, table, verdict
from mesh.aio import supervised

LABEL = "corral.bench-history"
INTERVAL = 10.0
CPU_TARGET = 2.0  # % of one core
MEMORY_TARGET = 50 * 2**20
TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Meter:
    """This process's and dockerd's CPU, and the wall time, over a block."""

    def __init__(self, dockerd: int) -> None:
        self.dockerd = dockerd

    async def measure(self, work: Any) -> tuple[float, float, float]:
        own, engine, wall = time.process_time(), cpu_of(self.dockerd), time.monotonic()
        await work()
        return time.process_time() - own, cpu_of(self.dockerd) - engine, time.monotonic() - wall


async def start_containers(engine: DockerEngine, count: int) -> list[str]:
    gate = asyncio.Semaphore(8)
    done = 0

    async def one(i: int) -> str:
        nonlocal done
        async with gate:
            cid = await engine.containers.create(f"bench-history-{i}", {
                "Image": "corral/base", "Cmd": ["sleep", "100000"], "Labels": {LABEL: "1"},
                "HostConfig": {"NetworkMode": "bridge"}})
            await engine.containers.start(cid)
            done += 1
            if done % 50 == 0:
                log(f"{done}/{count} containers running")
            return cid

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def docker_stats_pass(engine: DockerEngine, ids: list[str]) -> None:
    """The reference: one one-shot stats request per container, 8 in flight."""
    gate = asyncio.Semaphore(8)
    client = engine._client

    async def one(cid: str) -> None:
        async with gate:
            await client._query_json(f"containers/{cid}/stats", params={"stream": "false", "one-shot": "true"})

    await asyncio.gather(*(one(c) for c in ids))


def median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2]


async def real_containers(lab: Lab, count: int, passes: int) -> dict[str, float]:
    host = lab.host("h1")
    dockerd = procs.read_pid(host.dockerd_pidfile)
    assert dockerd is not None, "h1's dockerd is not running"
    engine = await DockerEngine.connect(host.docker_host, timeout=60.0)
    meter = Meter(dockerd)
    try:
        ids = await start_containers(engine, count)
        sampler = Sampler(engine, History(INTERVAL), label=LABEL)
        async with supervised(sampler.watch(), name="events"):
            first = await meter.measure(sampler.sample)  # lists, and finds every container's files (an inspect each)
            ours = [await meter.measure(sampler.sample) for _ in range(passes)]  # the set from events: no list
        assert len(sampler.history.rings) == count + 1, f"{len(sampler.history.rings)} rings for {count} containers"
        listed = [await meter.measure(lambda: engine.containers.list(LABEL)) for _ in range(passes)]
        theirs = [await meter.measure(lambda: docker_stats_pass(engine, ids)) for _ in range(passes)]
    finally:
        log("removing the containers")
        for c in await engine.containers.list(LABEL):
            await engine.containers.remove(c.id)
        await engine.close()
    rows = []
    for name, runs in (("sampler pass (files; which run: from events)", ours),
                       (f"the engine's list (once every {RELIST_EVERY} passes)", listed),
                       ("Docker stats API, one-shot (reference)", theirs)):
        own, eng, wall = (median([r[i] for r in runs]) for i in range(3))
        rows.append([name, own * 1000, eng * 1000, (own + eng) * 1000, wall * 1000, own / INTERVAL * 100,
                     (own + eng) / INTERVAL * 100])
    sampler_cpu, list_cpu, ref_cpu = (median([r[0] + r[1] for r in runs]) for runs in (ours, listed, theirs))
    amortized = sampler_cpu + list_cpu / RELIST_EVERY
    rows.append(["sampler, the list amortized", "", "", amortized * 1000, "", "", amortized / INTERVAL * 100])
    print(f"\n1. {count} real containers on one dockerd: one pass (median of {passes}; the first pass, which "
          f"lists and inspects each new container once, took {first[0] * 1000:.0f} ms here and {first[1] * 1000:.0f} "
          "ms in dockerd)\n")
    print(table(["how", "CPU ms here", "dockerd CPU ms", "CPU ms in all", "wall ms", "% core here @10s",
                 "% core in all @10s"], rows))
    print(f"\nthe sampler costs {amortized / ref_cpu:.3f}× the Docker stats API's CPU (both processes), "
          f"{median([r[2] for r in ours]) / median([r[2] for r in theirs]):.3f}× its wall time")
    return {"list_per_container": list_cpu / count, "ref_per_container": ref_cpu / count,
            "sampler_per_container": sampler_cpu / count}


class StubContainers:
    """The one stubbed part: the engine's list and inspect for cgroups that are not Docker's."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    async def list(self, label: str = "") -> list[EngineContainer]:
        return [EngineContainer(id=k, name=k, image="", labels={}, state="running") for k in self.pids]

    async def inspect(self, container_id: str) -> dict[str, Any]:
        return {"State": {"Pid": self.pids[container_id]}}

    async def events(self, label: str = "") -> AsyncIterator[dict[str, Any]]:
        await asyncio.Event().wait()  # none: the cgroups neither start nor stop while measured
        yield {}


class StubEngine:
    def __init__(self, pids: dict[str, int]) -> None:
        self.containers = StubContainers(pids)


def make_cgroups(count: int, parent: str) -> tuple[list[Path], dict[str, int], list[subprocess.Popen[bytes]]]:
    """``count`` cgroups under ``parent``, each with one ``unshare -n sleep`` in it."""
    mounts = Mounts.read()
    v1 = all(c in mounts.v1 for c in ("cpuacct", "memory", "blkio"))
    roots = [Path(mounts.v1[c]) / parent for c in ("cpuacct", "memory", "blkio")] if v1 else \
        [Path(mounts.v2 or "/sys/fs/cgroup") / parent]
    for root in roots:
        root.mkdir(exist_ok=True)
    if not v1:
        (roots[0] / "cgroup.subtree_control").write_text("+cpu +memory +io")
    dirs: list[Path] = []
    pids: dict[str, int] = {}
    children = []
    for i in range(count):
        leaves = [root / f"c{i}" for root in roots]
        for leaf in leaves:
            leaf.mkdir(exist_ok=True)
        dirs += leaves
        joins = "; ".join(f"echo $$ > {leaf}/cgroup.procs" for leaf in leaves)
        child = subprocess.Popen(["sh", "-c", f"{joins}; exec unshare -n sleep 100000"])
        children.append(child)
        pids[f"cgroup{i}"] = child.pid
        if (i + 1) % 250 == 0:
            log(f"{i + 1}/{count} cgroups with a process in its own network namespace")
    deadline = time.monotonic() + 60
    while not all(os.readlink(f"/proc/{pid}/exe").endswith("/sleep") for pid in pids.values()):
        if time.monotonic() > deadline:
            raise RuntimeError("the cgroups' processes did not all start")
        time.sleep(0.2)
    return dirs + roots, pids, children


def remove_cgroups(dirs: list[Path], children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        child.kill()
    for child in children:
        child.wait()
    for d in dirs:
        for _ in range(50):
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)


def memory_of_full_history(sampler: Sampler) -> tuple[int, int, int]:
    """(history bytes by tracemalloc, its ring arrays alone, the same samples as JSON dicts) once every ring
    holds a full hour, replayed from the last real readings."""
    last = dict(sampler.history._last)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    history = History(INTERVAL)
    for k in range(capacity(INTERVAL) + 1):
        history.record({key: Reading(r.t + k * INTERVAL, r.cpu_ns + k * 10**7, r.figures)
                        for key, r in last.items()}, time.time() + k * INTERVAL)
    ours = tracemalloc.get_traced_memory()[0] - base
    del last
    base = tracemalloc.get_traced_memory()[0]
    as_json = {key: [s.to_json() for s in ring] for key, ring in history.rings.items()}
    reference = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del as_json
    return ours, history.nbytes(), reference


async def many_cgroups(count: int, passes: int, per_container: dict[str, float]) -> None:
    parent = f"corral-bench-history-{os.getpid()}"
    dirs, pids, children = make_cgroups(count, parent)
    try:
        sampler = Sampler(StubEngine(pids), History(INTERVAL))  # type: ignore[arg-type]
        await sampler.sample()
        runs = []
        for _ in range(passes):
            before = time.process_time()
            await sampler.sample()
            runs.append(time.process_time() - before)
        assert len(sampler.history.rings) == count + 1, f"{len(sampler.history.rings)} rings for {count} cgroups"
        ours_bytes, ring_bytes, reference_bytes = memory_of_full_history(sampler)
    finally:
        remove_cgroups(dirs, children)
    reads = median(runs)
    listing = per_container["list_per_container"] * count / RELIST_EVERY
    total = reads + listing
    reference = per_container["ref_per_container"] * count
    print(f"\n2. {count} real cgroups (a process each, in its own network namespace), sampled every "
          f"{INTERVAL:g} s (median of {passes} passes)\n")
    print(table(["what", "CPU ms per pass", "% of a core", "target", ""], [
        ["reading every cgroup and net/dev (measured)", reads * 1000, reads / INTERVAL * 100, "", ""],
        [f"the engine's list (step 1, per container × count, once every {RELIST_EVERY} passes)", listing * 1000,
         listing / INTERVAL * 100, "", ""],
        ["sampler in all", total * 1000, total / INTERVAL * 100, f"≤ {CPU_TARGET:g} %",
         verdict(total / INTERVAL * 100 <= CPU_TARGET)],
        ["Docker stats API (reference, step 1 per container × count)", reference * 1000,
         reference / INTERVAL * 100, "", ""],
    ]))
    print(f"\nsampler / reference: {total / reference:.3f}×")
    print(f"\nmemory of 1 h of history at {count} containers (+ the host), every ring full "
          f"({capacity(INTERVAL)} samples)\n")
    print(table(["what", "MB", "target", ""], [
        ["history (tracemalloc: rings, their arrays, the dicts)", ours_bytes / 2**20, f"≤ {MEMORY_TARGET / 2**20:g}",
         verdict(ours_bytes <= MEMORY_TARGET)],
        ["  of which the rings' arrays", ring_bytes / 2**20, "", ""],
        ["the same samples as the API's JSON dicts (reference)", reference_bytes / 2**20, "", ""],
    ]))
    print(f"\nhistory / reference: {ours_bytes / reference_bytes:.3f}×")


def run(args: argparse.Namespace) -> None:
    with lab_up(1) as lab:  # the lab's plumbing runs its own event loop: outside asyncio.run
        log(f"starting {args.containers} containers on h1")
        per_container = asyncio.run(real_containers(lab, args.containers, args.passes))
    asyncio.run(many_cgroups(args.cgroups, args.passes, per_container))
    print(f"\n{machine_load()}")


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench.history: run as root (a lab, cgroups and network namespaces)")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=250, help="real containers on the lab host")
    parser.add_argument("--cgroups", type=int, default=1000, help="real cgroups with a process each")
    parser.add_argument("--passes", type=int, default=5, help="passes measured per way")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
