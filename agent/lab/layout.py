"""Where the lab puts things and what it names them, in one place so that ``down`` can find all of it.

Names are fixed (one lab per machine) and carry a ``corral``/``crl`` prefix, so that ``down`` can
also find what a crashed ``up`` made before it wrote any state.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path

NETNS_PREFIX = "corral-"
BRIDGE = "corral0"
VETH_PREFIX = "crl-"  # root side of each host's veth: crl-h1 (IFNAMSIZ is 16)
HOST_IFNAME = "eth0"  # the host side, inside its namespace
CGROUP_PREFIX = "corral-lab-"
DEFAULT_SUBNET = "10.77.0.0/24"  # the underlay: not 10.42/16 (overlay), not 172.17/16 (Docker)
HOST_OFFSET = 10  # h1 = .11, h2 = .12, …; .1 is the bridge in the root namespace
MAX_HOSTS = 32
API_PORT = 8080
BASE_IMAGE = "corral/base:latest"


def lab_root() -> Path:
    return Path(os.environ.get("CORRAL_LAB_ROOT", "/var/lib/corral-lab"))


@dataclasses.dataclass(frozen=True)
class HostSpec:
    """One lab host: a namespace, an address on the underlay, a dockerd and an agent."""

    name: str
    address: str
    root: Path

    @property
    def netns(self) -> str:
        return NETNS_PREFIX + self.name

    @property
    def netns_path(self) -> Path:
        return Path("/var/run/netns") / self.netns

    @property
    def veth(self) -> str:
        return VETH_PREFIX + self.name

    @property
    def cgroup_parent(self) -> str:
        return CGROUP_PREFIX + self.name

    @property
    def dir(self) -> Path:
        return self.root / "hosts" / self.name

    @property
    def docker_data(self) -> Path:
        return self.dir / "docker"

    @property
    def docker_exec(self) -> Path:
        return self.dir / "exec"

    @property
    def docker_sock(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.docker_sock}"

    @property
    def dockerd_pidfile(self) -> Path:
        return self.dir / "dockerd.pid"

    @property
    def dockerd_log(self) -> Path:
        return self.dir / "dockerd.log"

    @property
    def agent_data(self) -> Path:
        return self.dir / "agent"

    @property
    def agent_log(self) -> Path:
        return self.dir / "agent.log"

    @property
    def agent_pidfile(self) -> Path:
        return self.dir / "agent.pid"

    @property
    def api_url(self) -> str:
        return f"http://{self.address}:{API_PORT}"


def host_specs(count: int, subnet: str, root: Path) -> list[HostSpec]:
    net = ipaddress.ip_network(subnet)
    return [
        HostSpec(name=f"h{i}", address=str(net.network_address + HOST_OFFSET + i), root=root)
        for i in range(1, count + 1)
    ]


def bridge_address(subnet: str) -> tuple[str, int]:
    net = ipaddress.ip_network(subnet)
    return str(net.network_address + 1), net.prefixlen


def check_subnet(subnet: str, count: int) -> str | None:
    """Why this underlay cannot hold ``count`` hosts, or None when it can."""
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError as exc:
        return f"--subnet {subnet!r} is not a network: {exc}"
    if net.version != 4:
        return "--subnet must be an IPv4 network"
    if net.overlaps(ipaddress.ip_network("10.42.0.0/16")):
        return f"--subnet {subnet} overlaps the overlay's 10.42.0.0/16"
    if net.overlaps(ipaddress.ip_network("172.17.0.0/16")):
        return f"--subnet {subnet} overlaps Docker's default 172.17.0.0/16"
    if net.num_addresses < HOST_OFFSET + count + 2:
        return f"--subnet {subnet} is too small for {count} hosts"
    return None
