"""A throw-away overlay lab in network namespaces, without dockerd (lab tests and ``bench/overlay.py``).

Names stay clear of the agent lab's (``corral-hN``, ``corral0``, 10.77.0.0/24)::

    ovt-ul   bridge ovt-ul0: the underlay 10.78.0.0/24 (one veth per host)
    ovt-a    underlay 10.78.0.1 on "ul"; bridge ovt0 10.42.1.1/24; OverlayService (TUN "ovt-tun")
    ovt-ac   the "container": eth0 10.42.1.2/24 on ovt-a's ovt0, default route via 10.42.1.1
    ovt-b …  10.78.0.2, 10.42.2.0/24;  ovt-c … 10.78.0.3, 10.42.3.0/24

``OverlayLab.down()`` removes every namespace (and with them every veth, bridge and TUN) and stops
every service it started; it is safe to call twice or after a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from mesh.waiting import until

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNDERLAY_NS = "ovt-ul"
PREFIX = "ovt-"
TUN = "ovt-tun"
SECRET = b"ovt-lab cluster secret"


def sh(*args: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def netns_list() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@dataclass
class Node:
    name: str  # "a"
    index: int  # 1
    private_key: bytes = field(default_factory=lambda: os.urandom(32))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ns(self) -> str:
        return f"{PREFIX}{self.name}"

    @property
    def container_ns(self) -> str:
        return f"{PREFIX}{self.name}c"

    @property
    def underlay(self) -> str:
        return f"10.78.0.{self.index}"

    @property
    def subnet(self) -> str:
        return f"10.42.{self.index}.0/24"

    @property
    def container_ip(self) -> str:
        return f"10.42.{self.index}.2"

    @property
    def public_key(self) -> bytes:
        return X25519PrivateKey.from_private_bytes(self.private_key).public_key().public_bytes_raw()


class OverlayLab:
    def __init__(self, mode: str = "process", datapath: dict[str, Any] | None = None, agent_load: float = 0.0) -> None:
        self.dir = tempfile.mkdtemp(prefix="ovt-lab-")
        self.nodes: dict[str, Node] = {}
        self.mode = mode
        self.datapath = datapath or {}
        self.agent_load = agent_load

    # ------------------------------------------------------------------ topology
    def leftovers(self) -> list[str]:
        return [n for n in netns_list() if n.startswith(PREFIX)]

    def up_underlay(self) -> None:
        sh("ip", "netns", "add", UNDERLAY_NS)
        sh("ip", "link", "set", "lo", "up", ns=UNDERLAY_NS)
        sh("ip", "link", "add", "ovt-ul0", "type", "bridge", ns=UNDERLAY_NS)
        sh("ip", "link", "set", "ovt-ul0", "up", ns=UNDERLAY_NS)

    def add_host(self, name: str, index: int) -> Node:
        node = Node(name, index)
        ns, cns = node.ns, node.container_ns
        for n in (ns, cns):
            sh("ip", "netns", "add", n)
            sh("ip", "link", "set", "lo", "up", ns=n)
        port = f"ul-{name}"
        sh("ip", "link", "add", "ul", "netns", ns, "type", "veth", "peer", "name", port, "netns", UNDERLAY_NS)
        sh("ip", "link", "set", port, "master", "ovt-ul0", "up", ns=UNDERLAY_NS)
        sh("ip", "addr", "add", f"{node.underlay}/24", "dev", "ul", ns=ns)
        sh("ip", "link", "set", "ul", "up", ns=ns)
        sh("ip", "link", "add", "ovt0", "type", "bridge", ns=ns)
        sh("ip", "addr", "add", f"10.42.{index}.1/24", "dev", "ovt0", ns=ns)
        sh("ip", "link", "set", "ovt0", "up", ns=ns)
        sh("ip", "link", "add", "c0", "netns", ns, "type", "veth", "peer", "name", "eth0", "netns", cns)
        sh("ip", "link", "set", "c0", "master", "ovt0", "up", ns=ns)
        sh("ip", "addr", "add", f"{node.container_ip}/24", "dev", "eth0", ns=cns)
        sh("ip", "link", "set", "eth0", "up", ns=cns)
        sh("ip", "route", "add", "default", "via", f"10.42.{index}.1", ns=cns)
        self.nodes[name] = node
        return node

    def up(self, names: str = "abc") -> None:
        if self.leftovers():
            self.down()
        os.makedirs(self.dir, exist_ok=True)
        self.up_underlay()
        for i, name in enumerate(names, start=1):
            self.add_host(name, i)

    def down(self) -> None:
        for node in self.nodes.values():
            self.stop(node.name)
        for n in self.leftovers():
            for pid in sh("ip", "netns", "pids", n, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", n, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ services
    def _paths(self, name: str) -> tuple[str, str, str]:
        return (os.path.join(self.dir, f"{name}.json"), os.path.join(self.dir, f"{name}.peers.json"),
                os.path.join(self.dir, f"{name}.status.json"))

    def write_peers(self, names: str | None = None) -> None:
        """Every running node's peers file lists ``names`` (default: all nodes)."""
        chosen = [self.nodes[n] for n in (names or "".join(self.nodes))]
        peers = [{"name": n.name, "underlay": n.underlay, "subnet": n.subnet, "public_key": n.public_key.hex()}
                 for n in chosen]
        for node in self.nodes.values():
            _cfg, peers_file, _st = self._paths(node.name)
            tmp = peers_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump(peers, f)
            os.replace(tmp, peers_file)

    def start(self, name: str) -> None:
        node = self.nodes[name]
        cfg_file, peers_file, status_file = self._paths(name)
        if os.path.exists(status_file):
            os.unlink(status_file)
        cfg = {"host": name, "underlay": node.underlay, "subnet": node.subnet, "private_key": node.private_key.hex(),
               "cluster_secret": SECRET.hex(), "bridge": "ovt0", "port": 4500, "tun_name": TUN, "mode": self.mode,
               "peers_file": peers_file, "status_file": status_file, "datapath": self.datapath,
               "agent_load": self.agent_load}
        with open(cfg_file, "w") as f:
            json.dump(cfg, f)
        log = open(os.path.join(self.dir, f"{name}.log"), "ab")  # noqa: SIM115 - owned by the child
        node.proc = subprocess.Popen(["ip", "netns", "exec", node.ns, sys.executable, "-m", "overlay.runner", cfg_file,
                                      "--uvloop"], cwd=REPO, stdout=log, stderr=log)
        log.close()
        def started() -> bool:
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(f"service {name} exited:\n{self.log(name)[-3000:]}")
            return bool(self.status(name).get("tun_mtu"))

        until(f"service {name} to start", started, 15)

    def stop(self, name: str) -> None:
        node = self.nodes[name]
        if node.proc is None:
            return
        node.proc.send_signal(signal.SIGTERM)
        try:
            node.proc.wait(10)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()
        node.proc = None

    def status(self, name: str) -> dict[str, Any]:
        try:
            with open(self._paths(name)[2]) as f:
                data: dict[str, Any] = json.load(f)
                return data
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def peer_state(self, name: str, peer: str) -> str | None:
        p = self.status(name).get("peers", {}).get(peer)
        return None if p is None else str(p["state"])

    def wait_mesh_up(self, names: str, timeout: float = 15) -> None:
        def all_up() -> bool:
            return all(self.peer_state(a, b) == "up" for a in names for b in names if a != b)
        until(f"all tunnels among {names} up", all_up, timeout)

    def log(self, name: str) -> str:
        try:
            with open(os.path.join(self.dir, f"{name}.log")) as f:
                return f.read()
        except FileNotFoundError:
            return ""


def tool(ns: str, *args: str, timeout: float = 30) -> dict[str, Any]:
    """Run ``bench.overlay_tools`` in a namespace; its last JSON line."""
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "bench.overlay_tools", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=timeout)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"tool {args} in {ns} failed: {out.stdout} {out.stderr}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def tool_bg(ns: str, *args: str) -> subprocess.Popen[str]:
    """Start a tool in the background; returns once it printed its first (ready) line."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "bench.overlay_tools", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def tool_result(proc: subprocess.Popen[str], timeout: float = 30) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"background tool failed: {out} {err}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
