"""Added RTT of the overlay against the floor of any userspace tunnel on this machine, in one run.

Run as root: ``python -m bench.overlay_latency [--rounds 5] [--count 200]``.

``bench/overlay.py`` compares the overlay with wireguard-go; this asks how low a userspace tunnel's
added latency can go here at all. In the two namespaces of ``bench/overlay_lab.py`` it runs, side by
side and each on its own TUN and UDP port:

1. Corral's overlay (process mode, the agent's default), the route it installs (10.42.0.0/16);
2. wireguard-go (Debian's), the reference userspace tunnel;
3. ``bench/native_forwarder.c`` compiled here (needs ``cc`` and OpenSSL's headers, else skipped):
   the least a tunnel can do, one poll loop in C moving each packet TUN → UDP and back, once in the
   clear and once sealing each packet with AES-256-GCM — no handshake, replay window or offloads.

Each round pings the underlay (host → host) and then, container → container, each tunnel in turn
(a /24 route points the peer's subnet at the tunnel under test; none for Corral's own), 10 ms apart
("idle") and back to back ("busy"); the figures are medians over rounds of the RTT minus the same
round's underlay RTT, so a noisy neighbour hits every path alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable

from bench.overlay import PING_BUSY, PING_IDLE, ping_ms, wireguard_down, wireguard_up
from bench.overlay_lab import REPO, OverlayLab, sh, tool
from mesh.waiting import until

NATIVE_SOURCE = os.path.join(REPO, "bench", "native_forwarder.c")
NATIVE_PORTS = {"plain": 4601, "aes": 4602}
TARGET_MS = 0.3


def build_native(out_dir: str) -> str | None:
    """Compile the reference forwarder; None (and why, printed) when this machine cannot."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("native forwarder skipped: no C compiler (apt-get install gcc libssl-dev)", flush=True)
        return None
    binary = os.path.join(out_dir, "native_forwarder")
    res = subprocess.run([cc, "-O2", "-o", binary, NATIVE_SOURCE, "-lcrypto"], capture_output=True, text=True)
    if res.returncode:
        print(f"native forwarder skipped: build failed (libssl-dev missing?): {res.stderr.strip()[:300]}", flush=True)
        return None
    return binary


def start_native(lab: OverlayLab, binary: str, variant: str) -> list[subprocess.Popen[str]]:
    """One forwarder per host on TUN ``ovt-n<variant initial>``; returns the processes."""
    procs: list[subprocess.Popen[str]] = []
    dev = f"ovt-n{variant[0]}"
    port = str(NATIVE_PORTS[variant])
    for n, other in (("a", "b"), ("b", "a")):
        node, peer = lab.nodes[n], lab.nodes[other]
        proc = subprocess.Popen(["ip", "netns", "exec", node.ns, binary, dev, port, peer.underlay, port,
                                 *(["aes"] if variant == "aes" else [])],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"native forwarder {variant} in {node.ns}: {proc.stderr.read() if proc.stderr else ''}")
        sh("ip", "link", "set", dev, "mtu", "1420", "up", ns=node.ns)
    return procs


def route_via(lab: OverlayLab, dev: str | None) -> None:
    """Point each host's route to the other's container subnet at ``dev`` (None: Corral's own /16)."""
    for n, other in (("a", "b"), ("b", "a")):
        node, peer = lab.nodes[n], lab.nodes[other]
        if dev is None:
            sh("ip", "route", "del", peer.subnet, ns=node.ns, check=False)
        else:
            sh("ip", "route", "replace", peer.subnet, "dev", dev, "src", f"10.42.{node.index}.1", ns=node.ns)


def reachable(lab: OverlayLab) -> Callable[[], bool]:
    dst = lab.nodes["b"].container_ip
    return lambda: bool(tool(lab.nodes["a"].container_ns, "ping", dst, "-c", "1", "-W", "0.5")["received"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=200, help="idle pings per path per round (busy: 5 × as many)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (namespaces, TUN)")
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    lab = OverlayLab(mode="process")
    procs: list[subprocess.Popen[str]] = []
    wg: list[subprocess.Popen[bytes]] = []
    paths: dict[str, str | None] = {"corral overlay (process mode)": None}
    try:
        lab.up("ab")
        lab.write_peers("ab")
        for n in "ab":
            lab.start(n)
        lab.wait_mesh_up("ab", 20)
        wg = wireguard_up(lab)
        paths["wireguard-go"] = "ovt-wga"  # renamed per host below
        binary = build_native(lab.dir)
        if binary is not None:
            for variant in ("plain", "aes"):
                procs += start_native(lab, binary, variant)
            paths["native C forwarder, AES-256-GCM"] = "ovt-na"
            paths["native C forwarder, no crypto"] = "ovt-np"
        a, b = lab.nodes["a"], lab.nodes["b"]
        idle: dict[str, list[float]] = {p: [] for p in paths}
        busy: dict[str, list[float]] = {p: [] for p in paths}
        for r in range(args.rounds):
            u_idle = ping_ms(a.ns, b.underlay, args.count, PING_IDLE)
            u_busy = ping_ms(a.ns, b.underlay, args.count, PING_BUSY)
            for name, dev in paths.items():
                if dev == "ovt-wga":
                    for n, other in (("a", "b"), ("b", "a")):
                        sh("ip", "route", "replace", lab.nodes[other].subnet, "dev", f"ovt-wg{n}", "src",
                           f"10.42.{lab.nodes[n].index}.1", ns=lab.nodes[n].ns)
                else:
                    route_via(lab, dev)
                until(f"{name} to carry a ping", reachable(lab), 15)
                i = ping_ms(a.container_ns, b.container_ip, args.count, PING_IDLE) - u_idle
                k = ping_ms(a.container_ns, b.container_ip, args.count, PING_BUSY) - u_busy
                idle[name].append(i)
                busy[name].append(k)
                print(f"round {r + 1}/{args.rounds} {name}: +idle {i:.3f} ms, +busy {k:.3f} ms", flush=True)
        corral_status = lab.status("a")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        wireguard_down(wg)
        lab.down()
    print(f"\noverlay added RTT, {os.cpu_count()} CPUs, {args.rounds} interleaved rounds, {args.count} pings 10 ms "
          f"apart and {args.count * 5} back to back per path per round, load average before {load_before}")
    print(f"{'path (container → container)':36} {'+idle ms':>9} {'+busy ms':>9}  rounds (+idle)")
    for name in paths:
        print(f"{name:36} {statistics.median(idle[name]):9.3f} {statistics.median(busy[name]):9.3f}  "
              f"{[round(x, 3) for x in idle[name]]}")
    print("+idle / +busy: median over rounds of (tunnel RTT − the round's underlay RTT), pings 10 ms apart /")
    print("back to back; the native rows are the floor of a userspace tunnel here (process hand-offs + one AEAD")
    print(f"call per hop, nothing else). target: +RTT ≤ {TARGET_MS} ms")
    ref = "native C forwarder, AES-256-GCM"
    if ref in paths:
        c = "corral overlay (process mode)"
        ratio_idle = statistics.median(idle[c]) / statistics.median(idle[ref])
        ratio_busy = statistics.median(busy[c]) / statistics.median(busy[ref])
        print(f"corral against the native AES floor: idle {ratio_idle:.2f}×, busy {ratio_busy:.2f}×")
    print(f"corral drops on a: {corral_status.get('drops')}")


if __name__ == "__main__":
    main()
