"""A snapshot of what a lab could leave behind on the machine, to compare before and after."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

from agent.lab import procs, registry
from agent.lab.layout import CGROUP_PREFIX, lab_root

DAEMONS = ("dockerd", "containerd", "containerd-shim", "-m agent agent", "-m overlay.worker", "docker-registry")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    netns: frozenset[str]
    links: frozenset[str]
    processes: frozenset[str]
    mounts: frozenset[str]
    cgroups: frozenset[str]
    certs_d: frozenset[str]  # registries the machine's dockerds trust (`lab up --registry` adds one)
    lab_root_exists: bool


def _live_daemons() -> frozenset[str]:
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or procs.state(int(entry.name)) in ("zombie", "gone"):
            continue
        line = " ".join(procs.cmdline(int(entry.name)))
        if any(d in line for d in DAEMONS):
            found.add(f"{entry.name}: {line[:120]}")
    return frozenset(found)


def snapshot() -> Snapshot:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines()
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    return Snapshot(
        netns=frozenset(line.split()[0] for line in netns if line.strip()),
        links=frozenset(line.split(":")[1].strip().split("@")[0] for line in links),
        processes=_live_daemons(),
        mounts=frozenset(m.split()[4] for m in mounts if "corral" in m or "/docker" in m),
        cgroups=frozenset(str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{CGROUP_PREFIX}*")),
        certs_d=frozenset(p.name for p in registry.CERTS_D.glob("*")),
        lab_root_exists=lab_root().exists(),
    )
