"""A real 3-host lab: agents answer over the underlay, engines run the base image, faults bite.

Every check goes through what a user has: the `corral` command, HTTP to the agents from the root
namespace, and `docker`/busybox run inside a host's namespace with `corral lab exec`.
"""

from __future__ import annotations

import json
import re
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest

from agent.lab import Lab, procs
from mesh.waiting import until
from tests.cli import corral
from tests.lab.cluster import tls, token_header


def get_json(url: str, timeout: float = 2.0, context: ssl.SSLContext | None = None) -> dict[str, Any]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=token_header()), timeout=timeout,
                                context=context or tls()) as resp:
        body: dict[str, Any] = json.loads(resp.read())
        return body


def answers(url: str, timeout: float = 1.0, context: ssl.SSLContext | None = None) -> bool:
    try:
        get_json(url, timeout, context)
    except (OSError, urllib.error.URLError, TimeoutError):
        return False
    return True


def lab_exec(host: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return corral("lab", "exec", host, "--", *cmd, timeout=timeout)


FETCH_HEALTH = """
import os, ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=os.environ["CORRAL_CACERT"])
print(urllib.request.urlopen(f"https://{sys.argv[1]}:8080/v1/health", timeout=3, context=ctx).read().decode())
"""


def reaches(src: str, dst_address: str) -> bool:
    """Can host ``src`` fetch the agent API at ``dst_address`` over the underlay (HTTPS, the lab's CA)?
    (Busybox's wget cannot: its TLS client has no ECDSA.)"""
    done = lab_exec(src, "timeout", "5", sys.executable, "-c", FETCH_HEALTH, dst_address)
    return done.returncode == 0 and '"status": "ok"' in done.stdout


def test_every_agent_answers_over_its_underlay_address(lab3: Lab) -> None:
    for host in lab3.hosts():
        health = get_json(host.api_url + "/v1/health")
        assert health["status"] == "ok"
        assert health["node"] == host.name
        assert health["docker"]["version"], health
        assert health["uptime_s"] >= 0
        info = get_json(host.api_url + "/v1/host")
        assert info["name"] == host.name
        assert info["address"] == host.address
        assert info["cpus"] >= 1 and info["memory"]["total"] > 0
        assert info["docker"]["DockerRootDir"] == str(host.docker_data)


def test_api_errors_are_json(lab3: Lab) -> None:
    url = lab3.hosts()[0].api_url
    for method, path, status, code in (("GET", "/v1/nope", 404, "not_found"), ("POST", "/v1/health", 405,
                                                                               "method_not_allowed")):
        req = urllib.request.Request(url + path, method=method)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=2, context=tls())
        assert err.value.code == status
        body = json.loads(err.value.read())
        assert body["error"] == code and path in body["message"]


def test_each_engine_runs_a_container_from_the_base_image(lab3: Lab) -> None:
    for host in lab3.hosts():
        done = lab_exec(host.name, "docker", "run", "--rm", "corral/base", "sh", "-c", "echo corral-$((6*7))")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "corral-42"


def test_engines_are_separate(lab3: Lab) -> None:
    made = lab_exec("h1", "docker", "create", "--name", "only-on-h1", "corral/base", "true")
    assert made.returncode == 0, made.stderr
    try:
        names = {h: lab_exec(h, "docker", "ps", "-a", "--format", "{{.Names}}").stdout.split() for h in ("h1", "h2")}
        assert "only-on-h1" in names["h1"]
        assert "only-on-h1" not in names["h2"]
    finally:
        lab_exec("h1", "docker", "rm", "-f", "only-on-h1")


def test_hosts_reach_each_other_on_the_underlay(lab3: Lab) -> None:
    h1, h2, h3 = lab3.hosts()
    assert reaches("h1", h2.address)
    assert reaches("h3", h1.address)
    done = lab_exec("h2", "docker", "run", "--rm", "corral/base", "sh", "-c",
                    f"echo | timeout 3 nc {h3.address} 8080 && echo connected")
    assert done.returncode == 0 and "connected" in done.stdout, "a container reaches another host's agent"


def test_partition_cuts_the_underlay_between_groups_and_heal_restores_it(lab3: Lab) -> None:
    h1, _, h3 = lab3.hosts()
    done = corral("lab", "partition", "h1")
    assert done.returncode == 0, done.stderr
    assert "h1 | h2,h3" in done.stdout
    try:
        assert not reaches("h2", h1.address)
        assert not reaches("h1", h3.address)
        assert reaches("h2", h3.address), "hosts on the same side still talk"
        assert answers(h1.api_url + "/v1/health"), "the root namespace still reaches a cut host"
        rows = {r["host"]: r for r in lab3.status()}
        assert rows["h1"]["partition_group"] != rows["h2"]["partition_group"] == rows["h3"]["partition_group"]
    finally:
        healed = corral("lab", "heal")
    assert healed.returncode == 0, healed.stderr
    assert reaches("h2", h1.address) and reaches("h1", h3.address)


def test_degrade_drops_packets_with_the_statistic_match(lab3: Lab) -> None:
    h2 = lab3.hosts()[1]
    assert corral("lab", "degrade", "h2", "--loss", "100").returncode == 0
    try:
        assert not reaches("h1", h2.address)
        assert corral("lab", "degrade", "h2", "--loss", "30%").returncode == 0
        rules = lab_exec("h2", "iptables", "-t", "mangle", "-S").stdout
        probabilities = [float(p) for p in re.findall(r"--probability ([0-9.]+)", rules)]
        assert probabilities == pytest.approx([0.3, 0.3], abs=1e-6), rules  # inbound and outbound
        assert {r["host"]: r["loss_percent"] for r in lab3.status()}["h2"] == 30
    finally:
        assert corral("lab", "degrade", "h2", "--loss", "0").returncode == 0
    assert "statistic" not in lab_exec("h2", "iptables", "-t", "mangle", "-S").stdout
    assert reaches("h1", h2.address)
    bad = corral("lab", "degrade", "h2", "--loss", "150")
    assert bad.returncode == 1 and "from 0 to 100" in bad.stderr


def test_kill_agent_and_start_agent(lab3: Lab) -> None:
    h3 = lab3.hosts()[2]
    assert corral("lab", "kill-agent", "h3").returncode == 0
    assert not answers(h3.api_url + "/v1/health")
    row = {r["host"]: r for r in lab3.status()}["h3"]
    assert row["agent"] == "dead" and row["dockerd"] == "running"
    again = corral("lab", "kill-agent", "h3")
    assert again.returncode == 1 and "not running" in again.stderr
    assert corral("lab", "start-agent", "h3").returncode == 0
    assert get_json(h3.api_url + "/v1/health")["status"] == "ok"
    twice = corral("lab", "start-agent", "h3")
    assert twice.returncode == 1 and "already running" in twice.stderr


def test_pause_starves_the_agent_and_resume_wakes_it(lab3: Lab) -> None:
    h2 = lab3.hosts()[1]
    assert corral("lab", "pause", "h2").returncode == 0
    try:
        assert not answers(h2.api_url + "/v1/health", timeout=1.0)
        assert {r["host"]: r["agent"] for r in lab3.status()}["h2"] == "paused"
    finally:
        assert corral("lab", "resume", "h2").returncode == 0
    assert answers(h2.api_url + "/v1/health", timeout=2.0)


def test_stop_host_powers_it_off_and_start_host_brings_it_back(lab3: Lab) -> None:
    h3 = lab3.hosts()[2]
    run = lab_exec("h3", "docker", "run", "-d", "--name", "survivor", "--restart", "always", "corral/base",
                   "sleep", "3600")
    assert run.returncode == 0, run.stderr
    assert corral("lab", "stop-host", "h3").returncode == 0
    row = {r["host"]: r for r in lab3.status()}["h3"]
    assert (row["agent"], row["dockerd"], row["link"]) == ("dead", "dead", "down")
    assert procs.pids_in_netns(h3.netns_path) == []
    assert procs.pids_in_cgroup(h3.cgroup_parent) == set(), "the host's containers died with it"
    assert not reaches("h1", h3.address)
    assert corral("lab", "start-host", "h3", timeout=120).returncode == 0
    assert get_json(h3.api_url + "/v1/health")["status"] == "ok"
    assert reaches("h1", h3.address)
    until("the user's container survives",
          lambda: "survivor" in lab_exec("h3", "docker", "ps", "--format", "{{.Names}}").stdout, 20,
               "dockerd restarts a --restart always container after power-on")
    lab_exec("h3", "docker", "rm", "-f", "survivor")


def test_lab_exec_points_docker_and_corral_at_the_host(lab3: Lab) -> None:
    h2 = lab3.hosts()[1]
    done = lab_exec("h2", "sh", "-c", "echo $DOCKER_HOST $CORRAL_URL")
    assert done.stdout.split() == [h2.docker_host, h2.api_url]


def test_bad_input_against_a_running_lab(lab3: Lab) -> None:
    unknown = corral("lab", "kill-agent", "h9")
    assert unknown.returncode == 1
    assert "no host 'h9' in the lab (hosts: h1, h2, h3)" in unknown.stderr
    second = corral("lab", "up")
    assert second.returncode == 1 and "a lab is already up" in second.stderr
    assert len(lab3.status()) == 3, "a refused second up leaves the lab as it was"
    overlap = corral("lab", "partition", "h1", "h1,h2")
    assert overlap.returncode == 1 and "named in two groups" in overlap.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_agent_stops_cleanly_on_a_signal(lab3: Lab, sig: signal.Signals, tmp_path: Any) -> None:
    """A second agent in h1's namespace (another port and data dir, the same engine)."""
    h1 = lab3.hosts()[0]
    proc = subprocess.Popen(
        ["nsenter", f"--net={h1.netns_path}", sys.executable, "-m", "agent", "agent", "--bind", h1.address,
         "--api-port", "8181", "--gossip-port", "17946", "--raft-port", "17947", "--image-port", "17948",
         "--no-overlay",
         "--name", "extra", "--data-dir", str(tmp_path / "d"), "--docker-host", h1.docker_host, "--bootstrap"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,  # a cluster of its own: it joins nobody
    )
    try:
        # its own cluster's CA, which the lab does not know: liveness only, unverified
        until("the extra agent answers", lambda: answers(f"https://{h1.address}:8181/v1/health",
                                                         context=ssl._create_unverified_context()), 20)
        locked = corral("agent", "--bind", h1.address, "--data-dir", str(tmp_path / "d"), "--bootstrap", timeout=30)
        assert locked.returncode == 2 and "is in use by agent pid" in locked.stderr
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert f"{sig.name} received: shutting down" in err and "agent extra stopped" in err
