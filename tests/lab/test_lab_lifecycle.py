"""`lab down` leaves the machine as it was: after a full up, after agents died, after a killed up."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from agent.lab import Lab, registry
from agent.lab.layout import DEFAULT_SUBNET, NETNS_PREFIX, bridge_address, host_specs, lab_root
from tests.cli import corral
from tests.lab.machine import snapshot


@pytest.fixture
def no_lab() -> None:
    lab = Lab()
    if lab.leftovers():
        lab.down()


def test_up_five_hosts_then_down_leaves_nothing_behind(no_lab: None) -> None:
    before = snapshot()
    up = corral("lab", "up", "--hosts", "5", timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        hosts = host_specs(5, DEFAULT_SUBNET, lab_root())
        for host in (hosts[0], hosts[4]):
            assert f"│ {host.name}" in up.stdout and host.address in up.stdout, up.stdout
        assert "agent answering" in up.stdout, "progress is shown while it works"
        during = snapshot()
        assert {h.netns for h in hosts} <= during.netns
        for host in ("h2", "h4"):
            ran = corral("lab", "exec", host, "--", "docker", "run", "-d", "corral/base", "httpd", "-f", "-p", "80")
            assert ran.returncode == 0, ran.stderr
        assert corral("lab", "kill-agent", "h2").returncode == 0, "down copes with agents already dead"
        assert corral("lab", "pause", "h3").returncode == 0, "and with paused ones"
        assert snapshot().mounts - before.mounts, "running containers have mounts for down to remove"
    finally:
        down = corral("lab", "down", timeout=120)
    assert down.returncode == 0, down.stderr
    after = snapshot()
    assert after == before
    again = corral("lab", "down")
    assert again.returncode == 0 and "nothing to remove" in again.stdout


def test_down_cleans_up_after_an_up_that_was_killed_halfway(no_lab: None) -> None:
    before = snapshot()
    up = subprocess.Popen([sys.executable, "-m", "agent", "lab", "up", "--hosts", "3"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        ours = f"dockerd --data-root {lab_root()}"  # not another lab's dockerd (a benchmark's, say)
        while time.monotonic() < deadline and ours not in " ".join(snapshot().processes):
            time.sleep(0.05)
        assert ours in " ".join(snapshot().processes), "up got as far as starting dockerds"
    finally:
        up.send_signal(signal.SIGKILL)
        up.wait()
    assert lab_root().exists() and Lab().leftovers(), "a killed up leaves things behind"
    down = corral("lab", "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert snapshot() == before


def test_down_finds_the_daemons_of_a_host_whose_namespace_was_deleted(no_lab: None) -> None:
    before = snapshot()
    up = corral("lab", "up", "--hosts", "2", timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        subprocess.run(["ip", "netns", "del", NETNS_PREFIX + "h2"], check=True)  # its daemons run on, unnamed
        during = snapshot()
        assert NETNS_PREFIX + "h2" not in during.netns
        h2 = f"{lab_root()}/hosts/h2/"
        assert any(h2 in p and "dockerd" in p for p in during.processes), "h2's dockerd still runs"
        assert any("overlay.worker" in p for p in during.processes - before.processes), "so do the overlay workers"
    finally:
        down = corral("lab", "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert snapshot() == before


def test_interrupted_up_takes_itself_down(no_lab: None) -> None:
    before = snapshot()
    up = subprocess.Popen([sys.executable, "-m", "agent", "lab", "up", "--hosts", "2"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and NETNS_PREFIX + "h2" not in snapshot().netns:
        time.sleep(0.02)
    up.send_signal(signal.SIGINT)
    _, err = up.communicate(timeout=120)
    if up.returncode == 0:  # it finished before the signal landed: nothing to test this time
        corral("lab", "down")
        pytest.skip("lab up finished before SIGINT arrived")
    assert up.returncode == 1
    assert "interrupted" in err and "Traceback" not in err
    assert snapshot() == before


def test_up_with_a_registry_then_down_leaves_nothing_behind(no_lab: None) -> None:
    before = snapshot()
    address = f"{bridge_address(DEFAULT_SUBNET)[0]}:{registry.PORT}"
    up = corral("lab", "up", "--hosts", "2", "--registry", timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        assert f"registry: https://{address} (running" in up.stdout, up.stdout
        assert f"base image pushed as {address}/corral/base:latest" in up.stdout
        during = snapshot()
        assert address in during.certs_d
        assert any("docker-registry serve" in p for p in during.processes - before.processes)
        again = corral("lab", "up", "--hosts", "2", "--registry")
        assert again.returncode == 1 and "a lab is already up" in again.stderr
    finally:
        down = corral("lab", "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert snapshot() == before
