"""Gossip failure detection in the lab (issue 3, lab half): a killed agent seen dead, and back alive, by all.

Run as root: ``python -m bench.gossip_lab [--quick]``. It builds its own 5-host lab
(``CORRAL_LAB_ID=3`` unless set) and takes it down at the end. Each run:

1. every agent's ``GET /v1/members`` shows all five ``alive``;
2. ``Lab.kill_agent`` (SIGKILL) on the victim (h2…h5 in turn: h1 bootstrapped the cluster);
3. each of the other four agents is polled every 20 ms; the figure is from just before the kill until
   the *last* of them shows the victim ``dead`` (the first ``suspect`` is shown too);
4. ``Lab.start_agent`` on the victim, then until every other agent shows it ``alive`` again, timed
   from the call (that includes starting a Python process) and from the moment its API answered.

References printed beside: memberlist's LAN defaults (hashicorp/memberlist ``config.go``
``DefaultLANConfig``: ProbeInterval 1 s, ProbeTimeout 500 ms, SuspicionMult 4, SuspicionMaxTimeoutMult
6; ``util.go`` ``suspicionTimeout = SuspicionMult × max(1, log10(max(1, n))) × ProbeInterval``;
``suspicion.go`` ``remainingSuspicionTime``: the timeout starts at ``max = SuspicionMaxTimeoutMult × min``
and falls to ``min`` as ``log(c+1)/log(k+1)`` with c of k = SuspicionMult − 2 independent
confirmations), as formulas and as the same failure in the deterministic simulator (``mesh.gossip.sim``) with
memberlist's profile and with Corral's ``lan()`` profile, which the agents run.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time
from typing import Any

import aiohttp

# bench.labutil picks the lab id before agent.lab is imported: take Lab from it
from bench.labutil import Lab, get_json, in_thread, lab_up, log, machine_load, percentile, table, until, verdict
from mesh.gossip.profile import Profile, remaining_suspicion_time, suspicion_timeout

HOSTS = 5
LIMIT = 60.0


async def states(session: aiohttp.ClientSession, lab: Lab, observer: str) -> dict[str, str] | None:
    body = await get_json(session, lab.host(observer).api_url + "/v1/members", timeout=1.0)
    return None if body is None else {m["name"]: m["state"] for m in body["items"]}


async def all_alive(session: aiohttp.ClientSession, lab: Lab, names: list[str]) -> bool:
    for observer in names:
        seen = await states(session, lab, observer)
        if seen is None or any(seen.get(n) != "alive" for n in names):
            return False
    return True


async def watch(session: aiohttp.ClientSession, lab: Lab, observer: str, victim: str, want: str, t0: float,
                marks: dict[str, float]) -> float:
    """Poll ``observer`` until it shows ``victim`` as ``want``; seconds since ``t0`` (first suspect in marks)."""
    while True:
        seen = await states(session, lab, observer)
        now = time.monotonic() - t0
        state = (seen or {}).get(victim)
        if state == "suspect" and "suspect" not in marks:
            marks["suspect"] = now
        if state == want:
            return now
        if now > LIMIT:
            return math.inf
        await asyncio.sleep(0.02)


async def run_once(lab: Lab, session: aiohttp.ClientSession, names: list[str], victim: str) -> dict[str, Any]:
    await until("every member alive everywhere", lambda: all_alive(session, lab, names), LIMIT)
    others = [n for n in names if n != victim]
    marks: dict[str, float] = {}
    t0 = time.monotonic()
    await in_thread(lab.kill_agent, victim)
    dead = await asyncio.gather(*(watch(session, lab, o, victim, "dead", t0, marks) for o in others))
    t1 = time.monotonic()
    await in_thread(lab.start_agent, victim)  # returns once its API answers
    t_api = time.monotonic()
    alive = await asyncio.gather(*(watch(session, lab, o, victim, "alive", t1, {}) for o in others))
    return {"victim": victim, "suspect": marks.get("suspect", math.nan), "first dead": min(dead),
            "all dead": max(dead), "all alive": max(alive), "api up": t_api - t1,
            "alive after api": max(alive) - (t_api - t1)}


async def measure(lab: Lab, runs: int) -> list[dict[str, Any]]:
    names = [h.name for h in lab.hosts()]
    out = []
    async with aiohttp.ClientSession() as session:
        for i in range(runs):
            victim = names[1 + i % (len(names) - 1)]
            r = await run_once(lab, session, names, victim)
            log(f"run {i + 1}/{runs}: {victim} killed: suspect {r['suspect']:.3f} s, all dead {r['all dead']:.3f} s; "
                f"restarted: all see alive {r['all alive']:.3f} s ({r['alive after api']:.3f} s after its API)")
            out.append(r)
        await until("every member alive everywhere", lambda: all_alive(session, lab, names), LIMIT)
    return out


def memberlist_formula(n: int) -> dict[str, float]:
    """memberlist LAN: the suspicion timeout for n members, at 0, 1 and k confirmations."""
    p = Profile.memberlist_lan()
    lo = suspicion_timeout(p.suspicion_mult, n, p.probe_interval)
    hi = p.suspicion_max_timeout_mult * lo
    k = p.suspicion_confirmations if n - 2 >= p.suspicion_confirmations else 0
    return {"min": lo, "max": hi, "k": k, "one": remaining_suspicion_time(1, max(k, 1), 0.0, lo, hi) if k else lo}


def simulated(profile: Profile, n: int, seeds: int) -> list[float] | str:
    """A crash in ``mesh.gossip.sim`` with this profile: seconds until every other member saw it dead."""
    try:
        from mesh.gossip.sim import Sim
    except ImportError as exc:
        return f"unavailable ({exc})"
    out = []
    for seed in range(seeds):
        sim = Sim(seed, profile, log_events=False)
        names = sim.add_converged(n)
        rng = random.Random(seed)
        sim.run_until(5.0 + rng.random() * 2)
        victim = names[1 + rng.randrange(n - 1)]
        sim.crash(victim)
        t0 = sim.now
        sim.run_for(120.0, stop=lambda v=victim, s=sim: s.all_saw_dead_at(v) is not None)  # type: ignore[misc]
        at = sim.all_saw_dead_at(victim)
        out.append(at - t0 if at is not None else math.inf)
    return out


def report(rs: list[dict[str, Any]], seeds: int) -> None:
    print(f"Gossip in the lab: {HOSTS} agents (network namespaces on one machine), SIGKILL of one agent "
          f"(h2..h5 in turn), {len(rs)} runs; the agents run Corral's lan() profile")
    rows = [[f"run {i + 1} ({r['victim']})", r["suspect"], r["first dead"], r["all dead"], r["api up"],
             r["all alive"], r["alive after api"]] for i, r in enumerate(rs)]
    for label, p in (("p50", 50), ("p99", 99)):
        rows.append([label, percentile([r["suspect"] for r in rs], p), percentile([r["first dead"] for r in rs], p),
                     percentile([r["all dead"] for r in rs], p), percentile([r["api up"] for r in rs], p),
                     percentile([r["all alive"] for r in rs], p), percentile([r["alive after api"] for r in rs], p)])
    print(table(["seconds", "1st suspect", "1st dead", "ALL dead", "restart: API up", "ALL alive",
                 "alive after API"], rows))
    dead = [r["all dead"] for r in rs]
    p50, p99 = percentile(dead, 50), percentile(dead, 99)
    print()
    f = memberlist_formula(HOSTS)
    ml, ours = Profile.memberlist_lan(), Profile.lan()
    print(f"memberlist LAN defaults, n = {HOSTS}: ProbeInterval {ml.probe_interval:g} s, ProbeTimeout "
          f"{ml.probe_timeout:g} s; suspicion min = 4 x max(1, log10({HOSTS})) x 1 s = {f['min']:.1f} s, "
          f"max = 6 x min = {f['max']:.1f} s, k = {f['k']:.0f} (timeout {f['one']:.1f} s after 1 confirmation, "
          f"{f['min']:.1f} s after {f['k']:.0f})")
    print(f"  implied: up to ~2 s until some member's probe of it fails (probed round-robin, 1 s periods), then "
          f"the suspicion timeout: {f['min']:.0f} s once {f['k']:.0f} others confirm, {f['one']:.1f} s with one, "
          f"{f['max']:.0f} s with none; then gossip (200 ms ticks): at least ~{1 + f['min']:.0f} s, typically "
          f"{1 + f['min']:.0f}-10 s")
    lo = suspicion_timeout(ours.suspicion_mult, HOSTS, ours.probe_interval)
    print(f"Corral lan(): ProbeInterval {ours.probe_interval:g} s, ProbeTimeout {ours.probe_timeout:g} s, suspicion "
          f"min = {ours.suspicion_mult:g} x 1 x {ours.probe_interval:g} s = {lo:.1f} s, max = "
          f"{ours.suspicion_max_timeout_mult:g} x min = {lo * ours.suspicion_max_timeout_mult:.1f} s")
    sims = {"memberlist LAN (sim)": simulated(ml, HOSTS, seeds), "corral lan() (sim)": simulated(ours, HOSTS, seeds)}
    rows = [["corral lan(), this lab", len(dead), p50, p99, max(dead)]]
    for label, xs in sims.items():
        if isinstance(xs, str):
            rows.append([label, xs, "", "", ""])
        else:
            rows.append([label, len(xs), percentile(xs, 50), percentile(xs, 99), max(xs)])
    print()
    print(f"Killed member seen dead by ALL others, seconds ({HOSTS} members; simulator: {seeds} seeds, LAN delays)")
    print(table(["", "runs", "p50", "p99", "max"], rows))
    ref = sims["memberlist LAN (sim)"]
    if not isinstance(ref, str):
        print(f"ratio lab / memberlist-in-sim: p50 {p50 / percentile(ref, 50):.2f}, "
              f"p99 {p99 / percentile(ref, 99):.2f}")
    print(f"targets: p50 <= 3 s: {verdict(p50 <= 3.0)} ({p50:.3f} s); p99 <= 5 s: {verdict(p99 <= 5.0)} ({p99:.3f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under ~2 minutes)")
    args = parser.parse_args()
    runs, seeds = (3, 50) if args.quick else (10, 200)
    started = time.monotonic()
    load_before = machine_load()
    with lab_up(HOSTS) as lab:
        results = asyncio.run(measure(lab, runs))
    report(results, seeds)
    print(f"({time.monotonic() - started:.0f} s wall in all; machine before: {load_before}; after: {machine_load()})")


if __name__ == "__main__":
    main()
