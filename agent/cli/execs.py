"""``corral exec [-i] [-t] CONTAINER [CMD…]``: a command in a container, from any node, as ``docker
exec`` runs one on its own host. The websocket and its framing: :mod:`agent.api.exec_wire`.

The exit status is the command's (Docker's 126 and 127 when it cannot be run or is not found); what
the API refuses is ``corral: …`` and 1. With ``-i -t`` the local terminal is raw (Ctrl-C, Ctrl-D, the
arrow keys go to the command) until the command ends, whatever ends it; with ``-t`` the terminal's
size goes along, and again on every change (SIGWINCH).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import stat
import sys
import termios
import tty as ttys
from collections.abc import Iterator
from typing import BinaryIO

import aiohttp
import click

from agent.api import exec_wire as wire
from agent.cli.client import ApiError, Client
from agent.cli.output import fail, url_option

CONNECT_TIMEOUT = 10.0
READ_CHUNK = 64 * 1024


@click.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="attach standard input to the command")
@click.option("-t", "--tty", is_flag=True,
              help="a terminal in the container (with -i the local one is raw: Ctrl-C goes to the command)")
@url_option
@click.argument("container")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
def exec_(interactive: bool, tty: bool, url: str, container: str, cmd: tuple[str, ...]) -> None:
    """Run CMD (default: sh) in CONTAINER (an id or a name such as web-nginx-1), wherever it runs,
    through whichever node --host names; the exit status is the command's.

    Options go before CONTAINER; everything after it is the command (`--` is allowed):

    \b
      corral exec web-nginx-1 -- nginx -t
      corral exec -it web-nginx-1            # a shell
      echo data | corral exec -i web-nginx-1 -- cat
    """
    if cmd[:1] == ("--",):  # click keeps it: parsing stopped at CONTAINER
        cmd = cmd[1:]
    command = cmd or wire.DEFAULT_CMD
    try:
        query = wire.query(command, tty, interactive)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="CMD") from None
    if tty and interactive and not sys.stdin.isatty():
        raise fail("the input is not a terminal: -it needs one (drop -t to pipe input)")
    client = Client(url)
    code = asyncio.run(run(client, container, query, tty, interactive))
    sys.exit(code)


async def run(client: Client, container: str, query: list[tuple[str, str]], tty: bool, interactive: bool,
              stdin: BinaryIO | None = None, stdout: BinaryIO | None = None, stderr: BinaryIO | None = None) -> int:
    """The command's exit status, once it has ended; ApiError when it could not be started."""
    stdin = stdin or sys.stdin.buffer
    outputs = {wire.STDOUT: stdout or sys.stdout.buffer, wire.STDERR: stderr or sys.stderr.buffer}
    path = f"{client.url}/v1/containers/{container}/exec"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout, middlewares=(wire.refused_upgrades,)) as session:
        try:
            ws = await session.ws_connect(path, params=query, headers=client.headers(),
                                          ssl=client.tls if client.tls is not None else True, heartbeat=30.0)
        except wire.UpgradeRefused as exc:
            code, message = exc.error()
            if exc.status == 401:
                message += " (log in with `corral login`, or set CORRAL_TOKEN)"
            raise ApiError(exc.status, code, message) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise ApiError(0, "untrusted", f"the agent at {client.url} presented a certificate this CLI does not "
                           f"trust ({exc.certificate_error}): `corral login` pins the cluster's CA, or set "
                           "CORRAL_CACERT") from None
        except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            raise ApiError(0, "unreachable", f"cannot reach the Corral API at {client.url}: {exc}") from None
        async with ws:
            terminal = stdin.fileno() if tty and interactive else None
            with raw_terminal(terminal):
                return await _session(ws, stdin if interactive else None, outputs, tty)


async def _session(ws: aiohttp.ClientWebSocketResponse, stdin: BinaryIO | None, outputs: dict[int, BinaryIO],
                   tty: bool) -> int:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    outbox = _Outbox(ws, stdin)

    def size_changed() -> None:
        size = _terminal_size()
        if size is not None:
            outbox.put(wire.resize(*size))

    handled: list[signal.Signals] = []
    if tty:
        size_changed()
        loop.add_signal_handler(signal.SIGWINCH, size_changed)
        handled.append(signal.SIGWINCH)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # end the session (and restore the terminal), then exit
        loop.add_signal_handler(sig, main.cancel)
        handled.append(sig)
    exit_code: int | None = None
    error: str | None = None
    ended = False
    outbox.start()
    try:
        async for message in ws:
            if message.type is aiohttp.WSMsgType.BINARY:
                stream, data = wire.unframe(message.data, (wire.STDOUT, wire.STDERR))
                out = outputs[stream]
                out.write(data)
                out.flush()
            elif message.type is aiohttp.WSMsgType.TEXT:
                control = wire.server_control(message.data)
                if isinstance(control, wire.Exited):
                    exit_code, ended = control.code, True
                else:
                    error = control.message
    except asyncio.CancelledError:
        return 128 + signal.SIGTERM
    except wire.ProtocolError as exc:
        error = f"the agent broke the exec protocol: {exc}"
    finally:
        await outbox.stop()
        for sig in handled:
            loop.remove_signal_handler(sig)
    if error is not None:
        raise ApiError(0, "exec", error)
    if not ended:
        raise ApiError(0, "exec", f"the connection ended before the command did (closed: {ws.close_code})")
    if exit_code is None:
        raise ApiError(0, "exec", "the command's output ended but the engine did not tell its exit status")
    return exit_code


class _Outbox:
    """What goes to the agent, in order, by one sender: the local standard input as it comes (a
    terminal, a pipe: read when readable, paused while the websocket is behind; a file: read in a
    thread, as epoll cannot wait on one), its end as an ``eof`` message, and resizes."""

    HIGH, LOW = 64, 8

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stdin: BinaryIO | None) -> None:
        self.ws = ws
        self.fd = stdin.fileno() if stdin is not None else None
        self.queue: asyncio.Queue[bytes | str] = asyncio.Queue()
        self.reading = self.paused = False
        self.tasks: list[asyncio.Task[None]] = []

    def put(self, item: bytes | str) -> None:
        self.queue.put_nowait(item)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks.append(loop.create_task(self._send()))
        if self.fd is None:
            return
        if stat.S_ISREG(os.fstat(self.fd).st_mode):
            self.tasks.append(loop.create_task(self._read_file()))
        else:
            loop.add_reader(self.fd, self._readable)
            self.reading = True

    def _readable(self) -> None:
        assert self.fd is not None
        try:
            data = os.read(self.fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._got(data)
        if self.reading and self.queue.qsize() >= self.HIGH:
            asyncio.get_running_loop().remove_reader(self.fd)
            self.paused = True

    def _got(self, data: bytes) -> None:
        if data:
            self.put(wire.frame(wire.STDIN, data))
            return
        self._stop_reading()
        self.put(wire.input_end())

    async def _read_file(self) -> None:
        fd = self.fd
        assert fd is not None
        loop = asyncio.get_running_loop()
        while data := await loop.run_in_executor(None, os.read, fd, READ_CHUNK):
            self._got(data)
            await self.queue.join()  # back-pressure: one chunk at a time
        self._got(b"")

    async def _send(self) -> None:
        while True:
            item = await self.queue.get()
            if isinstance(item, bytes):
                await self.ws.send_bytes(item)
            else:
                await self.ws.send_str(item)
            self.queue.task_done()
            if self.paused and self.reading and self.queue.qsize() <= self.LOW and self.fd is not None:
                asyncio.get_running_loop().add_reader(self.fd, self._readable)
                self.paused = False

    def _stop_reading(self) -> None:
        if self.reading and self.fd is not None:
            if not self.paused:
                asyncio.get_running_loop().remove_reader(self.fd)
            self.reading = self.paused = False

    async def stop(self) -> None:
        self._stop_reading()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _terminal_size() -> tuple[int, int] | None:
    for fd in (sys.stdout.fileno(), sys.stdin.fileno()):
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd)
            return max(1, size.columns), max(1, size.lines)
    return None


@contextlib.contextmanager
def raw_terminal(fd: int | None) -> Iterator[None]:
    """The terminal ``fd`` in raw mode (each key as it is pressed, no echo, no signals from Ctrl-C),
    restored as it was on the way out, however that is."""
    if fd is None:
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        ttys.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


__all__ = ["exec_", "raw_terminal", "run"]
