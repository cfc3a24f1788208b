"""``GET /v1/containers/{id}/exec``: a command in a container, its terminal over a websocket
(``corral exec``), from any node.

The node asked checks everything (the container, the caller's ``deploy`` in its environment, the
command, the upgrade) and records the exec in the events through the state machine, which authorizes
it again (:class:`~agent.model.commands.ContainerExec`): nothing runs unrecorded. Then it either runs
the command on its own engine or, when the container is on another host, opens the same websocket to
that host's agent (over the cluster's TLS, with its node certificate and the caller's credential, as
logs are forwarded) and relays frames both ways. The host authenticates and authorizes the caller
again; it believes the node asked that the exec is recorded (:data:`~agent.api.exec_wire.AUDITED`)
only if that peer shows a node certificate and the event it names is this exec, by this caller.

The framing is :mod:`agent.api.exec_wire`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex

import aiohttp
from aiohttp import web

from agent.api import exec_wire as wire
from agent.api.auth import authorize, grants, principal, write
from agent.api.deps import DEPS, streaming
from agent.api.forward import PROXY_TIMEOUT
from agent.api.params import CMD, ID, INTERACTIVE, TTY
from agent.api.views import container_env, find_container
from agent.errors import BadRequest, Conflict, Forbidden, NotFound, Unavailable
from agent.model.commands import ContainerExec, exec_command_problem
from agent.model.entities import EventKind, Instance
from agent.model.policy import Permission
from agent.node.docker import EngineRefused, ExecSession

log = logging.getLogger("corral.exec")

HEARTBEAT = 30.0
"""Seconds between websocket pings: a client (or a peer) that vanished is noticed within twice this."""
AUDIT_WAIT = 5.0
"""Seconds the container's host waits to have applied the audit event the node asked names."""
MAX_FRAME = 1 << 20


async def exec_container(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    replica = deps.replica
    audited = await _audited_elsewhere(request)
    inst = find_container(replica.state, ID.get(request), grants(request))
    name = replica.state.container_name(inst) if inst.service in replica.state.services else inst.id
    authorize(request, Permission.DEPLOY, container_env(replica.state, inst))
    cmd = CMD.find(request) or wire.DEFAULT_CMD
    problem = exec_command_problem(cmd)
    if problem is not None:
        raise BadRequest(problem, field="cmd")
    tty, interactive = TTY.get(request), INTERACTIVE.get(request)
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_FRAME)
    if not ws.can_prepare(request).ok:
        raise BadRequest(f"GET {request.path} is a websocket: send the upgrade headers (Connection: Upgrade, "
                         "Upgrade: websocket, Sec-WebSocket-Key, Sec-WebSocket-Version: 13), as `corral exec` does",
                         field="upgrade")
    if audited is None:
        audited = (await write(request, ContainerExec(inst.id, cmd, tty, interactive))).index
    elif not _is_this_exec(request, audited, inst, cmd, tty):
        raise Forbidden(f"event {audited} is not the record of this exec (by this caller, of this command)")
    if inst.host != deps.node.name:
        return await _relay(request, ws, inst.host, audited)
    if not inst.container_id:
        raise NotFound(f"container {name} has not been created on {inst.host} yet", field="id")
    try:
        session = await deps.engine.containers.exec(inst.container_id, cmd, tty, interactive)
    except EngineRefused as exc:
        if exc.status == 404:
            raise NotFound(f"container {name} is gone from {inst.host}'s engine", field="id") from exc
        if exc.status == 409:
            raise Conflict(f"container {name} cannot run a command now: {exc.message}", field="id") from exc
        raise
    try:
        await ws.prepare(request)
        with streaming(request):
            await _run(ws, session, interactive)
    finally:
        await session.close()
    return ws


# ---------------------------------------------------------------------- the container's host


async def _run(ws: web.WebSocketResponse, session: ExecSession, interactive: bool) -> None:
    """Output to the client until the command's output ends, then its exit code; the client's input,
    resizes and end of input to the command meanwhile. Whichever side ends first ends the other."""
    tasks = {asyncio.create_task(_to_client(ws, session)), asyncio.create_task(_from_client(ws, session, interactive))}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await ws.close()


async def _to_client(ws: web.WebSocketResponse, session: ExecSession) -> None:
    try:
        while (out := await session.read()) is not None:
            await ws.send_bytes(wire.frame(*out))
        await ws.send_str(wire.exited(await session.exit_code()))
    except Unavailable as exc:  # the engine went away midway
        await _fail(ws, exc.message, aiohttp.WSCloseCode.INTERNAL_ERROR)
    except ConnectionResetError:
        pass  # the client went: nothing to tell it


async def _from_client(ws: web.WebSocketResponse, session: ExecSession, interactive: bool) -> None:
    """Until the client closes the websocket (or breaks the protocol: it is told why)."""
    try:
        async for message in ws:
            if message.type is aiohttp.WSMsgType.BINARY:
                _, data = wire.unframe(message.data, (wire.STDIN,))
                if not interactive:
                    raise wire.ProtocolError("input for an exec without interactive=1")
                await session.write(data)
            elif message.type is aiohttp.WSMsgType.TEXT:
                control = wire.client_control(message.data)
                if isinstance(control, wire.Resize):
                    await session.resize(control.cols, control.rows)
                elif interactive:
                    await session.close_stdin()
    except wire.ProtocolError as exc:
        await _fail(ws, str(exc), aiohttp.WSCloseCode.UNSUPPORTED_DATA)
    except Unavailable as exc:
        await _fail(ws, exc.message, aiohttp.WSCloseCode.INTERNAL_ERROR)


async def _fail(ws: web.WebSocketResponse, message: str, code: int) -> None:
    if not ws.closed:
        with contextlib.suppress(ConnectionResetError):
            await ws.send_str(wire.failed(message))
        await ws.close(code=code)


# ---------------------------------------------------------------------- the node asked, another host's container


async def _relay(request: web.Request, ws: web.WebSocketResponse, host: str, audited: int) -> web.StreamResponse:
    """The same websocket, opened to the agent of the container's host; frames relayed both ways. An
    answer it gives instead of upgrading (its 404, 409, 503) is this node's answer."""
    replica = request.app[DEPS].replica
    url = replica.api_of(host)
    if url is None:
        raise Unavailable(f"host {host} is not reachable (no API address known)", field="host")
    headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
    headers[wire.AUDITED] = str(audited)
    # the agent's own connection pool (and its TLS: the cluster CA, this node's certificate), with the
    # middleware that keeps a refused upgrade's body
    async with aiohttp.ClientSession(connector=replica.session.connector, connector_owner=False,
                                     timeout=PROXY_TIMEOUT, middlewares=(wire.refused_upgrades,)) as session:
        try:
            upstream = await session.ws_connect(url + request.path_qs, headers=headers, heartbeat=HEARTBEAT,
                                                max_msg_size=MAX_FRAME, timeout=aiohttp.ClientWSTimeout(ws_close=5),
                                                proxy=None)
        except wire.UpgradeRefused as exc:
            return web.Response(status=exc.status, body=exc.body, content_type=exc.content_type or None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"host {host}'s agent at {url} did not answer: {exc}", field="host") from exc
        async with upstream:
            await ws.prepare(request)
            with streaming(request):
                await _pipe(ws, upstream)
    return ws


async def _pipe(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    async def down() -> None:
        async for message in upstream:
            if message.type is aiohttp.WSMsgType.BINARY:
                await client.send_bytes(message.data)
            elif message.type is aiohttp.WSMsgType.TEXT:
                await client.send_str(message.data)

    async def up() -> None:
        async for message in client:
            if message.type is aiohttp.WSMsgType.BINARY:
                await upstream.send_bytes(message.data)
            elif message.type is aiohttp.WSMsgType.TEXT:
                await upstream.send_str(message.data)

    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionResetError, aiohttp.ClientError):
                await task
    await upstream.close()
    await client.close(code=upstream.close_code or aiohttp.WSCloseCode.OK)


# ---------------------------------------------------------------------- the audit, once


async def _audited_elsewhere(request: web.Request) -> int | None:
    """The index of the audit event the node asked recorded, when a peer with a node certificate says
    so (None otherwise: this node records the exec itself); waits until this replica has applied it."""
    raw = request.headers.get(wire.AUDITED)
    transport = request.transport
    if raw is None or not request.secure or transport is None or not transport.get_extra_info("peercert"):
        return None
    if not raw.isdigit():
        raise BadRequest(f"{wire.AUDITED} is an index", field=wire.AUDITED)
    index = int(raw)
    if not await request.app[DEPS].replica.wait_applied(index, AUDIT_WAIT):
        raise Unavailable(f"this host has not applied the exec's audit event ({index}) within {AUDIT_WAIT:g} s")
    return index


def _is_this_exec(request: web.Request, index: int, inst: Instance, cmd: tuple[str, ...], tty: bool) -> bool:
    p = principal(request)
    for event in reversed(request.app[DEPS].replica.state.events):
        if event.index == index:
            return (event.kind is EventKind.CONTAINER_EXEC and event.actor == p.user.name
                    and event.credential == p.key.id and event.refs.get("instance") == inst.id
                    and event.refs.get("command") == shlex.join(cmd) and event.refs.get("tty") == ("1" if tty else "0"))
        if event.index < index:
            break
    return False


__all__ = ["exec_container"]
