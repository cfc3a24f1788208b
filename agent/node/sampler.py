"""The history's sampler: every interval it reads the host's counters from /proc and each running
container's from its cgroup and its network namespace, and hands the readings to the
:class:`~agent.node.history.History`.

Why files and not Docker's stats API: ``GET /containers/{id}/stats?stream=false&one-shot=true`` is one
HTTP request per container, and the engine gathers and encodes a whole JSON document for each
(``bench/history.py`` measures both at 1,000 containers). The same figures are a handful of small files
the kernel writes on read: the cgroup's CPU time, memory and block I/O (v1 or v2, whichever the engine's
containers are in), and ``/proc/PID/net/dev`` of the container's first process, which is its network
namespace's view. Docker is asked only when a container is new (its first process, by ``inspect``) and
which containers run: its events, and a list once a minute (:data:`RELIST_EVERY`).

Memory in use is counted as ``docker stats`` shows it: the cgroup's usage minus its inactive page
cache (``total_inactive_file`` in v1, ``inactive_file`` in v2); with no limit, the limit is the host's
memory. The host's own figures: CPU time of all CPUs from /proc/stat, MemTotal − MemAvailable, the
bytes of its network interfaces but those Docker and Corral make on it (loopback, bridges, containers'
veths, the overlay's TUN: their traffic stays on the host or crosses it on the underlay, counted
there), and the bytes read and written on its disks (/proc/diskstats, partitions and device-mapper
volumes left out: they would count the same bytes twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from agent.errors import CorralError
from agent.node.docker import LABEL_PREFIX, Engine
from agent.node.history import History, Reading
from agent.node.hostinfo import meminfo
from agent.node.stats import Stats
from mesh.aio import supervised

log = logging.getLogger("corral.history")

CLOCK_TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")
SECTOR = 512
UNLIMITED = 2**62
"""cgroup v1's "no limit" is a huge page-rounded number: anything above this is no limit."""
VIRTUAL_PREFIXES = ("lo", "veth", "docker", "br-", "corral-br", "corral-tun", "tun", "virbr")
"""Interfaces a host's own traffic figures leave out (see the module's docstring)."""


def read(path: str) -> bytes:
    """A small kernel file whole, in one read (what /proc and cgroup files give in one go)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def _stat_value(text: bytes, key: bytes) -> int:
    """``key N`` from a flat-keyed file (memory.stat, cpu.stat); 0 when absent."""
    field = key + b" "
    if text.startswith(field):
        start = 0
    else:
        at = text.find(b"\n" + field)
        if at < 0:
            return 0
        start = at + 1
    end = text.find(b"\n", start)
    return int(text[start + len(field):end if end >= 0 else None])


def net_dev(text: bytes, skip: tuple[str, ...] = ("lo",)) -> tuple[int, int]:
    """Received and sent bytes summed over ``/proc/…/net/dev``'s interfaces, but those whose names
    start with one of ``skip``."""
    rx = tx = 0
    for line in text.split(b"\n")[2:]:
        name, sep, rest = line.partition(b":")
        if not sep or name.strip().decode().startswith(skip):
            continue
        fields = rest.split()
        rx += int(fields[0])
        tx += int(fields[8])
    return rx, tx


def blkio_v1(text: bytes) -> tuple[int, int]:
    """Bytes read and written from ``blkio.throttle.io_service_bytes[_recursive]`` (``MAJ:MIN Read N``)."""
    read_bytes = write_bytes = 0
    for line in text.split(b"\n"):
        parts = line.split()
        if len(parts) == 3:
            if parts[1] == b"Read":
                read_bytes += int(parts[2])
            elif parts[1] == b"Write":
                write_bytes += int(parts[2])
    return read_bytes, write_bytes


def io_stat_v2(text: bytes) -> tuple[int, int]:
    """Bytes read and written from cgroup v2's ``io.stat`` (``MAJ:MIN rbytes=N wbytes=N …``)."""
    read_bytes = write_bytes = 0
    for line in text.split(b"\n"):
        for field in line.split()[1:]:
            if field.startswith(b"rbytes="):
                read_bytes += int(field[7:])
            elif field.startswith(b"wbytes="):
                write_bytes += int(field[7:])
    return read_bytes, write_bytes


def diskstats(text: bytes, disks: frozenset[str]) -> tuple[int, int]:
    """Bytes read and written on the whole disks ``disks`` (sectors 3rd and 7th after the name)."""
    read_bytes = write_bytes = 0
    for line in text.split(b"\n"):
        fields = line.split()
        if len(fields) >= 10 and fields[2].decode() in disks:
            read_bytes += int(fields[5]) * SECTOR
            write_bytes += int(fields[9]) * SECTOR
    return read_bytes, write_bytes


def whole_disks(sys_block: Path = Path("/sys/block")) -> frozenset[str]:
    """Block devices that are disks (a ``device`` link: no loop, ram, device-mapper or md volume)."""
    try:
        return frozenset(p.name for p in sys_block.iterdir() if (p / "device").exists())
    except OSError:
        return frozenset()


@dataclasses.dataclass(frozen=True)
class Mounts:
    """Where the cgroup hierarchies are mounted: v1 controllers by name, and the v2 (unified) one."""

    v1: dict[str, str]
    v2: str | None

    @classmethod
    def read(cls, mountinfo: str = "/proc/self/mountinfo") -> Mounts:
        v1: dict[str, str] = {}
        v2 = None
        for line in Path(mountinfo).read_text().splitlines():
            left, _, right = line.partition(" - ")
            fstype, _, options = right.split(" ", 2) if right.count(" ") >= 2 else (right, "", "")
            point = left.split(" ")[4]
            if fstype == "cgroup2":
                v2 = v2 or point
            elif fstype == "cgroup":
                for option in options.split(","):
                    v1.setdefault(option, point)
        return cls(v1, v2)


@dataclasses.dataclass(frozen=True)
class ContainerFiles:
    """The files one container's figures are read from (found once, from its first process)."""

    pid: int
    cpu: str
    cpu_v2: bool
    memory: str
    memory_limit: str
    memory_stat: str
    io: str
    io_v2: bool

    @classmethod
    def of(cls, pid: int, mounts: Mounts) -> ContainerFiles:
        """The cgroup files of process ``pid`` (``/proc/PID/cgroup``: v1 controllers where mounted, else v2)."""
        paths: dict[str, str] = {}
        unified = None
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if not controllers:
                unified = path
            for name in controllers.split(","):
                if name in mounts.v1:
                    paths[name] = mounts.v1[name] + path
        if {"cpuacct", "memory", "blkio"} <= paths.keys():
            blkio = paths["blkio"] + "/blkio.throttle.io_service_bytes_recursive"
            if not os.path.exists(blkio):
                blkio = paths["blkio"] + "/blkio.throttle.io_service_bytes"
            memory = paths["memory"]
            return cls(pid, paths["cpuacct"] + "/cpuacct.usage", False, memory + "/memory.usage_in_bytes",
                       memory + "/memory.limit_in_bytes", memory + "/memory.stat", blkio, False)
        if unified is None or mounts.v2 is None:
            raise FileNotFoundError(f"no cgroup of process {pid} has the cpu, memory and io figures")
        base = mounts.v2 + unified
        return cls(pid, base + "/cpu.stat", True, base + "/memory.current", base + "/memory.max",
                   base + "/memory.stat", base + "/io.stat", True)

    def reading(self, t: float, host_memory: int) -> Reading:
        cpu = read(self.cpu)
        cpu_ns = _stat_value(cpu, b"usage_usec") * 1000 if self.cpu_v2 else int(cpu)
        stat = read(self.memory_stat)
        usage = int(read(self.memory)) - _stat_value(stat, b"inactive_file" if self.io_v2 else b"total_inactive_file")
        raw_limit = read(self.memory_limit).strip()
        limit = host_memory if raw_limit == b"max" or int(raw_limit) >= UNLIMITED else int(raw_limit)
        rx, tx = net_dev(read(f"/proc/{self.pid}/net/dev"))
        io = read(self.io)
        read_bytes, write_bytes = io_stat_v2(io) if self.io_v2 else blkio_v1(io)
        return Reading(t, cpu_ns, Stats(0.0, max(usage, 0), min(limit, host_memory) if host_memory else limit, rx, tx,
                                        read_bytes, write_bytes))


def host_reading(t: float, disks: frozenset[str]) -> Reading:
    """The host's counters: CPU time of every CPU but idle and iowait, memory, its own interfaces, disks."""
    first = read("/proc/stat").split(b"\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[:8])
    busy = user + nice + system + irq + softirq + steal
    memory = meminfo()
    total = memory.get("total", 0)
    rx, tx = net_dev(read("/proc/net/dev"), VIRTUAL_PREFIXES)
    read_bytes, write_bytes = diskstats(read("/proc/diskstats"), disks)
    return Reading(t, int(busy * CLOCK_TICK_NS), Stats(0.0, total - memory.get("available", total), total, rx, tx,
                                                       read_bytes, write_bytes))


RELIST_EVERY = 6
"""Passes between two lists of the engine's running containers (once a minute at 10 s): between them the
set is kept from Docker's events, and a list catches what a lost event stream missed."""


class Sampler:
    """The loop that feeds this host's :class:`History` every ``interval`` seconds.

    Which containers run is kept from the engine's events (``start``, ``die``, ``destroy``) and listed
    again every :data:`RELIST_EVERY` passes and whenever the event stream broke: a list of many
    containers costs the engine more than reading all their files (``bench/history.py``)."""

    def __init__(self, engine: Engine, history: History, clock: Callable[[], float] = time.time,
                 label: str = LABEL_PREFIX + "instance") -> None:
        self.engine, self.history, self._clock, self._label = engine, history, clock, label
        self._files: dict[str, ContainerFiles] = {}
        self._running: set[str] | None = None
        """The engine's running containers as the events tell them; None: to be listed."""
        self._mounts: Mounts | None = None
        self._disks = whole_disks()
        self.passes = 0
        self.lists = 0

    async def _files_of(self, container_id: str) -> ContainerFiles | None:
        found = self._files.get(container_id)
        if found is not None:
            return found
        try:
            pid = int((await self.engine.containers.inspect(container_id)).get("State", {}).get("Pid") or 0)
            if pid <= 0:
                return None
            if self._mounts is None:
                self._mounts = Mounts.read()
            found = self._files[container_id] = ContainerFiles.of(pid, self._mounts)
        except (CorralError, OSError, ValueError) as exc:
            log.debug("no figures for container %s: %s", container_id[:12], exc)
            return None
        return found

    async def _running_now(self) -> set[str]:
        if self._running is None or self.passes % RELIST_EVERY == 0:
            self._running = {c.id for c in await self.engine.containers.list(self._label) if c.state == "running"}
            self.lists += 1
        for gone in self._files.keys() - self._running:
            del self._files[gone]
        return set(self._running)

    async def sample(self) -> None:
        """One pass: the host, then every running container of Corral's."""
        now = self._clock()
        readings = {History.HOST: host_reading(now, self._disks)}
        host_memory = readings[History.HOST].figures.memory_limit
        for container_id in await self._running_now():
            files = await self._files_of(container_id)
            if files is None:
                continue
            try:
                readings[container_id] = files.reading(now, host_memory)
            except (OSError, ValueError):  # it stopped (or restarted: a new first process) since the list
                self._files.pop(container_id, None)
        self.history.record(readings, now)
        self.passes += 1

    def _on_event(self, event: Mapping[str, object]) -> None:
        actor = event.get("Actor")
        container = event.get("id") or (actor.get("ID") if isinstance(actor, Mapping) else None)
        if not isinstance(container, str) or self._running is None:
            return
        action = event.get("Action")
        if action == "start":
            self._running.add(container)
            self._files.pop(container, None)  # a restart: a new first process
        elif action in ("die", "destroy"):
            self._running.discard(container)
            self._files.pop(container, None)

    async def watch(self) -> None:
        """Keep the set of running containers from the engine's events (listed again after a break)."""
        while True:
            try:
                async for event in self.engine.containers.events(self._label):
                    self._on_event(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the engine restarted: subscribe again, and list at the next pass
                log.debug("docker event stream ended for the stats sampler (%s)", exc)
            self._running = None
            await asyncio.sleep(1.0)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.sample()
            except (CorralError, OSError) as exc:
                log.warning("stats sampling failed: %s", exc)
            await asyncio.sleep(max(0.0, self.history.interval - (loop.time() - started)))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Sampler]:
        async with supervised(self.watch(), name="stats history events"), supervised(self.run(), name="stats history"):
            yield self


__all__ = ["RELIST_EVERY", "ContainerFiles", "Mounts", "Sampler", "blkio_v1", "diskstats", "host_reading", "io_stat_v2",
           "net_dev"]
