"""Unit tests of the sans-I/O SWIM core, with a hand-stepped clock and a zero-latency network."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random

import pytest

from mesh.gossip import wire
from mesh.gossip.profile import remaining_suspicion_time, retransmit_limit, suspicion_timeout
from mesh.gossip.swim import Address, Event, Member, MemberState, Profile, Swim

LOCAL = Profile.local()


def deadline(swim: Swim) -> float:
    """When the core wants ``handle_timer`` next (infinity: not until something arrives)."""
    timer = swim.get_timer()
    return math.inf if timer is None else timer


class Net:
    """Zero-latency network of cores: every output is delivered at once; nodes can be cut off."""

    def __init__(self, profile: Profile = LOCAL, seed: int = 1) -> None:
        self.profile = profile
        self.rng = random.Random(seed)
        self.now = 0.0
        self.nodes: dict[str, Swim] = {}
        self.by_addr: dict[Address, str] = {}
        self.down: set[str] = set()
        self.cut: set[tuple[str, str]] = set()
        self.events: dict[str, list[Event]] = {}
        self.sent: list[tuple[str, Address, bytes]] = []

    def add(self, name: str, join: str | None = None, meta: dict[str, object] | None = None, inc: int = 0) -> Swim:
        addr = next((a for a, n in self.by_addr.items() if n == name), (f"10.0.0.{len(self.by_addr) + 1}", 7946))
        swim = Swim(name, addr, meta or {}, self.profile, random.Random(self.rng.random()), self.now, incarnation=inc)
        self.nodes[name] = swim
        self.by_addr[addr] = name
        self.down.discard(name)
        self.events.setdefault(name, [])
        if join is not None:
            swim.join([self.nodes[join].address], self.now)
        self.flush()
        return swim

    def reachable(self, a: str, b: str) -> bool:
        return a not in self.down and b not in self.down and (a, b) not in self.cut and (b, a) not in self.cut

    def flush(self) -> None:
        busy = True
        while busy:
            busy = False
            for name, swim in list(self.nodes.items()):
                if name in self.down:
                    swim.datagrams_to_send()
                    swim.streams_to_send()
                    continue
                self.events[name].extend(iter(swim.next_event, None))
                for data, dst in swim.datagrams_to_send():
                    busy = True
                    self.sent.append((name, dst, data))
                    peer = self.by_addr.get(dst)
                    if peer is not None and self.reachable(name, peer):
                        self.nodes[peer].receive(data, swim.address, self.now)
                for data, dst in swim.streams_to_send():
                    busy = True
                    peer = self.by_addr.get(dst)
                    if peer is None or not self.reachable(name, peer):
                        swim.stream_failed(dst, self.now)
                        continue
                    reply = self.nodes[peer].handle_stream(data, swim.address, self.now)
                    if reply is None:
                        swim.stream_failed(dst, self.now)
                    else:
                        swim.handle_stream_reply(reply, dst, self.now)

    def run_until(self, t: float) -> None:
        while True:
            live = [n for n in self.nodes if n not in self.down]
            nxt = min((deadline(self.nodes[n]) for n in live), default=t + 1)
            if nxt > t:
                break
            self.now = max(self.now, nxt)
            for n in live:
                if deadline(self.nodes[n]) <= self.now:
                    self.nodes[n].handle_timer(self.now)
            self.flush()
        self.now = t

    def state(self, observer: str, member: str) -> MemberState | None:
        m = self.nodes[observer].member(member)
        return None if m is None else m.state

    def kinds(self, observer: str, member: str) -> list[str]:
        return [e.kind for e in self.events[observer] if e.member.name == member]


def cluster(n: int, profile: Profile = LOCAL) -> Net:
    net = Net(profile)
    net.add("a")
    for i in range(1, n):
        net.add("abcdefghij"[i], join="a")
    net.run_until(1.0)
    return net


def messages(data: bytes) -> list[wire.Message]:
    out = wire.decode_packet(data)
    assert not isinstance(out, wire.Drop)
    return out


# ---------------------------------------------------------------------------------------------- maths


def test_remaining_suspicion_time_matches_memberlist_table() -> None:
    # memberlist suspicion_test.go TestSuspicion_remainingSuspicionTime (min 2 s, max 30 s, k 3).
    cases = [(0, 0.0, 30.0), (1, 2.0, 14.0), (2, 3.0, 4.81), (3, 4.0, -2.0), (4, 5.0, -3.0), (5, 10.0, -8.0)]
    for n, elapsed, expected in cases:
        assert remaining_suspicion_time(n, 3, elapsed, 2.0, 30.0) == pytest.approx(expected)


def test_suspicion_timeout_and_retransmit_limit_formulas() -> None:
    # memberlist util_test.go: suspicionTimeout(3, n, 1s) and retransmitLimit(3, n).
    assert suspicion_timeout(3, 1, 1.0) == pytest.approx(3.0)
    assert suspicion_timeout(3, 10, 1.0) == pytest.approx(3.0)
    assert suspicion_timeout(3, 100, 1.0) == pytest.approx(6.0)
    assert suspicion_timeout(3, 1000, 1.0) == pytest.approx(9.0)
    assert suspicion_timeout(3, 50, 1.0) == pytest.approx(3 * 1.698)
    assert [retransmit_limit(3, n) for n in (0, 1, 99, 100, 999)] == [0, 3, 6, 9, 9]


def test_memberlist_profile_has_memberlist_defaults() -> None:
    p = Profile.memberlist_lan()
    assert (p.probe_interval, p.probe_timeout, p.indirect_checks) == (1.0, 0.5, 3)
    assert (p.suspicion_mult, p.suspicion_max_timeout_mult, p.suspicion_confirmations) == (4, 6, 2)
    assert (p.retransmit_mult, p.gossip_interval, p.gossip_nodes, p.push_pull_interval) == (4, 0.2, 3, 30.0)
    assert p.awareness_max_multiplier == 8 and not p.refutation_repair


# ---------------------------------------------------------------------------------------------- probing


def test_join_and_probe_ack() -> None:
    net = cluster(3)
    for o in "abc":
        assert {m.name: m.state for m in net.nodes[o].members()} == dict.fromkeys("abc", MemberState.ALIVE)
    a = net.nodes["a"]
    assert a.stats["probes"] > 5
    assert a.stats["acks_received"] == a.stats["probes"]
    assert a.stats["suspicions"] == 0 and a.health_score == 0
    assert net.kinds("b", "c") == ["joined"]


def test_indirect_probe_keeps_member_alive_when_direct_path_fails() -> None:
    net = cluster(3)
    net.cut.add(("a", "b"))
    net.run_until(3.0)
    a, c = net.nodes["a"], net.nodes["c"]
    assert a.stats["indirect_probes"] > 0
    assert c.stats["indirect_relayed"] > 0
    assert net.state("a", "b") is MemberState.ALIVE
    assert "suspect" not in net.kinds("a", "b")


def test_relay_sends_nack_when_target_is_silent() -> None:
    net = cluster(3)
    net.down.add("c")
    net.run_until(3.0)
    assert net.nodes["b"].stats["nacks_sent"] > 0 or net.nodes["a"].stats["nacks_sent"] > 0
    assert net.nodes["a"].stats["nacks_received"] + net.nodes["b"].stats["nacks_received"] > 0


def test_crashed_member_becomes_suspect_then_dead() -> None:
    net = cluster(3)
    net.down.add("c")
    t0 = net.now
    net.run_until(t0 + 10)
    for o in "ab":
        assert net.kinds(o, "c") == ["joined", "suspect", "dead"]
        assert net.state(o, "c") is MemberState.DEAD
    dead_at = net.nodes["a"].member("c")
    assert dead_at is not None
    # suspect within ~2 probe intervals, dead after the (k = 0 for 3 nodes) minimum suspicion timeout.
    lo = suspicion_timeout(LOCAL.suspicion_mult, 3, LOCAL.probe_interval)
    assert lo <= dead_at.changed_at - t0 <= lo + 4 * LOCAL.probe_interval


def test_refutation_raises_incarnation_and_health() -> None:
    net = cluster(2)
    a = net.nodes["a"]
    inc = a.incarnation
    packet = wire.encode_packet([wire.Suspect("a", inc, "b")])
    a.receive(packet, net.nodes["b"].address, net.now)
    assert a.incarnation == inc + 1
    assert a.stats["refutations"] == 1 and a.health_score == 1
    net.run_until(net.now + 0.5)
    b_view = net.nodes["b"].member("a")
    assert b_view is not None and b_view.incarnation == inc + 1 and b_view.state is MemberState.ALIVE
    # A stale accusation (older incarnation) is not refuted again.
    a.receive(packet, net.nodes["b"].address, net.now)
    assert a.stats["refutations"] == 1


def test_a_member_suspected_then_alive_again_is_a_flap() -> None:
    net = cluster(3)
    a, c = net.nodes["a"], net.nodes["c"]
    inc = c.incarnation
    a.receive(wire.encode_packet([wire.Suspect("c", inc, "b")]), net.nodes["b"].address, net.now)
    assert net.state("a", "c") is MemberState.SUSPECT and a.stats["flaps"] == 0
    net.run_until(net.now + 1.0)  # c hears of it (gossip) and refutes at a higher incarnation
    assert net.state("a", "c") is MemberState.ALIVE and a.stats["flaps"] == 1
    assert net.nodes["b"].stats["flaps"] <= 1, "b suspected c too, or never: at most one flap"
    net.run_until(net.now + 2.0)
    assert a.stats["flaps"] == 1, "an alive member heard alive again is no flap"


def test_refutation_beats_a_higher_accused_incarnation() -> None:
    net = cluster(2)
    a = net.nodes["a"]
    a.receive(wire.encode_packet([wire.Dead("a", 41, "b")]), net.nodes["b"].address, net.now)
    assert a.incarnation == 42
    assert a.member("a") is not None and a.members()[0].state is MemberState.ALIVE


def test_buddy_system_ping_carries_the_suspicion() -> None:
    swim = _lone(2)
    swim.receive(wire.encode_packet([wire.Suspect("p0", 0, "p1")]), ("10.0.1.1", 7946), 0.0)
    probes: list[list[wire.Message]] = []
    for _ in range(20):
        swim.handle_timer(deadline(swim))
        probes += [m for d, dst in swim.datagrams_to_send() if isinstance((m := messages(d))[0], wire.Ping)]
    to_p0 = [m for m in probes if isinstance(m[0], wire.Ping) and m[0].target == "p0"]
    assert to_p0 and to_p0[0][1] == wire.Suspect("p0", 0, "me")
    to_p1 = [m for m in probes if isinstance(m[0], wire.Ping) and m[0].target == "p1"]
    assert to_p1 and all(not (isinstance(x, wire.Suspect) and x.source == "me") for x in to_p1[0])


def test_suspect_learns_from_a_buddy_ping_and_refutes_on_the_ack() -> None:
    net = cluster(2)
    b = net.nodes["b"]
    ping = wire.encode_packet([wire.Ping(77, "b", "a"), wire.Suspect("b", b.incarnation, "a")])
    b.receive(ping, net.nodes["a"].address, net.now)
    (data, _dst), *_ = b.datagrams_to_send()
    ack = messages(data)
    assert ack[0] == wire.Ack(77)
    assert wire.Alive("b", b.incarnation, b.address, {}) in ack


def _lone(n_peers: int, profile: Profile = LOCAL) -> Swim:
    """A node that knows ``n_peers`` members and never hears from anyone."""
    swim = Swim("me", ("10.0.0.1", 7946), {}, profile, random.Random(5), 0.0)
    peers = [Member(f"p{i}", (f"10.0.1.{i}", 7946), MemberState.ALIVE, 0, {}, 0.0) for i in range(n_peers)]
    swim.preload(peers, 0.0)
    return swim


def _dead_time(swim: Swim, member: str, until: float) -> float | None:
    now = deadline(swim)
    while now <= until:
        swim.handle_timer(now)
        swim.datagrams_to_send()
        for ev in iter(swim.next_event, None):
            if ev.kind == "dead" and ev.member.name == member:
                return now
        now = deadline(swim)
    return None


def test_dogpile_confirmations_shrink_the_suspicion_timeout() -> None:
    # Probes are 1000 s apart so that this node's own probes do not confirm anything: min is 1 s.
    prof = dataclasses.replace(
        LOCAL, probe_interval=1000.0, suspicion_mult=0.001, suspicion_confirmations=3, suspicion_max_timeout_mult=6
    )
    lo = suspicion_timeout(prof.suspicion_mult, 7, prof.probe_interval)
    assert lo == pytest.approx(1.0)
    results = []
    for confirmations in range(4):
        swim = _lone(6, prof)
        swim.receive(wire.encode_packet([wire.Suspect("p0", 0, "p1")]), ("10.0.1.1", 7946), 0.0)
        for j in range(confirmations):
            swim.receive(wire.encode_packet([wire.Suspect("p0", 0, f"p{j + 2}")]), ("10.0.1.2", 7946), 0.0)
        # repeated confirmations, or one from the first accuser, do not count
        for source in ("p1", "p2")[: 1 + (confirmations > 0)]:
            swim.receive(wire.encode_packet([wire.Suspect("p0", 0, source)]), ("10.0.1.2", 7946), 0.0)
        results.append(_dead_time(swim, "p0", 100 * lo))
    expected = [remaining_suspicion_time(c, 3, 0.0, lo, 6 * lo) for c in range(4)]
    assert results == pytest.approx(expected)
    assert results[0] == pytest.approx(6 * lo) and results[3] == pytest.approx(lo)


def test_small_cluster_uses_minimum_timeout_like_memberlist() -> None:
    # n − 2 < k ⇒ k = 0 ⇒ the timer runs for min (memberlist state.go suspectNode).
    prof = dataclasses.replace(LOCAL, probe_interval=1000.0, suspicion_mult=0.001, suspicion_confirmations=3)
    swim = _lone(3, prof)
    swim.receive(wire.encode_packet([wire.Suspect("p0", 0, "p1")]), ("10.0.1.1", 7946), 0.0)
    assert _dead_time(swim, "p0", 1e9) == pytest.approx(1.0)


def test_health_rises_on_failed_probes_and_stretches_the_probe_interval() -> None:
    swim = _lone(5)
    probe_times = []
    now = 0.0
    for _ in range(40):
        now = deadline(swim)
        swim.handle_timer(now)
        for data, _dst in swim.datagrams_to_send():
            if any(isinstance(m, wire.Ping) for m in messages(data)) and swim.stats["probes"] > len(probe_times):
                probe_times.append(now)
    assert swim.health_score == LOCAL.awareness_max_multiplier - 1
    gaps = [b - a for a, b in itertools.pairwise(probe_times)]
    assert gaps[-1] == pytest.approx(LOCAL.probe_interval * LOCAL.awareness_max_multiplier)
    assert gaps[0] < gaps[-1]


def test_health_falls_on_successful_probes() -> None:
    net = cluster(3)
    a = net.nodes["a"]
    for _ in range(3):
        a.receive(wire.encode_packet([wire.Suspect("a", a.incarnation, "b")]), net.nodes["b"].address, net.now)
    assert a.health_score == 3
    net.run_until(net.now + 10 * LOCAL.probe_interval)
    assert a.health_score == 0


# ---------------------------------------------------------------------------------------------- lifecycle


def test_graceful_leave() -> None:
    net = cluster(3)
    inc = net.nodes["c"].incarnation
    net.nodes["c"].leave(net.now)
    net.run_until(net.now + 1.0)
    for o in "ab":
        assert net.state(o, "c") is MemberState.LEFT
        assert net.kinds(o, "c")[-1] == "left"
        assert net.nodes[o].member("c").incarnation == inc + 1  # type: ignore[union-attr]
    assert net.nodes["c"].member("c").state is MemberState.LEFT  # type: ignore[union-attr]


def test_rejoin_after_dead_with_higher_incarnation() -> None:
    net = cluster(3)
    net.down.add("c")
    net.run_until(net.now + 10)
    assert net.state("a", "c") is MemberState.DEAD
    dead_inc = net.nodes["a"].member("c").incarnation  # type: ignore[union-attr]
    net.add("c", join="a")  # a fresh core, incarnation 0
    net.run_until(net.now + 2)
    for o in "ab":
        view = net.nodes[o].member("c")
        assert view is not None and view.state is MemberState.ALIVE and view.incarnation > dead_inc
        assert net.kinds(o, "c")[-1] == "joined"
    assert net.nodes["c"].incarnation > dead_inc


def test_metadata_update_spreads() -> None:
    net = cluster(4)
    net.nodes["b"].update_meta({"role": "manager", "cpu": 8}, net.now)
    net.run_until(net.now + 1.0)
    for o in "acd":
        view = net.nodes[o].member("b")
        assert view is not None and dict(view.meta) == {"role": "manager", "cpu": 8}
        assert net.kinds(o, "b")[-1] == "updated"


def test_oversized_metadata_is_refused() -> None:
    net = cluster(2)
    with pytest.raises(ValueError):
        net.nodes["a"].update_meta({"blob": "x" * 1100}, net.now)


def test_broadcast_sent_exactly_retransmit_limit_times() -> None:
    swim = _lone(3)
    swim.update_meta({"v": 1}, 0.0)
    limit = retransmit_limit(LOCAL.retransmit_mult, 4)
    carried = 0
    now = 0.0
    for _ in range(200):
        now = deadline(swim)
        swim.handle_timer(now)
        for data, _dst in swim.datagrams_to_send():
            carried += sum(1 for m in messages(data) if isinstance(m, wire.Alive) and m.node == "me")
    assert carried == limit


def test_packets_never_exceed_max_packet() -> None:
    prof = dataclasses.replace(LOCAL, probe_interval=1000.0)
    swim = _lone(300, prof)
    for i in range(300):
        meta = {"labels": "x" * (i % 200), "i": i}
        alive = wire.Alive(f"p{i}", 1, (f"10.0.1.{i % 250}", 7946), meta)
        swim.receive(wire.encode_packet([alive]), ("10.0.1.1", 7946), 0.0)
    sizes = []
    now = 0.0
    for _ in range(300):
        now = deadline(swim)
        swim.handle_timer(now)
        sizes += [len(d) for d, _a in swim.datagrams_to_send()]
    assert sizes and max(sizes) <= prof.max_packet
    assert max(sizes) > prof.max_packet - 200  # packets are actually filled


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_packets_are_counted_not_raised() -> None:
    net = cluster(2)
    a = net.nodes["a"]
    src = net.nodes["b"].address
    good = wire.encode_packet([wire.Ping(1, "a", "b")])
    a.receive(good[:-2], src, net.now)
    a.receive(b"\x02" + good[1:], src, net.now)
    a.receive(wire.assemble_packet([b"\x92\x63\x01"]), src, net.now)
    a.receive(wire.assemble_packet([b"\x92\x01\xa1x"]), src, net.now)
    a.receive(b"\x01" + b"\x00" * 1500, src, net.now)
    a.receive(wire.encode_packet([wire.Ping(1, "somebody-else", "b")]), src, net.now)
    a.receive(b"", src, net.now)
    assert (a.stats["truncated"], a.stats["bad_version"], a.stats["bad_kind"]) == (2, 1, 1)
    assert (a.stats["malformed"], a.stats["oversized"], a.stats["not_for_me"]) == (1, 1, 1)
    assert a.handle_stream(b"\x01garbage", src, net.now) is None
    assert a.handle_stream(b"\x07", src, net.now) is None
    a.handle_stream_reply(b"", src, net.now)
    assert a.stats["malformed"] + a.stats["truncated"] + a.stats["bad_version"] >= 6


def test_join_retries_with_backoff_until_a_seed_answers() -> None:
    net = Net()
    net.add("a")
    net.down.add("a")
    b = net.add("b", join="a")
    assert not b.joined and b.stats["stream_failures"] == 1
    net.run_until(3.0)
    retries = b.stats["join_retries"]
    assert 2 <= retries <= 6  # 0.1, 0.2, 0.4, 0.8, 1.0 … with jitter
    net.down.discard("a")
    net.run_until(6.0)
    assert b.joined
    assert net.state("a", "b") is MemberState.ALIVE and net.state("b", "a") is MemberState.ALIVE
    stable = b.stats["join_retries"]
    net.run_until(8.0)
    assert b.stats["join_retries"] == stable


def test_remote_alive_with_oversized_meta_is_dropped() -> None:
    swim = _lone(1)
    alive = wire.Alive("big", 1, ("10.0.2.1", 7946), {"k": "x" * 1100})
    swim.receive(wire.encode_packet([alive]), ("10.0.2.1", 7946), 0.0)
    assert swim.member("big") is None and swim.stats["oversized"] == 1


def test_a_node_that_did_not_run_gives_indirect_probes_their_time() -> None:
    swim = _lone(3)
    swim.handle_timer(deadline(swim))  # the probe goes out …
    assert swim.stats["probes"] == 1
    late = deadline(swim) + 5.0  # … and the process stalls for 5 s
    swim.handle_timer(late)
    assert swim.stats["indirect_probes"] > 0 and swim.stats["probe_failures"] == 0
    assert deadline(swim) > late
