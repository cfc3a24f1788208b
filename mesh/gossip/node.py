"""The gossip driver: runs the sans-I/O SWIM core (:mod:`mesh.gossip.swim`) on real sockets.

UDP and TCP on the same port (7946, as memberlist). Every UDP datagram and every TCP frame is
sealed by the keyring's ``gossip`` channel; what does not open (other cluster, garbage, replay) is
dropped and counted before the core sees it. Push-pull anti-entropy and joins go over TCP: one
length-prefixed sealed request, one sealed reply, then the connection is closed.

One task owns the core's clock: it sleeps until the core's next deadline (or until a packet wakes
it), runs the core's timers, sends what the core queued, starts the TCP exchanges it asked for, and hands
events to subscribers. Subscribers are plain callbacks run on the event loop; one that raises is
logged and does not stop the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mesh.aio import cancel_and_wait, wait_event
from mesh.gossip.swim import Address, Event, Member, Profile, Swim
from mesh.keyring import Channel

log = logging.getLogger("corral.gossip")

DEFAULT_PORT = 7946
FRAME = struct.Struct(">I")
MAX_STREAM = 8 * 2**20
STREAM_TIMEOUT = 5.0

Subscriber = Callable[[Event], None]
CORE_DROPS = ("truncated", "oversized", "bad_version", "bad_kind", "malformed", "not_for_me", "unexpected")


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, node: GossipNode) -> None:
        self.node = node

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.node._on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable and the like
        self.node.io_errors[type(exc).__name__] += 1


class GossipNode:
    def __init__(self, name: str, bind: Address, meta: Mapping[str, Any], channel: Channel,
                 profile: Profile | None = None, rng: random.Random | None = None,
                 advertise: Address | None = None) -> None:
        self.name = name
        self.bind = bind
        self.channel = channel
        self.profile = profile or Profile.lan()
        self._clock = time.monotonic
        self.core = Swim(name, advertise or bind, meta, self.profile, rng or random.Random(), self._clock())
        self._subscribers: list[Subscriber] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._streams: set[asyncio.Task[None]] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self.io_errors: Counter[str] = Counter()
        self.sent_bytes = 0

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=self.bind,
                                                           reuse_port=False)
        self._udp = transport
        self._server = await asyncio.start_server(self._serve_stream, self.bind[0], self.bind[1], reuse_address=True)
        self._task = asyncio.create_task(self._run(), name=f"gossip-{self.name}")
        log.info("gossip %s listening on %s:%d (udp+tcp)", self.name, *self.bind)

    def join(self, seeds: Sequence[Address]) -> None:
        """Join through any of the seeds; the core retries with backoff until one answers."""
        seeds = [s for s in seeds if s != self.bind]
        if seeds:
            self.core.join(seeds, self._clock())
            self._wake.set()

    async def stop(self) -> None:
        await cancel_and_wait(self._task, *self._streams)
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # -- what the agent uses ---------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    def members(self) -> list[Member]:
        return self.core.members()

    def update_meta(self, meta: Mapping[str, Any]) -> None:
        self.core.update_meta(meta, self._clock())
        self._wake.set()

    def problem(self) -> str | None:
        """Why this node does not take part in gossip now (its loop ended), or None."""
        if self._task is not None and self._task.done():
            return "gossip stopped"
        return None

    def monotonic_to_wall(self, t: float) -> float:
        return time.time() - (self._clock() - t)

    def stats(self) -> dict[str, Any]:
        drops: Counter[str] = Counter({k: v for k, v in self.core.stats.items() if k in CORE_DROPS and v})
        for reason, n in self.channel.drops.items():
            drops[reason] += n
        return {
            "core": dict(self.core.stats),
            "sealing": {"opened": self.channel.opened, "sealed": self.channel.sealed,
                        "drops": dict(self.channel.drops)},
            "drops": dict(drops),
            "io_errors": dict(self.io_errors),
            "health_score": self.core.health_score,
            "sent_bytes_sealed": self.sent_bytes,
        }

    # -- the loop --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            now = self._clock()
            try:
                self.core.handle_timer(now)
            except Exception:  # the core must not raise; if it does, keep the node alive and say so
                log.exception("gossip core raised in handle_timer")
            self._flush()
            timer = self.core.get_timer()
            delay = 1.0 if timer is None else max(0.0, timer - self._clock())
            self._wake.clear()
            await wait_event(self._wake, min(delay, 1.0))

    def _flush(self) -> None:
        udp = self._udp
        if udp is not None:
            for packet, dst in self.core.datagrams_to_send():
                sealed = self.channel.seal(packet)
                self.sent_bytes += len(sealed)
                try:
                    udp.sendto(sealed, dst)
                except OSError as exc:  # EPERM from a firewall, ENETUNREACH, …: count, carry on
                    self.io_errors[type(exc).__name__] += 1
        for request, dst in self.core.streams_to_send():
            task = asyncio.create_task(self._exchange(dst, request))
            self._streams.add(task)
            task.add_done_callback(self._streams.discard)
        while (event := self.core.next_event()) is not None:
            log.info("member %s %s (incarnation %d, %s:%d)", event.member.name, event.kind,
                     event.member.incarnation, *event.member.address)
            for callback in list(self._subscribers):
                try:
                    callback(event)
                except Exception:
                    log.exception("gossip subscriber failed on %s %s", event.kind, event.member.name)

    def _on_datagram(self, data: bytes, src: Address) -> None:
        plaintext = self.channel.open(data)
        if plaintext is None:
            return
        try:
            self.core.receive(plaintext, src, self._clock())
        except Exception:
            log.exception("gossip core raised on a packet from %s:%d", *src)
            self.io_errors["core_exception"] += 1
        self._wake.set()

    # -- TCP push-pull ---------------------------------------------------------------------------

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes | None:
        head = await reader.readexactly(FRAME.size)
        (size,) = FRAME.unpack(head)
        if size > MAX_STREAM:
            self.io_errors["stream_oversized"] += 1
            return None
        return self.channel.open(await reader.readexactly(size))

    def _frame(self, payload: bytes) -> bytes:
        sealed = self.channel.seal(payload)
        return FRAME.pack(len(sealed)) + sealed

    async def _exchange(self, dst: Address, request: bytes) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(STREAM_TIMEOUT):
                reader, writer = await asyncio.open_connection(dst[0], dst[1])
                writer.write(self._frame(request))
                await writer.drain()
                reply = await self._read_frame(reader)
            if reply is None:
                self.core.stream_failed(dst, self._clock())
            else:
                self.core.handle_stream_reply(reply, dst, self._clock())
        except (OSError, TimeoutError, asyncio.IncompleteReadError, RuntimeError) as exc:
            # RuntimeError: uvloop's write on a transport closed under us
            log.debug("push-pull with %s:%d failed: %s", dst[0], dst[1], exc)
            self.core.stream_failed(dst, self._clock())
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
            self._wake.set()

    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        src: Address = (str(peer[0]), int(peer[1])) if peer else ("?", 0)
        try:
            async with asyncio.timeout(STREAM_TIMEOUT):
                request = await self._read_frame(reader)
                if request is None:
                    return
                reply = self.core.handle_stream(request, src, self._clock())
                if reply is not None:
                    writer.write(self._frame(reply))
                    await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, RuntimeError):
            self.io_errors["stream_aborted"] += 1
        except Exception:
            log.exception("gossip core raised on a stream from %s:%d", *src)
            self.io_errors["core_exception"] += 1
        finally:
            self._wake.set()
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
