"""The lab's own upstream resolver: Debian's ``dnsmasq`` in the root namespace on the bridge's address.

Every lab agent forwards the names outside the cluster to it (``corral agent --dns-upstream``), so no
query leaves this machine: it answers the few names of ``lab.example`` it is given (``NAMES``),
NXDOMAIN for any other name there, and REFUSED for the rest of the world (it has no upstream).
Found again by its argv (its config file is under the lab root), as the registry is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import signal
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message

from agent.lab import procs

BINARY = "dnsmasq"
DOMAIN = "lab.example"
NAMES = {"www.lab.example": "10.99.0.80", "db.lab.example": "10.99.0.5"}
"""Outside names the lab's resolver answers (addresses nothing on this machine uses)."""
STOP_TIMEOUT = 5.0


class ResolverError(RuntimeError):
    """The lab's resolver could not be started (the lab's ``up`` says so and takes the lab down)."""


@dataclasses.dataclass(frozen=True)
class ResolverSpec:
    root: Path
    address: str
    port: int = 53

    @property
    def dir(self) -> Path:
        return self.root / "resolver"

    @property
    def config_file(self) -> Path:
        return self.dir / "dnsmasq.conf"

    @property
    def log(self) -> Path:
        return self.dir / "dnsmasq.log"

    @property
    def upstream(self) -> str:
        return f"{self.address}:{self.port}"

    def config(self) -> str:
        lines = [f"listen-address={self.address}", f"port={self.port}", "bind-interfaces", "no-resolv",
                 "no-hosts", "no-poll", f"local=/{DOMAIN}/", "cache-size=0"]
        lines += [f"host-record={name},{ip}" for name, ip in sorted(NAMES.items())]
        return "\n".join(lines) + "\n"

    def argv(self) -> list[str]:
        return [BINARY, "--keep-in-foreground", "--log-facility=-", f"--conf-file={self.config_file}"]


def start(spec: ResolverSpec) -> int:
    if shutil.which(BINARY) is None:
        raise ResolverError("dnsmasq is not installed: run the README's setup command "
                            "(or `apt-get install dnsmasq-base`)")
    spec.dir.mkdir(parents=True, exist_ok=True)
    spec.config_file.write_text(spec.config())
    return procs.spawn(spec.argv(), spec.log)


async def wait_ready(spec: ResolverSpec, pid: int, timeout: float = 10.0) -> None:
    """Until it answers one of its names (or its process is gone: LabError with its log's end)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    name = next(iter(NAMES))
    while loop.time() < deadline:
        if not procs.alive(pid):
            said = spec.log.read_text(errors="replace")[-500:] if spec.log.exists() else ""
            raise ResolverError(f"dnsmasq exited: {said}")
        try:
            answer = await dns.asyncquery.udp(dns.message.make_query(name, "A"), spec.address, port=spec.port,
                                              timeout=0.5)
            if answer.answer:
                return
        except (TimeoutError, OSError, dns.exception.DNSException):
            pass
        await asyncio.sleep(0.1)
    raise ResolverError(f"dnsmasq on {spec.upstream} did not answer within {timeout:g} s")


def pids(root: Path) -> set[int]:
    config = f"--conf-file={ResolverSpec(root, '').config_file}"
    return procs.find(lambda argv: bool(argv) and Path(argv[0]).name == BINARY and config in argv)


def stop(root: Path) -> list[str]:
    running = pids(root)
    if not running:
        return []
    procs.kill(running, signal.SIGTERM)
    if not procs.wait_gone(running, STOP_TIMEOUT):
        procs.kill(running, signal.SIGKILL)
        procs.wait_gone(running, STOP_TIMEOUT)
    return [f"resolver: {len(running)} processes"]
