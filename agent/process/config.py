"""The agent's configuration: one frozen dataclass, filled from the command line."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

DEFAULT_API_PORT = 8080
DEFAULT_GOSSIP_PORT = 7946
DEFAULT_RAFT_PORT = 7947
DEFAULT_IMAGE_PORT = 7948
DEFAULT_DATA_DIR = Path("/var/lib/corral")
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Everything one agent process needs to know before it starts.

    ``bind`` is the host's underlay address: the API listens there, and it is the address the agent
    advertises to the cluster (a multi-homed host must say which one it means, not let the kernel pick).
    """

    bind: str
    name: str = dataclasses.field(default_factory=socket.gethostname)
    api_port: int = DEFAULT_API_PORT
    gossip_port: int = DEFAULT_GOSSIP_PORT
    raft_port: int = DEFAULT_RAFT_PORT
    overlay: bool = True
    """Run the overlay (TUN, routes, data path); off for a host that only manages, or a second agent."""
    join: tuple[str, ...] = ()
    bootstrap: bool = False
    manager: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    host_grace: float = 5.0
    """Seconds a host may be disconnected before the leader moves its instances elsewhere."""
    replace_dead_managers_after: float | None = None
    """Off (None) by default: else a Raft voter dead this long is replaced by a healthy learner."""
    token: str | None = dataclasses.field(default=None, repr=False)
    data_dir: Path = DEFAULT_DATA_DIR
    docker_host: str = DEFAULT_DOCKER_HOST
    docker_timeout: float = 5.0
    access_log: bool = False
    bootstrap_admin: bool = False
    """Make the first administrator (always with ``bootstrap`` on a new cluster; on an existing one, only
    while it has no user)."""
    admin_password_file: Path | None = None
    """The first administrator's password (first line; ``-``: standard input); None: one is made up and printed."""
    admin_key_file: Path | None = None
    """Where to write the first administrator's API key (0600) instead of printing it."""
    image_send_rate: float | None = None
    """Bytes/s at most for each image tarball this host sends to a peer (None: no limit)."""
    image_port: int | None = 0
    """The bulk channel's TCP port on ``bind`` (image tarballs to peers, ``agent/node/bulk.py``); 0: any free
    port (the holder names it in its answer); None: none, tarballs go over the API's TLS."""
    loopback_api: bool = True
    """Also serve the API on 127.0.0.1 (so ``corral`` on the host needs no URL)."""
    dns_upstreams: tuple[tuple[str, int], ...] = ()
    """Where the DNS server forwards names outside the cluster's zones (empty: this namespace's
    ``/etc/resolv.conf``)."""
    dns_port: int = 53
    stats_interval: float = 10.0
    """Seconds between two samples of the built-in stats history (the host's and each container's figures,
    the last hour kept in memory: ``agent/node/history.py``)."""

    def join_addresses(self) -> list[tuple[str, int]]:
        """``--join`` values as gossip addresses (the default gossip port when none is given)."""
        out = []
        for item in self.join:
            host, sep, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
            out.append((host, int(port) if sep else self.gossip_port))
        return out

    @property
    def api_url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.api_port}"
