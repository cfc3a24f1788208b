"""The lab's network, through netlink (pyroute2): the underlay bridge and one veth per host.

Root namespace: bridge ``corral0`` holding the underlay's .1; each host's ``crl-hN`` veth is a port
of it. Host namespace ``corral-hN``: loopback up and the veth's peer renamed ``eth0`` with the host's
underlay address. No default route is added: lab hosts reach each other and the root namespace, and
nothing else.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

from agent.lab.layout import BRIDGE, HOST_IFNAME, NETNS_PREFIX, VETH_PREFIX, HostSpec

ENOENT_CODES = (2, 19)  # ENOENT, ENODEV


def ensure_bridge(address: str, prefixlen: int) -> None:
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=BRIDGE):
            ipr.link("add", ifname=BRIDGE, kind="bridge")
        index = ipr.link_lookup(ifname=BRIDGE)[0]
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index)}
        if address not in have:
            ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
        ipr.link("set", index=index, state="up")


def create_host(host: HostSpec, prefixlen: int) -> None:
    """Namespace, veth pair (root end on the bridge), eth0 addressed and up, loopback up."""
    if host.netns not in netns.listnetns():
        netns.create(host.netns)
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=host.veth):
            ipr.link("add", ifname=host.veth, kind="veth", peer={"ifname": host.veth + "p", "net_ns_fd": host.netns})
        bridge = ipr.link_lookup(ifname=BRIDGE)[0]
        veth = ipr.link_lookup(ifname=host.veth)[0]
        ipr.link("set", index=veth, master=bridge, state="up")
    with NetNS(host.netns) as ns:
        peer = ns.link_lookup(ifname=host.veth + "p")
        if peer:
            ns.link("set", index=peer[0], ifname=HOST_IFNAME)
        eth0 = ns.link_lookup(ifname=HOST_IFNAME)[0]
        have = {a.get_attr("IFA_ADDRESS") for a in ns.get_addr(index=eth0)}
        if host.address not in have:
            ns.addr("add", index=eth0, address=host.address, prefixlen=prefixlen)
        ns.link("set", index=eth0, state="up")
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")


def set_host_link(host: HostSpec, up: bool) -> None:
    """Both ends of the host's cable: what pulling it out (stop-host) and plugging it back means."""
    state = "up" if up else "down"
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=host.veth)
        if found:
            ipr.link("set", index=found[0], state=state)
    if Path(host.netns_path).exists():
        with NetNS(host.netns) as ns:
            found = ns.link_lookup(ifname=HOST_IFNAME)
            if found:
                ns.link("set", index=found[0], state=state)


def host_link_up(host: HostSpec) -> bool:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=host.veth)
        if not found:
            return False
        link = ipr.get_links(found[0])[0]
        return bool(link.get("state") == "up")


def lab_namespaces() -> list[str]:
    return sorted(n for n in netns.listnetns() if n.startswith(NETNS_PREFIX))


def lab_links() -> list[str]:
    """Root-namespace links the lab made (bridge and veths), found by name."""
    with IPRoute() as ipr:
        names = [link.get("ifname") for link in ipr.get_links()]
    return sorted(n for n in names if n == BRIDGE or n.startswith(VETH_PREFIX))


def remove_namespace(name: str) -> None:
    with contextlib.suppress(FileNotFoundError, OSError):
        netns.remove(name)


def remove_link(name: str) -> None:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if found:
            try:
                ipr.link("del", index=found[0])
            except NetlinkError as exc:
                if exc.code not in ENOENT_CODES:
                    raise
