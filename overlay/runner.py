"""Run one ``OverlayService`` outside the agent: ``python -m overlay.runner CONFIG.json``.

For the lab tests and the benchmark, which start one per network namespace. The config file holds
``host``, ``underlay``, ``subnet``, ``private_key`` and ``cluster_secret`` (hex), ``bridge``, ``port``,
``tun_name``, ``mode``, ``peers_file``, ``status_file``, optionally ``datapath`` (``DatapathConfig``
fields) and ``agent_load`` (fraction of the loop kept busy, for the benchmark). The peers file (a JSON list of
``{name, underlay, subnet, public_key}``) is re-read whenever it changes; the status file is rewritten
every ``--status-every`` seconds (atomically), so tests can poll it. SIGTERM/SIGINT stop cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import ipaddress
import json
import os
import signal
import time
from typing import Any

from overlay.config import local
from overlay.datapath import DatapathConfig
from overlay.service import OverlayService, PeerInfo


def read_peers(path: str) -> list[PeerInfo]:
    with open(path) as f:
        items: list[dict[str, Any]] = json.load(f)
    return [PeerInfo(d["name"], d["underlay"], ipaddress.IPv4Network(d["subnet"]), bytes.fromhex(d["public_key"]))
            for d in items]


def write_json(path: str, data: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


async def simulated_agent_load(fraction: float, slice_s: float = 0.002) -> None:
    """Keep this loop busy ``fraction`` of the time in 2 ms slices of Python work (the agent's API,
    gossip and Raft stand-in), so the benchmark sees what a data path sharing the GIL would."""
    if fraction <= 0:
        return
    doc = {"members": [{"name": f"h{i}", "state": "alive", "incarnation": i} for i in range(50)]}
    idle = slice_s * (1 - fraction) / fraction
    while True:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < slice_s:
            json.loads(json.dumps(doc))
        await asyncio.sleep(idle)


class LoopLag:
    """How late this loop runs a 10 ms sleep: what the data path (or anything else) costs the agent's own work."""

    def __init__(self, period: float = 0.01, window: int = 500) -> None:
        self.period = period
        self.lags: collections.deque[float] = collections.deque(maxlen=window)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.period)
            self.lags.append(loop.time() - t - self.period)

    def summary(self) -> dict[str, float]:
        if not self.lags:
            return {}
        xs = sorted(self.lags)
        return {"p50": round(xs[len(xs) // 2] * 1000, 3), "p99": round(xs[int(len(xs) * 0.99)] * 1000, 3),
                "max": round(xs[-1] * 1000, 3)}


async def run(cfg: dict[str, Any], status_every: float) -> None:
    dp_cfg = DatapathConfig(**cfg.get("datapath", {}))
    svc = OverlayService(host=cfg["host"], underlay=cfg["underlay"], subnet=ipaddress.IPv4Network(cfg["subnet"]),
                         private_key=bytes.fromhex(cfg["private_key"]),
                         cluster_secret=bytes.fromhex(cfg["cluster_secret"]), bridge=cfg.get("bridge"),
                         port=int(cfg.get("port", 4500)), tun_name=cfg.get("tun_name", "corral-tun"),
                         mode=cfg.get("mode", "process"), config=dataclasses.replace(local(), port=int(cfg.get(
                             "port", 4500))), datapath_config=dp_cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await svc.start()
    load = asyncio.create_task(simulated_agent_load(float(cfg.get("agent_load", 0.0))))
    lag = LoopLag()
    lag_task = asyncio.create_task(lag.run())
    peers_file = cfg["peers_file"]
    seen: float | None = None
    try:
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                mtime = os.stat(peers_file).st_mtime
                if mtime != seen:
                    seen = mtime
                    svc.set_peers(read_peers(peers_file))
            write_json(cfg["status_file"], {**svc.status(), "runner_pid": os.getpid(),
                                            "agent_loop_lag_ms": lag.summary()})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), status_every)
    finally:
        load.cancel()
        lag_task.cancel()
        await svc.stop()
        write_json(cfg["status_file"], {"stopped": True})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("config")
    ap.add_argument("--status-every", type=float, default=0.2)
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop, as the agent does")
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    if args.uvloop:
        import uvloop

        uvloop.run(run(cfg, args.status_every))
    else:
        asyncio.run(run(cfg, args.status_every))


if __name__ == "__main__":
    main()
