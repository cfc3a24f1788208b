"""`lab down` finds a lab host's daemons after the host's namespace lost its name (``ip netns del``)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.lab import procs
from agent.lab.lab import _kill_lost_namespaces

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (unshare --net)")


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _spawn(argv: list[str]) -> tuple[subprocess.Popen[bytes], set[int]]:
    """Start ``argv``; returns it and the pids of it and its sleeping child once both run."""
    proc = subprocess.Popen(argv)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kids = _children(proc.pid)
        inner = {k for kid in kids for k in _children(kid)} | kids
        sleepers = {p for p in inner if procs.cmdline(p)[:1] == ["sleep"]}
        if sleepers:
            return proc, {p for p in inner | {proc.pid} if procs.alive(p)}
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"{argv} did not start its sleep")


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs_: list[subprocess.Popen[bytes]] = []
    yield procs_
    for p in procs_:
        p.kill()
        p.wait()


def test_processes_of_an_unnamed_namespace_naming_the_lab_root_are_found_and_killed(
        tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    root = tmp_path / "lab"
    # a lost lab host: a daemon naming a path under the root, and a process that names nothing
    # (the overlay worker) in the same namespace, which has no name under /var/run/netns
    lost, lost_pids = _spawn(["unshare", "--net", "--fork", "sh", "-c", "sleep 300 & exec sh -c 'sleep 301; :' x",
                              f"{root}/hosts/h1/docker"])
    # not the lab's: our own namespace, even naming the root (someone's `tail -f` of a log) …
    ours, ours_pids = _spawn(["sh", "-c", "sleep 302; :", f"{root}/hosts/h1/agent.log"])
    # … another namespace naming nothing under the root, and one naming another lab's root
    other, other_pids = _spawn(["unshare", "--net", "--fork", "sh", "-c", "sleep 303; :"])
    near, near_pids = _spawn(["unshare", "--net", "--fork", "sh", "-c", "sleep 304; :", f"{root}2/hosts/h1"])
    started += [lost, ours, other, near]
    in_lost_ns = {p for p in lost_pids if procs.netns_id(p) != procs.netns_id(os.getpid())}
    assert len(in_lost_ns) >= 2, "the daemon and its neighbour both run in the unnamed namespace"

    found = procs.lost_namespace_pids(root)
    assert found == in_lost_ns

    assert _kill_lost_namespaces(root) == len(in_lost_ns)
    assert not any(procs.alive(p) for p in in_lost_ns)
    assert all(procs.alive(p) for p in ours_pids | other_pids | near_pids), "nothing else was touched"
    assert procs.lost_namespace_pids(root) == set()
