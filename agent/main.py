"""The agent process: data dir, Docker, gossip, Raft + leader + reconciler, the API; clean stop on a signal.

Start order (each stops in reverse): data dir (locked) → cluster secret → Docker Engine (proven
reachable) → gossip on :7946 (joins through ``--join``) → Raft on :7947, the leader loop and the
reconciler (:func:`agent.runtime.run_cluster`) → HTTP API on :8080. One ``asyncio.run`` (on uvloop)
runs everything; SIGTERM or SIGINT sets an event and the process exits 0 with no traceback. A clean
stop does not *leave* the cluster (as Consul servers' ``leave_on_terminate = false``): an agent
restart must not look like a host going away for good, so others see it fail and come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import uvloop
from aiohttp import web

from agent import __version__, api_members, credentials, keys, overlay_runtime
from agent.api import AgentDeps, build_app
from agent.config import AgentConfig
from agent.datadir import DataDir
from agent.docker import DockerEngine
from agent.errors import DataDirError
from agent.runtime import Runtime, local_meta, run_cluster
from mesh.keyring import Keyring, KeyringError
from mesh.node import GossipNode

GOSSIP_REPLAY_WINDOW = 60.0

log = logging.getLogger("corral.agent")


async def serve(config: AgentConfig) -> None:
    """Run until SIGTERM/SIGINT. Raises CorralError (before serving) when a dependency is missing."""
    data_dir = DataDir.open(config.data_dir)
    log.info("data dir %s opened (node id %s)", config.data_dir, data_dir.node_id)
    try:
        had_secret = credentials.load_secret(config.data_dir) is not None
        credentials.establish_secret(config.data_dir, config.bootstrap, config.token)
        if config.bootstrap and not had_secret:
            token = (config.data_dir / credentials.TOKEN_FILE).read_text().strip()
            log.info("new cluster: join other hosts with --join %s --token %s", config.bind, token)
        engine = await DockerEngine.connect(config.docker_host, config.docker_timeout)
        try:
            version = await engine.version()
            log.info("docker engine %s at %s", version.get("Version"), config.docker_host)
            secret = credentials.load_secret(config.data_dir)
            if secret is None:
                raise DataDirError(f"{config.data_dir}: no cluster secret after set-up")
            ring = keys.load(config.data_dir, secret)
            overlay_private, overlay_public = overlay_runtime.load_or_make_key(config.data_dir)
            meta = {**local_meta(config), "key_ids": keys.ids(ring), "overlay_key": overlay_public.hex()}
            gossip = GossipNode(config.name, (config.bind, config.gossip_port), meta,
                                ring.channel(b"gossip", replay_window=GOSSIP_REPLAY_WINDOW))
            await gossip.start()
            try:
                gossip.join(config.join_addresses())
                async with run_cluster(config, engine, ring.channel(b"raft"),
                                       api_members.GossipMembership(gossip)) as runtime:
                    watcher = asyncio.create_task(_follow_keyring(runtime, ring, gossip, meta, config))
                    overlay = overlay_runtime.OverlayRuntime(config, runtime.cluster, overlay_private, secret)
                    await overlay.start()
                    try:
                        await _serve_api(config, AgentDeps(engine=engine, data_dir=data_dir), runtime, gossip, ring,
                                         overlay)
                    finally:
                        await overlay.stop()
                        watcher.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await watcher
            finally:
                await gossip.stop()
        finally:
            await engine.close()
    finally:
        data_dir.close()


async def _follow_keyring(runtime: Runtime, ring: Keyring, gossip: GossipNode, meta: dict[str, Any],
                          config: AgentConfig) -> None:
    """Apply each replicated keyring change to the live ring, save it, and say so in gossip metadata."""
    state, raft = runtime.cluster.state, runtime.cluster.raft
    while True:
        await raft.wait_applied(raft.applied + 1, 5.0)
        try:
            if keys.sync(ring, state.keyring, config.data_dir):
                meta["key_ids"] = keys.ids(ring)
                gossip.update_meta(dict(meta))
        except (KeyringError, ValueError, OSError) as exc:
            log.error("could not apply the replicated keyring: %s", exc)


async def _serve_api(config: AgentConfig, deps: AgentDeps, runtime: Runtime, gossip: GossipNode,
                     ring: Keyring, overlay: overlay_runtime.OverlayRuntime) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig, stop)
    app = build_app(config, deps, runtime.cluster, gossip, ring, overlay)
    runner = web.AppRunner(app, access_log=logging.getLogger("aiohttp.access") if config.access_log else None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.bind, config.api_port, reuse_address=True)
        await site.start()
        log.info("agent %s (corral %s) serving %s", config.name, __version__, config.api_url)
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("agent %s stopped", config.name)


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    log.info("%s received: shutting down", sig.name)
    stop.set()


def run(config: AgentConfig) -> None:
    """Blocking entry point used by the CLI."""
    uvloop.run(serve(config))
