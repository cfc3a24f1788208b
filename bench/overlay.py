"""Overlay throughput, latency and CPU against the raw underlay and wireguard-go, in one run.

Run as root: ``python -m bench.overlay [--seconds 5] [--modes process,thread,loop] [--agent-load 0.2]``.

In the same two namespaces of ``bench/overlay_lab.py`` (ovt-a, ovt-b, joined by veths on a bridge,
each with a "container" namespace on its own bridge), it measures with iperf3 and an ICMP ping:

1. the raw underlay: host to host over the veths (the limit);
2. the overlay: container to container (10.42.1.2 → 10.42.2.2), once per data path ``mode``, with
   each agent's loop kept ``--agent-load`` busy by a stand-in for API/gossip/Raft work; the CPU of
   each service (agent process + data path worker) over the single-stream run;
3. wireguard-go (the reference userspace tunnel): the overlay services stopped, one wireguard-go per
   namespace configured through its UAPI socket, the same container-to-container path routed over it.

It prints one table: Gbit/s and ratios against the underlay and wireguard-go, median ping RTT and
the RTT the tunnel adds, and service CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bench.overlay_lab import OverlayLab, sh, tool
from mesh.waiting import until

WG_PORT = 51820


def iperf(client_ns: str, server_ns: str, dst: str, seconds: float, streams: int) -> float:
    """Gbit/s received, iperf3 TCP (one retry: on a loaded machine iperf3 sometimes fails to start)."""
    try:
        return _iperf_once(client_ns, server_ns, dst, seconds, streams)
    except (RuntimeError, ValueError) as e:
        print(f"iperf3 {client_ns} → {dst} failed ({e}); retrying once", flush=True)
        return _iperf_once(client_ns, server_ns, dst, seconds, streams)


def _iperf_once(client_ns: str, server_ns: str, dst: str, seconds: float, streams: int) -> float:
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", "5201"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listening() -> bool:
            out = sh("ss", "-ltn", ns=server_ns, check=False).stdout
            return ":5201" in out
        until("iperf3 server", listening, 5)
        out = subprocess.run(["ip", "netns", "exec", client_ns, "iperf3", "-c", dst, "-p", "5201", "-J", "-t",
                              str(seconds), "-P", str(streams)], capture_output=True, text=True, timeout=seconds + 30)
        if not out.stdout.strip():
            raise RuntimeError(f"no output, exit {out.returncode}: {out.stderr.strip()[:200]}")
        data = json.loads(out.stdout)
        if "error" in data:
            raise RuntimeError(data["error"])
        return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        server.kill()
        server.wait()


#: Ping intervals: "idle" (10 ms apart: every hop starts from cold caches and a sleeping process) and
#: "busy" (back to back: the next request leaves as soon as the answer is in, as in an RPC chain).
PING_IDLE, PING_BUSY = 0.01, 0.0


def ping_ms(ns: str, dst: str, count: int = 60, interval: float = PING_IDLE) -> float:
    """Median ICMP echo RTT in ms."""
    count = count if interval else count * 5
    rtts = tool(ns, "ping", dst, "-c", str(count), "-i", str(interval))["rtt_ms"]
    if len(rtts) < count // 2:
        raise RuntimeError(f"ping {dst} from {ns}: {len(rtts)}/{count} answered")
    return float(statistics.median(rtts))


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        except FileNotFoundError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def datapath_pids(lab: OverlayLab, name: str) -> list[int]:
    """The process the data path runs in: the worker (process mode) or the agent itself (thread, loop)."""
    return [int(lab.status(name)["datapath_pid"])]


def udp_errors(ns: str) -> dict[str, int]:
    """The namespace's UDP receive-buffer and send-buffer error counters (loss the data path cannot see)."""
    lines = [line.split() for line in sh("cat", "/proc/net/snmp", ns=ns).stdout.splitlines() if line.startswith("Udp:")]
    stats = dict(zip(lines[0][1:], (int(x) for x in lines[1][1:]), strict=True))
    return {k: stats[k] for k in ("RcvbufErrors", "SndbufErrors", "InErrors") if k in stats}


# ---------------------------------------------------------------------- wireguard-go
def _uapi(name: str, body: str) -> str:
    path = f"/var/run/wireguard/{name}.sock"
    until(f"{path}", lambda: os.path.exists(path), 10)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(body.encode())
        reply = b""
        while not reply.endswith(b"\n\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.decode()


def wireguard_up(lab: OverlayLab) -> list[subprocess.Popen[bytes]]:
    """wireguard-go in ovt-a and ovt-b carrying 10.42.1.0/24 ↔ 10.42.2.0/24 over the same underlay."""
    keys = {n: X25519PrivateKey.generate() for n in "ab"}
    procs = []
    for n, other in (("a", "b"), ("b", "a")):
        node, peer = lab.nodes[n], lab.nodes[other]
        dev = f"ovt-wg{n}"
        env = {**os.environ, "WG_PROCESS_FOREGROUND": "1"}
        procs.append(subprocess.Popen(["ip", "netns", "exec", node.ns, "wireguard-go", "-f", dev], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        priv = keys[n].private_bytes_raw().hex()
        pub = keys[other].public_key().public_bytes_raw().hex()
        reply = _uapi(dev, f"set=1\nprivate_key={priv}\nlisten_port={WG_PORT}\npublic_key={pub}\n"
                           f"endpoint={peer.underlay}:{WG_PORT}\nallowed_ip={peer.subnet}\n\n")
        if "errno=0" not in reply:
            raise RuntimeError(f"wireguard-go UAPI: {reply!r}")
        sh("ip", "link", "set", dev, "mtu", "1420", "up", ns=node.ns)
        sh("ip", "route", "replace", peer.subnet, "dev", dev, "src", f"10.42.{node.index}.1", ns=node.ns)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=node.ns)
    return procs


def wireguard_down(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ---------------------------------------------------------------------- the run
def measure_overlay(lab: OverlayLab, mode: str, seconds: float, under_rtt: float, under_busy: float) -> dict[str, Any]:
    lab.mode = mode
    for n in "ab":
        lab.start(n)
    lab.wait_mesh_up("ab", 20)
    dst = lab.nodes["b"].container_ip
    iperf("ovt-ac", "ovt-bc", dst, 1, 1)  # warm-up: PMTU learnt, sessions and caches hot
    pids = {n: datapath_pids(lab, n) for n in "ab"}
    c0 = {n: cpu_seconds(pids[n]) for n in "ab"}
    t0 = time.monotonic()
    one = iperf("ovt-ac", "ovt-bc", dst, seconds, 1)
    wall = time.monotonic() - t0
    cpu = {n: (cpu_seconds(pids[n]) - c0[n]) / wall * 100 for n in "ab"}
    time.sleep(0.3)  # one more status write, so the lag window is the iperf run's
    lag = {n: float(lab.status(n).get("agent_loop_lag_ms", {}).get("p99", float("nan"))) for n in "ab"}
    four = iperf("ovt-ac", "ovt-bc", dst, seconds, 4)
    rtt = ping_ms("ovt-ac", dst)
    busy = ping_ms("ovt-ac", dst, interval=PING_BUSY)
    st = lab.status("a")
    stb = lab.status("b")
    for n in "ab":
        lab.stop(n)
    print(f"[{mode}] 1 stream {one:.2f}, 4 streams {four:.2f} Gbit/s; drops a {st.get('drops')} b {stb.get('drops')};"
          f" udp a {udp_errors('ovt-a')} b {udp_errors('ovt-b')}", flush=True)
    return {"mode": mode, "one": one, "four": four, "rtt": rtt, "added": rtt - under_rtt,
            "added_busy": busy - under_busy, "cpu": cpu, "lag": lag,
            "drops": st.get("drops", {}), "offloads": st.get("tun", {}).get("offloads"),
            "chunk": st.get("chunk_size"), "tun_mtu": st.get("tun_mtu")}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over the repeats (the run with the median single-stream figure for the rest)."""
    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in runs))
    mid = sorted(runs, key=lambda r: float(r["one"]))[len(runs) // 2]
    cpu = {n: float(statistics.median(r["cpu"][n] for r in runs)) for n in "ab"}
    lag = {n: float(statistics.median(r["lag"][n] for r in runs)) for n in "ab"}
    return {**mid, "one": med("one"), "four": med("four"), "rtt": med("rtt"), "added": med("added"),
            "added_busy": med("added_busy"), "cpu": cpu,
            "lag": lag,
            "all_one": [round(float(r["one"]), 2) for r in runs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--modes", default="process,thread,loop")
    ap.add_argument("--agent-load", type=float, default=0.2)
    ap.add_argument("--repeat", type=int, default=1, help="overlay runs per mode; medians are printed")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (namespaces, TUN)")
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    lab = OverlayLab(agent_load=args.agent_load)
    try:
        lab.up("ab")
        lab.write_peers("ab")
        b = lab.nodes["b"]
        under_one = iperf("ovt-a", "ovt-b", b.underlay, args.seconds, 1)
        under_four = iperf("ovt-a", "ovt-b", b.underlay, args.seconds, 4)
        under_rtt = ping_ms("ovt-a", b.underlay)
        under_busy = ping_ms("ovt-a", b.underlay, interval=PING_BUSY)
        modes = args.modes.split(",")
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        for _ in range(args.repeat):  # interleaved, so a noisy neighbour hits every mode alike
            for m in modes:
                runs[m].append(measure_overlay(lab, m, args.seconds, under_rtt, under_busy))
        results = [median_run(runs[m]) for m in modes]
        procs = wireguard_up(lab)
        try:
            until("wireguard-go tunnel",
                  lambda: tool("ovt-ac", "ping", b.container_ip, "-c", "1", "-W", "0.5")["received"], 15)
            iperf("ovt-ac", "ovt-bc", b.container_ip, 1, 1)  # warm-up, as for the overlay
            c0 = [cpu_seconds([p.pid]) for p in procs]
            t0 = time.monotonic()
            wg_one = iperf("ovt-ac", "ovt-bc", b.container_ip, args.seconds, 1)
            wall = time.monotonic() - t0
            wg_cpu = [(cpu_seconds([p.pid]) - c) / wall * 100 for p, c in zip(procs, c0, strict=True)]
            wg_four = iperf("ovt-ac", "ovt-bc", b.container_ip, args.seconds, 4)
            wg_rtt = ping_ms("ovt-ac", b.container_ip)
            wg_busy = ping_ms("ovt-ac", b.container_ip, interval=PING_BUSY) - under_busy
        finally:
            wireguard_down(procs)
    finally:
        lab.down()
    print(f"\noverlay benchmark, {os.cpu_count()} CPUs, iperf3 TCP {args.seconds:g} s per figure, "
          f"agent loop {args.agent_load:.0%} busy (stand-in work), load average before {load_before}")
    print(f"{'path':44} {'1 stream':>9} {'4 streams':>10} {'×underlay':>10} {'×wg-go':>7} {'RTT ms':>7} "
          f"{'+RTT ms':>8} {'+busy':>6}  tunnel CPU a / b (both per Gbit/s)")
    print(f"{'raw underlay (veth+bridge, host→host)':44} {under_one:9.2f} {under_four:10.2f} {1.0:10.2f} "
          f"{under_one / wg_one:7.2f} {under_rtt:7.3f} {0.0:8.3f} {0.0:6.3f}  (busy RTT {under_busy:.3f})")
    print(f"{'wireguard-go (container→container)':44} {wg_one:9.2f} {wg_four:10.2f} {wg_one / under_one:10.3f} "
          f"{1.0:7.2f} {wg_rtt:7.3f} {wg_rtt - under_rtt:8.3f} {wg_busy:6.3f}  {wg_cpu[0]:.0f}% / {wg_cpu[1]:.0f}%  "
          f"({sum(wg_cpu) / wg_one:.0f}%/Gbit)")
    for r in results:
        print(f"{'corral overlay, ' + r['mode'] + ' (container→container)':44} {r['one']:9.2f} {r['four']:10.2f} "
              f"{r['one'] / under_one:10.3f} {r['one'] / wg_one:7.2f} {r['rtt']:7.3f} {r['added']:8.3f} "
              f"{r['added_busy']:6.3f}  "
              f"{r['cpu']['a']:.0f}% / {r['cpu']['b']:.0f}%  ({(r['cpu']['a'] + r['cpu']['b']) / r['one']:.0f}%/Gbit)  "
              f"agent lag p99 {r['lag']['a']:.1f}/{r['lag']['b']:.1f} ms  runs {r['all_one']}")
    print("Gbit/s received; ratios on single-stream TCP; +RTT = median ping RTT minus the underlay's, pings 10 ms")
    print("apart (idle: cold caches, sleeping processes); +busy = the same with pings back to back (RPC-like);")
    print(f"overlay rows: medians of {args.repeat} interleaved run(s); tunnel CPU in the 1-stream run, % of a core:")
    print("  the process running the data path: the worker (process mode), the agent stand-in with its own")
    print(f"  {args.agent_load:.0%} load (thread, loop modes), the wireguard-go process; agent lag p99 = how late the")
    print("  agent's event loop ran a 10 ms sleep in the 1-stream run (its API, gossip and Raft would be that late)")
    print("targets: 1 stream ≥ 5 × wireguard-go and ≥ 0.15 × underlay; +RTT ≤ 0.3 ms")
    best = min(results, key=lambda r: float(r["added"]))
    print(f"added RTT against wireguard-go's: idle {best['added'] / (wg_rtt - under_rtt):.2f}×, "
          f"busy {best['added_busy'] / wg_busy:.2f}× ({best['mode']} mode)")
    first = results[0]
    print(f"overlay facts: tun mtu {first['tun_mtu']}, offloads {first['offloads']}, chunk {first['chunk']} B, "
          f"drops on a {first['drops']}")


if __name__ == "__main__":
    main()
