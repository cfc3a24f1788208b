"""Network faults of the lab, as iptables rules inside each host's namespace.

Each host has two chains in its ``mangle`` table, rebuilt from the lab's recorded faults every time
they change (so applying is idempotent and repairs anything edited by hand):

- ``CORRAL-LAB-IN``  (from ``PREROUTING -i eth0``):  partition drops by source, inbound loss;
- ``CORRAL-LAB-OUT`` (from ``POSTROUTING -o eth0``): outbound loss.

A partition drops at the receiver, so a cut is silent as a real one is (a sender's ``sendto`` does not
fail). Loss uses the ``statistic`` match (this kernel has no ``tc netem``); it sees whole datagrams
after reassembly, not wire fragments. An outbound drop makes the sender's ``sendto`` fail with EPERM,
as a real firewall drop does. No delay: doing it honestly needs a userspace NFQUEUE holder, not built.
"""

from __future__ import annotations

import dataclasses
import subprocess

from agent.lab.layout import HOST_IFNAME, HostSpec

CHAIN_IN = "CORRAL-LAB-IN"
CHAIN_OUT = "CORRAL-LAB-OUT"
COMMENT = ["-m", "comment", "--comment", "corral-lab"]


class FaultError(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class HostFaults:
    """What one host suffers: sources it cannot hear (partition) and its loss, 0-100 %."""

    blocked_sources: tuple[str, ...] = ()
    loss_percent: float = 0.0


def iptables(host: HostSpec, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["nsenter", f"--net={host.netns_path}", "iptables", "-w", "5", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise FaultError(f"{host.name}: iptables {' '.join(args)}: {done.stderr.strip()}")
    return done


def ensure_chains(host: HostSpec) -> None:
    for chain, hook, flag in ((CHAIN_IN, "PREROUTING", "-i"), (CHAIN_OUT, "POSTROUTING", "-o")):
        if iptables(host, "-t", "mangle", "-nL", chain, check=False).returncode != 0:
            iptables(host, "-t", "mangle", "-N", chain)
        jump = [hook, flag, HOST_IFNAME, *COMMENT, "-j", chain]
        if iptables(host, "-t", "mangle", "-C", *jump, check=False).returncode != 0:
            iptables(host, "-t", "mangle", "-I", *jump)


def apply(host: HostSpec, faults: HostFaults) -> None:
    """Make the host's chains say exactly ``faults``."""
    ensure_chains(host)
    for chain in (CHAIN_IN, CHAIN_OUT):
        iptables(host, "-t", "mangle", "-F", chain)
    for source in faults.blocked_sources:
        iptables(host, "-t", "mangle", "-A", CHAIN_IN, "-s", source, *COMMENT, "-j", "DROP")
    if faults.loss_percent > 0:
        probability = f"{faults.loss_percent / 100:.6f}"
        for chain in (CHAIN_IN, CHAIN_OUT):
            iptables(
                host, "-t", "mangle", "-A", chain, "-m", "statistic", "--mode", "random",
                "--probability", probability, *COMMENT, "-j", "DROP",
            )


def partition_groups(names: list[str], groups: list[list[str]]) -> list[list[str]]:
    """Complete the groups: hosts named in no group form one more group. Reject overlaps."""
    seen: set[str] = set()
    for group in groups:
        for name in group:
            if name in seen:
                raise FaultError(f"host {name} is named in two groups")
            seen.add(name)
    rest = [n for n in names if n not in seen]
    full = [g for g in groups if g] + ([rest] if rest else [])
    if len(full) < 2:
        raise FaultError("a partition needs at least two groups of hosts")
    return full


def blocked_sources(groups: list[list[str]], addresses: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """For each host, the addresses of every host outside its group."""
    out: dict[str, tuple[str, ...]] = {}
    for group in groups:
        others = [addresses[n] for g in groups if g is not group for n in g]
        for name in group:
            out[name] = tuple(sorted(others))
    return out
