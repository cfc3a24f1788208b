"""What the lab benchmarks share: their own lab (``CORRAL_LAB_ID=3`` unless told), polling, percentiles, tables.

Import this module before ``agent.lab``: the lab's layout reads ``CORRAL_LAB_ID`` at import, and a
benchmark must never build on (or tear down) the default lab that the test suite uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

if not os.environ.get("CORRAL_LAB_ID"):
    os.environ["CORRAL_LAB_ID"] = "3"

import aiohttp

from agent.lab import Lab, LabError
from agent.lab.layout import LAB_ID, HostSpec
from mesh.waiting import until_async

__all__ = [
    "HostSpec",
    "Lab",
    "LabError",
    "auth",
    "get_json",
    "in_thread",
    "lab_up",
    "log",
    "machine_load",
    "percentile",
    "table",
    "tail",
    "tls",
    "until",
    "verdict",
    "wait_healthy",
]

T = TypeVar("T")
LOG_DIR = Path("/tmp/corral-bench-logs")  # the lab root goes with ``down``; its logs are kept here
POLL = 0.02  # seconds between polls while timing something


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def lab_up(count: int, registry: bool = False) -> Iterator[Lab]:
    """A fresh lab of ``count`` hosts (with its image registry if asked), taken down afterwards whatever
    happened (Ctrl-C included)."""
    lab = Lab(progress=lambda host, msg: log(f"lab {host}: {msg}"))
    if lab.leftovers():
        log(f"lab {LAB_ID}: leftovers of an earlier run found; taking them down first")
        lab.down()
    started = time.monotonic()
    lab.up(count, registry=registry)
    log(f"lab {LAB_ID}: {count} hosts up in {time.monotonic() - started:.1f} s")
    os.environ["CORRAL_TOKEN"] = lab.admin_token()  # every request below acts as the lab's administrator
    os.environ["CORRAL_CACERT"] = str(lab.ca_file)  # and trusts the lab cluster's CA
    try:
        yield lab
    finally:
        keep_logs(lab)
        lab.down()
        log(f"lab {LAB_ID}: down")


def keep_logs(lab: Lab) -> None:
    """Copy every host's agent and dockerd log out of the lab root before ``down`` removes it."""
    dest = LOG_DIR / time.strftime("%Y%m%dT%H%M%S")
    for host in lab.hosts():
        for path in (host.agent_log, host.dockerd_log):
            if path.exists():
                (dest / host.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(path, dest / host.name / path.name)
    etcd = lab.root / "etcd"
    if etcd.is_dir():
        for path in etcd.glob("*.log"):
            (dest / "etcd").mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest / "etcd" / path.name)
    log(f"lab logs kept in {dest}")


def percentile(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 20 samples is the largest: no interpolation flatters it)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    rank = max(1, -(-len(s) * p // 100))  # ceil(p/100 × n)
    return s[int(rank) - 1]


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain, aligned text table: first column left, the rest right."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def tail(path: Path, lines: int = 2) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def machine_load() -> str:
    """The machine's load average and CPU count: the figures move with it, so every report says it."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min) on {os.cpu_count()} CPUs"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


async def until(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float, every: float = POLL) -> T:
    """Await ``probe`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    return await until_async(what, probe, timeout, every,
                             retry_on=(aiohttp.ClientError, TimeoutError, OSError, KeyError, ValueError))


_TLS: list[ssl.SSLContext] = []


def tls() -> ssl.SSLContext | bool:
    """The lab cluster's CA (``lab_up`` names it in CORRAL_CACERT), for Corral's API only."""
    cafile = os.environ.get("CORRAL_CACERT")
    if not cafile:
        return True
    if not _TLS:
        _TLS.append(ssl.create_default_context(cafile=cafile))
    return _TLS[0]


def auth() -> dict[str, str]:
    """The lab administrator's token (``lab_up`` puts it in CORRAL_TOKEN), for Corral's API only."""
    token = os.environ.get("CORRAL_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


async def get_json(session: aiohttp.ClientSession, url: str, timeout: float = 2.0) -> Any:
    """The JSON body of a 200 answer, or None (any error, any other status)."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout), headers=auth(), ssl=tls()) as resp:
            return await resp.json() if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def send_json(session: aiohttp.ClientSession, method: str, url: str, body: Any,
                    timeout: float = 10.0) -> tuple[int, Any]:
    async with session.request(method, url, json=body, timeout=aiohttp.ClientTimeout(total=timeout),
                               headers=auth(), ssl=tls()) as resp:
        try:
            return resp.status, await resp.json()
        except (aiohttp.ContentTypeError, ValueError):
            return resp.status, await resp.text()


async def members_seen(session: aiohttp.ClientSession, lab: Lab, observer: str) -> dict[str, str] | None:
    body = await get_json(session, lab.host(observer).api_url + "/v1/members")
    if body is None:
        return None
    return {m["name"]: m["state"] for m in body["items"]}


async def agreed_leader(session: aiohttp.ClientSession, lab: Lab, hosts: list[str]) -> str | None:
    """The leader every one of ``hosts`` names, if they all answer and agree and it is one of them."""
    seen = set()
    for name in hosts:
        body = await get_json(session, lab.host(name).api_url + "/v1/raft")
        if body is None:
            return None
        seen.add(body.get("leader"))
    chief = seen.pop() if len(seen) == 1 else None
    return chief if chief in hosts else None


async def wait_healthy(session: aiohttp.ClientSession, lab: Lab, timeout: float = 60.0) -> str:
    """Every agent sees every member alive, all agree on one leader, and it has every host as a voter
    (or learner past three); returns the leader."""
    names = [h.name for h in lab.hosts()]

    async def all_alive() -> bool:
        for observer in names:
            seen = await members_seen(session, lab, observer)
            if seen is None or set(seen) != set(names) or set(seen.values()) != {"alive"}:
                return False
        return True

    await until("all members alive everywhere", all_alive, timeout)
    chief = await until("one agreed leader", lambda: agreed_leader(session, lab, names), timeout)

    async def voters() -> bool:
        body = await get_json(session, lab.host(chief).api_url + "/v1/raft")
        return body is not None and len(body["voters"]) + len(body["learners"]) == len(names) \
            and len(body["voters"]) == min(3, len(names))

    await until("every host a voter or learner", voters, timeout)
    return chief


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Lab operations are synchronous (some run their own event loop): keep them off ours."""
    return await asyncio.to_thread(fn, *args)
