"""One agent: every resource it runs, started in one place, in order, and stopped in reverse.

    data dir (locked) → cluster secret → Docker Engine (proven reachable) → HTTP client session
    → gossip (:7946) → Raft (:7947: SQLite log, transport, driver) → leader loop → reconciler → load balancers
    → keyring follower → overlay → health monitor → HTTP API (:8080)

Each stage is an async context manager entered on one ``AsyncExitStack``: when a stage fails to start,
the stages already started are stopped in reverse order, each exactly once, and the error goes on to
the caller — no thread, task, socket or TUN is left behind (``tests/unit/test_lifecycle.py`` fails
each stage in turn and checks). A clean stop does not *leave* the cluster (as Consul servers'
``leave_on_terminate = false``): an agent restart must not look like a host going away for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import cast

import aiohttp
import uvloop
from aiohttp import web

from agent import __version__, ui
from agent.api.app import MAX_LINE_SIZE, create_app
from agent.api.deps import ApiDeps, NodeInfo
from agent.api.join import parse_join_token
from agent.cluster.feed import Feed
from agent.cluster.members import Members
from agent.cluster.replica import Replica
from agent.control.leader import Leader
from agent.errors import BadRequest, DataDirError
from agent.model.changes import Topic
from agent.model.commands import Command, InstanceStatus
from agent.model.lb import HAPROXY_LABEL
from agent.model.state import ClusterState
from agent.node import hostinfo, keyring
from agent.node.dns import DnsConfig, DnsServer
from agent.node.docker import DockerEngine, Engine
from agent.node.images import ImageEngine, ImageManager
from agent.node.lb import LoadBalancers, haproxy_binary
from agent.node.overlay import OverlayRuntime, load_or_make_key
from agent.node.plan import HostPaths, Observed
from agent.node.reconciler import Reconciler
from agent.node.storage import HostStorage
from agent.process import bootstrap, credentials, joining
from agent.process.certs import NodeCerts, renewing
from agent.process.config import AgentConfig
from agent.process.datadir import DataDir
from agent.process.health import HealthMonitor
from mesh.gossip.node import GossipNode
from mesh.keyring import Keyring
from mesh.raft import config as raft_config
from mesh.raft.core import RaftNode
from mesh.raft.driver import RaftDriver
from mesh.raft.messages import Message
from mesh.raft.storage import SqliteStorage
from mesh.raft.transport import RaftTransport
from mesh.waiting import until_async

log = logging.getLogger("corral.agent")

GOSSIP_REPLAY_WINDOW = 60.0
CERT_WAIT = 30.0
Stage = Callable[[], contextlib.AbstractAsyncContextManager[object]]


class Agent:
    """The agent's resources, as its stages make them (``None`` until their stage has run)."""

    def __init__(self, config: AgentConfig, engine_factory: Callable[[], Awaitable[Engine]] | None = None,
                 on_stage: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.config = config
        self._engine_factory = engine_factory
        self._on_stage = on_stage
        self.meta: dict[str, object] = {}
        self.data_dir: DataDir | None = None
        self.secret = b""
        self.ring: Keyring | None = None
        self.engine: Engine | None = None
        self.session: aiohttp.ClientSession | None = None
        self.gossip: GossipNode | None = None
        self.members: Members | None = None
        self.state = ClusterState()
        self.feed = Feed()
        self.replica: Replica | None = None
        self.leader: Leader | None = None
        self.reconciler: Reconciler | None = None
        self.load_balancers: LoadBalancers | None = None
        self.images: ImageManager | None = None
        self.overlay: OverlayRuntime | None = None
        self.dns: DnsServer | None = None
        self.health = HealthMonitor(self._advertise_health)
        self.certs = NodeCerts(config.data_dir)
        self.site: web.TCPSite | None = None
        self.stages: list[tuple[str, Stage]] = [
            ("data dir", self._data_dir), ("secret", self._secret), ("docker", self._docker),
            ("http client", self._session), ("gossip", self._gossip), ("raft", self._raft),
            ("leader", self._leader), ("admin", self._admin), ("certificate", self._certificate),
            ("images", self._images), ("reconciler", self._reconciler), ("load balancers", self._load_balancers),
            ("keyring", self._keyring), ("overlay", self._overlay), ("dns", self._dns),
            ("health", self._health), ("http", self._http),
        ]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Agent]:
        """Every stage started, in order; all stopped in reverse when the context ends (or a stage fails)."""
        async with contextlib.AsyncExitStack() as stack:
            for name, stage in self.stages:
                if self._on_stage is not None:
                    await self._on_stage(name)
                await stack.enter_async_context(stage())
            log.info("agent %s (corral %s) serving %s", self.config.name, __version__, self.api_url())
            yield self
        log.info("agent %s stopped", self.config.name)

    # ------------------------------------------------------------------ stages

    @contextlib.asynccontextmanager
    async def _data_dir(self) -> AsyncIterator[None]:
        with DataDir.open(self.config.data_dir) as self.data_dir:
            log.info("data dir %s opened (node id %s)", self.config.data_dir, self.data_dir.node_id)
            yield

    @contextlib.asynccontextmanager
    async def _secret(self) -> AsyncIterator[None]:
        config = self.config
        had_secret = credentials.load_secret(config.data_dir) is not None
        joined = None
        if not had_secret and not config.bootstrap and config.token:
            credentials.check_new_join(config.token)
            parse_join_token(config.token)  # a malformed token is a clear error before anything is tried
            if not config.join:
                raise BadRequest("a join token needs --join ADDR: a member to join through")
            seeds = [(host, config.api_port) for host, _port in config.join_addresses()]
            joined = await joining.exchange(seeds, config.token, config.name, config.bind, config.manager, self.certs)
        self.secret = credentials.establish_secret(config.data_dir, config.bootstrap, joined)
        commands: list[Command] = []
        join_token = None
        # a new cluster's CA; or, for a cluster from before TLS (`--bootstrap-admin` on a data dir with a
        # secret and no certificate), its CA now (the state machine keeps the first CA it is given)
        before_tls = config.bootstrap_admin and had_secret and not self.certs.present()
        if (config.bootstrap and not had_secret) or before_tls:
            commands, join_token = bootstrap.new_cluster(config.data_dir, self.secret, self.certs, config.name,
                                                         config.bind)
        if (config.bootstrap and not had_secret) or config.bootstrap_admin:
            commands += bootstrap.prepare(config.data_dir, config.admin_password_file, config.admin_key_file)
        bootstrap.keep(config.data_dir, commands, join_token)
        self.ring = keyring.load(config.data_dir, self.secret)
        yield

    @contextlib.asynccontextmanager
    async def _docker(self) -> AsyncIterator[None]:
        if self._engine_factory is not None:
            self.engine = await self._engine_factory()
            yield
            return
        engine = await DockerEngine.connect(self.config.docker_host, self.config.docker_timeout)
        try:
            version = await engine.version()
            log.info("docker engine %s at %s", version.get("Version"), self.config.docker_host)
            self.engine = engine
            yield
        finally:
            await engine.close()

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[None]:
        # The agent's own HTTP calls (writes forwarded to the leader, status reports, logs from other
        # hosts) share one pool: no connection limit, keep-alive to each agent.
        # Agents are called over TLS, verified against the cluster CA, with this node's certificate.
        connector = aiohttp.TCPConnector(limit=0, ssl=self.certs.client)
        async with aiohttp.ClientSession(connector=connector) as self.session:
            yield

    @contextlib.asynccontextmanager
    async def _gossip(self) -> AsyncIterator[None]:
        config, ring = self.config, self._ring()
        mem = hostinfo.meminfo()
        _, overlay_public = load_or_make_key(config.data_dir)
        self.meta = {"api": self.api_url(), "raft": f"{config.bind}:{config.raft_port}", "manager": config.manager,
                     "labels": {HAPROXY_LABEL: "yes" if haproxy_binary() else "missing", **dict(config.labels)},
                     "cpus": hostinfo.cpu_count(), "memory": mem.get("total", 0),
                     "key_ids": keyring.ids(ring), "overlay_key": overlay_public.hex(), "health": "starting"}
        gossip = GossipNode(config.name, (config.bind, config.gossip_port), dict(self.meta),
                            ring.channel(b"gossip", replay_window=GOSSIP_REPLAY_WINDOW))
        await gossip.start()
        try:
            gossip.join(config.join_addresses())
            self.gossip, self.members = gossip, Members(gossip)
            self.health.add("gossip", gossip.problem)
            yield
        finally:
            await gossip.stop()

    @contextlib.asynccontextmanager
    async def _raft(self) -> AsyncIterator[None]:
        config, members, session = self.config, self._members(), self._need_session()
        sealer = self._ring().channel(b"raft")
        async with contextlib.AsyncExitStack() as stack:
            storage = await SqliteStorage.open(config.data_dir / "raft")
            stack.push_async_callback(storage.close)
            persistent = await storage.load()
            if storage.truncated_from is not None:
                log.warning("raft log had a torn or corrupt tail: truncated from index %d", storage.truncated_from)
            fresh = persistent.snapshot is None and not persistent.entries and persistent.hard_state.term == 0
            cfg = raft_config.lan()
            core = RaftNode(config.name, cfg, random.Random(), state=persistent,
                            voters=(config.name,) if config.bootstrap and fresh else ())
            inbox: list[Callable[[Message], None]] = []
            transport = RaftTransport((config.bind, config.raft_port), sealer, lambda m: inbox[0](m))
            driver = RaftDriver(core, storage, self.state, transport, cfg.tick_seconds,
                                on_applied=lambda index: replica.on_applied(index))
            replica = Replica(self.state, driver, self.feed, members.api_of, sealer, session)
            inbox.append(driver.deliver)
            await transport.start()
            stack.push_async_callback(transport.close)
            await driver.start(persistent.snapshot.data if persistent.snapshot else None)
            stack.push_async_callback(driver.stop)
            stack.push_async_callback(replica.close)
            replica.on_applied(driver.applied)  # what the snapshot restored
            self.replica = replica
            self.health.add("raft", driver.problem)
            members.on_change(self._membership_changed)
            self._membership_changed()
            log.info("raft member %s started (%s)", config.name, "bootstrapped a new cluster"
                     if config.bootstrap and fresh else f"term {persistent.hard_state.term}, "
                     f"{len(persistent.entries)} entries on disk")
            yield

    def _membership_changed(self) -> None:
        """Gossip saw a member come, go or change: Raft's peer addresses follow, and the leader looks."""
        if self.replica is None or self.members is None:
            return
        for m in self.members.members():
            raft_addr = m.meta_str("raft") or ""
            if m.name != self.config.name and ":" in raft_addr:
                host, _, port = raft_addr.rpartition(":")
                if port.isdigit():
                    self.replica.raft.transport.set_peer(m.name, (host, int(port)))
        if self.leader is not None:
            self.leader.kick()

    @contextlib.asynccontextmanager
    async def _leader(self) -> AsyncIterator[None]:
        config = self.config
        leader = Leader(self._replica(), self._members().members, grace=config.host_grace,
                        replace_dead_managers_after=config.replace_dead_managers_after)
        async with leader.running():
            self.leader = leader
            self.health.add("leader", leader.problem)
            yield

    @contextlib.asynccontextmanager
    async def _admin(self) -> AsyncIterator[None]:
        async with bootstrap.proposing(self.config.data_dir, self._replica()):
            yield

    @contextlib.asynccontextmanager
    async def _certificate(self) -> AsyncIterator[None]:
        """This node's certificate, from the cluster CA when it has none (a data dir of an earlier
        version) or it is due for renewal; renewed while the agent runs."""
        config, certs = self.config, self.certs

        def renew() -> None:
            authority = self.state.access.authority
            if authority is not None:
                # the role it names is what the node is: a Raft voter (a manager) or not
                voter = config.name in self._replica().raft.voters
                certs.issue_here(self.secret, authority, config.name, config.bind, voter or config.manager, time.time())
                self._advertise(api=self.api_url())

        if certs.due(time.time()):
            try:
                await until_async("the cluster CA in the replicated state",
                                  lambda: self.state.access.authority is not None, CERT_WAIT)
                renew()
            except TimeoutError:
                log.error("no cluster CA in the state after %g s: the API is served over plain HTTP", CERT_WAIT)
        elif (authority := self.state.access.authority) is not None and certs.behind(authority, time.time()):
            renew()  # the CA was rotated while this node was down (or its own CA lost to another's)
        if not certs.present():
            self.health.add("tls", lambda: "no certificate: the API is served over plain HTTP")
        ca_changes = self.feed.subscribe(lambda c: c.topic is Topic.ACCESS and c.key == "ca", "certificate")
        async with renewing(certs, renew, authority=lambda: self.state.access.authority, ca_changes=ca_changes):
            yield

    def api_url(self) -> str:
        """This node's API: HTTPS once it has a certificate (plain HTTP only while it has none)."""
        url = self.config.api_url
        return "https" + url[len("http"):] if self.certs.present() else url

    @contextlib.asynccontextmanager
    async def _images(self) -> AsyncIterator[None]:
        replica, config = self._replica(), self.config
        assert self.engine is not None

        def kick() -> None:
            if self.reconciler is not None:
                self.reconciler.kick()

        manager = ImageManager(config.name, self.state, cast(ImageEngine, self.engine), config.data_dir, self.secret,
                               replica.sealer, self.session, replica.api_of, replica.propose_anywhere, kick,
                               send_rate=config.image_send_rate,
                               bulk_bind=None if config.image_port is None else (config.bind, config.image_port))
        async with manager.running(self.feed):
            self.images = manager
            yield

    @contextlib.asynccontextmanager
    async def _reconciler(self) -> AsyncIterator[None]:
        replica, name = self._replica(), self.config.name
        assert self.engine is not None

        async def report(instance: str, observed: Observed) -> None:
            await replica.propose_anywhere(InstanceStatus(
                id=instance, host=name, status=observed.status, exit_code=observed.exit_code,
                container_id=observed.container_id, ip=observed.ip, ports=observed.ports, error=observed.error,
                health=observed.health, health_detail=observed.health_detail))

        paths = HostPaths(configs=str(self.config.data_dir / "configs"), secrets=f"/run/corral/{name}/secrets")
        storage = HostStorage(name, self.state, self.engine, paths, self.secret, replica.propose_anywhere)
        reconciler = Reconciler(name, self.state, self.engine, report, self.images, storage, paths)
        async with reconciler.running(self.feed):
            self.reconciler = reconciler
            self.health.add("reconciler", reconciler.problem)
            yield

    @contextlib.asynccontextmanager
    async def _load_balancers(self) -> AsyncIterator[None]:
        replica, name = self._replica(), self.config.name

        async def report(instance: str, observed: Observed) -> None:
            await replica.propose_anywhere(InstanceStatus(
                id=instance, host=name, status=observed.status, exit_code=observed.exit_code,
                container_id=observed.container_id, ip=observed.ip, ports=observed.ports, error=observed.error,
                health=observed.health, health_detail=observed.health_detail))

        reserved = {self.config.api_port: "the Corral agent's API port", self.config.raft_port: "the agent's Raft port",
                    self.config.gossip_port: "the agent's gossip port", 53: "the DNS server's port"}
        balancers = LoadBalancers(name, self.state, self.config.data_dir, report, haproxy_binary(), reserved)
        async with balancers.running(self.feed):
            self.load_balancers = balancers
            self.health.add("load balancers", balancers.problem)
            yield

    @contextlib.asynccontextmanager
    async def _keyring(self) -> AsyncIterator[None]:
        ring = self._ring()

        def changed() -> None:
            self._advertise(key_ids=keyring.ids(ring))

        async with keyring.following(self.state, self.feed, ring, self.config.data_dir, changed):
            yield

    @contextlib.asynccontextmanager
    async def _overlay(self) -> AsyncIterator[None]:
        config = self.config
        private, _ = load_or_make_key(config.data_dir)
        overlay = OverlayRuntime(config.name, config.bind, config.data_dir, config.overlay, self.state, private,
                                 self.secret)
        async with overlay.running(self.feed):
            self.overlay = overlay
            self.health.add("overlay", overlay.problem)
            yield

    @contextlib.asynccontextmanager
    async def _dns(self) -> AsyncIterator[None]:
        config = self.config
        server = DnsServer(config.name, self.state, DnsConfig(port=config.dns_port,
                                                              upstreams=config.dns_upstreams or None))
        async with server.running(self.feed):
            self.dns = server
            self.health.add("dns", server.problem)
            yield

    @contextlib.asynccontextmanager
    async def _health(self) -> AsyncIterator[None]:
        async with self.health.running():
            yield

    @contextlib.asynccontextmanager
    async def _http(self) -> AsyncIterator[None]:
        config = self.config
        assert self.data_dir is not None and self.engine is not None and self.gossip is not None
        assert self.overlay is not None
        deps = ApiDeps(node=NodeInfo(config.name, config.bind, self.api_url(), self.data_dir.node_id),
                       replica=self._replica(), engine=self.engine, gossip=self.gossip, ring=self._ring(),
                       overlay=self.overlay, health=self.health, secret=self.secret,
                       images=self.images, dns=self.dns,
                       load_balancers=self.load_balancers)
        app = create_app(deps)
        ui.install(app)  # the web UI at / beside the API, on the same port, with the same users
        runner = web.AppRunner(app, max_line_size=MAX_LINE_SIZE,
                               access_log=logging.getLogger("aiohttp.access") if config.access_log else None)
        await runner.setup()
        try:
            self.site = web.TCPSite(runner, config.bind, config.api_port, reuse_address=True,
                                    ssl_context=self.certs.server if self.certs.present() else None)
            await self.site.start()
            if config.loopback_api and not config.bind.startswith("127."):
                # `corral` on this host finds the API at its default URL (still authenticated)
                try:
                    await web.TCPSite(runner, "127.0.0.1", config.api_port, reuse_address=True).start()
                except OSError as exc:
                    log.warning("not serving the API on 127.0.0.1:%d too: %s", config.api_port, exc.strerror or exc)
            yield
        finally:
            await runner.cleanup()

    # ------------------------------------------------------------------ what stages share

    def _advertise(self, **fields: object) -> None:
        """Change what this node says about itself in gossip metadata."""
        self.meta.update(fields)
        if self.gossip is not None:
            self.gossip.update_meta(dict(self.meta))

    def _advertise_health(self, summary: str) -> None:
        try:
            self._advertise(health=summary)
        except ValueError:  # the reasons would not fit in gossip metadata: say only that it is degraded
            self._advertise(health=summary.split(":", 1)[0])

    def _ring(self) -> Keyring:
        if self.ring is None:
            raise DataDirError("no keyring: the secret stage has not run")
        return self.ring

    def _members(self) -> Members:
        assert self.members is not None, "the gossip stage has not run"
        return self.members

    def _replica(self) -> Replica:
        assert self.replica is not None, "the raft stage has not run"
        return self.replica

    def _need_session(self) -> aiohttp.ClientSession:
        assert self.session is not None, "the http client stage has not run"
        return self.session


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    import signal

    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("%s received: shutting down", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def serve(config: AgentConfig) -> None:
    """Run until SIGTERM/SIGINT. Raises CorralError (before serving) when a dependency is missing."""
    stop = asyncio.Event()
    with _stop_on_signals(stop):
        async with Agent(config).running():
            await stop.wait()


def run(config: AgentConfig) -> None:
    """Blocking entry point used by the CLI: one event loop (uvloop) runs everything."""
    uvloop.run(serve(config))


__all__ = ["Agent", "run", "serve"]
