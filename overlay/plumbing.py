"""Host plumbing of the overlay: TUN link, the 10.42.0.0/16 route, forwarding, and iptables rules.

Blocking (pyroute2's sync API and ``iptables`` subprocesses): call it from a worker thread
(``asyncio.to_thread``) or before the event loop starts, never from the loop's own thread.

What it sets, all idempotent (``apply`` twice changes nothing), all checked and repaired by
``check`` (which returns what it had to fix), all removed by ``remove``:

* the TUN up, with its MTU from the underlay's (``OverlayConfig.tun_mtu``). Its ``gso_max_size`` is
  left at 64 KB on purpose: a forwarded super-segment longer than the TUN's limit is segmented to MTU
  packets by the kernel (containers' veths build ~65.2 KB ones), which costs far more than the data
  path cutting the rare oversize one in two (``overlay/segment.py``);
* ``10.42.0.0/16 dev <tun> src <gateway>``: the local /24 stays on the bridge (a longer prefix);
  host-originated packets get the gateway as source, an address the peers accept from us. Without a
  bridge, the gateway address is put on the TUN itself;
* ``net.ipv4.ip_forward = 1`` (restored on removal if it was 0);
* filter: ``-i <tun> -d 10.42.0.0/16 -j ACCEPT`` and ``-o <tun> -s 10.42.0.0/16 -j ACCEPT`` at the
  top of ``DOCKER-USER`` when Docker made it (its FORWARD rules would otherwise drop traffic from the
  TUN to the bridge), else of ``FORWARD``;
* nat: ``POSTROUTING -s 10.42.0.0/16 -d 10.42.0.0/16 -j RETURN`` ahead of any MASQUERADE, so
  containers see each other's real addresses.

Every rule carries the comment ``corral-overlay`` so that ``remove`` finds exactly its own.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from overlay.ipam import OVERLAY_NETWORK

COMMENT = "corral-overlay"
FORWARD_SYSCTL = "/proc/sys/net/ipv4/ip_forward"


@dataclass(frozen=True, slots=True)
class Rule:
    table: str
    chain: str
    spec: tuple[str, ...]

    def args(self) -> list[str]:
        return [*self.spec, "-m", "comment", "--comment", COMMENT]


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True, check=check)


def _chain_exists(table: str, chain: str) -> bool:
    return _iptables("-t", table, "-S", chain, check=False).returncode == 0


def underlay_mtu(address: str) -> int:
    """MTU of the interface that holds ``address`` (the advertised underlay address)."""
    with IPRoute() as ipr:
        for a in ipr.get_addr():
            if a.get_attr("IFA_ADDRESS") == address:
                link = ipr.get_links(a["index"])[0]
                return int(link.get_attr("IFLA_MTU"))
    raise LookupError(f"no interface has address {address}")


class HostPlumbing:
    """The routes, sysctls and rules that put one TUN into the host's network."""

    def __init__(self, tun: str, subnet: IPv4Network, bridge: str | None, mtu: int,
                 overlay: IPv4Network = OVERLAY_NETWORK) -> None:
        self.tun = tun
        self.subnet = subnet
        self.bridge = bridge
        self.mtu = mtu
        self.overlay = overlay
        self.gateway = IPv4Address(int(subnet.network_address) + 1)
        self._forwarding_was: str | None = None
        self._rules_seen: tuple[object, ...] | None = None

    # ------------------------------------------------------------------ desired state
    def rules(self) -> list[Rule]:
        chain = "DOCKER-USER" if _chain_exists("filter", "DOCKER-USER") else "FORWARD"
        net = str(self.overlay)
        return [
            Rule("filter", chain, ("-i", self.tun, "-d", net, "-j", "ACCEPT")),
            Rule("filter", chain, ("-o", self.tun, "-s", net, "-j", "ACCEPT")),
            Rule("nat", "POSTROUTING", ("-s", net, "-d", net, "-j", "RETURN")),
        ]

    def apply(self) -> list[str]:
        """Make everything as it should be; return what had to change (empty when nothing did)."""
        changed = self._apply_links()
        changed.extend(self._apply_rules())
        self._rules_seen = _rules_state()
        return changed

    def check(self) -> list[str]:
        """Report and repair drift (someone flushed a rule, deleted the route, Docker started late).

        The links, route and sysctl are read over netlink (no process); the rules with one
        ``iptables-save``, compared with what they were after the last repair: only when they differ
        are they checked and put right rule by rule (a process per rule).
        """
        changed = self._apply_links()
        state = _rules_state()
        if state != self._rules_seen:
            changed.extend(self._apply_rules())
            self._rules_seen = _rules_state()
        return changed

    def _apply_links(self) -> list[str]:
        changed: list[str] = []
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=self.tun)
            if not idx:
                raise LookupError(f"TUN {self.tun} does not exist")
            link = ipr.get_links(idx[0])[0]
            if link.get_attr("IFLA_MTU") != self.mtu or not link["flags"] & 1:
                ipr.link("set", index=idx[0], mtu=self.mtu, state="up")
                changed.append("link")
            if self.bridge is None:
                have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx[0])}
                if str(self.gateway) not in have:
                    ipr.addr("add", index=idx[0], address=str(self.gateway), prefixlen=32)
                    changed.append("address")
            if not self._route_ok(ipr, idx[0]):
                try:
                    ipr.route("replace", dst=str(self.overlay), oif=idx[0], prefsrc=str(self.gateway))
                    changed.append("route")
                except NetlinkError:  # the bridge (and its gateway address) is not there yet: route
                    # without a source now; check() puts the source in once the bridge exists
                    ipr.route("replace", dst=str(self.overlay), oif=idx[0])
                    changed.append("route (no source address yet)")
        if self._read_forwarding() != "1":
            if self._forwarding_was is None:
                self._forwarding_was = self._read_forwarding()
            with open(FORWARD_SYSCTL, "w") as f:
                f.write("1\n")
            changed.append("ip_forward")
        return changed

    def _route_ok(self, ipr: IPRoute, oif: int) -> bool:
        dst = str(self.overlay.network_address)
        for r in ipr.get_routes(family=2, table=254):
            if (r.get_attr("RTA_DST") == dst and r["dst_len"] == self.overlay.prefixlen
                    and r.get_attr("RTA_OIF") == oif and r.get_attr("RTA_PREFSRC") == str(self.gateway)):
                return True
        return False

    @staticmethod
    def _read_forwarding() -> str:
        with open(FORWARD_SYSCTL) as f:
            return f.read().strip()

    def _apply_rules(self) -> list[str]:
        changed: list[str] = []
        wanted = self.rules()
        for rule in wanted:
            if rule.table == "nat":
                if self._nat_rule_misplaced(rule):
                    while _iptables("-t", "nat", "-D", rule.chain, *rule.args(), check=False).returncode == 0:
                        pass
                    _iptables("-t", "nat", "-I", rule.chain, "1", *rule.args())
                    changed.append("nat POSTROUTING RETURN")
            elif _iptables("-t", rule.table, "-C", rule.chain, *rule.args(), check=False).returncode != 0:
                _iptables("-t", rule.table, "-I", rule.chain, "1", *rule.args())
                changed.append(f"{rule.table} {rule.chain} {' '.join(rule.spec)}")
        stale_chain = "FORWARD" if wanted[0].chain == "DOCKER-USER" else "DOCKER-USER"
        for rule in wanted[:2]:  # rules left in the other chain (Docker started after us)
            if _chain_exists("filter", stale_chain):
                while _iptables("-D", stale_chain, *rule.args(), check=False).returncode == 0:
                    changed.append(f"moved from {stale_chain}")
        return changed

    @staticmethod
    def _nat_rule_misplaced(rule: Rule) -> bool:
        lines = _iptables("-t", "nat", "-S", rule.chain).stdout.splitlines()[1:]  # [0] is the policy
        ours = [i for i, line in enumerate(lines) if COMMENT in line]
        masq = [i for i, line in enumerate(lines) if "MASQUERADE" in line or "SNAT" in line]
        return len(ours) != 1 or (bool(masq) and ours[0] > masq[0])

    # ------------------------------------------------------------------ teardown
    def remove(self) -> None:
        """Remove rules, route and address; restore forwarding if we turned it on. Never raises on absence."""
        for table in ("filter", "nat"):
            for line in _iptables("-t", table, "-S", check=False).stdout.splitlines():
                if COMMENT in line and line.startswith("-A "):
                    _iptables("-t", table, "-D", *_split_rule(line[3:]), check=False)
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=self.tun)
            if idx:
                with contextlib.suppress(Exception):  # already gone (the TUN closed before us)
                    ipr.route("del", dst=str(self.overlay), oif=idx[0])
        if self._forwarding_was is not None:
            with open(FORWARD_SYSCTL, "w") as f:
                f.write(self._forwarding_was + "\n")
            self._forwarding_was = None


def _rules_state() -> tuple[object, ...]:
    """What of the firewall the overlay's rules depend on, from one ``iptables-save``: our rules in
    order, table by table; in nat POSTROUTING, where ours stands against the first MASQUERADE/SNAT;
    and whether Docker's DOCKER-USER chain exists (the chain our filter rules belong in)."""
    done = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False)
    if done.returncode != 0:  # cannot tell: a state that matches nothing, so every check repairs
        return ("unreadable", object())
    table, ours, docker_user = "", [], False
    text = done.stdout
    postrouting: list[str] = []
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":DOCKER-USER ") and table == "filter":
            docker_user = True
        elif line.startswith("-A "):
            if COMMENT in line:
                ours.append((table, line))
            if table == "nat" and line.startswith("-A POSTROUTING "):
                postrouting.append("ours" if COMMENT in line else "masq" if "MASQUERADE" in line or "SNAT" in line
                                   else "other")
    order = tuple(k for k in postrouting if k != "other")
    return tuple(ours), order[:2], docker_user


def _split_rule(text: str) -> list[str]:
    return shlex.split(text)


__all__ = ["COMMENT", "HostPlumbing", "Rule", "underlay_mtu"]
