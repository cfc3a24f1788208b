"""This host's DNS server: the cluster's names from the local replica, everything else forwarded.

It listens (UDP and TCP, port 53) on the host's bridge gateway, the .1 of its /24, which is the
address every container on the host is given as its resolver (``agent/node/plan.py``). The socket is
bound with ``IP_FREEBIND`` once the host's lease is known, so it does not wait for the reconciler to
make the bridge. Answers come from a :class:`~agent.model.dns.DnsIndex` kept from the change feed, one
change at a time; each answer is cached in wire form (keyed by the query's bytes after its id, one
variant per rotation of the A records), and a change drops only the cached answers of the names it
touched. A hit costs a dictionary look-up and two byte slices, no parsing.

Everything outside the cluster's zones is forwarded to the upstream resolvers (``--dns-upstream``, else
the ``nameserver`` lines of this namespace's ``/etc/resolv.conf``) through one UDP socket, with the
query's id rewritten, at most ``max_in_flight`` at once (past that: SERVFAIL at once, counted) and a
timeout (SERVFAIL, counted). Malformed, oversized or non-query packets are dropped and counted; each
source address has a token bucket (a flood from one container costs the others nothing).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from agent.cluster.feed import Feed, Subscription
from agent.model.changes import Topic
from agent.model.dns import SOA_MNAME, SOA_RNAME, TTL, Answer, DnsIndex, Rcode, Record
from agent.model.state import ClusterState
from mesh.aio import supervised

log = logging.getLogger("corral.dns")

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
MAX_UDP_QUERY = 4096
"""Bytes: a query is a question and at most an OPT record (well under 512); larger ones are dropped."""
MAX_TCP_CONNECTIONS = 128
TCP_IDLE = 10.0
MAX_CACHED = 20_000
MAX_VARIANTS = 8
"""Rotations kept per cached answer (a service with more containers rotates through 8 orders)."""
MAX_SOURCES = 4096


@dataclasses.dataclass(frozen=True)
class DnsConfig:
    port: int = 53
    upstreams: tuple[tuple[str, int], ...] | None = None
    """None: the ``nameserver`` lines of ``resolv_conf``."""
    resolv_conf: str = "/etc/resolv.conf"
    forward_timeout: float = 2.0
    max_in_flight: int = 512
    rate: float = 20_000.0
    """Queries per second each source address may send (its bucket refills at this rate)."""
    burst: float = 40_000.0
    address: str | None = None
    """Listen here instead of the host's gateway (tests)."""


def upstreams_from(path: str) -> tuple[tuple[str, int], ...]:
    """The IPv4 ``nameserver`` lines of a resolv.conf (port 53)."""
    out = []
    try:
        text = Path(path).read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                out.append((str(ipaddress.IPv4Address(parts[1])), 53))
            except ValueError:
                continue
    return tuple(out)


def parse_upstream(text: str) -> tuple[str, int]:
    """``ADDR[:PORT]`` → (address, port); ValueError naming what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "53"
    address = str(ipaddress.IPv4Address(host))
    number = int(port)
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} is not 1-65535")
    return address, number


def gateway_of(subnet: str) -> str:
    return str(next(ipaddress.IPv4Network(subnet).hosts()))


@dataclasses.dataclass
class Counters:
    queries: int = 0
    answered: int = 0
    """From the cluster's records (cache hits included)."""
    nxdomain: int = 0
    cache_hits: int = 0
    forwarded: int = 0
    forward_answers: int = 0
    forward_timeouts: int = 0
    forward_refused: int = 0
    """SERVFAIL at once: no upstream, or ``max_in_flight`` forwards already waiting."""
    malformed: int = 0
    oversized: int = 0
    rate_limited: int = 0
    tcp_connections: int = 0
    tcp_refused: int = 0
    cname_chased: int = 0
    """Queries for an external service's CNAME whose target was asked upstream (answered uncached)."""
    changes: int = 0
    """Feed changes followed."""
    names_touched: int = 0
    """Names whose cached answers those changes dropped."""

    def to_view(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class DnsServer:
    def __init__(self, host: str, state: ClusterState, config: DnsConfig = DnsConfig(),
                 clock: Callable[[], float] | None = None) -> None:
        self.host = host
        self.state = state
        self.config = config
        self.index = DnsIndex()
        self.counters = Counters()
        self.rcodes: collections.Counter[int] = collections.Counter()
        """Answers sent, by their rcode (the low 4 bits of the header's fourth byte), upstream ones included."""
        self.address: str | None = None
        """Where it listens, once it does."""
        self.error: str | None = None
        self.upstreams = config.upstreams if config.upstreams is not None else upstreams_from(config.resolv_conf)
        self._clock = clock
        self._cache: dict[bytes, tuple[list[bytes], list[int]]] = {}
        self._cache_names: dict[str, set[bytes]] = {}
        self._turns: dict[str, int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._pending: dict[int, tuple[Callable[[bytes], None], bytes, asyncio.TimerHandle]] = {}
        self._next_id = 1
        self._udp: asyncio.DatagramTransport | None = None
        self._upstream: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_open = 0

    # ------------------------------------------------------------------ life cycle

    @contextlib.asynccontextmanager
    async def running(self, feed: Feed) -> AsyncIterator[DnsServer]:
        changes = feed.subscribe(lambda c: DnsIndex.wants(c) or c.topic is Topic.HOST, name="dns")
        self._follow(self.index.rebuild(self.state))
        try:
            async with supervised(self._run(changes), "dns"):
                yield self
        finally:
            changes.close()
            self._close()

    def problem(self) -> str | None:
        return self.error

    async def _run(self, changes: Subscription) -> None:
        while True:
            address = self.config.address or self._gateway()
            if address is not None and address != self.address:
                self._close()
                try:
                    await self._listen(address)
                    self.error = None
                except OSError as exc:
                    self.error = f"DNS server could not listen on {address}:{self.config.port}: {exc.strerror or exc}"
                    log.warning("%s", self.error)
                    self._close()
                    await asyncio.sleep(1.0)
                    continue
            batch = await changes.next()
            touched = self.index.apply(self.state, batch)
            self.counters.changes += len(batch)
            self._follow(touched)

    def _gateway(self) -> str | None:
        me = self.state.hosts.get(self.host)
        return gateway_of(me.subnet) if me is not None and me.subnet else None

    async def _listen(self, address: str) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind((address, self.config.port))
        except OSError:
            sock.close()
            raise
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=sock)
        self._upstream, _ = await loop.create_datagram_endpoint(lambda: _Upstream(self), local_addr=("0.0.0.0", 0))
        tsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tsock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            tsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tsock.bind((address, self.config.port))
        except OSError:
            tsock.close()
            raise
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tsock)
        self.address = address
        log.info("DNS server on %s:%d (upstreams %s)", address, self.config.port,
                 ", ".join(f"{a}:{p}" for a, p in self.upstreams) or "none")

    def _close(self) -> None:
        for t in (self._udp, self._upstream):
            if t is not None:
                t.close()
        if self._tcp is not None:
            self._tcp.close()
        self._udp = self._upstream = self._tcp = None
        for _, _, timer in self._pending.values():
            timer.cancel()
        self._pending.clear()
        self.address = None

    def _follow(self, touched: Iterable[str]) -> None:
        """Drop the cached answers of the names whose records changed."""
        for name in touched:
            self.counters.names_touched += 1
            for key in self._cache_names.pop(name, ()):
                self._cache.pop(key, None)

    # ------------------------------------------------------------------ answering

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def _allowed(self, source: str) -> bool:
        now = self.now()
        tokens, last = self._buckets.get(source, (self.config.burst, now))
        tokens = min(self.config.burst, tokens + (now - last) * self.config.rate)
        if tokens < 1:
            self._buckets[source] = (tokens, now)
            return False
        if len(self._buckets) >= MAX_SOURCES and source not in self._buckets:
            self._buckets.clear()
        self._buckets[source] = (tokens - 1, now)
        return True

    def _counted(self, reply: Callable[[bytes], None]) -> Callable[[bytes], None]:
        def counted(response: bytes) -> None:
            self.rcodes[response[3] & 0x0F if len(response) > 3 else 0] += 1
            reply(response)
        return counted

    def handle(self, data: bytes, source: str, reply: Callable[[bytes], None], limit: int = 512) -> bool:
        """One query: ``reply`` is called with the answer (now, or when the upstream answers); False when
        the packet was dropped (and counted): no reply then."""
        self.counters.queries += 1
        reply = self._counted(reply)

        if not self._allowed(source):
            self.counters.rate_limited += 1
            return False
        if len(data) > MAX_UDP_QUERY:
            self.counters.oversized += 1
            return False
        if len(data) < 12 or data[2] & 0x80:  # shorter than a header, or a response (QR set)
            self.counters.malformed += 1
            return False
        key = data[2:] + limit.to_bytes(2, "big")
        cached = self._cache.get(key)
        if cached is not None:
            variants, turn = cached
            turn[0] += 1
            self.counters.cache_hits += 1
            self.counters.answered += 1
            reply(data[:2] + variants[turn[0] % len(variants)][2:])
            return True
        try:
            query = dns.message.from_wire(data)
        except (dns.exception.DNSException, ValueError):
            self.counters.malformed += 1
            return False
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.NOTIMP if query.opcode() != dns.opcode.QUERY else dns.rcode.FORMERR)
            reply(response.to_wire())
            return True
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        qtype = dns.rdatatype.to_text(question.rdtype)
        first = self.index.answer(name, qtype)
        if first.rcode is Rcode.OUTSIDE or question.rdclass != dns.rdataclass.IN:
            self._forward(data, reply)
            return True
        cname = next((r.value for r in first.records if r.type == "CNAME"), None)
        if cname is not None and qtype not in ("CNAME", "ANY"):
            self._chase(query, first, cname, question.rdtype, limit, reply)
            return True
        count = len(first.records)
        variants = [self._render(query, first if t == 0 else self.index.answer(name, qtype, t), limit)
                    for t in range(min(count, MAX_VARIANTS) or 1)]
        if first.rcode is Rcode.NXDOMAIN:
            self.counters.nxdomain += 1
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
            self._cache_names.clear()
        self._cache[key] = (variants, [0])
        self._cache_names.setdefault(first.name, set()).add(key)
        self.counters.answered += 1
        reply(variants[0])
        return True

    def _render(self, query: dns.message.Message, answer: Answer, limit: int) -> bytes:
        """The answer's wire form; a record set too big for ``limit`` (512 bytes without EDNS) is cut to
        the records that fit, first ones first: the rotation gives every record its turn."""
        records = list(answer.records)
        while True:
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA | dns.flags.RA
            qname = query.question[0].name
            if answer.rcode is Rcode.NXDOMAIN:
                response.set_rcode(dns.rcode.NXDOMAIN)
            for record in records:
                response.answer.append(dns.rrset.from_text(qname, record.ttl, "IN", record.type, _rdata(record)))
            if answer.zone is not None:
                zone = dns.name.from_text(answer.zone)
                response.authority.append(dns.rrset.from_text(
                    zone, TTL, "IN", "SOA", f"{SOA_MNAME}. {SOA_RNAME}. 1 60 10 3600 {TTL}"))
            try:
                wire: bytes = response.to_wire(max_size=max(limit, 512))
                return wire
            except dns.exception.TooBig:
                if len(records) <= 1:
                    raise
                records = records[:len(records) // 2]

    def _chase(self, query: dns.message.Message, answer: Answer, target: str, rdtype: dns.rdatatype.RdataType,
               limit: int, reply: Callable[[bytes], None]) -> None:
        """An external service's CNAME: its target asked upstream (the same type), the answer the CNAME
        followed by what the upstream said, with the upstream's rcode (NXDOMAIN: the target does not
        exist); SERVFAIL with the CNAME when the upstream fails. A stub resolver does not chase a CNAME
        itself, so without this ``getaddrinfo`` would find no address."""
        self.counters.cname_chased += 1
        self.counters.answered += 1
        ask = dns.message.make_query(target, rdtype)

        def upstream(data: bytes) -> None:
            response = dns.message.make_response(query)
            response.flags |= dns.flags.RA
            response.answer.append(dns.rrset.from_text(query.question[0].name, TTL, "IN", "CNAME", target + "."))
            try:
                said = dns.message.from_wire(data)
            except (dns.exception.DNSException, ValueError):
                said = None
            if said is None or said.rcode() == dns.rcode.SERVFAIL:
                response.set_rcode(dns.rcode.SERVFAIL)
            else:
                response.set_rcode(said.rcode())
                response.answer.extend(said.answer)
            try:
                reply(response.to_wire(max_size=max(limit, 512)))
            except dns.exception.TooBig:  # truncated: the client asks again over TCP
                response.answer = response.answer[:1]
                response.flags |= dns.flags.TC
                reply(response.to_wire(max_size=max(limit, 512)))

        self._forward(ask.to_wire(), upstream)

    # ------------------------------------------------------------------ forwarding

    def _forward(self, data: bytes, reply: Callable[[bytes], None]) -> None:
        if not self.upstreams or self._upstream is None or len(self._pending) >= self.config.max_in_flight:
            self.counters.forward_refused += 1
            reply(_servfail(data))
            return
        self.counters.forwarded += 1
        for _ in range(65536):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._pending:
                break
        qid = self._next_id
        timer = asyncio.get_running_loop().call_later(self.config.forward_timeout, self._timed_out, qid)
        self._pending[qid] = (reply, data, timer)
        self._upstream.sendto(qid.to_bytes(2, "big") + data[2:], self.upstreams[qid % len(self.upstreams)])

    def _timed_out(self, qid: int) -> None:
        pending = self._pending.pop(qid, None)
        if pending is not None:
            self.counters.forward_timeouts += 1
            pending[0](_servfail(pending[1]))

    def upstream_answer(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or (addr[0], addr[1]) not in self.upstreams:
            return
        pending = self._pending.pop(int.from_bytes(data[:2], "big"), None)
        if pending is None:
            return
        reply, query, timer = pending
        timer.cancel()
        self.counters.forward_answers += 1
        reply(query[:2] + data[2:])

    # ------------------------------------------------------------------ TCP

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_open >= MAX_TCP_CONNECTIONS:
            self.counters.tcp_refused += 1
            writer.close()
            return
        self._tcp_open += 1
        self.counters.tcp_connections += 1
        source = str(writer.get_extra_info("peername", ("?", 0))[0])
        try:
            while True:
                size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), TCP_IDLE), "big")
                data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE)
                done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

                def reply(answer: bytes, done: asyncio.Future[bytes] = done) -> None:
                    if not done.done():
                        done.set_result(answer)

                if not self.handle(data, source, reply, limit=65535):
                    continue  # dropped (and counted): no answer to wait for
                writer.write(len(answer := await done).to_bytes(2, "big") + answer)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tcp_open -= 1
            writer.close()

    def to_view(self) -> dict[str, object]:
        return {"listening": f"{self.address}:{self.config.port}" if self.address else None, "error": self.error,
                "upstreams": [f"{a}:{p}" for a, p in self.upstreams], "names": self.index.names,
                "in_flight": len(self._pending), "cached": len(self._cache), "counters": self.counters.to_view()}


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        transport = self.transport

        def reply(answer: bytes) -> None:
            if transport is not None and not transport.is_closing():
                transport.sendto(answer, addr)

        self.server.handle(data, addr[0], reply, limit=_udp_limit(data))


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.upstream_answer(data, addr)


def _udp_limit(data: bytes) -> int:
    """512, or the payload size an EDNS OPT record asks for (read from the last 11 bytes: the OPT of a
    plain query is the last record; anything else stays 512)."""
    if len(data) >= 23 and data[-11:-8] == b"\x00\x00\x29":
        return max(512, min(4096, int.from_bytes(data[-8:-6], "big")))
    return 512


def _servfail(query: bytes) -> bytes:
    try:
        response = dns.message.make_response(dns.message.from_wire(query))
    except (dns.exception.DNSException, ValueError):
        return b""
    response.set_rcode(dns.rcode.SERVFAIL)
    wire: bytes = response.to_wire()
    return wire


def _rdata(record: Record) -> str:
    """Names in the rdata (a PTR's, an SRV's target) are fully qualified."""
    return record.value + "." if record.type in ("PTR", "SRV", "CNAME") else record.value


__all__ = ["DnsConfig", "DnsServer", "gateway_of", "parse_upstream", "upstreams_from"]
