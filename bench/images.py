"""How fast an image reaches the hosts a service is placed on (issue 15): peer to peer against the floor
and against the lab's registry, in the same run.

Run as root: ``python -m bench.images [--quick] [--sizes 100,500] [--hosts 1,3,5] [--host-cpu]`` (``--host-cpu``:
each lab host's daemons in a CPU group of its own, as separate machines: :mod:`bench.hostcpu`). It builds its own lab of
six hosts with a registry (``CORRAL_LAB_ID=3`` unless set) and takes it down at the end. h1 is the
source; "to N hosts" means N of h2…h6. For each size S (an image made here: busybox and a layer of S MB
that does not compress, :func:`agent.lab.image.build_base_image`), every measurement uses an image of
its own (a fresh seed: nothing is cached anywhere), removed again afterwards:

- **floor**: ``docker save`` from h1's engine streamed into ``docker load`` of h2's, timed end to end
  (twice, before and after the size's other runs; the faster is the floor). Beside it, each half alone:
  the save into nothing, and the load of the tarball from memory, on an idle engine.
- **peer to peer to N hosts**: ``POST /v1/images`` on h1 (timed apart: the upload), then one service of
  scale N on N target hosts, timed from its creation until its N containers run. h1's bytes sent,
  against N × the tarball, show the tree of relays.
- **registry to N hosts**: the image pushed to the lab registry through h1's engine (timed apart), the
  cluster given the registry's credentials, and the same service of ``REGISTRY/bench/…`` (each host's
  Docker pulls it), timed the same way.
- **no transfer**: the same service of ``corral/base``, which every host has: what scheduling and starting
  N containers cost, inside every figure above and absent from the floor.
- **the bound to N hosts** (:mod:`bench.loadbound`): the N target engines each ``docker load`` the same
  tarball from a local file at once, no network and no Corral: what their shared disk and CPUs allow any
  distribution at best. Beside it the disk (``dd``, synced and into the page cache alone).

For each peer-to-peer run, each target's steps (from its image job: first byte, every byte in and checked,
loaded by its engine, container running, tarball kept) and whom it got the bytes from (the relay tree's
depth). For every window, the MB written machine-wide: dirtied into the page cache, and taken by the disk.

During every timed window, the machine's CPU (busy share of all its cores) and the CPU seconds of the
targets' dockerds, h1's dockerd, the agents, the registry and this process, to show where the time goes.

Targets (issue 15): 5 hosts ≤ 1.5 × the one-host floor, and no slower than the registry. On a lab whose hosts
share one machine the bound itself is a multiple of the floor, so the fair target there is ≤ 1.5 × the bound
(printed as a second verdict line; docs/IMAGES.md, "The bound").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

# bench.labutil picks the lab id before agent.lab is imported: take Lab from it
from bench.labutil import (
    Lab,
    auth,
    get_json,
    in_thread,
    lab_up,
    log,
    machine_load,
    send_json,
    table,
    tls,
    until,
    verdict,
    wait_healthy,
)
from bench.loadbound import WriteMeter, disk_rate, parallel_load

# isort: split
from agent.lab import registry as lab_registry
from agent.lab.image import build_base_image
from agent.lab.layout import BASE_IMAGE
from agent.node.docker import CHUNK, DockerEngine, RegistryAuth
from bench.hostcpu import host_cpu_groups

MB = 10**6
REBUILD = 5 * MB
"""What a rebuild adds on top of an image (a layer): what a delta moves (docs/IMAGES.md)."""
HOSTS = 6
SOURCE = "h1"
TARGETS = [f"h{i}" for i in range(2, HOSTS + 1)]
POLL = 0.1  # seconds between polls while timing: each poll costs the agents CPU the transfers want
TIMEOUT = 600.0
TARGET_FLOOR, TARGET_REGISTRY = 1.5, 1.0
TD = "targets' dockerd"


# ---------------------------------------------------------------------- CPU accounting


def _stat(pid: str) -> tuple[int, float] | None:
    """(session id, CPU seconds) of a process, with its children that ended (dockerd's ``docker-untar``
    and ``docker-applyLayer`` re-execs unpack every layer, and are gone by the time the window closes)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[3]), sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def sessions_cpu() -> dict[int, float]:
    """CPU seconds of every session's live processes (each lab daemon is a session of its own:
    a dockerd with its containerd and shims, an agent, the registry)."""
    out: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            got = _stat(entry)
            if got:
                out[got[0]] = out.get(got[0], 0.0) + got[1]
    return out


def cpu_wait(pids: set[int]) -> float:
    """Seconds the threads of these processes have spent runnable but waiting for a CPU (the second field
    of ``/proc/PID/task/TID/schedstat``): what a starved agent's Raft member loses to the scheduler."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
    return total / 1e9


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine since boot, all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(fields[:8]) / tick
    idle = (fields[3] + fields[4]) / tick
    return total - idle, total


def _pid(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


class CpuMeter:
    """CPU used between :meth:`start` and :meth:`stop`, by group."""

    def __init__(self, lab: Lab, targets: list[str]) -> None:
        hosts = {h.name: h for h in lab.hosts()}
        self.groups: dict[str, set[int]] = {
            TD: {_pid(hosts[t].dockerd_pidfile) for t in targets},
            "h1 dockerd": {_pid(hosts[SOURCE].dockerd_pidfile)},
            "agents": {_pid(h.agent_pidfile) for h in hosts.values()},
            "registry": set(lab_registry.pids(lab.root)),
        }
        self.writes = WriteMeter(lab.root)
        self.before: dict[int, float] = {}
        self.machine0 = (0.0, 0.0)
        self.own0 = 0.0
        self.t0 = 0.0
        self.wait0 = 0.0

    def start(self) -> None:
        self.writes.start()
        self.before, self.machine0, self.own0, self.t0 = sessions_cpu(), machine_cpu(), _own(), time.monotonic()
        self.wait0 = cpu_wait(self.groups["agents"])

    def stop(self) -> dict[str, float]:
        after, machine, own, wall = sessions_cpu(), machine_cpu(), _own(), time.monotonic() - self.t0
        out = {name: sum(after.get(s, 0.0) - self.before.get(s, 0.0) for s in sessions)
               for name, sessions in self.groups.items()}
        out["bench"] = own - self.own0
        out["agents wait"] = cpu_wait(self.groups["agents"]) - self.wait0
        busy, total = machine[0] - self.machine0[0], machine[1] - self.machine0[1]
        out["machine busy"] = busy / total if total else 0.0
        out["wall"] = wall
        out["cores"] = busy / wall if wall else 0.0  # cores in use on average
        out.update(self.writes.stop())
        return out


def _own() -> float:
    times = os.times()
    return times.user + times.system


# ---------------------------------------------------------------------- the cluster


def no_leader(status: int, body: Any) -> bool:
    """A write refused because the cluster is electing a leader (503 ``no_leader``): worth asking again."""
    return status == 503 and isinstance(body, dict) and body.get("error") == "no_leader"


class Bench:
    def __init__(self, lab: Lab, session: aiohttp.ClientSession, engines: dict[str, DockerEngine]) -> None:
        self.lab, self.session, self.engines = lab, session, engines
        self.seeds: dict[str, str] = {}
        self.url = lab.host(SOURCE).api_url
        self.registry = lab.registry_address
        self.counter = 0

    def fresh(self, size: int, kind: str) -> tuple[str, str]:
        self.counter += 1
        return f"bench/img{size // MB}-{kind}{self.counter}:1", f"bench-{size}-{kind}-{self.counter}-{time.time()}"

    async def build(self, size: int, kind: str, on: tuple[str, str] | None = None) -> tuple[str, bytes, str]:
        """A fresh image of ``size`` MB payload; ``on=(tag, seed)``: a rebuild of that one instead, its
        layers and :data:`REBUILD` bytes on top."""
        tag, seed = self.fresh(size, kind)
        started = time.monotonic()
        if on is None:
            data, image_id = await in_thread(lambda: build_base_image(tag=tag, payload=size, seed=seed))
        else:
            data, image_id = await in_thread(lambda: build_base_image(tag=tag, payload=size, seed=on[1],
                                                                      extra=REBUILD, extra_seed=seed))
        self.seeds[tag] = seed if on is None else on[1]
        log(f"built {tag}: {len(data) / MB:.0f} MB in {time.monotonic() - started:.1f} s")
        return tag, data, image_id

    async def api(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        for attempt in range(20):  # a write during an election is refused: asked again, as a user would
            status, answer = await send_json(self.session, method, self.url + path, body, timeout=60)
            if no_leader(status, answer) and attempt < 19:
                await asyncio.sleep(0.25)
                continue
            break
        if status not in ok:
            raise SystemExit(f"{method} {path}: HTTP {status}: {answer}")
        return answer

    async def term(self) -> int:
        """The Raft term h1 knows: how many elections a run caused is its growth over the run."""
        return int((await self.api("GET", "/v1/raft"))["term"])

    async def upload(self, data: bytes) -> dict[str, Any]:
        for attempt in range(5):  # the catalog's write refused during an election: the tarball sent again
            async with self.session.post(self.url + "/v1/images", data=data, ssl=tls(),
                                         headers={**auth(), "Content-Type": "application/x-tar"},
                                         timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
            if no_leader(status, body) and attempt < 4:
                await asyncio.sleep(0.5)
                continue
            break
        if status != 201:
            raise SystemExit(f"POST /v1/images: HTTP {status}: {body}")
        return dict(body)

    async def transfers(self, host: str) -> dict[str, Any]:
        body = await get_json(self.session, self.lab.host(host).api_url + "/v1/host/images")
        return dict(body or {})

    async def service(self, name: str, image: str, targets: list[str]) -> tuple[str, str]:
        stack = await self.api("POST", "/v1/stacks", {"name": name})
        excluded = [SOURCE] + [t for t in TARGETS if t not in targets]
        service = await self.api("POST", "/v1/services", {
            "stack": stack["id"], "name": "app", "image": image, "scale": len(targets),
            "command": "exec sleep 3600",
            "placement": {"constraints": [f"node.hostname!={h}" for h in excluded]}})
        return stack["id"], service["id"]

    async def containers(self, service: str) -> list[dict[str, Any]]:
        body = await get_json(self.session, f"{self.url}/v1/containers?service={service}")
        return list((body or {}).get("items") or [])

    async def run_to(self, name: str, image: str, targets: list[str], size: int | None,
                     meter: CpuMeter, until_step: str | None = None) -> dict[str, Any]:
        """Create the service and time it until every container runs; per host, when its bytes had all
        arrived (peer to peer) and when its container ran; with ``until_step``, each host's image job's
        steps (:meth:`steps`). The arrivals come from the jobs' own timelines afterwards: polling each target
        for its bytes while timing cost the agents the CPU the transfers want (fifty requests a second to
        five hosts), and the registry's runs, which have no bytes of ours to poll, did not pay it."""
        meter.start()
        started, wall0 = time.monotonic(), time.time()
        stack, service = await self.service(name, image, targets)
        arrived: dict[str, float] = {}
        running: dict[str, float] = {}
        failed: list[str] = []
        while len(running) < len(targets):
            if time.monotonic() - started > TIMEOUT:
                raise SystemExit(f"{name}: not every container ran within {TIMEOUT:g} s: {failed or running}")
            now = time.monotonic() - started
            for c in await self.containers(service):
                if c["state"] == "running" and c["host"] not in running:
                    running[c["host"]] = now
                elif c["state"] == "pull-failed" and c.get("error") and c["error"] not in failed:
                    failed.append(c["error"])
                    log(f"{name}: {c['host']} {c['state']}: {c['error']}")
            await asyncio.sleep(POLL)
        elapsed = max(running.values())
        cpu = meter.stop()
        if sorted(running) != sorted(targets):
            raise SystemExit(f"{name}: containers ran on {sorted(running)}, not {targets}")
        steps = await self.steps(image, targets, wall0, until_step) if until_step else {}
        if size is not None:  # every byte in and checked (a delta: its layers loaded)
            arrived.update({t: s["received"] for t, s in steps.items() if "received" in s})
        return {"seconds": elapsed, "stack": stack, "service": service, "running": running, "arrived": arrived,
                "cpu": cpu, "failed": failed, "steps": steps}

    async def steps(self, image: str, targets: list[str], wall0: float, wait_for: str) -> dict[str, dict[str, Any]]:
        """Each target's image job: its steps in seconds after ``wall0`` (the service's creation; every host
        has the machine's clock) and whom it got the bytes from; waited for until each job reached
        ``wait_for`` (outside the timed window: keeping the tarball follows the container's start)."""
        out: dict[str, dict[str, Any]] = {}

        async def reached() -> bool:
            for t in targets:
                jobs = (await self.transfers(t)).get("jobs") or []
                job = next((j for j in jobs if j.get("image") == image), None)
                if job is not None:
                    out[t] = {"via": job.get("via") or "", "attempts": job.get("attempts", 0),
                              **{k: v - wall0 for k, v in (job.get("timeline") or {}).items()}}
            return all(wait_for in out.get(t, {}) for t in targets)

        with contextlib.suppress(TimeoutError):
            await until(f"every target's image job {wait_for}", reached, 60, every=0.2)
        return out

    async def remove(self, stack: str, service: str, references: list[str], hosts: list[str],
                     catalog_id: str | None = None) -> None:
        """The stack, the catalog entry and the images gone again, checked (a stack deleted already is
        fine: every container on the hosts must be gone)."""
        await self.api("DELETE", f"/v1/stacks/{stack}", ok=(200, 404))

        async def gone() -> bool:
            if await self.containers(service):
                return False
            for h in hosts:
                if await self.engines[h].containers.list():
                    return False
            return True

        await until(f"stack {stack}'s containers removed", gone, 120, every=0.2)
        if catalog_id is not None:
            listed = await get_json(self.session, self.lab.host(SOURCE).api_url + "/v1/images")
            catalog_before = list((listed or {}).get("items") or [])
            await self.api("DELETE", f"/v1/images/{catalog_id}")

            removed = next((i["digest"] for i in catalog_before if i["id"] == catalog_id), None)

            def left() -> dict[str, list[str]]:  # the removed image's tarball (the base image's stays)
                files = {h: [p.name[:16] for p in (self.lab.host(h).agent_data / "images").glob("*.tar")
                             if p.stem == removed] for h in [SOURCE, *TARGETS]}
                return {h: f for h, f in files.items() if f}

            async def dropped() -> bool:
                return not left()

            try:
                await until("every host dropped the tarball", dropped, 30, every=0.2)
            except TimeoutError:
                for h in left():
                    seen = await get_json(self.session, self.lab.host(h).api_url + "/v1/images")
                    log(f"{h} still has {left().get(h)}; its catalog: {seen}; "
                        f"its transfers: {await self.transfers(h)}")
                raise
        for host in hosts:
            for ref in references:
                await self.engines[host].remove_image(ref)
                if await self.engines[host].image_inspect(ref) is not None:
                    raise SystemExit(f"{host} still has {ref} after its removal")


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), CHUNK):
        yield bytes(view[i:i + CHUNK])


async def drain(stream: AsyncIterator[bytes]) -> int:
    n = 0
    async for chunk in stream:
        n += len(chunk)
    return n


# ---------------------------------------------------------------------- the measurements


async def floor(b: Bench, size: int) -> dict[str, float]:
    """save | load from h1 to h2, and each half alone (save into nothing from h1, load from memory into h3)."""
    tag, data, image_id = await b.build(size, "f")
    h1, h2, h3 = b.engines[SOURCE], b.engines["h2"], b.engines["h3"]
    await h1.load_stream(chunks_of(data))
    meter = CpuMeter(b.lab, ["h2"])
    meter.start()
    t = time.monotonic()
    await h2.load_stream(h1.save(tag))
    piped = time.monotonic() - t
    cpu = meter.stop()
    if (await h2.image_inspect(tag) or {}).get("Id") != image_id:
        raise SystemExit(f"the floor's load left h2 without {tag} ({image_id[:19]})")
    t = time.monotonic()
    saved = await drain(h1.save(tag))
    save_alone = time.monotonic() - t
    t = time.monotonic()
    await h3.load_stream(chunks_of(data))
    load_alone = time.monotonic() - t
    for host in (SOURCE, "h2", "h3"):
        await b.engines[host].remove_image(tag)
        if await b.engines[host].image_inspect(tag) is not None:
            raise SystemExit(f"{host} still has {tag}")
    log(f"floor {size // MB} MB: save|load {piped:.2f} s, save alone {save_alone:.2f} s ({saved / MB:.0f} MB), "
        f"load alone {load_alone:.2f} s; {cpu['cores']:.2f} cores busy")
    return {"piped": piped, "save": save_alone, "load": load_alone, "cores": cpu["cores"],
            "dockerd": cpu[TD] + cpu["h1 dockerd"], "dirtied MB": cpu["dirtied MB"], "disk MB": cpu["disk MB"]}


async def peer_to_peer(b: Bench, size: int, n: int) -> dict[str, Any]:
    tag, data, image_id = await b.build(size, f"p{n}-")
    t = time.monotonic()
    added = await b.upload(data)
    upload = time.monotonic() - t
    if added["id"] != image_id:
        raise SystemExit(f"the catalog says {added['id']}, the tarball is {image_id}")
    def sent(t: dict[str, Any]) -> int:  # tarballs and blobs (a delta, agent/node/peerpull.py) alike
        return int(t.get("served_bytes", 0)) + int(t.get("blob_served_bytes", 0))

    served0 = sent(await b.transfers(SOURCE))
    redirects = 0
    for h in [SOURCE, *TARGETS]:
        redirects -= (await b.transfers(h)).get("redirects", 0)
    targets = TARGETS[:n]
    # "loaded": every host reaches it (a leaf of the tree keeps no tarball, so never reaches "kept")
    term = await b.term()
    result = await b.run_to(f"p2p{size // MB}-{n}", tag, targets, len(data), CpuMeter(b.lab, targets), "loaded")
    result["elections"] = await b.term() - term
    served = sent(await b.transfers(SOURCE)) - served0
    for h in [SOURCE, *TARGETS]:
        redirects += (await b.transfers(h)).get("redirects", 0)
    result.update(upload=upload, tar=len(data), served=served, redirects=redirects)
    log(f"p2p {size // MB} MB to {n}: {result['seconds']:.2f} s (upload {upload:.2f} s); h1 sent "
        f"{served / len(data):.2f} tarballs; arrived {_times(result['arrived'])}; running {_times(result['running'])}; "
        f"{result['elections']} Raft election(s) meanwhile")
    rb = result["rebuild"] = await rebuild(b, size, n, tag, targets)
    await b.api("DELETE", f"/v1/stacks/{rb['stack']}")  # both stacks' containers go, then both images
    await b.remove(result["stack"], result["service"], [tag, image_id], [SOURCE, *targets], added["id"])
    await b.remove(rb["stack"], rb["service"], [rb["tag"], rb["id"]], [SOURCE, *targets], rb["catalog"])
    return result


async def rebuild(b: Bench, size: int, n: int, base: str, targets: list[str]) -> dict[str, Any]:
    """The same image rebuilt with :data:`REBUILD` bytes on top (a new catalog image, as ``build:`` makes
    one), to the hosts that run the first: each takes a delta (only the new layer) from h1."""
    tag, data, image_id = await b.build(size, f"p{n}-rebuilt-", on=(base, b.seeds[base]))
    added = await b.upload(data)
    before = {h: await b.transfers(h) for h in [SOURCE, *targets]}
    result = await b.run_to(f"rebuild{size // MB}-{n}", tag, targets, None, CpuMeter(b.lab, targets), "loaded")
    after = {h: await b.transfers(h) for h in [SOURCE, *targets]}
    moved = {h: int(after[h].get("delta_bytes", 0)) - int(before[h].get("delta_bytes", 0))
             + int(after[h].get("received_bytes", 0)) - int(before[h].get("received_bytes", 0)) for h in targets}
    deltas = sum(int(after[h].get("delta_loads", 0)) - int(before[h].get("delta_loads", 0)) for h in targets)
    result.update(tar=len(data), moved=moved, deltas=deltas, tag=tag, id=image_id, catalog=added["id"])
    log(f"rebuild of the {size // MB} MB image (+{REBUILD // MB} MB) to {n}: {result['seconds']:.2f} s; {deltas} of "
        f"{n} hosts took a delta; moved per host {', '.join(f'{h}={m / MB:.1f} MB' for h, m in moved.items())} "
        f"(the tarball: {len(data) / MB:.0f} MB)")
    return result


async def from_registry(b: Bench, size: int, n: int) -> dict[str, Any]:
    tag, data, image_id = await b.build(size, f"r{n}-")
    reference = f"{b.registry}/{tag}"
    h1 = b.engines[SOURCE]
    await h1.load_stream(chunks_of(data))
    await h1.tag_image(tag, reference)
    user, password = b.lab.registry_credentials()
    blobs = b.lab.root / "registry" / "storage"
    stored0 = _tree_bytes(blobs)
    t = time.monotonic()
    await h1.push_image(reference, RegistryAuth(user, password), timeout=TIMEOUT)
    push = time.monotonic() - t
    pushed = _tree_bytes(blobs) - stored0  # what each host's pull downloads: the compressed layers
    await h1.remove_image(reference)
    await h1.remove_image(tag)
    targets = TARGETS[:n]
    term = await b.term()
    result = await b.run_to(f"reg{size // MB}-{n}", reference, targets, None, CpuMeter(b.lab, targets), "loaded")
    result.update(push=push, pushed=pushed, elections=await b.term() - term)
    await b.remove(result["stack"], result["service"], [reference, image_id], targets)
    log(f"registry {size // MB} MB to {n}: {result['seconds']:.2f} s (push {push:.2f} s); "
        f"running {_times(result['running'])}; {result['elections']} Raft election(s) meanwhile")
    return result


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


async def bound(b: Bench, size: int, n: int) -> dict[str, Any]:
    """N target engines load the same tarball at once from a local file (no network, no Corral): the
    best any distribution can do on this machine, whose hosts share one disk and its CPUs."""
    tag, data, image_id = await b.build(size, f"b{n}-")
    tarball = b.lab.root / "bench-bound.tar"
    await in_thread(lambda: tarball.write_bytes(data))  # in the page cache, as h1's tarball is for the others
    targets = TARGETS[:n]
    meter = CpuMeter(b.lab, targets)
    try:
        meter.start()
        done = await parallel_load({t: b.lab.host(t).docker_host for t in targets}, tarball)
        cpu = meter.stop()
    finally:
        tarball.unlink(missing_ok=True)
    for t in targets:
        if (await b.engines[t].image_inspect(tag) or {}).get("Id") != image_id:
            raise SystemExit(f"the bound's load left {t} without {tag} ({image_id[:19]})")
        await b.engines[t].remove_image(tag)
    seconds = max(done.values())
    log(f"bound {size // MB} MB to {n}: {seconds:.2f} s ({_times(done)}); {cpu[TD]:.1f} dockerd cpu-s, "
        f"{cpu['cores']:.2f} cores busy, {cpu['dirtied MB']:.0f} MB dirtied, {cpu['disk MB']:.0f} MB to disk")
    return {"seconds": seconds, "done": done, "cpu": cpu}


async def baseline(b: Bench, n: int) -> float:
    """No transfer: the same service of an image every host has."""
    targets = TARGETS[:n]
    result = await b.run_to(f"base-{n}", BASE_IMAGE, targets, None, CpuMeter(b.lab, targets))
    await b.remove(result["stack"], result["service"], [], targets)
    return float(result["seconds"])


def _times(per_host: dict[str, float]) -> str:
    return " ".join(f"{h}={t:.1f}" for h, t in sorted(per_host.items())) or "-"


# ---------------------------------------------------------------------- the run


async def run_p2p_only(lab: Lab, sizes: list[int], counts: list[int], repeat: int) -> list[str]:
    """Only the peer-to-peer runs, ``repeat`` times each (A/B of the agents' data path: no floor, no registry,
    no verdict)."""
    engines: dict[str, DockerEngine] = {}
    rows: list[list[Any]] = []
    steps: list[str] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
        try:
            for host in lab.hosts():
                engines[host.name] = await DockerEngine.connect(host.docker_host, timeout=120)
            await wait_healthy(session, lab)
            b = Bench(lab, session, engines)
            for size in sizes:
                for n in counts:
                    for _ in range(repeat):
                        p = await peer_to_peer(b, size, n)
                        rows.append([size // MB, n, f"{p['seconds']:.2f}", f"{p['served'] / p['tar']:.2f} / {n}",
                                     p["redirects"], f"{p['cpu']['cores']:.2f}", f"{p['cpu'][TD]:.1f}",
                                     f"{p['cpu']['agents']:.1f}",
                                     f"{p['cpu']['agents'] / (n * p['tar'] / MB) * 1000:.2f}",
                                     f"{p['cpu']['agents wait']:.1f}", p["elections"], _times(p["arrived"]),
                                     _times(p["running"])])
                        steps.append(f"run {len(rows)} ({n} hosts): each host's steps (s after the service's "
                                     "creation)\n" + table(TIMELINE, timeline_rows(p)))
        finally:
            for engine in engines.values():
                with contextlib.suppress(Exception):
                    await engine.close()
    return [table(["MB", "hosts", "p2p s", "h1 sent", "redirects", "cores busy", "dockerd cpu-s", "agents cpu-s",
                   "agents ms/MB", "agents waited s", "elections", "bytes all in", "running"], rows), *steps,
            f"({machine_load()}; agents waited: their threads' seconds runnable but waiting for a CPU)"]


async def run(lab: Lab, sizes: list[int], counts: list[int]) -> list[str]:
    engines: dict[str, DockerEngine] = {}
    out: list[str] = []
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            for host in lab.hosts():
                engines[host.name] = await DockerEngine.connect(host.docker_host, timeout=120)
            await wait_healthy(session, lab)
            b = Bench(lab, session, engines)
            user, password = lab.registry_credentials()
            await b.api("POST", "/v1/registries", {"host": b.registry, "username": user, "password": password})
            base = {n: await baseline(b, n) for n in counts}
            log("no transfer: " + ", ".join(f"{n} hosts {s:.2f} s" for n, s in base.items()))
            summary: dict[str, Any] | None = None
            for size in sizes:
                disk = await disk_rate(lab.root, size)
                log(f"disk: {disk['synced MB/s']:.0f} MB/s synced, {disk['cached MB/s']:.0f} MB/s into the page cache")
                floors = [await floor(b, size)]
                p2p: dict[int, dict[str, Any]] = {}
                reg: dict[int, dict[str, Any]] = {}
                bounds: dict[int, dict[str, Any]] = {}
                for n in counts:
                    bounds[n] = await bound(b, size, n)
                    p2p[n] = await peer_to_peer(b, size, n)
                    reg[n] = await from_registry(b, size, n)
                floors.append(await floor(b, size))
                lines, summary = report(size, counts, floors, p2p, reg, bounds, base, disk)
                out += lines
            if summary is not None:
                s = summary
                ok = s["to_floor"] <= TARGET_FLOOR and s["to_reg"] <= TARGET_REGISTRY
                out.append(f"\nimages: {s['n']} hosts {s['size'] // MB} MB peer to peer {s['to_floor']:.2f}× the "
                           f"one-host floor (floor {s['floor']:.1f} s), {s['to_reg']:.2f}× the registry; target ≤ "
                           f"{TARGET_FLOOR}× the floor and ≤ {TARGET_REGISTRY}× the registry: {verdict(ok)} "
                           f"({machine_load()})")
                out.append(f"images: against the bound ({s['n']} engines loading the tarball from a local file at "
                           f"once, {s['bound']:.1f} s = {s['bound'] / s['floor']:.2f}× the floor): peer to peer "
                           f"{s['p2p'] / s['bound']:.2f}×, the registry {s['reg'] / s['bound']:.2f}×; a fair "
                           f"target on this machine is 1.5× the bound ({1.5 * s['bound']:.1f} s): peer to peer "
                           f"{verdict(s['p2p'] <= 1.5 * s['bound'])}")
                cores = os.cpu_count() or 1
                need = s["bound cpu"] / cores
                out.append(f"images: the engines' own work: the bound's {s['n']} engines used {s['bound cpu']:.1f} "
                           f"CPU-s to load (the floor's one engine pair {s['floor cpu']:.1f}), at least {need:.1f} s "
                           f"of this machine's {cores} cores = {need / s['floor']:.2f}× the floor before a byte "
                           f"moves; {TARGET_FLOOR}× the floor is reachable here only if that is ≤ {TARGET_FLOOR}×")
        finally:
            for engine in engines.values():
                with contextlib.suppress(Exception):
                    await engine.close()
    return out


def report(size: int, counts: list[int], floors: list[dict[str, float]], p2p: dict[int, dict[str, Any]],
           reg: dict[int, dict[str, Any]], bounds: dict[int, dict[str, Any]], base: dict[int, float],
           disk: dict[str, float]) -> tuple[list[str], dict[str, Any]]:
    """One size's tables, and the figures of its largest host count for the verdict."""
    best = min(floors, key=lambda f: f["piped"])
    fl = best["piped"]
    runs = ", ".join(f"{f['piped']:.2f}" for f in floors)
    tar = p2p[counts[0]]["tar"]
    out = [f"\n{size // MB} MB image ({tar / MB:.1f} MB tarball): floor "
           f"(save | load, one host) {fl:.2f} s [runs: {runs}]"
           f"; save alone {best['save']:.2f} s, load alone {best['load']:.2f} s "
           f"({best['load'] / fl * 100:.0f} % of the floor); {best['cores']:.2f} cores busy",
           f"disk (dd of {tar / MB:.0f} MB): {disk['synced MB/s']:.0f} MB/s synced (conv=fdatasync), "
           f"{disk['cached MB/s']:.0f} MB/s into the page cache alone"]
    rows = []
    for n in counts:
        p, r, bd = p2p[n], reg[n], bounds[n]["seconds"]
        rows.append([
            n, f"{p['seconds']:.2f}", f"{r['seconds']:.2f}", f"{bd:.2f}", f"{base[n]:.2f}",
            f"{p['seconds'] / fl:.2f}×", f"{p['seconds'] / r['seconds']:.2f}×",
            f"{bd / fl:.2f}×", f"{p['seconds'] / bd:.2f}×", f"{r['seconds'] / bd:.2f}×",
            f"{p['served'] / p['tar']:.2f} / {n}", p["redirects"],
            f"{p['cpu']['cores']:.2f} / {r['cpu']['cores']:.2f}",
            f"{p['cpu']['agents']:.1f} / {r['cpu']['agents']:.1f}",
            f"{p['upload']:.1f} / {r['push']:.1f}",
        ])
    out.append(table(["hosts", "p2p s", "registry s", "bound s", "no-transfer s", "p2p/floor", "p2p/registry",
                      "bound/floor", "p2p/bound", "registry/bound", "h1 sent (tarballs)", "redirects",
                      "cores busy p2p/reg", "agents cpu-s p2p/reg", "upload / push s"], rows))
    writes = [["floor (save | load, 1 host)", f"{best['piped']:.2f}", f"{best['dockerd']:.1f}", "-", "-",
               f"{best['dirtied MB']:.0f}", f"{best['disk MB']:.0f}", "-"]]
    for n in counts:
        for name, w in ((f"bound {n}", bounds[n]), (f"p2p {n}", p2p[n]), (f"registry {n}", reg[n])):
            c = w["cpu"]
            writes.append([name, f"{w['seconds']:.2f}", f"{c[TD]:.1f}", f"{c['agents']:.1f}", f"{c['agents wait']:.1f}",
                           f"{c['dirtied MB']:.0f}", f"{c['disk MB']:.0f}",
                           f"{w['pushed'] / MB:.0f}" if "pushed" in w else "-"])
    out.append(table(["run", "s", "engines' cpu-s", "agents cpu-s", "agents waited s", "MB dirtied (machine)",
                      "MB to disk (machine)",
                      "MB pulled per host"], writes))
    rebuilt = []
    for n in counts:
        rb = p2p[n].get("rebuild")
        if rb:
            per_host = max(rb["moved"].values()) if rb["moved"] else 0
            rebuilt.append([n, f"{rb['seconds']:.2f}", f"{p2p[n]['seconds']:.2f}",
                            f"{rb['seconds'] / p2p[n]['seconds']:.2f}×", f"{rb['deltas']} / {n}",
                            f"{per_host / MB:.1f}", f"{rb['tar'] / MB:.0f}", f"{rb['cpu']['agents']:.1f}",
                            f"{rb['cpu'][TD]:.1f}"])
    if rebuilt:
        out.append(f"rebuild: the same image with {REBUILD // MB} MB on top, a new catalog image, to the hosts "
                   "running the first: each takes a delta (only the missing layer) instead of the tarball")
        out.append(table(["hosts", "rebuild s", "whole image p2p s", "rebuild / whole", "deltas",
                          "MB moved per host (max)", "tarball MB", "agents cpu-s", "engines' cpu-s"], rebuilt))
    detail = []
    for n in counts:
        p, r = p2p[n], reg[n]
        detail.append([f"bound {n}", "-", _times(bounds[n]["done"]), "-", "-", "-"])
        detail.append([f"p2p {n}", _times(p["arrived"]), _times(p["running"]),
                       f"{p['cpu']['h1 dockerd']:.1f}", f"{p['cpu']['registry']:.1f}", f"{p['cpu']['bench']:.1f}"])
        detail.append([f"registry {n}", "-", _times(r["running"]), f"{r['cpu']['h1 dockerd']:.1f}",
                       f"{r['cpu']['registry']:.1f}", f"{r['cpu']['bench']:.1f}"])
    out.append(table(["run", "bytes all in (s after create)", "done / running (s after create)",
                      "h1 dockerd cpu-s", "registry cpu-s", "bench cpu-s"], detail))
    n = max(counts)
    out.append(f"p2p {n}: each host's steps (s after the service's creation), whom it got the bytes from, its depth "
               "in the relay tree (h1 = 0)")
    out.append(table(TIMELINE, timeline_rows(p2p[n])))
    out.append(f"registry {n}: each host's pull ended (loaded) and its container ran (s after the service's creation)")
    out.append(table(["host", "loaded", "running"], [row[:1] + row[5:7] for row in timeline_rows(reg[n])]))
    summary = {"n": n, "size": size, "floor": fl, "p2p": p2p[n]["seconds"], "reg": reg[n]["seconds"],
               "bound": bounds[n]["seconds"], "bound cpu": bounds[n]["cpu"][TD], "floor cpu": best["dockerd"],
               "to_floor": p2p[n]["seconds"] / fl,
               "to_reg": p2p[n]["seconds"] / reg[n]["seconds"]}
    return out, summary


def depth(host: str, via: dict[str, str]) -> int | None:
    """How many relays from the source: h1 is 0, a host fed by h1 is 1, by one of those 2…"""
    seen = []
    while host != SOURCE:
        if host in seen or host not in via:
            return None
        seen.append(host)
        host = via[host]
    return len(seen)


TIMELINE = ["host", "from", "depth", "first byte", "all in", "loaded", "running", "kept", "load after all in"]


def timeline_rows(p: dict[str, Any]) -> list[list[Any]]:
    steps: dict[str, dict[str, Any]] = p["steps"]
    via = {h: str(s.get("via") or "") for h, s in steps.items()}

    def at(value: Any) -> str:
        return f"{value:.1f}" if isinstance(value, float) else "-"

    rows = []
    for host in sorted(p["running"]):
        s = steps.get(host, {})  # a pull has only started and loaded
        gap = s["loaded"] - s["received"] if "loaded" in s and "received" in s else None
        rows.append([host, via.get(host) or "-", depth(host, via) if host in via else "-", at(s.get("first_byte")),
                     at(s.get("received")), at(s.get("loaded")), at(p["running"][host]), at(s.get("kept")), at(gap)])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the 100 MB image")
    parser.add_argument("--sizes", default="100,500", help="image payloads in MB, comma-separated")
    parser.add_argument("--hosts", default="1,3,5", help="target host counts, comma-separated (at most 5)")
    parser.add_argument("--p2p-only", type=int, metavar="REPEAT", default=0,
                        help="only the peer-to-peer runs, each REPEAT times (no floor, registry or verdict)")
    parser.add_argument("--host-cpu", action="store_true",
                        help="each lab host's daemons in a CPU group of its own, as separate machines "
                             "(bench/hostcpu.py); the lab's default is one share per daemon")
    args = parser.parse_args()
    sizes = [100 * MB] if args.quick else [int(s) * MB for s in args.sizes.split(",")]
    counts = [int(n) for n in args.hosts.split(",")]
    if not all(1 <= n <= len(TARGETS) for n in counts):
        raise SystemExit(f"--hosts: each between 1 and {len(TARGETS)}")
    print(f"images: {HOSTS}-host lab with a registry; {machine_load()}", flush=True)
    with lab_up(HOSTS, registry=True) as lab, \
            (host_cpu_groups(lab) if args.host_cpu else contextlib.nullcontext({})) as grouped:
        if grouped:
            log("each host's daemons in a CPU group of its own: " + ", ".join(f"{h} ({n} processes)"
                                                                            for h, n in grouped.items()))
        if args.p2p_only:
            lines = asyncio.run(run_p2p_only(lab, sizes, counts, args.p2p_only))
        else:
            lines = asyncio.run(run(lab, sizes, counts))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
