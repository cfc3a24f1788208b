"""What this machine allows an image distribution at best (issue 15's bound), for :mod:`bench.images`.

Every lab host is a network namespace of one machine: their engines share its one disk and its CPUs.
So "5 hosts ≤ 1.5 × the one-host floor" asks five engines to load 500 MB each in 1.5 × the time one
takes, on the disk and the cores that one used alone. The best any distribution (ours, a registry's, a
hand-made ``docker save | ssh | docker load``) can do here is what the engines do when each is handed
the tarball from a local file at once, with no network and no Corral: :func:`parallel_load`, the
*bound*. Beside it the disk (:func:`disk_rate`, ``dd`` as fio is not installed) and what every window
wrote (:class:`WriteMeter`: pages dirtied, machine-wide, and sectors the disk took).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

MB = 10**6
SECTOR = 512


def _device_stat(path: Path) -> Path | None:
    """``/sys/dev/block/MAJ:MIN/stat`` of the block device holding ``path`` (None if not a block device)."""
    dev = os.stat(path).st_dev
    stat = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")
    return stat if stat.exists() else None


def _dirtied_pages() -> int:
    for line in Path("/proc/vmstat").read_text().splitlines():
        if line.startswith("nr_dirtied "):
            return int(line.split()[1])
    return 0


class WriteMeter:
    """Bytes written during a window, machine-wide (other labs included): dirtied into the page cache
    (``nr_dirtied`` of /proc/vmstat: every write, whether or not it reaches the disk before it is
    deleted) and taken by the disk holding ``path`` (its sectors written)."""

    def __init__(self, path: Path) -> None:
        self.stat = _device_stat(path)
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.dirtied0 = self.sectors0 = 0

    def _sectors(self) -> int:
        if self.stat is None:
            return 0
        return int(self.stat.read_text().split()[6])

    def start(self) -> None:
        self.dirtied0, self.sectors0 = _dirtied_pages(), self._sectors()

    def stop(self) -> dict[str, float]:
        return {"dirtied MB": (_dirtied_pages() - self.dirtied0) * self.page / MB,
                "disk MB": (self._sectors() - self.sectors0) * SECTOR / MB}


async def _run(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}: {err.decode(errors='replace').strip()}")
    return (out + err).decode(errors="replace")


def _dd_rate(said: str) -> float:
    """MB/s from dd's last line (``524288000 bytes (524 MB, 500 MiB) copied, 8.1 s, 64.7 MB/s``)."""
    found = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", said)
    if found is None:
        raise SystemExit(f"dd said: {said.strip()}")
    return int(found.group(1)) / float(found.group(2)) / MB


async def disk_rate(directory: Path, size: int) -> dict[str, float]:
    """The disk under ``directory``: ``size`` bytes written with ``dd`` and synced (``conv=fdatasync``:
    what the disk takes), and written into the page cache alone (what a write costs before writeback),
    MB/s each; the file removed again."""
    target = directory / "bench-dd.bin"
    count = max(1, size // 2**20)
    try:
        synced = _dd_rate(await _run("dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={count}",
                                     "conv=fdatasync"))
        target.unlink()
        cached = _dd_rate(await _run("dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={count}"))
    finally:
        target.unlink(missing_ok=True)
    return {"synced MB/s": synced, "cached MB/s": cached}


async def parallel_load(docker_hosts: dict[str, str], tarball: Path) -> dict[str, float]:
    """Every engine of ``docker_hosts`` (name → ``unix://…``) loads ``tarball`` at once, from the local
    file (``docker load -i``: Docker's own client, no Python in the bytes); seconds until each is done,
    after the common start."""
    started = time.monotonic()
    done: dict[str, float] = {}

    async def one(name: str, docker_host: str) -> None:
        await _run("docker", "-H", docker_host, "load", "-q", "-i", str(tarball))
        done[name] = time.monotonic() - started

    await asyncio.gather(*(one(n, h) for n, h in docker_hosts.items()))
    return done


__all__ = ["WriteMeter", "disk_rate", "parallel_load"]
