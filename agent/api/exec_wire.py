"""The websocket protocol of ``GET /v1/containers/{id}/exec`` (``corral exec``), both ends of it: the
agents (the node asked, the container's host) and the CLI use these functions, so the framing is
written once (docs/EXEC.md describes it for other clients).

The request: ``cmd`` repeated once per argument (``?cmd=sh&cmd=-c&cmd=echo%20hi``; none: ``sh``),
``tty`` (a terminal in the container) and ``interactive`` (its standard input attached), and the
websocket upgrade headers. Errors before the upgrade are the API's JSON errors with their status.

After the upgrade:

- **binary frames** carry bytes, the first byte says which stream: ``0`` standard input (client to
  server), ``1`` standard output and ``2`` standard error (server to client; with a TTY all is ``1``);
- **text frames** are JSON control messages. The client sends ``{"resize": [COLS, ROWS]}`` (the
  terminal's size, at the start and on every change) and ``{"eof": true}`` (its input has ended);
  the server sends ``{"exit": CODE}`` once the command has exited (``null`` when the engine could not
  tell), or ``{"error": TEXT}`` when the exec failed midway, and then closes the websocket.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import aiohttp

from agent.model.commands import exec_command_problem

STDIN, STDOUT, STDERR = 0, 1, 2
DEFAULT_CMD = ("sh",)
MAX_TERMINAL = 10_000
"""Columns or rows of a resize: 1 to this."""
AUDITED = "X-Corral-Exec-Audited"
"""The index of the exec's audit event, sent by the node asked to the container's host (so that the
host does not record it twice); believed only from a peer that shows a node certificate."""


class ProtocolError(ValueError):
    """A frame or a control message that breaks the protocol: the reason, to send back."""


def frame(stream: int, data: bytes) -> bytes:
    return bytes((stream,)) + data


def unframe(data: bytes, allowed: Sequence[int]) -> tuple[int, bytes]:
    """(stream, bytes) of a binary frame; ProtocolError unless its stream is one of ``allowed``."""
    if not data:
        raise ProtocolError("an empty binary frame (its first byte names the stream)")
    if data[0] not in allowed:
        raise ProtocolError(f"a binary frame for stream {data[0]}: only {', '.join(map(str, allowed))} here")
    return data[0], data[1:]


@dataclasses.dataclass(frozen=True)
class Resize:
    cols: int
    rows: int


@dataclasses.dataclass(frozen=True)
class InputEnd:
    """The client's standard input has ended."""


@dataclasses.dataclass(frozen=True)
class Exited:
    code: int | None


@dataclasses.dataclass(frozen=True)
class Failed:
    message: str


def _object(text: str) -> dict[str, object]:
    try:
        message = json.loads(text)
    except ValueError:
        raise ProtocolError("a text frame must be a JSON object") from None
    if not isinstance(message, dict) or len(message) != 1:
        raise ProtocolError("a control message is a JSON object with one key")
    return message


def client_control(text: str) -> Resize | InputEnd:
    """What a client's text frame asks; ProtocolError saying what is wrong with it."""
    message = _object(text)
    if "resize" in message:
        size = message["resize"]
        if not (isinstance(size, list) and len(size) == 2
                and all(type(n) is int and 1 <= n <= MAX_TERMINAL for n in size)):
            raise ProtocolError(f"resize is [COLS, ROWS], each a whole number from 1 to {MAX_TERMINAL}")
        return Resize(size[0], size[1])
    if message.get("eof") is True:
        return InputEnd()
    raise ProtocolError(f"unknown control message {next(iter(message))!r}: resize or eof")


def server_control(text: str) -> Exited | Failed:
    """What a server's text frame says; ProtocolError if it is not one of its messages."""
    message = _object(text)
    if "exit" in message:
        code = message["exit"]
        if code is not None and type(code) is not int:
            raise ProtocolError("exit is a whole number or null")
        return Exited(code)
    if isinstance(message.get("error"), str):
        return Failed(str(message["error"]))
    raise ProtocolError(f"unknown control message {next(iter(message))!r} from the server")


def resize(cols: int, rows: int) -> str:
    return json.dumps({"resize": [cols, rows]})


def input_end() -> str:
    return json.dumps({"eof": True})


def exited(code: int | None) -> str:
    return json.dumps({"exit": code})


def failed(message: str) -> str:
    return json.dumps({"error": message})


def query(cmd: Sequence[str], tty: bool, interactive: bool) -> list[tuple[str, str]]:
    """The request's query for ``cmd``; ValueError naming what is wrong with the command."""
    problem = exec_command_problem(tuple(cmd))
    if problem is not None:
        raise ValueError(problem)
    return [*(("cmd", arg) for arg in cmd), ("tty", "1" if tty else "0"), ("interactive", "1" if interactive else "0")]


class UpgradeRefused(Exception):
    """The server answered a websocket request without upgrading: its status and its (JSON) body."""

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.content_type, self.body = status, content_type, body

    def error(self) -> tuple[str, str]:
        """(code, message) of the API's JSON error, or what can be said without one."""
        try:
            payload = json.loads(self.body)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("message"), str):
            return str(payload.get("error", "error")), payload["message"]
        return "http_error", f"HTTP {self.status} instead of a websocket"


async def refused_upgrades(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType,
                           ) -> aiohttp.ClientResponse:
    """A client middleware: a websocket request the server answers with an error raises
    :class:`UpgradeRefused` carrying the answer's body (aiohttp's ``ws_connect`` keeps only the status)."""
    response = await handler(request)
    if request.headers.get("Upgrade", "").lower() == "websocket" and response.status != 101:
        body = await response.read()
        response.release()
        raise UpgradeRefused(response.status, response.content_type, body)
    return response


__all__ = ["AUDITED", "DEFAULT_CMD", "STDERR", "STDIN", "STDOUT", "Exited", "Failed", "InputEnd", "ProtocolError",
           "Resize", "UpgradeRefused", "client_control", "exited", "failed", "frame", "input_end", "query",
           "refused_upgrades", "resize", "server_control", "unframe"]
