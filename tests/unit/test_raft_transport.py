"""The Raft transport on real loopback sockets under uvloop: a peer that dies and comes back gets the queue.

uvloop raises RuntimeError (not OSError) when writing to a transport that closed under the writer;
a sender task that died of it once left its peer's queue growing forever (seen in the lab).
"""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from mesh.keyring import Keyring
from mesh.raft.messages import Message, RequestVote
from mesh.raft.transport import RaftTransport
from mesh.waiting import until_async


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(60)
def test_a_peer_that_dies_and_returns_receives_what_was_queued() -> None:
    port_a, port_b = _free_port(), _free_port()

    async def scenario() -> tuple[list[int], dict[str, object]]:
        async with asyncio.timeout(40):  # a hang is a failure with a traceback, never a stuck suite
            return await steps()

    async def steps() -> tuple[list[int], dict[str, object]]:
        ring = Keyring.from_secret(b"t" * 32)
        got: list[int] = []

        def on_b(msg: Message) -> None:
            assert isinstance(msg, RequestVote)
            got.append(msg.term)

        a = RaftTransport(("127.0.0.1", port_a), ring.channel(b"raft"), lambda m: None)
        b = RaftTransport(("127.0.0.1", port_b), ring.channel(b"raft"), on_b)
        await a.start()
        await b.start()
        a.set_peer("b", ("127.0.0.1", port_b))
        for term in range(1, 4):
            a.send(RequestVote("a", "b", term, 0, 0))
        await until_async("3 frames", lambda: len(got) == 3, 10)
        await b.close()  # the peer dies: its accepted connections go with it
        for term in range(4, 40):  # some writes hit the dead connection, the rest queue up
            a.send(RequestVote("a", "b", term, 0, 0))
            await asyncio.sleep(0.005)
        b = RaftTransport(("127.0.0.1", port_b), ring.channel(b"raft"), on_b)
        await b.start()
        a.send(RequestVote("a", "b", 99, 0, 0))
        await until_async("frame 99", lambda: 99 in got, 10)
        status = a.peers()["b"]
        await a.close()
        await b.close()
        return got, status

    got, status = uvloop.run(scenario())
    assert got[:3] == [1, 2, 3] and got[-1] == 99
    assert status["sender_alive"] is True and status["connected"] is True and status["queued"] == 0


@pytest.mark.timeout(60)
def test_closing_with_connections_open_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    """A clean stop must not leave a CancelledError traceback per accepted connection in the log."""
    port_a, port_b = _free_port(), _free_port()

    async def scenario() -> None:
        ring = Keyring.from_secret(b"t" * 32)
        got: list[int] = []
        a = RaftTransport(("127.0.0.1", port_a), ring.channel(b"raft"), lambda m: None)
        b = RaftTransport(("127.0.0.1", port_b), ring.channel(b"raft"), lambda m: got.append(1))
        await a.start()
        await b.start()
        a.set_peer("b", ("127.0.0.1", port_b))
        a.send(RequestVote("a", "b", 1, 0, 0))
        await until_async("1 frame", lambda: len(got) == 1, 10)  # b holds an accepted connection with a reader waiting
        await b.close()
        await a.close()
        await asyncio.sleep(0.1)  # the stream server's done-callbacks run

    with caplog.at_level("ERROR"):
        uvloop.run(scenario())
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not errors, [r.getMessage() for r in errors]
