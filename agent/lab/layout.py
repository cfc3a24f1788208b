"""Where the lab puts things and what it names them, in one place so that ``down`` can find all of it.

Names carry a ``corral``/``crl`` prefix, so that ``down`` can also find what a crashed ``up`` made
before it wrote any state. One lab per machine by default; ``CORRAL_LAB_ID=N`` (1-9) names a second,
independent lab (``corralN-hM`` namespaces, bridge ``corralN``, underlay ``10.77.N.0/24``, root
``/var/lib/corral-labN``), so a benchmark can run beside the test suite's lab.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path

LAB_ID = os.environ.get("CORRAL_LAB_ID", "")
if LAB_ID not in ("", *"123456789"):
    raise SystemExit(f"CORRAL_LAB_ID must be one digit 1-9, not {LAB_ID!r}")
NETNS_PREFIX = f"corral{LAB_ID}-"
BRIDGE = f"corral{LAB_ID or 0}"
VETH_PREFIX = f"crl{LAB_ID}-"  # root side of each host's veth: crl-h1 (IFNAMSIZ is 16)
HOST_IFNAME = "eth0"  # the host side, inside its namespace
CGROUP_PREFIX = f"corral-lab{LAB_ID}-"
DEFAULT_SUBNET = f"10.77.{LAB_ID or 0}.0/24"  # the underlay: not 10.42/16 (overlay), not 172.17/16 (Docker)
HOST_OFFSET = 10  # h1 = .11, h2 = .12, …; .1 is the bridge in the root namespace
MAX_HOSTS = 32
API_PORT = 8080
BASE_IMAGE = "corral/base:latest"


def lab_root() -> Path:
    return Path(os.environ.get("CORRAL_LAB_ROOT", f"/var/lib/corral-lab{LAB_ID}"))


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
        """HTTPS with the node's certificate from the cluster CA (the lab's ``ca.pem``)."""
        return f"https://{self.address}:{API_PORT}"


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
