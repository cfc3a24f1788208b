"""The host's DNS server over real sockets on the loopback: answers, cache, forwarding, bad packets, floods."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import cast

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from agent.cluster.feed import Feed
from agent.node.dns import DnsConfig, DnsServer, _udp_limit, parse_upstream, upstreams_from
from mesh.waiting import until_async
from tests.unit.test_dns_model import ZONE, cluster, report
from tests.unit.test_model_state import Log

ADDR = "127.0.0.1"


def free_port() -> int:
    """A port free for both UDP and TCP (the server binds both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind((ADDR, 0))
            port = int(udp.getsockname()[1])
            try:
                tcp.bind((ADDR, port))
            except OSError:
                continue
            return port


class Upstream(asyncio.DatagramProtocol):
    """A stand-in upstream resolver: answers any name with 192.0.2.7, but ignores ``slow.*`` and says
    NXDOMAIN for ``missing.*``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.seen = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.seen += 1
        query = dns.message.from_wire(data)
        if query.question[0].name.to_text().startswith("slow."):
            return
        response = dns.message.make_response(query)
        if query.question[0].name.to_text().startswith("missing."):
            response.set_rcode(dns.rcode.NXDOMAIN)
            self.transport.sendto(response.to_wire(), addr)
            return
        response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "192.0.2.7"))
        self.transport.sendto(response.to_wire(), addr)


Served = tuple[DnsServer, Feed, Log, Upstream]


@pytest.fixture
async def server() -> AsyncIterator[Served]:
    loop = asyncio.get_running_loop()
    up_port = free_port()
    transport, upstream = await loop.create_datagram_endpoint(Upstream, local_addr=(ADDR, up_port))
    log, _index, _db, (one, two) = cluster(health=False, aliases=["database"])
    log("instance.status", id=one, host="h1", status="running", ip="10.42.1.2")
    log("instance.status", id=two, host="h2", status="running", ip="10.42.2.2")
    log.state.take_changes()
    feed = Feed()
    config = DnsConfig(port=free_port(), upstreams=((ADDR, up_port),), forward_timeout=0.3, address=ADDR)
    server = DnsServer("h1", log.state, config)
    async with server.running(feed):
        await until_async("dns", lambda: server.address is not None, 5.0)
        yield server, feed, log, upstream
    transport.close()


async def ask(server: DnsServer, name: str, qtype: str = "A", tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, qtype)
    if tcp:
        return await dns.asyncquery.tcp(query, ADDR, port=server.config.port, timeout=2)
    return await dns.asyncquery.udp(query, ADDR, port=server.config.port, timeout=2)


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(r.to_text() for rrset in msg.answer for r in rrset)


async def test_cluster_names_are_answered_with_a_low_ttl_and_rotated(server: Served) -> None:
    srv, *_ = server
    firsts = set()
    for _ in range(4):
        msg = await ask(srv, f"db.shop.{ZONE}.")
        assert msg.rcode() == dns.rcode.NOERROR and addresses(msg) == ["10.42.1.2", "10.42.2.2"]
        assert msg.answer[0].ttl == 1
        firsts.add(next(iter(msg.answer[0])).to_text())
    assert firsts == {"10.42.1.2", "10.42.2.2"}
    assert srv.counters.cache_hits >= 3
    ptr = await ask(srv, "2.1.42.10.in-addr.arpa.", "PTR")
    assert addresses(ptr) == [f"shop-db-1.shop.{ZONE}."]
    srv_records = await ask(srv, f"_5432._tcp.db.shop.{ZONE}.", "SRV", tcp=True)
    assert addresses(srv_records) == [f"0 0 5432 shop-db-1.shop.{ZONE}.", f"0 0 5432 shop-db-2.shop.{ZONE}."]


async def test_unknown_names_under_the_suffix_are_nxdomain_with_the_soa(server: Served) -> None:
    srv, *_ = server
    msg = await ask(srv, f"nope.shop.{ZONE}.")
    assert msg.rcode() == dns.rcode.NXDOMAIN and not msg.answer
    assert msg.authority[0].rdtype == dns.rdatatype.SOA and msg.authority[0].name.to_text() == "corral.internal."
    empty = await ask(srv, f"web.shop.{ZONE}.")
    assert empty.rcode() == dns.rcode.NOERROR and not empty.answer and empty.authority


async def test_a_change_drops_only_the_cached_answers_it_touched(server: Served) -> None:
    srv, feed, log, _ = server
    assert addresses(await ask(srv, f"db.shop.{ZONE}.")) == ["10.42.1.2", "10.42.2.2"]
    before = srv.counters.names_touched
    inst = next(i for i in log.state.instances.values() if i.slot == 2)
    log("instance.status", id=inst.id, host="h2", status="exited", ip=None)
    feed.publish(log.state.take_changes())
    await until_async("dns", lambda: srv.counters.changes >= 1, 2.0)
    assert addresses(await ask(srv, f"db.shop.{ZONE}.")) == ["10.42.1.2"]
    assert srv.counters.names_touched - before < 6  # the service's names and the container's, not everything


async def test_outside_names_are_forwarded_and_a_silent_upstream_is_servfail(server: Served) -> None:
    srv, _, _, upstream = server
    msg = await ask(srv, "outside.example.")
    assert addresses(msg) == ["192.0.2.7"] and srv.counters.forward_answers == 1
    slow = await ask(srv, "slow.example.")
    assert slow.rcode() == dns.rcode.SERVFAIL and srv.counters.forward_timeouts == 1
    assert upstream.seen == 2


async def test_forwards_in_flight_are_bounded(server: Served) -> None:
    srv, *_ = server
    srv.config = DnsConfig(port=srv.config.port, upstreams=srv.upstreams, forward_timeout=0.5, max_in_flight=2,
                           address=ADDR)
    answers = await asyncio.gather(*(ask(srv, f"slow.{n}.example.") for n in range(5)))
    assert sorted(a.rcode() for a in answers) == [dns.rcode.SERVFAIL] * 5
    assert srv.counters.forward_refused == 3 and srv.counters.forward_timeouts == 2


async def test_malformed_oversized_and_response_packets_are_dropped_and_counted(server: Served) -> None:
    srv, *_ = server
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        query = dns.message.make_query(f"db.shop.{ZONE}.", "A").to_wire()
        for packet in (b"\x00\x01garbage", query[:15], b"\x12\x34" + bytes([0x80]) + query[3:], query + b"x" * 5000):
            s.sendto(packet, (ADDR, srv.config.port))
        with pytest.raises(TimeoutError):
            s.recv(4096)
    await until_async("dns", lambda: srv.counters.malformed == 3 and srv.counters.oversized == 1, 2.0)
    huge = b"\x00\x07\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a name of 320 bytes (DNS allows 255)
        s.sendto(huge, (ADDR, srv.config.port))
    await until_async("dns", lambda: srv.counters.malformed == 4, 2.0)
    assert addresses(await ask(srv, f"db.shop.{ZONE}.")) == ["10.42.1.2", "10.42.2.2"]  # still serving


async def test_a_flood_from_one_source_is_limited_and_counted() -> None:
    log, *_ = cluster()
    now = [100.0]
    srv = DnsServer("h1", log.state, DnsConfig(rate=10, burst=20), clock=lambda: now[0])
    srv.index.rebuild(log.state)
    query = dns.message.make_query(f"db.shop.{ZONE}.", "A").to_wire()
    answers: list[bytes] = []
    for _ in range(100):
        srv.handle(query, "10.42.1.9", answers.append)
    assert len(answers) == 20 and srv.counters.rate_limited == 80
    srv.handle(query, "10.42.1.10", answers.append)  # another container is not affected
    now[0] += 1.0  # a second later: 10 more
    for _ in range(30):
        srv.handle(query, "10.42.1.9", answers.append)
    assert len(answers) == 31


def test_upstreams_come_from_resolv_conf_or_the_option(tmp_path: object) -> None:
    from pathlib import Path

    conf = Path(str(tmp_path)) / "resolv.conf"
    conf.write_text("search lan\nnameserver 10.9.0.1\nnameserver ::1\nnameserver 10.9.0.2 # x\noptions ndots:1\n")
    assert upstreams_from(str(conf)) == (("10.9.0.1", 53), ("10.9.0.2", 53))
    assert upstreams_from(str(conf) + ".missing") == ()
    assert parse_upstream("10.1.2.3:5353") == ("10.1.2.3", 5353) and parse_upstream("10.1.2.3") == ("10.1.2.3", 53)
    for bad in ("nope", "10.1.2.3:0", "10.1.2.3:x"):
        with pytest.raises(ValueError):
            parse_upstream(bad)


async def test_report_helper_is_the_one_the_model_tests_use() -> None:
    log, index, _, (one, _two) = cluster()
    assert f"shop-db-1.shop.{ZONE}" in report(log, index, one, ip="10.42.1.2")


async def test_an_answer_too_big_for_udp_is_cut_to_what_fits_and_rotates() -> None:
    log, _index, db, _insts = cluster()
    assert log("service.scale", id=db, scale=60)["ok"]
    assert log("placements.commit", service=db, placements=[[n, "h1"] for n in range(3, 61)])["ok"]
    for n, inst in enumerate(log.state.instances_of(db)):
        host = inst.host
        assert log("instance.status", id=inst.id, host=host, status="running", ip=f"10.42.1.{n + 2}")["ok"]
    srv = DnsServer("h1", log.state)
    srv.index.rebuild(log.state)
    query = dns.message.make_query(f"db.shop.{ZONE}.", "A", use_edns=False).to_wire()
    seen: set[str] = set()
    for _ in range(8):
        got: list[bytes] = []
        srv.handle(query, "10.42.1.9", got.append)
        assert len(got[0]) <= 512
        seen |= set(addresses(dns.message.from_wire(got[0])))
    assert 20 < len(seen) <= 60, "several subsets, one per rotation"
    big = dns.message.make_query(f"db.shop.{ZONE}.", "A", use_edns=0, payload=4096).to_wire()
    assert _udp_limit(big) == 4096 and _udp_limit(query) == 512
    got = []
    srv.handle(big, "10.42.1.9", got.append, limit=_udp_limit(big))
    assert len(addresses(dns.message.from_wire(got[0]))) == 60, "EDNS's 4096 bytes hold them all"


async def test_an_external_service_cname_is_followed_upstream_in_one_answer(server: Served) -> None:
    """Stub resolvers (glibc, musl, busybox) do not chase a CNAME: the server does, as a recursive one would."""
    srv, feed, log, upstream = server
    stack = next(iter(log.state.stacks))
    for name, target in (("mail", "smtp.outside.example"), ("gone", "missing.example"), ("stuck", "slow.example")):
        assert log("service.create", stack=stack, name=name, spec={
            "kind": "external", "external": {"hostname": target}})["ok"]
    assert log("service.create", stack=stack, name="legacy", spec={
        "kind": "external", "external": {"addresses": ["192.0.2.10"]}})["ok"]
    feed.publish(log.state.take_changes())
    await until_async("dns", lambda: srv.counters.changes >= 1, 2.0)
    msg = await ask(srv, f"mail.shop.{ZONE}.")
    assert msg.rcode() == dns.rcode.NOERROR
    assert [(r.rdtype, r.name.to_text()) for r in msg.answer] == [
        (dns.rdatatype.CNAME, f"mail.shop.{ZONE}."), (dns.rdatatype.A, "smtp.outside.example.")]
    assert msg.answer[0][0].to_text() == "smtp.outside.example." and msg.answer[1][0].to_text() == "192.0.2.7"
    assert upstream.seen == 1 and srv.counters.cname_chased == 1
    cname_only = await ask(srv, f"mail.shop.{ZONE}.", "CNAME")
    assert addresses(cname_only) == ["smtp.outside.example."] and upstream.seen == 1, "a CNAME query is ours alone"
    gone = await ask(srv, f"gone.shop.{ZONE}.")
    assert gone.rcode() == dns.rcode.NXDOMAIN and addresses(gone) == ["missing.example."]
    stuck = await ask(srv, f"stuck.shop.{ZONE}.")
    assert stuck.rcode() == dns.rcode.SERVFAIL and addresses(stuck) == ["slow.example."]
    legacy = await ask(srv, f"legacy.shop.{ZONE}.", tcp=True)
    assert addresses(legacy) == ["192.0.2.10"] and upstream.seen == 3
