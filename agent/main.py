"""The agent process: open the data dir, connect to Docker, serve the API, stop cleanly on a signal.

One ``asyncio.run`` (on uvloop) runs everything; a SIGTERM or SIGINT sets an event, the runner is
cleaned up (sockets closed, tasks cancelled and awaited), and the process exits 0 with no traceback.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop
from aiohttp import web

from agent import __version__, credentials
from agent.api import AgentDeps, create_app
from agent.config import AgentConfig
from agent.datadir import DataDir
from agent.docker import DockerEngine

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
            await _serve_api(config, AgentDeps(engine=engine, data_dir=data_dir))
        finally:
            await engine.close()
    finally:
        data_dir.close()


async def _serve_api(config: AgentConfig, deps: AgentDeps) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig, stop)
    app = create_app(config, deps)
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
