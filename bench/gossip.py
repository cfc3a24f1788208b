"""Gossip membership in the simulator: Corral's ``Profile.lan()`` against memberlist's LAN defaults.

Run: ``python -m bench.gossip`` (a few minutes on 2 cores) or ``python -m bench.gossip --quick``.

For N = 10, 100, 1000 each seed starts a converged cluster (``Sim.add_converged``) on a LAN-like
network (one-way delay 0.5 ms + up to 0.2 ms jitter, no loss), lets it run, and measures

* **load**: packets and bytes sent per member per second in the steady state (seconds 1-6);
* **dissemination**: one member updates its metadata at a random moment; time until 99.9 % of the
  other members have it (an ``updated`` event);
* **detection**: a random member crashes at a random moment; time until *every* live member has
  marked it dead.

Then, for false *dead* verdicts, longer runs at 5 % and 20 % packet loss and with 1 % of the members
paused for 2 s at random (pauses start as a Poisson process, so that on average 1 % are paused; each
run also has at least one), counted per member-hour.

Every figure is run twice in the same simulator, with ``Profile.lan()`` and with
``Profile.memberlist_lan()`` (memberlist ``DefaultLANConfig``, and memberlist's rules exactly:
``refutation_repair`` off), and printed beside what memberlist's defaults imply by its own formulas:

* suspicion timeout ``min = SuspicionMult × max(1, log10(n)) × ProbeInterval``, ``max = 6 × min``
  (``util.go suspicionTimeout``, ``state.go suspectNode``); detection ≈ time to the first failed
  probe (≤ ProbeInterval after a probe reaches the member, + ProbeInterval to fail it) + min
  (k = 2 confirmations arrive) … + max (none do);
* load: one ping and one ack per member per ProbeInterval = 2 / ProbeInterval packets/s idle
  (gossip is only sent when there is news); push-pull adds one TCP exchange per PushPullInterval;
* dissemination: Serf's convergence model, quoted in issue 3: 2.0 s to 99.9 % of 1000 members.
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mesh.gossip.profile import suspicion_timeout
from mesh.gossip.sim import Link, Sim
from mesh.gossip.swim import Profile

PROFILES: dict[str, Callable[[], Profile]] = {"corral": Profile.lan, "memberlist": Profile.memberlist_lan}
LOAD_WINDOW = 10.0  # virtual seconds of steady state over which load is averaged (first seed of each N)


@dataclass(frozen=True)
class Trial:
    detect: float
    disseminate: float
    packets: float  # per member per second
    bytes: float
    false_dead: int


def trial(args: tuple[str, int, int, bool]) -> Trial:
    """One seed: converged cluster → (load window) → metadata update → crash."""
    label, n, seed, measure_load = args
    gc.collect()  # the previous trial's cluster; collection stays off while one runs (1M objects)
    gc.disable()
    sim = Sim(seed, PROFILES[label](), log_events=False)
    names = sim.add_converged(n)
    rng = random.Random(seed * 7919 + n)
    sim.run_until(1.0)
    packets = octets = math.nan
    if measure_load:
        sent0, bytes0 = sim.totals("packets_sent"), sim.totals("bytes_sent")
        sim.run_until(LOAD_WINDOW + 1.0)
        packets = (sim.totals("packets_sent") - sent0) / n / LOAD_WINDOW
        octets = (sim.totals("bytes_sent") - bytes0) / n / LOAD_WINDOW
    sim.run_for(rng.random())
    writer = names[rng.randrange(n)]
    need = math.ceil(0.999 * (n - 1))
    seen: set[str] = set()
    sim.event_hooks.append(lambda o, ev: seen.add(o) if ev.kind == "updated" and ev.member.name == writer else None)
    t0 = sim.now
    sim.call(writer, lambda s: s.update_meta({"rev": 1, "role": "worker"}, sim.now))
    sim.run_for(30.0, stop=lambda: len(seen) >= need)
    disseminate = sim.now - t0 if len(seen) >= need else math.inf

    sim.run_for(1.0 + rng.random())
    victim = names[rng.randrange(n)]
    sim.crash(victim)
    t0 = sim.now
    sim.run_for(300.0, stop=lambda: sim.all_saw_dead_at(victim) is not None)
    seen_at = sim.all_saw_dead_at(victim)
    detect = seen_at - t0 if seen_at is not None else math.inf
    return Trial(detect, disseminate, packets, octets, len(sim.false_dead))


def false_dead_run(args: tuple[str, int, int, str, float]) -> tuple[int, float]:
    """(false dead verdicts, member-hours) of one run of ``duration`` virtual seconds."""
    label, n, seed, scenario, duration = args
    gc.collect()
    gc.disable()
    loss = {"loss 5%": 0.05, "loss 20%": 0.20, "pause 1%": 0.0, "pause 1% + loss 5%": 0.05}[scenario]
    sim = Sim(seed, PROFILES[label](), link=Link(loss=loss), log_events=False)
    names = sim.add_converged(n)
    if scenario.startswith("pause"):
        rng = random.Random(seed)
        rate = 0.01 * n / 2.0  # pauses per second so that 1 % of members are paused on average
        t = 2.0 + rng.expovariate(rate)
        starts = []
        while t < duration - 2.0:
            starts.append(t)
            t += rng.expovariate(rate)
        if not starts:
            starts.append(2.0 + rng.random() * (duration - 4.0))
        for t in starts:
            victim = names[rng.randrange(n)]
            sim.at(t, lambda v=victim: None if sim.nodes[v].paused else sim.pause(v, 2.0))  # type: ignore[misc]
    sim.run_until(duration)
    return len(sim.false_dead), n * duration / 3600.0


def sim_speed(args: tuple[int, float]) -> float:
    """Wall seconds to simulate ``n`` idle members for ``duration`` virtual seconds (Profile.lan())."""
    n, duration = args
    gc.collect()
    gc.disable()
    started = time.perf_counter()
    sim = Sim(1, Profile.lan(), log_events=False)
    sim.add_converged(n)
    sim.run_until(duration)
    return time.perf_counter() - started


def pct(xs: Sequence[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def implied_detection(n: int, p: Profile) -> tuple[float, float]:
    """memberlist's own formulas: probe reaches the member + one interval to fail it + min|max."""
    lo = suspicion_timeout(p.suspicion_mult, n, p.probe_interval)
    return p.probe_interval + lo, 2 * p.probe_interval + p.suspicion_max_timeout_mult * lo


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="N = 10 and 100, 5 seeds, short fault runs")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per N (default 20; 5 with --quick)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    sizes = [10, 100] if args.quick else [10, 100, 1000]
    seeds = args.seeds or (5 if args.quick else 20)
    seeds_1000 = args.seeds or 10  # N = 1000 costs ~10 s of CPU per seed and profile
    started = time.time()
    ml = Profile.memberlist_lan()
    ours = Profile.lan()

    # Measured alone, before the worker pool starts, so it has a CPU to itself (if the machine does).
    speed_wall = sim_speed((1000, 60.0)) if 1000 in sizes else None
    load_avg = os.getloadavg()[0]
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        results: dict[tuple[str, int], list[Trial]] = {}
        for n in sizes:
            k = seeds_1000 if n == 1000 else seeds
            for label in PROFILES:
                results[(label, n)] = pool.map(trial, [(label, n, s, s == 1) for s in range(1, k + 1)])

        fd_plan: list[tuple[str, int, int, str, float]] = []
        scenarios = ["loss 5%", "loss 20%", "pause 1%", "pause 1% + loss 5%"]
        for n in sizes:
            for scenario in scenarios:
                if n == 1000 and scenario in ("loss 20%", "pause 1% + loss 5%"):
                    continue  # hundreds of suspicions per second cluster-wide: too slow to simulate here
                runs, duration = {10: (4, 300.0), 100: (2, 90.0), 1000: (1, 15.0)}[n]
                if args.quick:
                    runs, duration = 1, duration / 3
                for label in PROFILES:
                    fd_plan += [(label, n, 100 + r, scenario, duration) for r in range(runs)]
        fd_results = pool.map(false_dead_run, fd_plan)

    fd: dict[tuple[str, int, str], tuple[int, float]] = {}
    for (label, n, _seed, scenario, _d), (count, hours) in zip(fd_plan, fd_results, strict=True):
        c, h = fd.get((label, n, scenario), (0, 0.0))
        fd[(label, n, scenario)] = (c + count, h + hours)

    per_n = f"{seeds} seeds per N" + (f" ({seeds_1000} for N = 1000, for time)" if 1000 in sizes else "")
    print(f"Gossip membership in the simulator, {per_n}, one-way delay 0.5 ms + 0-0.2 ms jitter")
    print(f"corral lan(): probe {ours.probe_interval * 1000:.0f} ms / timeout {ours.probe_timeout * 1000:.0f} ms, "
          f"suspicion mult {ours.suspicion_mult:g} (max {ours.suspicion_max_timeout_mult:g}x, k "
          f"{ours.suspicion_confirmations}), gossip {ours.gossip_interval * 1000:.0f} ms x {ours.gossip_nodes}, "
          f"retransmit mult {ours.retransmit_mult}, refutation repair on")
    print(f"memberlist DefaultLANConfig: probe {ml.probe_interval * 1000:.0f} ms / timeout "
          f"{ml.probe_timeout * 1000:.0f} ms, suspicion mult {ml.suspicion_mult:g} (max "
          f"{ml.suspicion_max_timeout_mult:g}x, k {ml.suspicion_confirmations}), gossip "
          f"{ml.gossip_interval * 1000:.0f} ms x {ml.gossip_nodes}, retransmit mult {ml.retransmit_mult}")
    print()
    print("Detection: crash -> every live member marks it dead (s)")
    print(f"{'N':>6} {'corral p50':>11} {'p99':>7} {'memberlist p50':>15} {'p99':>7} {'ratio p50':>10} "
          f"{'memberlist formula':>22}")
    for n in sizes:
        a = [t.detect for t in results[("corral", n)]]
        b = [t.detect for t in results[("memberlist", n)]]
        lo, hi = implied_detection(n, ml)
        print(f"{n:>6} {pct(a, 50):>11.2f} {pct(a, 99):>7.2f} {pct(b, 50):>15.2f} {pct(b, 99):>7.2f} "
              f"{pct(a, 50) / pct(b, 50):>10.2f} {f'{lo:.1f} .. {hi:.1f}':>22}")
    print()
    print("Dissemination: metadata update -> 99.9 % of the other members (s)")
    print(f"{'N':>6} {'corral p50':>11} {'p99':>7} {'memberlist p50':>15} {'p99':>7} {'ratio p50':>10} "
          f"{'Serf model':>22}")
    for n in sizes:
        a = [t.disseminate for t in results[("corral", n)]]
        b = [t.disseminate for t in results[("memberlist", n)]]
        serf = "2.0" if n == 1000 else "-"
        print(f"{n:>6} {pct(a, 50):>11.3f} {pct(a, 99):>7.3f} {pct(b, 50):>15.3f} {pct(b, 99):>7.3f} "
              f"{pct(a, 50) / pct(b, 50):>10.2f} {serf:>22}")
    print()
    print(f"Load: sent per member per second, steady state ({LOAD_WINDOW:g} s, plaintext bytes before sealing)")
    print(f"{'N':>6} {'corral pkt/s':>13} {'B/s':>8} {'memberlist pkt/s':>17} {'B/s':>8} {'ratio pkt':>10} "
          f"{'memberlist formula':>22}")
    for n in sizes:
        ap_ = statistics.mean(t.packets for t in results[("corral", n)] if not math.isnan(t.packets))
        ab = statistics.mean(t.bytes for t in results[("corral", n)] if not math.isnan(t.bytes))
        bp = statistics.mean(t.packets for t in results[("memberlist", n)] if not math.isnan(t.packets))
        bb = statistics.mean(t.bytes for t in results[("memberlist", n)] if not math.isnan(t.bytes))
        formula = f"{2 / ml.probe_interval:.1f} pkt/s"
        print(f"{n:>6} {ap_:>13.2f} {ab:>8.0f} {bp:>17.2f} {bb:>8.0f} {ap_ / bp:>10.2f} {formula:>22}")
    print()
    print("False dead verdicts (count / member-hours simulated = per member-hour)")
    print(f"{'N':>6} {'scenario':<20} {'corral':>26} {'memberlist':>26}")
    for n in sizes:
        for scenario in scenarios:
            if ("corral", n, scenario) not in fd:
                continue
            cells = []
            for label in PROFILES:
                c, h = fd[(label, n, scenario)]
                cells.append(f"{c} / {h:.1f} h = {c / h:.2f}")
            print(f"{n:>6} {scenario:<20} {cells[0]:>26} {cells[1]:>26}")
    crashed_false = sum(t.false_dead for r in results.values() for t in r)
    print()
    print(f"false dead verdicts during the detection runs (no loss): {crashed_false}")
    a10 = [t.detect for t in results[("corral", 10)]]
    print(f"targets: N=10 detection p50 <= 3 s: {'met' if pct(a10, 50) <= 3 else 'MISSED'} ({pct(a10, 50):.2f}), "
          f"p99 <= 5 s: {'met' if pct(a10, 99) <= 5 else 'MISSED'} ({pct(a10, 99):.2f})")
    zero = all(fd[("corral", n, s)][0] == 0 for n in sizes for s in scenarios if s != "loss 20%"
               and ("corral", n, s) in fd)
    print(f"         zero false dead at 5 % loss and with pauses: {'met' if zero else 'MISSED'}")
    if 1000 in sizes:
        d = pct([t.disseminate for t in results[("corral", 1000)]], 99)
        print(f"         N=1000 dissemination p99 <= 1.5 s: {'met' if d <= 1.5 else 'MISSED'} ({d:.3f})")
    if speed_wall is not None:
        verdict = "met" if speed_wall < 60 else "MISSED"
        print(f"         1000 members x 60 virtual s simulated in {speed_wall:.1f} s wall (< 60 s: {verdict}; "
              f"load average {load_avg:.1f} on {os.cpu_count()} cpus)")
    print(f"({time.time() - started:.0f} s wall, {args.jobs} processes)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
