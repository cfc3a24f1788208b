"""The overlay inside the running cluster: containers on different hosts talk over 10.42 addresses.

ICMP, TCP and UDP between containers on three hosts; what crosses the underlay is ciphertext (a
known payload never appears in a capture of the hosts' links); an agent restart re-establishes its
sessions while the other hosts' sessions stay up; /v1/overlay reports every peer.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent.lab import Lab
from tests.lab.cluster import api, lab_sh, service_running, until
from tests.lab.conftest import fresh_lab

HOSTS = ["h1", "h2", "h3"]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from fresh_lab(3)


@pytest.fixture(scope="module")
def pods(lab: Lab) -> dict[str, dict[str, Any]]:
    """One running container per host: host → container (name, ip)."""
    api(lab, "h1").post("/v1/stacks", {"name": "net"})
    made = api(lab, "h1").post("/v1/services", {
        "stack": "net", "name": "echo", "image": "corral/base", "scale": 3,
        "command": "mkdir -p /w && echo $CORRAL_CONTAINER > /w/index.html && exec httpd -f -p 80 -h /w",
        "placement": {"one_per_host": True}})
    items = until("3 running", lambda: service_running(lab, "h1", made["id"], 3), timeout=60)
    return {c["host"]: c for c in items}


def dexec(lab: Lab, host: str, container: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    argv, env = lab.exec_argv(host, ["docker", "exec", container, "sh", "-c", command])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def test_every_peer_is_up_in_the_api(lab: Lab, pods: dict[str, dict[str, Any]]) -> None:
    for host in HOSTS:
        body = until(f"{host}: both peers up and measured", lambda h=host: (lambda b: b if all(
            p["state"] == "up" and p["rtt_ms"] is not None for p in b.get("peers", {}).values())
            and len(b.get("peers", {})) == 2 else None)(api(lab, h).get("/v1/overlay")), timeout=30)
        assert body["subnet"] == api(lab, host).get(f"/v1/hosts/{host}")["subnet"]
        for peer in body["peers"].values():
            assert peer["rtt_ms"] is not None and peer["rtt_ms"] > 0


def test_icmp_tcp_and_udp_between_containers_on_different_hosts(lab: Lab, pods: dict[str, dict[str, Any]]) -> None:
    for src in HOSTS:
        for dst in HOSTS:
            if src == dst:
                continue
            target = pods[dst]
            ping = dexec(lab, src, pods[src]["name"], f"ping -c 2 -W 2 {target['ip']}")
            assert ping.returncode == 0, (src, dst, ping.stdout, ping.stderr)
            page = dexec(lab, src, pods[src]["name"], f"timeout 5 wget -qO- http://{target['ip']}/")
            assert page.stdout.strip() == target["name"], (src, dst, page)
    # UDP: busybox has no UDP listener, so the receiver is Python in the h3 container's own network
    # namespace; the sender is busybox tftp inside the h1 container (its request is one datagram).
    argv, env = lab.exec_argv("h3", ["docker", "inspect", "-f", "{{.State.Pid}}", pods["h3"]["name"]])
    pid = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    receiver = subprocess.Popen(
        ["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c",
         "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 9999)); "
         "s.settimeout(20); data, peer = s.recvfrom(2048); print(peer[0], data)"],
        stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        for _ in range(5):
            dexec(lab, "h1", pods["h1"]["name"], f"timeout 2 tftp -g -r udp-over-overlay {pods['h3']['ip']} 9999")
            if receiver.poll() is not None:
                break
        out, _ = receiver.communicate(timeout=25)
    finally:
        receiver.kill()
    assert "udp-over-overlay" in out, out
    assert out.split()[0] == pods["h1"]["ip"], f"source address rewritten on the way: {out}"


def _capture(lab: Lab, seconds: float, out: list[bytes]) -> None:
    socks = []
    for spec in lab.hosts():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.bind((spec.veth, 0))
        s.settimeout(0.1)
        socks.append(s)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for s in socks:
                with contextlib.suppress(TimeoutError):
                    out.append(s.recv(65535))
    finally:
        for s in socks:
            s.close()


def test_the_underlay_carries_only_ciphertext(lab: Lab, pods: dict[str, dict[str, Any]]) -> None:
    marker = "CORRAL-PLAINTEXT-" + os.urandom(8).hex()
    assert dexec(lab, "h2", pods["h2"]["name"], f"echo {marker} > /w/secret.txt").returncode == 0
    frames: list[bytes] = []
    capture = threading.Thread(target=_capture, args=(lab, 4.0, frames))
    capture.start()
    time.sleep(0.5)
    for _ in range(5):
        page = dexec(lab, "h1", pods["h1"]["name"], f"timeout 5 wget -qO- http://{pods['h2']['ip']}/secret.txt")
        assert page.stdout.strip() == marker
    capture.join()
    overlay_frames = [f for f in frames if f[12:14] == b"\x08\x00" and f[23] == 17
                      and struct.unpack(">H", f[14 + (f[14] & 0x0F) * 4 + 2:][:2])[0] == 4500]
    assert len(overlay_frames) >= 10, "no overlay traffic captured: the check would prove nothing"
    assert not any(marker.encode() in f for f in frames), "the payload crossed the underlay in plaintext"


def test_an_agent_restart_re_establishes_its_sessions_and_others_keep_theirs(
        lab: Lab, pods: dict[str, dict[str, Any]]) -> None:
    before = api(lab, "h1").get("/v1/overlay")["peers"]["h2"]
    lab.kill_agent("h3")
    lab.start_agent("h3")
    until("h3's two peers up again", lambda: (lambda peers: len(peers) == 2 and all(
        p["state"] == "up" for p in peers.values()))(api(lab, "h3").get("/v1/overlay").get("peers", {})), timeout=30)
    until("h1 reaches h3's container again", lambda: dexec(
        lab, "h1", pods["h1"]["name"], f"ping -c 1 -W 1 {pods['h3']['ip']}").returncode == 0, timeout=15)
    after = api(lab, "h1").get("/v1/overlay")["peers"]["h2"]
    assert after["state"] == "up"
    assert after["handshakes"] == before["handshakes"], "h1-h2 re-handshook because h3 restarted"
    page = lab_sh(lab, "h2", f"timeout 3 wget -qO- http://{pods['h2']['ip']}/")
    assert page.stdout.strip() == pods["h2"]["name"]


def test_an_agent_whose_data_dir_was_wiped_replaces_the_old_worker_and_rejoins_the_overlay(
        lab: Lab, pods: dict[str, dict[str, Any]]) -> None:
    """The worker outlives a killed agent; with the data dir (and its pid file) gone, the next agent
    still finds it (same network namespace, same TUN) and replaces it, instead of failing on a busy TUN."""
    import shutil

    def workers() -> list[int]:
        """overlay.worker processes in h3's network namespace (pids are not namespaced here)."""
        ns = os.stat(lab.host("h3").netns_path).st_ino
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"overlay.worker" in f.read() and os.stat(f"/proc/{pid}/ns/net").st_ino == ns:
                    found.append(int(pid))
        return found

    lab.kill_agent("h3")
    old = workers()
    assert old, "no data path worker outlived the killed agent"
    shutil.rmtree(lab.host("h3").agent_data)
    lab.start_agent("h3")
    body = until("h3's overlay up with both peers", lambda: (lambda b: b if len(b.get("peers", {})) == 2 and all(
        p["state"] == "up" for p in b["peers"].values()) else None)(api(lab, "h3").get("/v1/overlay")), timeout=60)
    assert "error" not in body or not body["error"]
    now = workers()
    assert len(now) == 1 and now[0] not in old, f"workers before {old}, after {now}"
    until("h1 reaches h3's container over the overlay", lambda: dexec(
        lab, "h1", pods["h1"]["name"], f"ping -c 1 -W 1 {pods['h3']['ip']}").returncode == 0, timeout=30)
