"""Start a whole agent in this process with one stage made to fail, then report what it left behind.

Run by ``tests/unit/test_lifecycle.py`` as ``unshare --net python -m tests.unit.lifecycle_probe STAGE DIR``
(a network namespace of its own: the agent's ports, its TUN, routes and iptables rules die with it).
Everything is the real agent — data dir, secret, gossip, Raft on SQLite, leader, reconciler, keyring,
overlay with its TUN and data-path worker process, DNS server, health, HTTP — except the Docker Engine, which is
the unit tests' fake. ``STAGE`` is the stage that raises as it starts (``none``: all start, then the
agent stops). Prints one JSON line: the error seen, and the threads, tasks, sockets, TUN devices and
child processes alive after the agent's context ended, beside those before it began.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from agent.process.agent import Agent
from agent.process.config import AgentConfig
from tests.unit.fakes import FakeEngine

TUN = "corral-tun"


class Injected(RuntimeError):
    pass


def sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def children() -> list[int]:
    me = os.getpid()
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] != "Z":
                out.append(int(pid))
    return out


def snapshot() -> dict[str, object]:
    # asyncio.to_thread's pool keeps its idle workers (asyncio_N) for the loop's life: not the agent's
    threads = [t.name for t in threading.enumerate() if t.is_alive() and not t.name.startswith("asyncio_")]
    return {"threads": sorted(threads),
            "sockets": sockets(), "tun": Path(f"/sys/class/net/{TUN}").exists(), "children": children()}


async def main(stage: str, root: Path) -> dict[str, object]:
    config = AgentConfig(bind="127.0.0.1", name="h1", bootstrap=True, data_dir=root / "data",
                         api_port=18080, gossip_port=17946, raft_port=17947)
    names: list[str] = []

    async def on_stage(name: str) -> None:
        if name == "dns" and agent.overlay is not None and config.overlay:
            # stages after the overlay start with it really up: its TUN and worker process exist
            for _ in range(500):
                if agent.overlay.service is not None:
                    break
                await asyncio.sleep(0.02)
            names.append("overlay up" if agent.overlay.service is not None else "overlay NOT up")
        if name == "health" and agent.dns is not None:  # and the DNS server really listens (UDP and TCP)
            for _ in range(500):
                if agent.dns.address is not None:
                    break
                await asyncio.sleep(0.02)
            names.append("dns up" if agent.dns.address is not None else "dns NOT up")
        names.append(name)
        if name == stage:
            raise Injected(f"failing stage {name}")

    async def fake_engine() -> FakeEngine:
        return FakeEngine()

    agent = Agent(config, engine_factory=fake_engine, on_stage=on_stage)
    before = snapshot()
    error = None
    try:
        async with agent.running():
            pass
    except Injected as exc:
        error = str(exc)
    await asyncio.sleep(0.2)  # anything the stop scheduled has run
    tasks = sorted(t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task())
    return {"error": error, "stages": names, "before": before, "after": snapshot(), "tasks": tasks}


if __name__ == "__main__":
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    result = asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
    print(json.dumps(result))
