"""Each lab host's daemons in one CPU group of equal weight, as separate machines would have their own CPUs.

The lab starts every daemon (each host's dockerd with its containerd, each agent) in a session of its
own, and with ``kernel.sched_autogroup_enabled`` the kernel shares the CPUs between sessions: a host
whose agent works hard (a relay of the image tree) gets what an idle agent gets, whatever its engine
does. A fleet's hosts have CPUs each, shared by their own agent and engine only. With ``--host-cpu``
``bench.images`` moves each host's daemons (every process in the host's network namespace: its dockerd,
containerd and agent; containers have namespaces of their own) into a cgroup of its own (``cpu``
controller, v1 or v2, the same weight each; the registry and the benchmark's own processes stay where
they are), and back after.
New children (the engine's ``docker-untar``, the shims) are born in their parent's group. Containers
stay in the engine's cgroups (idle in these runs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from agent.lab import Lab, procs

ROOT = Path("/sys/fs/cgroup")


def cpu_hierarchy() -> Path | None:
    """Where the ``cpu`` controller's groups are made: v1's ``cpu`` hierarchy or a v2 root that has it."""
    if (ROOT / "cpu" / "cgroup.procs").exists():
        return ROOT / "cpu"
    controllers = ROOT / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        with contextlib.suppress(OSError):  # v2: the children of the root get the controller
            (ROOT / "cgroup.subtree_control").write_text("+cpu")
        return ROOT
    return None


def _move(pid: int, group: Path) -> None:
    with contextlib.suppress(ProcessLookupError, FileNotFoundError):  # a process that just ended
        (group / "cgroup.procs").write_text(str(pid))


@contextlib.contextmanager
def host_cpu_groups(lab: Lab) -> Iterator[dict[str, int]]:
    """Each host's daemons in ``corral-lab-cpu-HOST``; yields host → processes moved. SystemExit with the
    reason when this machine has no ``cpu`` controller to make groups with."""
    top = cpu_hierarchy()
    if top is None:
        raise SystemExit("--host-cpu: this machine has no cgroup cpu controller (v1 or v2) to give each host a "
                         "CPU group")
    groups: list[Path] = []
    moved: dict[str, int] = {}
    try:
        for host in lab.hosts():
            group = top / f"corral-lab-cpu-{host.name}"
            group.mkdir(exist_ok=True)
            groups.append(group)
            pids = procs.pids_in_netns(host.netns_path)  # its dockerd, containerd and agent (containers have their own)
            for pid in pids:
                _move(pid, group)
            moved[host.name] = len(pids)
        yield moved
    finally:
        for group in groups:
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    _move(int(pid), top)
            with contextlib.suppress(OSError):
                group.rmdir()


__all__ = ["cpu_hierarchy", "host_cpu_groups"]
