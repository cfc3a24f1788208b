"""The data path in its own process: ``python -m overlay.worker --tun-fd N --udp-fd M --ctl-fd K``.

Started by ``OverlayService`` in ``process`` mode with the TUN and UDP fds it opened inherited, so
the worker needs no privileges of its own. Control is JSON over a SOCK_SEQPACKET socketpair:

* parent → worker: ``init`` (keys, subnet, TUN facts; must come first), ``set_peers``, ``stop``;
* worker → parent: ``status`` snapshots, pushed every ``SNAPSHOT_EVERY`` seconds and after each command.

The worker exits on ``stop`` or SIGTERM. When the control socket closes because the agent died
(SIGKILL, a crash), it keeps forwarding with the sessions it has, so containers on this host stay
reachable while the agent is down; the next agent finds it by the pid file its service wrote and
replaces it (``OverlayService.start``). With ``"outlive_parent": false`` in ``init`` it exits
instead and asks the kernel for SIGTERM when its parent dies (the older behaviour, for tests).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import random
import signal
import socket
import time
from ipaddress import IPv4Network
from typing import Any

from overlay.config import OverlayConfig
from overlay.datapath import Datapath, DatapathConfig, PeerRoute
from overlay.driver import run_blocking
from overlay.session import OverlaySession
from overlay.tun import Tun

SNAPSHOT_EVERY = 0.5
PR_SET_PDEATHSIG = 1


def peers_to_wire(peers: list[PeerRoute]) -> list[dict[str, Any]]:
    return [{"id": p.peer_id, "subnet": str(p.subnet), "addr": list(p.addr), "key": p.public_key.hex()} for p in peers]


def peers_from_wire(items: list[dict[str, Any]]) -> list[PeerRoute]:
    return [PeerRoute(d["id"], IPv4Network(d["subnet"]), (d["addr"][0], int(d["addr"][1])), bytes.fromhex(d["key"]))
            for d in items]


def build_datapath(init: dict[str, Any], tun: Tun, sock: socket.socket) -> Datapath:
    """The engine from an ``init`` message (shared by the worker and the in-process modes' tests)."""
    cfg = OverlayConfig(**init.get("session_config", {}))
    now = time.monotonic()
    session = OverlaySession(cfg, bytes.fromhex(init["private_key"]), bytes.fromhex(init["cluster_secret"]),
                             rand_bytes=os.urandom, rng=random.Random(), wall_clock_offset=time.time() - now)
    return Datapath(session, tun, sock, IPv4Network(init["subnet"]), DatapathConfig(**init.get("datapath_config", {})))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tun-fd", type=int, required=True)
    ap.add_argument("--udp-fd", type=int, required=True)
    ap.add_argument("--ctl-fd", type=int, required=True)
    ap.add_argument("--tun-name", default="", help="the TUN's name: lets a later agent find this worker")
    args = ap.parse_args(argv)
    ctl = socket.socket(fileno=args.ctl_fd)
    sock = socket.socket(fileno=args.udp_fd)
    sock.setblocking(False)
    init = json.loads(ctl.recv(1 << 20))
    if init.get("op") != "init":
        raise SystemExit("first control message must be init")
    outlive = bool(init.get("outlive_parent", True))
    if not outlive:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    orphan = [False]
    quiet_r, _quiet_w = os.pipe()  # never readable (write end kept open): stands in for the gone control fd
    t = init["tun"]
    os.set_blocking(args.tun_fd, False)
    tun = Tun(args.tun_fd, t["name"], t["vnet_hdr"], t["offloads"], t["multi_queue"])
    dp = build_datapath(init, tun, sock)
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    last = [0.0]

    def orphaned() -> None:
        """The agent is gone: keep forwarding, stop talking to it, wait for its successor's SIGTERM."""
        orphan[0] = True
        os.dup2(quiet_r, ctl.fileno())

    def publish(now: float, force: bool = False) -> None:
        if orphan[0]:
            return
        if force or now - last[0] >= SNAPSHOT_EVERY:
            last[0] = now
            try:
                ctl.send(json.dumps({"op": "status", "status": dp.status()}).encode())
            except OSError:
                if outlive:
                    orphaned()
                else:
                    stop[0] = True

    def on_ctl() -> None:
        try:
            raw = ctl.recv(1 << 20)
        except OSError:
            raw = b""
        if not raw:
            if outlive:
                orphaned()
            else:
                stop[0] = True
            return
        msg = json.loads(raw)
        if msg["op"] == "set_peers":
            dp.set_peers(peers_from_wire(msg["peers"]))
        elif msg["op"] == "stop":
            stop[0] = True
        publish(time.monotonic(), force=True)

    run_blocking(dp, {ctl.fileno(): on_ctl}, lambda: stop[0], publish, dp.cfg.spin_us)


if __name__ == "__main__":
    main()
