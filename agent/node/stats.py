"""A Docker stats sample, summed up the way people read it: CPU %, memory, network and block I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Stats:
    cpu_percent: float
    memory_usage: int
    memory_limit: int
    rx_bytes: int
    tx_bytes: int
    read_bytes: int
    write_bytes: int

    def to_json(self) -> dict[str, object]:
        return {"cpu_percent": self.cpu_percent,
                "memory": {"usage": self.memory_usage, "limit": self.memory_limit},
                "network": {"rx_bytes": self.rx_bytes, "tx_bytes": self.tx_bytes},
                "block_io": {"read_bytes": self.read_bytes, "write_bytes": self.write_bytes}}


def summarize(raw: Mapping[str, Any]) -> Stats:
    """CPU % (of one CPU, times the CPUs used), memory (in use: less the inactive page cache, as ``docker
    stats`` counts it), network and block I/O from one sample."""
    cpu, pre = raw.get("cpu_stats", {}), raw.get("precpu_stats", {})
    cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0)
    sys_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    ncpu = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or []) or 1
    nets = raw.get("networks") or {}
    blk = (raw.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    memory = raw.get("memory_stats") or {}
    cache = (memory.get("stats") or {})  # what `docker stats` leaves out: the inactive page cache (v1, v2)
    inactive = cache.get("total_inactive_file", cache.get("inactive_file", 0))
    return Stats(
        cpu_percent=round(cpu_delta / sys_delta * ncpu * 100, 2) if sys_delta > 0 else 0.0,
        memory_usage=max(memory.get("usage", 0) - inactive, 0),
        memory_limit=memory.get("limit", 0),
        rx_bytes=sum(n.get("rx_bytes", 0) for n in nets.values()),
        tx_bytes=sum(n.get("tx_bytes", 0) for n in nets.values()),
        read_bytes=sum(b.get("value", 0) for b in blk if b.get("op", "").lower() == "read"),
        write_bytes=sum(b.get("value", 0) for b in blk if b.get("op", "").lower() == "write"),
    )


__all__ = ["Stats", "summarize"]
