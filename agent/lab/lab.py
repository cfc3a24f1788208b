"""The lab: bring N hosts up, tear them down whatever state they are in, and break them on purpose.

State lives in ``<lab root>/lab.json`` (hosts, underlay subnet, recorded faults). It is written
before anything is created, so a crashed ``up`` leaves enough behind for ``down``; and ``down`` also
finds lab namespaces, links, processes, cgroups and mounts by name and by asking the kernel, so it
cleans up even when the state file is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from agent.errors import EngineUnreachable
from agent.lab import faults, image, plumbing, procs, registry, resolver
from agent.lab.layout import (
    BASE_IMAGE,
    BRIDGE,
    CGROUP_PREFIX,
    DEFAULT_SUBNET,
    MAX_HOSTS,
    NETNS_PREFIX,
    VETH_PREFIX,
    HostSpec,
    bridge_address,
    check_subnet,
    host_specs,
    lab_root,
)
from agent.node.docker import DockerEngine, RegistryAuth
from agent.process import credentials
from agent.process.bootstrap import PENDING_FILE
from mesh.files import write_private

Progress = Callable[[str, str], None]  # (host name or "lab", what happened)
STATE_VERSION = 1
DOCKERD_TIMEOUT = 60.0
DOCKERD_ATTEMPTS = 4
"""How many times ``start-host`` starts a dockerd that gave up waiting for its containerd."""
AGENT_TIMEOUT = 30.0
CLUSTER_TIMEOUT = 30.0
IMAGE_TIMEOUT = 600.0  # a lab image from Debian's packages is ~90 MB, each host loads it into its engine
ROOT_FORWARD_RULE = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, *faults.COMMENT, "-j", "ACCEPT"]


class LabError(Exception):
    """A lab operation that cannot go on; the message is one line for the user."""


def _quiet(_host: str, _message: str) -> None:
    pass


class Lab:
    """The lab on this machine (one per machine), rooted at ``root`` (default /var/lib/corral-lab)."""

    def __init__(self, root: Path | None = None, progress: Progress = _quiet) -> None:
        self.root = root or lab_root()
        self.progress = progress

    # ------------------------------------------------------------------ state

    @property
    def state_file(self) -> Path:
        return self.root / "lab.json"

    def read_state(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LabError(f"lab state {self.state_file} is unreadable ({exc}); `corral lab down` removes it") from exc
        return data

    def _write_state(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        os.replace(tmp, self.state_file)

    def _state(self) -> dict[str, Any]:
        state = self.read_state()
        if state is None:
            raise LabError("no lab is up: run `corral lab up` first")
        return state

    @property
    def admin_token_file(self) -> Path:
        """The first administrator's API key, as the bootstrapping agent wrote it (0600)."""
        return self.root / "admin-token"

    @property
    def admin_password_file(self) -> Path:
        return self.root / "admin-password"

    @property
    def ca_file(self) -> Path:
        """The cluster CA's certificate (a copy of the bootstrapping agent's), for clients: CORRAL_CACERT."""
        return self.root / "ca.pem"

    def tls(self) -> ssl.SSLContext:
        """A client context that trusts the lab cluster's CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def admin_token(self) -> str:
        try:
            return self.admin_token_file.read_text().strip()
        except FileNotFoundError:
            raise LabError(f"no {self.admin_token_file}: was the lab brought up by this version?") from None

    def auth_headers(self) -> dict[str, str]:
        """Headers that make a request as the lab's administrator."""
        return auth_headers(self.admin_token())

    def admin_password(self) -> str:
        return self.admin_password_file.read_text().strip()

    def hosts(self) -> list[HostSpec]:
        state = self._state()
        return host_specs(len(state["hosts"]), state["subnet"], self.root)

    def host(self, name: str) -> HostSpec:
        hosts = self.hosts()
        for host in hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in hosts)
        raise LabError(f"no host {name!r} in the lab (hosts: {known})")

    def leftovers(self) -> list[str]:
        """What of a lab exists on this machine: state file, namespaces, links."""
        found = [str(self.state_file)] if self.state_file.exists() else []
        found += [f"registry pid {pid}" for pid in sorted(registry.pids(self.root))]
        found += [f"resolver pid {pid}" for pid in sorted(resolver.pids(self.root))]
        found += [str(entry) for entry in registry.trusted_dirs(self.root)]
        return found + plumbing.lab_namespaces() + plumbing.lab_links()

    # ------------------------------------------------------------------ up

    def up(self, count: int = 3, subnet: str = DEFAULT_SUBNET, registry: bool = False) -> list[HostSpec]:
        """Build the lab; on any failure (or Ctrl-C) take down what was made and raise LabError.

        With ``registry``, an image registry runs on the bridge's address, holding the base image
        (:mod:`agent.lab.registry`; ``registry_address``, ``registry_credentials()``)."""
        if not 1 <= count <= MAX_HOSTS:
            raise LabError(f"--hosts must be between 1 and {MAX_HOSTS}, not {count}")
        problem = check_subnet(subnet, count)
        if problem:
            raise LabError(problem)
        preflight()
        existing = self.leftovers()
        if existing:
            raise LabError(
                "a lab is already up (found " + ", ".join(existing[:4]) + "): "
                "use it, or run `corral lab down` first"
            )
        hosts = host_specs(count, subnet, self.root)
        self._write_state(
            {"version": STATE_VERSION, "subnet": subnet, "hosts": [h.name for h in hosts],
             "created": time.time(), "status": "starting", "faults": {}}
        )
        try:
            tarball = self._plumb(hosts, subnet)
            asyncio.run(self._start(hosts, tarball, registry))
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc) or type(exc).__name__
            if os.environ.get("CORRAL_LAB_KEEP_FAILED") == "1":  # for debugging: leave it for `lab down`
                self.progress("lab", f"up failed ({reason}); kept as it is (CORRAL_LAB_KEEP_FAILED=1)")
                raise LabError(f"lab up failed: {reason}") from exc
            self.progress("lab", f"up failed ({reason}); taking down what was made")
            self.down()
            if isinstance(exc, LabError):
                raise
            raise LabError(f"lab up failed: {reason}") from exc
        state = self._state()
        state["status"] = "up"
        self._write_state(state)
        return hosts

    def _plumb(self, hosts: list[HostSpec], subnet: str) -> bytes:
        """Image and network, synchronously (pyroute2's sync API runs its own event loop)."""
        tarball, image_id = image.build_base_image()
        images = self.root / "images"
        images.mkdir(parents=True, exist_ok=True)
        (images / "corral-base.tar").write_bytes(tarball)
        self.progress("lab", f"base image corral/base built ({len(tarball) // 1024} KiB, {image_id[:19]})")
        address, prefixlen = bridge_address(subnet)
        plumbing.ensure_bridge(address, prefixlen)
        _ensure_root_forward()
        self.progress("lab", f"underlay bridge {BRIDGE} {address}/{prefixlen}")
        for host in hosts:
            host.dir.mkdir(parents=True, exist_ok=True)
            plumbing.create_host(host, prefixlen)
            faults.ensure_chains(host)
            self.progress(host.name, f"namespace {host.netns} with {host.address} on {BRIDGE}")
        return tarball

    async def _start(self, hosts: list[HostSpec], tarball: bytes, with_registry: bool) -> None:
        """Daemons: every dockerd, then every agent, waiting on all at once; then the base image into the
        cluster the way a user's image goes (loaded on h1, fetched peer to peer by the others), and the
        registry (if asked for) with the base image pushed to it."""
        pids = [_start_dockerd(host) for host in hosts]
        dns = self.resolver()
        try:
            await resolver.wait_ready(dns, resolver.start(dns))
        except resolver.ResolverError as exc:
            raise LabError(str(exc)) from exc
        self.progress("lab", f"resolver (dnsmasq) on {dns.upstream}: the agents' upstream for outside names")
        await asyncio.gather(*(self._engine_ready(h, pid) for h, pid in zip(hosts, pids, strict=True)))
        first, rest = hosts[0], hosts[1:]
        write_private(self.admin_password_file, (secrets.token_urlsafe(18) + "\n").encode())
        self.admin_token_file.unlink(missing_ok=True)
        _start_agent(first, join=[], bootstrap=True, admin_files=(self.admin_password_file, self.admin_token_file),
                     dns_upstream=dns.upstream)
        token = await _wait_token(first, AGENT_TIMEOUT)
        shutil.copy(first.agent_data / "ca.pem", self.ca_file)  # written with the token, before it serves
        await _wait_bootstrapped(first, AGENT_TIMEOUT)  # the token is valid once the first leader committed it
        state = self._state()
        state["token"] = token
        self._write_state(state)
        self.progress(first.name, "new cluster bootstrapped; join token saved in the lab state")
        for host in rest:
            _start_agent(host, join=[first.address], token=token, dns_upstream=dns.upstream)
        await asyncio.gather(*(self._agent_ready(h) for h in hosts))
        await wait_cluster(hosts, CLUSTER_TIMEOUT, self.admin_token(), self.tls())
        self.progress("lab", f"cluster formed: {len(hosts)} members alive on every agent, {len(hosts)} hosts "
                      "active in the replicated state")
        await self._spread_base_image(hosts, tarball)
        if with_registry:
            await self._start_registry(hosts[0])

    async def _engine_ready(self, host: HostSpec, pid: int) -> None:
        engine = await _wait_engine(host, pid, DOCKERD_TIMEOUT)
        try:
            version = (await engine.version()).get("Version")
            self.progress(host.name, f"dockerd {version} answering on {host.docker_sock}")
        finally:
            await engine.close()

    async def _spread_base_image(self, hosts: list[HostSpec], tarball: bytes) -> None:
        await self._spread_image(hosts, tarball, f"base image {BASE_IMAGE}", AGENT_TIMEOUT)

    def load_image(self, tarball: Path, what: str) -> dict[str, Any]:
        """A ``docker save`` tarball into the lab's cluster the way the base image goes (loaded on the
        first host that is up, fetched from peers by every other running host); the catalog's view of it.
        ``what`` names it in progress lines and errors."""
        hosts = [h for h in self.hosts() if _agent_pid(h) is not None]
        if not hosts:
            raise LabError("no agent of the lab is running")
        return asyncio.run(self._spread_image(hosts, tarball, what, IMAGE_TIMEOUT))

    async def _spread_image(self, hosts: list[HostSpec], tarball: bytes | Path, what: str,
                            timeout_s: float) -> dict[str, Any]:
        """``corral image load`` of an image on the first host, then every other host fetches it
        from its peers (``POST /v1/images/{id}/fetch``, all at once: the holders relay)."""
        first, rest = hosts[0], hosts[1:]
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.tls()), timeout=timeout,
                                         headers=self.auth_headers()) as session:
            with contextlib.ExitStack() as files:
                body = tarball if isinstance(tarball, bytes) else files.enter_context(tarball.open("rb"))
                try:
                    async with session.post(first.api_url + "/v1/images", data=body,
                                            headers={"Content-Type": "application/x-tar"}) as resp:
                        loaded: dict[str, Any] = await resp.json(content_type=None)
                        if resp.status != 201:
                            raise LabError(f"{first.name} did not take the {what}: HTTP {resp.status} {loaded}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise LabError(f"{first.name} did not take the {what}: {exc or type(exc).__name__}") from exc
            self.progress(first.name, f"{what} loaded into the cluster ({loaded['id'][:19]})")

            async def fetch(host: HostSpec) -> None:
                try:
                    async with session.post(f"{host.api_url}/v1/images/{loaded['id']}/fetch") as resp:
                        answer = await resp.json(content_type=None)
                        if resp.status != 200:
                            raise LabError(f"{host.name} could not fetch the {what}: HTTP {resp.status} {answer}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise LabError(f"{host.name} could not fetch the {what}: {exc or type(exc).__name__}") from exc
                self.progress(host.name, f"{what} fetched from a peer ({answer['detail']})")

            await asyncio.gather(*(fetch(h) for h in rest))
        return loaded

    async def _start_registry(self, pusher: HostSpec) -> None:
        """The registry, trusted by every engine, with the base image pushed to it through ``pusher``'s."""
        spec = registry.RegistrySpec(self.root, bridge_address(self._state()["subnet"])[0])
        state = self._state()
        state["registry"] = {"address": spec.host, "pid": None}  # before anything exists, for `down`
        self._write_state(state)
        registry.prepare(spec, time.time())
        registry.trust(spec)
        pid = registry.start(spec)
        state["registry"]["pid"] = pid
        self._write_state(state)
        await registry.wait_ready(spec, pid)
        self.progress("lab", f"registry {spec.url} answering (user {registry.USER}, password in {spec.password_file})")
        reference = f"{spec.host}/{BASE_IMAGE}"
        engine = await DockerEngine.connect(pusher.docker_host)
        try:
            await engine.tag_image(BASE_IMAGE, reference)
            await engine.push_image(reference, RegistryAuth(registry.USER, registry.password(spec)))
        finally:
            await engine.close()
        self.progress(pusher.name, f"base image pushed as {reference}")

    async def _agent_ready(self, host: HostSpec) -> None:
        health = await wait_health(host, AGENT_TIMEOUT)
        self.progress(host.name, f"agent answering at {host.api_url} (docker {health['docker'].get('version')})")

    # ------------------------------------------------------------------ down

    def down(self) -> list[str]:
        """Remove everything a lab made, whatever state it is in. Safe to run twice."""
        removed: list[str] = []
        names = self._all_host_names()
        for name in names:
            host = HostSpec(name=name, address="", root=self.root)
            killed = _kill_host_processes(host)
            if killed:
                removed.append(f"{name}: {killed} processes")
        removed += registry.stop(self.root)
        removed += resolver.stop(self.root)
        killed = _kill_lost_namespaces(self.root)
        if killed:
            removed.append(f"{killed} processes in namespaces that lost their name")
        for point in procs.mounts_under(self.root):
            procs.unmount(point)
            removed.append(f"mount {point}")
        for name in names:
            procs.remove_cgroups(CGROUP_PREFIX + name)
        for ns in plumbing.lab_namespaces():
            plumbing.remove_namespace(ns)
            removed.append(f"namespace {ns}")
        for link in plumbing.lab_links():
            plumbing.remove_link(link)
            removed.append(f"link {link}")
        _remove_root_forward()
        if self.root.exists():
            left = procs.mounts_under(self.root)
            if left:
                raise LabError(f"cannot remove {self.root}: still mounted: {', '.join(left[:3])}")
            shutil.rmtree(self.root)
            removed.append(f"directory {self.root}")
        return removed

    def _all_host_names(self) -> list[str]:
        names: set[str] = set()
        with contextlib.suppress(LabError):
            state = self.read_state()
            if state:
                names.update(state.get("hosts", []))
        names.update(ns[len(NETNS_PREFIX):] for ns in plumbing.lab_namespaces())
        names.update(link[len(VETH_PREFIX):] for link in plumbing.lab_links() if link.startswith(VETH_PREFIX))
        hosts_dir = self.root / "hosts"
        if hosts_dir.is_dir():
            names.update(p.name for p in hosts_dir.iterdir() if p.is_dir())
        for top in procs.CGROUP_ROOT.glob(f"*/{CGROUP_PREFIX}*"):
            names.add(top.name[len(CGROUP_PREFIX):])
        return sorted(names, key=_host_order)

    def resolver(self) -> resolver.ResolverSpec:
        """The lab's upstream resolver (dnsmasq on the bridge's address, :mod:`agent.lab.resolver`)."""
        return resolver.ResolverSpec(self.root, bridge_address(self._state()["subnet"])[0])

    # ------------------------------------------------------------------ registry

    def _registry(self) -> registry.RegistrySpec:
        state = self._state()
        if not state.get("registry"):
            raise LabError("this lab has no registry: bring it up with `corral lab up --registry`")
        return registry.RegistrySpec(self.root, bridge_address(state["subnet"])[0])

    @property
    def registry_address(self) -> str:
        """``address:port`` of the lab's registry, as image names carry it (``10.77.0.1:5000``)."""
        return self._registry().host

    @property
    def registry_ca_file(self) -> Path:
        """The registry CA's certificate: the one thing that verifies the registry's."""
        return self._registry().ca_file

    def registry_credentials(self) -> tuple[str, str]:
        """(user, password) of the registry's one account."""
        return registry.USER, registry.password(self._registry())

    def registry_status(self) -> dict[str, Any] | None:
        """The registry's URL, pid and files, or None when the lab has none."""
        if not self._state().get("registry"):
            return None
        spec = self._registry()
        running = sorted(registry.pids(self.root))
        return {"url": spec.url, "address": spec.host, "pid": running[0] if running else None,
                "state": "running" if running else "dead", "user": registry.USER,
                "password_file": str(spec.password_file), "ca_file": str(spec.ca_file), "log": str(spec.log)}

    # ------------------------------------------------------------------ status

    def status(self) -> list[dict[str, Any]]:
        state = self._state()
        loss = state.get("faults", {}).get("loss", {})
        groups = state.get("faults", {}).get("partition", [])
        rows = []
        for host in self.hosts():
            agent_pid = procs.read_pid(host.agent_pidfile)
            dockerd_pid = procs.read_pid(host.dockerd_pidfile)
            agent = procs.state(agent_pid) if agent_pid else "gone"
            rows.append(
                {
                    "host": host.name,
                    "namespace": host.netns if host.netns_path.exists() else None,
                    "address": host.address,
                    "api": host.api_url,
                    "link": "up" if plumbing.host_link_up(host) else "down",
                    "agent": {"running": "running", "stopped": "paused"}.get(agent, "dead"),
                    "agent_pid": agent_pid if agent != "gone" else None,
                    "agent_health": asyncio.run(_health_once(host)) if agent == "running" else None,
                    "dockerd": "running" if procs.alive(dockerd_pid) else "dead",
                    "dockerd_pid": dockerd_pid if procs.alive(dockerd_pid) else None,
                    "rss_bytes": sum(procs.rss_bytes(p) for p in procs.pids_in_netns(host.netns_path)),
                    "loss_percent": loss.get(host.name, 0.0),
                    "partition_group": next((i for i, g in enumerate(groups) if host.name in g), None),
                }
            )
        return rows

    # ------------------------------------------------------------------ exec

    def exec_argv(self, name: str, command: list[str]) -> tuple[list[str], dict[str, str]]:
        """argv and environment that run ``command`` in a host's namespace, pointed at its engine."""
        host = self.host(name)
        if not command:
            raise LabError("lab exec needs a command: corral lab exec HOST -- CMD…")
        if not host.netns_path.exists():
            raise LabError(f"host {name} has no namespace (was the lab taken down?)")
        env = dict(os.environ, DOCKER_HOST=host.docker_host, CORRAL_URL=host.api_url, CORRAL_LAB_HOST=name,
                   CORRAL_TOKEN=self.admin_token(), CORRAL_CACERT=str(self.ca_file),
                   # `corral` itself, from the environment this one runs in
                   PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        return ["nsenter", f"--net={host.netns_path}", *command], env

    # ------------------------------------------------------------------ faults

    def kill_agent(self, name: str) -> int:
        host = self.host(name)
        pid = _agent_pid(host)
        if pid is None:
            raise LabError(f"the agent on {name} is not running")
        procs.kill([pid], signal.SIGKILL)
        procs.wait_gone([pid], 5.0)
        return pid

    def start_agent(self, name: str) -> int:
        host = self.host(name)
        running = _agent_pid(host)
        if running is not None:
            raise LabError(f"the agent on {name} is already running (pid {running})")
        if not procs.alive(procs.read_pid(host.dockerd_pidfile)):
            raise LabError(f"{name} is stopped (no dockerd): use `corral lab start-host {name}`")
        pid = _start_agent(host, join=self._join_for(host), token=self.token(), dns_upstream=self.resolver().upstream)
        asyncio.run(wait_health(host, AGENT_TIMEOUT))
        return pid

    def stop_host(self, name: str) -> None:
        """The host loses power: every process of it dies, mounts go, its cable is pulled."""
        host = self.host(name)
        _kill_host_processes(host)
        for point in procs.mounts_under(host.dir):
            procs.unmount(point)
        plumbing.set_host_link(host, up=False)

    def start_host(self, name: str) -> None:
        host = self.host(name)
        if _agent_pid(host) is not None or procs.alive(procs.read_pid(host.dockerd_pidfile)):
            raise LabError(f"{name} is not stopped")
        plumbing.set_host_link(host, up=True)
        dockerd = _start_dockerd(host)

        async def ready() -> None:
            nonlocal dockerd
            for attempt in range(DOCKERD_ATTEMPTS):
                try:
                    engine = await _wait_engine(host, dockerd, DOCKERD_TIMEOUT)
                    break
                except LabError as exc:
                    # on a loaded machine dockerd gives up on its containerd after its own short wait
                    # (containerd still cleaning up the tasks of the powered-off host): again, from
                    # nothing left behind, as an operator would, a little later each time
                    if "waiting for containerd" not in str(exc) or attempt == DOCKERD_ATTEMPTS - 1:
                        raise
                    _kill_host_processes(host)
                    await asyncio.sleep(2.0 * (attempt + 1))
                    dockerd = _start_dockerd(host)
            await engine.close()
            _start_agent(host, join=self._join_for(host), token=self.token(), dns_upstream=self.resolver().upstream)
            await wait_health(host, AGENT_TIMEOUT)

        asyncio.run(ready())

    def pause(self, name: str) -> None:
        self._signal_agent(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self._signal_agent(name, signal.SIGCONT)

    def _signal_agent(self, name: str, sig: signal.Signals) -> None:
        host = self.host(name)
        pid = _agent_pid(host)
        if pid is None:
            raise LabError(f"the agent on {name} is not running")
        procs.kill([pid], sig)

    def partition(self, groups: list[list[str]]) -> list[list[str]]:
        hosts = self.hosts()
        names = [h.name for h in hosts]
        for group in groups:
            for name in group:
                self.host(name)
        try:
            full = faults.partition_groups(names, groups)
        except faults.FaultError as exc:
            raise LabError(str(exc)) from exc
        state = self._state()
        state.setdefault("faults", {})["partition"] = full
        self._write_state(state)
        self._apply_faults()
        return full

    def degrade(self, name: str, loss_percent: float) -> None:
        self.host(name)
        if not 0 <= loss_percent <= 100:
            raise LabError(f"--loss must be a percentage from 0 to 100, not {loss_percent:g}")
        state = self._state()
        loss = state.setdefault("faults", {}).setdefault("loss", {})
        if loss_percent:
            loss[name] = loss_percent
        else:
            loss.pop(name, None)
        self._write_state(state)
        self._apply_faults()

    def heal(self) -> None:
        """Undo every network fault: partitions and loss."""
        state = self._state()
        state["faults"] = {}
        self._write_state(state)
        self._apply_faults()

    def _apply_faults(self) -> None:
        state = self._state()
        hosts = self.hosts()
        addresses = {h.name: h.address for h in hosts}
        groups = state.get("faults", {}).get("partition", [])
        blocked = faults.blocked_sources(groups, addresses) if groups else {}
        loss = state.get("faults", {}).get("loss", {})
        try:
            for host in hosts:
                faults.apply(host, faults.HostFaults(blocked.get(host.name, ()), float(loss.get(host.name, 0))))
        except faults.FaultError as exc:
            raise LabError(str(exc)) from exc

    def token(self) -> str | None:
        """The cluster's join token (every agent but the bootstrapping one is started with it)."""
        token = self._state().get("token")
        return str(token) if token else None

    def _join_for(self, host: HostSpec) -> list[str]:
        """Every other host: the agent joins through whichever answers (any member will do)."""
        return [h.address for h in self.hosts() if h.name != host.name]


# ---------------------------------------------------------------------- helpers


def auth_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def preflight() -> None:
    """Say what is missing, and how to get it; never install anything behind the user's back."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, bridges, dockerd): run it as root")
    missing = [tool for tool in ("dockerd", "nsenter", "iptables") if shutil.which(tool) is None]
    if "dockerd" in missing:
        raise LabError(
            "Docker Engine is not installed (no dockerd on PATH): run the README's setup command, "
            "or `apt-get install docker.io`"
        )
    if missing:
        raise LabError(f"missing {', '.join(missing)}: run the README's setup command")
    image.find_busybox()


def _host_order(name: str) -> tuple[int, str]:
    digits = name[1:]
    return (int(digits), name) if digits.isdigit() else (sys.maxsize, name)


def _start_dockerd(host: HostSpec) -> int:
    """Start the host's dockerd; returns its pid (nsenter execs it, so the pid is dockerd's)."""
    host.docker_exec.mkdir(parents=True, exist_ok=True)
    host.dockerd_pidfile.unlink(missing_ok=True)  # a stale one (host was powered off) would mislead
    argv = [
        "nsenter", f"--net={host.netns_path}", "dockerd",
        "--data-root", str(host.docker_data),
        "--exec-root", str(host.docker_exec),
        "--pidfile", str(host.dockerd_pidfile),
        "-H", host.docker_host,
        "--containerd-namespace", f"corral-{host.name}",
        "--containerd-plugins-namespace", f"corral-{host.name}-plugins",
        "--exec-opt", "native.cgroupdriver=cgroupfs",
        "--cgroup-parent", "/" + host.cgroup_parent,
    ]
    return procs.spawn(argv, host.dockerd_log)


LAB_STATS_INTERVAL = 2.0
"""Seconds between the lab's agents' stats samples, unless ``CORRAL_STATS_INTERVAL`` says otherwise."""


def _start_agent(host: HostSpec, join: list[str], token: str | None = None, bootstrap: bool = False,
                 admin_files: tuple[Path, Path] | None = None, dns_upstream: str | None = None) -> int:
    argv = [
        "nsenter", f"--net={host.netns_path}", sys.executable, "-m", "agent", "agent",
        "--bind", host.address, "--name", host.name,
        "--data-dir", str(host.agent_data), "--docker-host", host.docker_host,
    ]
    if dns_upstream is not None:  # the lab's own resolver: no query leaves this machine
        argv += ["--dns-upstream", dns_upstream]
    if "CORRAL_STATS_INTERVAL" not in os.environ:  # a history to look at within seconds (the agent's default: 10)
        argv += ["--stats-interval", str(LAB_STATS_INTERVAL)]
    for address in join:
        argv += ["--join", address]
    if bootstrap:
        argv.append("--bootstrap")
    if admin_files is not None:
        argv += ["--admin-password-file", str(admin_files[0]), "--admin-key-file", str(admin_files[1])]
    # The token travels by environment, not argv: argv is world-readable in /proc.
    env = {"CORRAL_JOIN_TOKEN": token} if token else {}
    pid = procs.spawn(argv, host.agent_log, env)
    host.agent_pidfile.write_text(f"{pid}\n")
    return pid


def _agent_pid(host: HostSpec) -> int | None:
    """The agent's pid if it runs (paused counts): the pid file is checked against /proc."""
    pid = procs.read_pid(host.agent_pidfile)
    if pid is None or not procs.alive(pid):
        return None
    argv = procs.cmdline(pid)
    bind = argv[argv.index("--bind") + 1] if "--bind" in argv[:-1] else None
    return pid if "agent" in argv and bind == host.address else None


def _kill_until_gone(find: Callable[[], set[int]]) -> int:
    """SIGKILL what ``find`` names, again and again (a dying daemon may have forked), until none is left."""
    total: set[int] = set()
    for _ in range(20):
        pids = find() - {os.getpid()}
        if not pids:
            break
        total |= pids
        procs.kill(pids, signal.SIGKILL)
        procs.wait_gone(pids, 5.0)
    return len(total)


def _kill_host_processes(host: HostSpec) -> int:
    """SIGKILL every process in the host's namespace and container cgroups, until none is left."""
    return _kill_until_gone(
        lambda: set(procs.pids_in_netns(host.netns_path)) | procs.pids_in_cgroup(host.cgroup_parent))


def _kill_lost_namespaces(root: Path) -> int:
    """SIGKILL the daemons of lab hosts whose namespace was deleted under them (``procs.lost_namespace_pids``)."""
    return _kill_until_gone(lambda: procs.lost_namespace_pids(root))


async def _wait_engine(host: HostSpec, pid: int, timeout: float) -> DockerEngine:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await DockerEngine.connect(host.docker_host, timeout=5.0)
        except EngineUnreachable as exc:
            if time.monotonic() > deadline:
                raise LabError(f"{host.name}: dockerd did not answer within {timeout:g} s ({exc.message}); "
                               f"see {host.dockerd_log}") from exc
            if not procs.alive(pid):
                raise LabError(f"{host.name}: dockerd exited: {procs.tail(host.dockerd_log)}") from exc
        await asyncio.sleep(0.1)


async def _wait_file(host: HostSpec, path: Path, present: bool, what: str, timeout: float) -> None:
    """Until ``path`` exists (``present``) or is gone; fail early if the agent died."""
    deadline = time.monotonic() + timeout
    while path.exists() != present:  # noqa: ASYNC240 (a stat of a local file every 50 ms)
        pid = procs.read_pid(host.agent_pidfile)
        if pid is not None and not procs.alive(pid):
            raise LabError(f"{host.name}: agent exited: {procs.tail(host.agent_log)}")
        if time.monotonic() > deadline:
            raise LabError(f"{host.name}: {what} not within {timeout:g} s; see {host.agent_log}")
        await asyncio.sleep(0.05)


async def _wait_token(host: HostSpec, timeout: float) -> str:
    """The join token a bootstrapping agent writes into its data dir (0600) before it serves."""
    path = host.agent_data / credentials.TOKEN_FILE
    await _wait_file(host, path, True, "no join token", timeout)
    return path.read_text().strip()


async def _wait_bootstrapped(host: HostSpec, timeout: float) -> None:
    """Until the bootstrapping agent's first commands (CA, join token, administrator) are committed: it
    removes the file that holds them then."""
    await _wait_file(host, host.agent_data / PENDING_FILE, False, "the new cluster's first commands committed",
                     timeout)


async def _health_once(host: HostSpec, timeout: float = 1.0) -> str:
    try:
        async with (
            # liveness only (no credential travels): the certificate is not checked here
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout),
                                  connector=aiohttp.TCPConnector(ssl=False)) as session,
            session.get(host.api_url + "/v1/health") as resp,
        ):
            body = await resp.json()
            return str(body.get("status", "?"))
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return "no answer"


async def wait_health(host: HostSpec, timeout: float) -> dict[str, Any]:
    """Poll the agent's /v1/health over the underlay until it answers; fail early if it died."""
    deadline = time.monotonic() + timeout
    # liveness only (no credential travels): the certificate is not checked here
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2),
                                     connector=aiohttp.TCPConnector(ssl=False)) as session:
        while True:
            try:
                async with session.get(host.api_url + "/v1/health") as resp:
                    if resp.status == 200:
                        body: dict[str, Any] = await resp.json()
                        return body
            except (aiohttp.ClientError, TimeoutError):
                pass
            pid = procs.read_pid(host.agent_pidfile)
            if pid is not None and not procs.alive(pid):
                raise LabError(f"{host.name}: agent exited: {procs.tail(host.agent_log)}")
            if time.monotonic() > deadline:
                raise LabError(f"{host.name}: agent did not answer at {host.api_url} within {timeout:g} s; "
                               f"see {host.agent_log}")
            await asyncio.sleep(0.1)


async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    try:
        async with session.get(url) as resp:
            return await resp.json() if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def wait_cluster(hosts: list[HostSpec], timeout: float, token: str, tls: ssl.SSLContext) -> None:
    """Until every agent sees every host alive by gossip and the replicated state lists all as active
    (and knows the administrator whose ``token`` asks)."""
    names = {h.name for h in hosts}
    deadline = time.monotonic() + timeout
    problem = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2), headers=auth_headers(token),
                                     connector=aiohttp.TCPConnector(ssl=tls)) as session:
        while True:
            problem = ""
            for host in hosts:
                members = await _get_json(session, host.api_url + "/v1/members")
                alive = {m["name"] for m in (members or {}).get("items", []) if m["state"] == "alive"}
                if not names <= alive:
                    problem = f"{host.name} sees {sorted(alive)} alive"
                    break
                listed = await _get_json(session, host.api_url + "/v1/hosts")
                active = {h["name"] for h in (listed or {}).get("items", []) if h["state"] == "active"}
                if not names <= active:
                    problem = f"{host.name}'s replicated state has {sorted(active)} active"
                    break
            if not problem:
                return
            if time.monotonic() > deadline:
                raise LabError(f"the cluster did not form within {timeout:g} s: {problem}")
            await asyncio.sleep(0.2)


def _bridge_netfilter() -> bool:
    try:
        return Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip() == "1"
    except OSError:
        return False


def _ensure_root_forward() -> None:
    """With br_netfilter on, bridged underlay frames cross the root FORWARD chain: let them pass
    (a Docker Engine in the root namespace sets that chain's policy to DROP)."""
    if not _bridge_netfilter():
        return
    if subprocess.run(["iptables", "-w", "5", "-C", *ROOT_FORWARD_RULE], capture_output=True).returncode != 0:
        subprocess.run(["iptables", "-w", "5", "-I", *ROOT_FORWARD_RULE], capture_output=True, check=True)


def _remove_root_forward() -> None:
    if shutil.which("iptables") is None:
        return
    for _ in range(10):
        done = subprocess.run(["iptables", "-w", "5", "-D", *ROOT_FORWARD_RULE], capture_output=True)
        if done.returncode != 0:
            break
