"""The data path engine without root: fake TUNs (SOCK_SEQPACKET pairs) and real UDP on loopback."""

from __future__ import annotations

import dataclasses
import os
import random
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Network
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.config import OverlayConfig
from overlay.datapath import Datapath, DatapathConfig, PeerRoute, route_keys
from overlay.probe import PROBE_LEN, PeerHealth, Probe, ProbeConfig, ProbeKind, decode_probe
from overlay.session import OverlaySession
from overlay.tun import EMPTY_VNET_HDR, Tun
from overlay.udp import open_udp

FAST_PROBES = ProbeConfig(interval=0.05, timeout=0.4, down_after=5.0, large_every=2, loss_min_packets=1)


class Host:
    def __init__(self, name: str, subnet: str, cfg: DatapathConfig, vnet_hdr: bool = True) -> None:
        self.name = name
        self.key = os.urandom(32)
        self.kernel, tun_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        tun_end.setblocking(False)
        self.tun_sock = tun_end  # keeps the fd alive
        self.tun = Tun(tun_end.fileno(), f"fake-{name}", vnet_hdr, 0, False)
        self.sock = open_udp("127.0.0.1", 0, bufsize=1 << 20)
        session_cfg = dataclasses.replace(OverlayConfig(), rekey_timeout=0.2, handshake_backoff_max=0.4,
                                          persistent_keepalive=0.2, keepalive_timeout=0.2)
        now = time.monotonic()
        session = OverlaySession(session_cfg, self.key, b"test secret", rand_bytes=os.urandom,
                                 rng=random.Random(1), wall_clock_offset=time.time() - now)
        self.subnet = IPv4Network(subnet)
        self.dp = Datapath(session, self.tun, self.sock, self.subnet, cfg, set_offloads=lambda flags: None)
        self.running = True

    def route(self) -> PeerRoute:
        return PeerRoute(self.name, self.subnet, self.sock.getsockname(), self.dp.session.public_key)

    def close(self) -> None:
        for s in (self.kernel, self.tun_sock, self.sock):
            s.close()


def ipv4(src: str, dst: str, payload: bytes) -> bytes:
    s, d = (socket.inet_aton(x) for x in (src, dst))
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 17, 0, s, d) + payload


def pump(hosts: list[Host], until: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Drive every running host's data path until ``until()`` is truthy (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = [h for h in hosts if h.running]
        fds = {h.tun.fd: h.dp.on_tun_readable for h in live} | {h.sock.fileno(): h.dp.on_udp_readable for h in live}
        ready, _, _ = select.select(list(fds), [], [], 0.01)
        for fd in ready:
            fds[fd]()
        for h in live:
            if time.monotonic() >= h.dp.get_timer():
                h.dp.handle_timer(h.dp.clock())
        got = until()
        if got:
            return got
    raise TimeoutError("condition not reached")


def recv_kernel(h: Host) -> bytes | None:
    h.kernel.setblocking(False)
    try:
        return h.kernel.recv(70000)
    except BlockingIOError:
        return None


@pytest.fixture
def pair() -> Iterator[tuple[Host, Host]]:
    cfg = DatapathConfig(probe=FAST_PROBES)
    a, b = Host("a", "10.42.1.0/24", cfg), Host("b", "10.42.2.0/24", cfg)
    a.dp.set_peers([b.route()])
    b.dp.set_peers([a.route()])
    pump([a, b], lambda: a.dp.status()["peers"]["b"]["state"] == "up" and b.dp.status()["peers"]["a"]["state"] == "up")
    yield a, b
    a.close()
    b.close()


def test_packet_crosses_sealed_and_arrives_unchanged(pair: tuple[Host, Host]) -> None:
    a, b = pair
    pkt = EMPTY_VNET_HDR + ipv4("10.42.1.2", "10.42.2.2", b"hello overlay" * 100)
    a.kernel.send(pkt)
    got = pump([a, b], lambda: recv_kernel(b))
    assert got == pkt
    st = a.dp.status()
    assert st["counters"]["tun_rx"] >= 1 and st["peers"]["b"]["bytes_out"] > len(pkt)


def test_unknown_destination_and_spoofed_source_are_dropped(pair: tuple[Host, Host]) -> None:
    a, b = pair
    a.kernel.send(EMPTY_VNET_HDR + ipv4("10.42.1.2", "10.42.9.9", b"nowhere"))
    pump([a, b], lambda: a.dp.drops.get("no_route"))
    b.kernel.send(EMPTY_VNET_HDR + ipv4("10.42.3.3", "10.42.1.2", b"not b's address"))
    pump([a, b], lambda: a.dp.drops.get("spoofed_source"))
    assert recv_kernel(a) is None


def test_probes_measure_rtt_and_large_probes_prove_large_messages_cross(pair: tuple[Host, Host]) -> None:
    a, b = pair
    pump([a, b], lambda: a.dp.health["b"].large_ok)
    peer = a.dp.status()["peers"]["b"]
    assert peer["state"] == "up" and peer["rtt_ms"] is not None and peer["rtt_ms"] < 100
    assert peer["probes_answered"] >= 1 and peer["last_handshake_ago"] is not None


def test_send_errors_from_the_kernel_are_counted_not_raised(pair: tuple[Host, Host]) -> None:
    a, b = pair

    class Refusing:
        def __init__(self, real: socket.socket, err: int) -> None:
            self.real, self.err = real, err

        def sendto(self, *_args: object) -> int:
            raise OSError(self.err, os.strerror(self.err))

        sendmsg = sendto

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    real = a.dp.sock
    for err, reason in ((1, "send_eperm"), (105, "send_enobufs")):
        a.dp.sock = Refusing(real, err)  # type: ignore[assignment]
        a.kernel.send(EMPTY_VNET_HDR + ipv4("10.42.1.2", "10.42.2.2", b"firewalled"))
        pump([a], lambda r=reason: a.dp.drops.get(r))  # type: ignore[misc]
    a.dp.sock = real
    a.kernel.send(EMPTY_VNET_HDR + ipv4("10.42.1.2", "10.42.2.2", b"after"))
    assert pump([a, b], lambda: recv_kernel(b)).endswith(b"after")


def test_garbage_is_counted_and_the_session_survives(pair: tuple[Host, Host]) -> None:
    a, b = pair
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(50):
        junk.sendto(os.urandom(i + 1), a.sock.getsockname())
        junk.sendto(struct.pack("<BBHIQ", 4, 1, 0, i + 1, i) + os.urandom(40), a.sock.getsockname())
    pump([a, b], lambda: sum(a.dp.status()["drops"].values()) >= 100)
    junk.close()
    b.kernel.send(EMPTY_VNET_HDR + ipv4("10.42.2.2", "10.42.1.2", b"still here"))
    assert pump([a, b], lambda: recv_kernel(a)).endswith(b"still here")
    assert a.dp.status()["peers"]["b"]["state"] == "up"


def test_silent_peer_is_degraded_then_recovers(pair: tuple[Host, Host]) -> None:
    a, b = pair
    b.running = False  # b's data path stops answering (its socket still takes datagrams)
    pump([a], lambda: a.dp.status()["peers"]["b"]["state"] == "degraded")
    b.running = True
    pump([a, b], lambda: a.dp.status()["peers"]["b"]["state"] == "up", timeout=8)


def test_probe_silence_forces_a_rehandshake_while_the_core_still_trusts_the_session() -> None:
    """The core's own timers are slow (WireGuard's 15 s); the probes notice first and start over."""
    probes = dataclasses.replace(FAST_PROBES, timeout=0.3)
    cfg = DatapathConfig(probe=probes)
    a, b = Host("a", "10.42.1.0/24", cfg), Host("b", "10.42.2.0/24", cfg)
    try:
        for h in (a, b):  # WireGuard's timers in the core, so only the probes can notice in time
            h.dp.session.config = OverlayConfig()
        a.dp.set_peers([b.route()])
        b.dp.set_peers([a.route()])
        pump([a, b], lambda: a.dp.status()["peers"]["b"]["state"] == "up" and a.dp.health["b"].answered >= 2)
        b.running = False
        pump([a], lambda: a.dp.rehandshakes >= 1)
        assert a.dp.status()["peers"]["b"]["state"] in ("degraded", "handshaking")
    finally:
        a.close()
        b.close()


def test_any_packet_from_the_peer_counts_as_life_when_probes_are_lost() -> None:
    """On a lossy path probe answers go missing while data still arrives: not silent, no re-handshake."""
    h = PeerHealth(ProbeConfig(interval=1.0, timeout=3.5), 0.0)
    h.on_reply(Probe(ProbeKind.REPLY, 1, 1, 0.0, 0), 0.001)
    h.heard(0.5, 10)
    for t in range(1, 10):  # probes unanswered for 9 s, but the peer's packets keep coming
        h.heard(float(t), 10 + t)
        assert not h.silent(float(t) + 0.5)
    assert h.silent(9.0 + 3.5)  # then nothing at all: silent


def test_unanswered_probes_are_retried_sooner() -> None:
    h = PeerHealth(ProbeConfig(interval=1.0, retry_interval=0.25), 0.0)
    assert h.due(0.0, 0)
    assert h.next_at == 0.25  # no answer yet: the next request in 0.25 s
    h.on_reply(Probe(ProbeKind.REPLY, 1, 1, 0.0, 0), 0.01)
    assert h.next_at == 1.0  # answered: back to the full interval


def test_peers_removed_and_readded() -> None:
    cfg = DatapathConfig(probe=FAST_PROBES)
    a, b = Host("a", "10.42.1.0/24", cfg), Host("b", "10.42.2.0/24", cfg)
    try:
        a.dp.set_peers([b.route()])
        assert set(a.dp.status()["peers"]) == {"b"}
        a.dp.set_peers([])
        assert a.dp.status()["peers"] == {}
        bad = PeerRoute("c", IPv4Network("10.42.3.0/24"), ("127.0.0.1", 9), a.dp.session.public_key)  # our own key
        a.dp.set_peers([b.route(), bad])
        st = a.dp.status()
        assert set(st["peers"]) == {"b"} and "c" in st["peer_errors"]
        a.dp.set_peers([])
        a.kernel.send(EMPTY_VNET_HDR + ipv4("10.42.1.2", "10.42.2.2", b"x"))
        pump([a], lambda: a.dp.drops.get("no_route"))
    finally:
        a.close()
        b.close()


def test_host_without_vnet_headers_interoperates() -> None:
    """A kernel without IFF_VNET_HDR: plain packets on its TUN, an empty header on the wire."""
    cfg = DatapathConfig(probe=FAST_PROBES)
    a, b = Host("a", "10.42.1.0/24", cfg, vnet_hdr=False), Host("b", "10.42.2.0/24", cfg)
    b.dp._wanted_offloads = 0x07  # as if b's kernel had granted csum | tso4 | tso6
    try:
        a.dp.set_peers([b.route()])
        b.dp.set_peers([a.route()])
        plain = ipv4("10.42.1.2", "10.42.2.2", b"no vnet here")
        a.kernel.send(plain)
        assert pump([a, b], lambda: recv_kernel(b)) == EMPTY_VNET_HDR + plain
        back = ipv4("10.42.2.2", "10.42.1.2", b"and back")
        b.kernel.send(EMPTY_VNET_HDR + back)
        assert pump([a, b], lambda: recv_kernel(a)) == back
        offloaded = bytes([1, 1]) + bytes(8) + back  # NEEDS_CSUM + GSO: a plain TUN cannot take it
        b.kernel.send(offloaded)
        pump([a, b], lambda: a.dp.drops.get("offload_unsupported"))
        # a's probes said it takes no offloaded packets: b's data path stops asking its kernel for them
        pump([a, b], lambda: b.dp.health["a"].accepts_offload is False and b.dp.status()["offload_fallback"])
    finally:
        a.close()
        b.close()


def test_route_keys_cover_the_subnet() -> None:
    assert route_keys(IPv4Network("10.42.3.0/24")) == [bytes([10, 42, 3])]
    assert len(route_keys(IPv4Network("10.42.0.0/23"))) == 2
    with pytest.raises(ValueError):
        route_keys(IPv4Network("10.42.3.0/25"))


# ---------------------------------------------------------------------- probes (pure)
def test_probe_roundtrip_and_padding() -> None:
    p = Probe(ProbeKind.LARGE_REQUEST, 1, 7, 12.5, 99)
    data = p.encode(4000)
    assert len(data) == 4000 and decode_probe(data) == p
    assert len(p.encode()) == PROBE_LEN


@given(st.binary(max_size=64))
def test_decode_probe_never_raises(data: bytes) -> None:
    got = decode_probe(data)
    assert got is None or data[0] == 0xFF


def test_health_states_and_loss_estimate() -> None:
    cfg = ProbeConfig(interval=1.0, timeout=3.0, down_after=10.0, large_every=100, loss_min_packets=100)
    h = PeerHealth(cfg, 0.0)
    assert h.state("handshaking", 0.0) == "handshaking"
    (req, _size), = h.due(0.0, tx_packets=0)
    h.on_reply(Probe(ProbeKind.REPLY, 1, req.seq, req.echo, 0), 0.002)
    assert h.rtt == pytest.approx(0.002) and h.state("established", 0.01) == "up"
    (req, _size), = h.due(1.0, tx_packets=1000)
    h.on_reply(Probe(ProbeKind.REPLY, 1, req.seq, req.echo, 950), 1.001)
    assert h.loss == pytest.approx(0.05)
    assert h.state("established", 4.5) == "degraded"  # no answer for > timeout
    assert h.silent(4.5)
    assert h.state("none", 12.0) == "down"


def test_large_probe_failures_mark_large_messages_blocked() -> None:
    cfg = ProbeConfig(interval=1.0, large_every=1, large_failures=3)
    h = PeerHealth(cfg, 0.0)
    t = 0.0
    for _ in range(5):
        for probe, _size in h.due(t, 0):
            if probe.kind == ProbeKind.REQUEST:  # small ones answered, large ones lost
                h.on_reply(Probe(ProbeKind.REPLY, 1, probe.seq, probe.echo, 0), t + 0.001)
        t += 1.0
    assert h.large_ok is False


def test_loss_shrinks_messages_and_blocked_large_messages_switch_offload_off(pair: tuple[Host, Host]) -> None:
    a, _b = pair
    calls: list[int] = []
    a.dp._set_offloads = calls.append
    a.dp._wanted_offloads = 0x07  # csum | tso4 | tso6, as if the kernel had granted them
    a.dp.health["b"].loss = 0.05
    a.dp.handle_timer(a.dp.clock())
    assert a.dp.max_message == 32768
    a.dp.handle_timer(a.dp.clock())
    assert a.dp.max_message == 16384
    a.dp.health["b"].loss = 0.0
    a.dp.handle_timer(a.dp.clock())
    assert a.dp.max_message == 32768
    a.dp.health["b"].large_ok = False
    a.dp.handle_timer(a.dp.clock())
    assert calls == [0x01] and a.dp.status()["offload_fallback"]  # checksum offload only: MTU-sized packets
    a.dp.health["b"].large_ok = True
    a.dp.handle_timer(a.dp.clock())
    assert calls == [0x01, 0x07]


def test_sustained_loss_shrinks_messages_down_to_one_underlay_datagram(pair: tuple[Host, Host]) -> None:
    a, _b = pair
    a.dp.health["b"].loss = 0.10
    sizes = []
    for _ in range(len(a.dp.steps) + 2):
        a.dp.handle_timer(a.dp.clock())
        sizes.append(a.dp.max_message)
    one = a.dp.cfg.chunk_size - 32
    assert a.dp.steps[-1] == one and sizes[-1] == sizes[-2] == one  # stops there: nothing smaller helps
    assert sizes == sorted(sizes, reverse=True) and 2048 in sizes


def test_spin_policy_keeps_the_window_for_request_response_and_shrinks_it_for_sparse_traffic() -> None:
    from overlay.driver import SpinPolicy

    p = SpinPolicy(0.0005)
    for _ in range(10):  # probes once a second: every spin wasted, the next event far off
        p.after_spin(False)
        p.after_sleep(1.0)
    assert p.window == pytest.approx(0.0005 / 16)
    p.after_sleep(0.0002)  # the answer came just after polling gave up: poll longer
    assert p.window == pytest.approx(0.0005 / 8)
    for _ in range(5):  # answers caught while polling
        p.after_spin(True)
    assert p.window == pytest.approx(0.0005) and p.caught == 5
    p.after_sleep(0.002)  # a middling gap changes nothing
    assert p.window == pytest.approx(0.0005)


def test_worker_loop_spins_and_still_runs_timers(pair: tuple[Host, Host]) -> None:
    """run_blocking with spinning on: packets cross both ways and probe timers still fire."""
    import threading

    from overlay.driver import run_blocking

    a, b = pair
    answered = a.dp.health["b"].answered
    stop = [False]
    threads = [threading.Thread(target=run_blocking, args=(h.dp, {}, lambda: stop[0], None, 500), daemon=True)
               for h in (a, b)]
    for t in threads:
        t.start()
    try:
        b.kernel.setblocking(True)
        b.kernel.settimeout(5)
        a.kernel.setblocking(True)
        a.kernel.settimeout(5)
        for i in range(20):  # request/response: each answer arrives while a's worker is still polling
            pkt = EMPTY_VNET_HDR + ipv4("10.42.1.2", "10.42.2.2", b"ping %d" % i)
            a.kernel.send(pkt)
            assert b.kernel.recv(70000) == pkt
            reply = EMPTY_VNET_HDR + ipv4("10.42.2.2", "10.42.1.2", b"pong %d" % i)
            b.kernel.send(reply)
            assert a.kernel.recv(70000) == reply
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and a.dp.health["b"].answered < answered + 3:
            time.sleep(0.05)
        assert a.dp.health["b"].answered >= answered + 3  # probe timers fire between the spins
    finally:
        stop[0] = True
        for t in threads:
            t.join(5)
