"""Raft's transport: sealed, length-prefixed msgpack frames over TCP (port 7947).

Each node dials every peer it has messages for and keeps that connection for its outbound
messages; what it receives arrives on the connections its peers dialled. A frame is a 4-byte
big-endian length and a sealed blob (the keyring seals; a frame that does not open, or does not
decode, is dropped and counted, and the connection is kept). A peer's queue is bounded: when a peer
is away, the oldest messages go first. Raft tolerates loss, so that is safe; it must never block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import Counter, deque
from collections.abc import Callable
from typing import Protocol

from mesh.aio import cancel_and_wait
from mesh.raft.messages import DecodeFailure, Message, NodeId, decode_message, encode_message

log = logging.getLogger("corral.raft")

FRAME = struct.Struct(">I")
MAX_FRAME = 64 * 2**20  # a snapshot travels in one frame
QUEUE_LIMIT = 4096
BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0
DRAIN_TIMEOUT = 5.0  # a peer that takes no bytes for this long is redialled
CLOSE_TIMEOUT = 3.0  # close() waits this long for its tasks
DIRECT_LIMIT = 256 * 1024  # bytes a connection may have unsent before frames wait for its sender task
DEFAULT_PORT = 7947


class Sealer(Protocol):
    def seal(self, plaintext: bytes) -> bytes: ...

    def open(self, sealed: bytes) -> bytes | None: ...


class _Peer:
    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.queue: deque[bytes] = deque(maxlen=QUEUE_LIMIT)
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.connected = False
        self.writer: asyncio.StreamWriter | None = None
        """The live connection, for writing a frame at once when nothing waits before it."""


class RaftTransport:
    def __init__(self, bind: tuple[str, int], sealer: Sealer, on_message: Callable[[Message], None]) -> None:
        self.bind = bind
        self._sealer = sealer
        self._on_message = on_message
        self._peers: dict[NodeId, _Peer] = {}
        self._server: asyncio.Server | None = None
        self._readers: set[asyncio.Task[None]] = set()
        self.drops: Counter[str] = Counter()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.bind[0], self.bind[1], reuse_address=True)

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the port the kernel picked, when bound to port 0)."""
        if self._server is not None and self._server.sockets:
            host, port = self._server.sockets[0].getsockname()[:2]
            return str(host), int(port)
        return self.bind

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        # bounded: a task that swallowed its cancellation must not hang the close
        await cancel_and_wait(*[p.task for p in self._peers.values() if p.task], *self._readers,
                              timeout=CLOSE_TIMEOUT)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def set_peer(self, node: NodeId, address: tuple[str, int]) -> None:
        """Add a peer or move it to a new address (its connection is redialled)."""
        peer = self._peers.get(node)
        if peer is not None and peer.address == address:
            return
        if peer is not None and peer.task is not None:
            peer.task.cancel()
        fresh = _Peer(address)
        if peer is not None:
            fresh.queue.extend(peer.queue)
        self._peers[node] = fresh
        fresh.task = asyncio.get_running_loop().create_task(self._send_loop(node, fresh))

    def peers(self) -> dict[NodeId, dict[str, object]]:
        return {n: {"address": f"{p.address[0]}:{p.address[1]}", "connected": p.connected,
                    "queued": len(p.queue), "sender_alive": p.task is not None and not p.task.done()}
                for n, p in self._peers.items()}

    def send(self, msg: Message) -> None:
        peer = self._peers.get(msg.to)
        if peer is None:
            self.drops["unknown_peer"] += 1
            return
        if len(peer.queue) == peer.queue.maxlen:
            self.drops["queue_full"] += 1
        sealed = self._sealer.seal(encode_message(msg))
        frame = FRAME.pack(len(sealed)) + sealed
        writer = peer.writer
        if writer is not None and not peer.queue and not writer.is_closing() \
                and writer.transport.get_write_buffer_size() < DIRECT_LIMIT:
            writer.write(frame)  # the usual case: the socket keeps up, so no task has to wake to send it
            return
        peer.queue.append(frame)
        peer.wakeup.set()
        if peer.task is not None and peer.task.done() and not peer.task.cancelled():
            self.drops["sender_restarted"] += 1  # a bug if it ever counts: the sender must not die
            log.error("raft sender to %s had stopped (%r); restarting it", msg.to, peer.task.exception())
            peer.task = asyncio.get_running_loop().create_task(self._send_loop(msg.to, peer))

    async def _send_loop(self, node: NodeId, peer: _Peer) -> None:
        """Dial, drain the queue, redial on any failure: this task must outlive every error but cancellation."""
        backoff = BACKOFF_MIN
        me = asyncio.current_task()
        while True:
            writer: asyncio.StreamWriter | None = None
            try:
                _, connected = await asyncio.wait_for(asyncio.open_connection(*peer.address), 1.0)
                writer = connected
                backoff = BACKOFF_MIN
                peer.connected = True
                peer.writer = connected
                while True:
                    while peer.queue:
                        connected.write(peer.queue.popleft())
                    await asyncio.wait_for(connected.drain(), DRAIN_TIMEOUT)
                    if me is not None and me.cancelling():
                        raise asyncio.CancelledError  # swallowed by a wait_for (below)
                    peer.wakeup.clear()
                    if not peer.queue:
                        await peer.wakeup.wait()
                    if connected.is_closing():
                        raise ConnectionResetError("connection closed")
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError) as exc:
                log.debug("raft connection to %s: %s", node, exc)
            except Exception:  # never let the peer's sender die: its queue would grow unseen
                log.exception("raft sender to %s failed; redialling", node)
            finally:
                peer.connected = False
                peer.writer = None
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(Exception):  # bounded: a dead peer's close can wait forever
                        await asyncio.wait_for(writer.wait_closed(), 1.0)
            if me is not None and me.cancelling():
                # Python 3.11's wait_for can swallow a cancellation that lands as its inner await
                # finishes (the dial, the drain, the close above); the request is still recorded on
                # the task, so honour it before waiting again.
                raise asyncio.CancelledError
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._readers.add(task)
        try:
            while True:
                header = await reader.readexactly(FRAME.size)
                (size,) = FRAME.unpack(header)
                if size > MAX_FRAME:
                    self.drops["oversized"] += 1
                    return  # the stream cannot be resynchronised: drop the connection
                blob = await reader.readexactly(size)
                plain = self._sealer.open(blob)
                if plain is None:
                    self.drops["unsealed"] += 1
                    continue
                msg = decode_message(plain)
                if isinstance(msg, DecodeFailure):
                    self.drops["malformed"] += 1
                    continue
                self._on_message(msg)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # Only close() cancels a connection's reader. Ending normally instead of cancelled keeps
            # Python 3.11's stream-server callback from calling exception() on a cancelled task and
            # logging a CancelledError traceback at every clean stop.
            pass
        finally:
            if task is not None:
                self._readers.discard(task)
            writer.close()
