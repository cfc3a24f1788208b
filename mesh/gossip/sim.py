"""Deterministic simulator for the SWIM core: N :class:`~mesh.gossip.swim.Swim` cores on a virtual clock.

One seeded :class:`random.Random` drives everything (each core gets its own generator drawn from it;
the network draws loss, delay, jitter and duplication from another), and one heap of timed events
orders every delivery and timer, ties broken by insertion order. So a seed replays a whole cluster:
:meth:`Sim.digest` hashes every delivered packet and every event, and two runs with one seed produce
the same digest (TigerBeetle's VOPR does the same; STYLE.md §19).

The network: per-link loss, one-way delay plus uniform jitter (which reorders packets), duplication,
partitions (a packet or stream crossing groups is lost), crashed nodes (packets vanish, streams fail
fast, as a refused connection), and *paused* nodes: their packets and streams queue up and their
timers do not run until they resume, like a starved or SIGSTOPped process. Push-pull streams are
reliable with a round trip of delay, and fail after ``stream_timeout`` across a partition. A node
given ``seal``/``open`` functions (a keyring channel) seals its packets and streams, as the driver does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from mesh.gossip.swim import Address, Event, Member, MemberState, Profile, Swim

Seal = Callable[[bytes], bytes]
Open = Callable[[bytes], "bytes | None"]


@dataclasses.dataclass(frozen=True)
class Link:
    """Faults of a (directed) link. Delays are one-way, in seconds."""

    loss: float = 0.0
    delay: float = 0.0005
    jitter: float = 0.0002
    """Uniform extra delay in ``[0, jitter)``: packets sent close together may swap."""
    duplicate: float = 0.0
    reorder: float = 0.0
    """Probability that a packet is held back by up to ``10 × delay`` more, so later ones overtake it."""


class SimNode:
    """One host of the simulation: the current :class:`Swim` instance and its fault state."""

    def __init__(self, name: str, address: Address, swim: Swim) -> None:
        self.name = name
        self.address = address
        self.swim = swim
        self.crashed = False
        self.paused = False
        self.backlog: list[tuple[int, Address, bytes]] = []
        self.timer_at = float("inf")
        self.timer_gen = 0
        self.instance = 0
        self.seal: Seal | None = None
        self.open: Open | None = None


# event kinds in the heap
_TIMER, _PACKET, _STREAM, _REPLY, _FAIL, _CALL = range(6)
# backlog kinds
_B_PACKET, _B_STREAM, _B_REPLY = 0, 1, 2


class Sim:
    """A cluster on a virtual clock. Build with :meth:`add_node`, drive with :meth:`run_until`."""

    def __init__(
        self,
        seed: int,
        profile: Profile | None = None,
        *,
        link: Link | None = None,
        stream_timeout: float = 1.0,
        log_events: bool = True,
    ) -> None:
        self.seed = seed
        self.profile = profile or Profile.lan()
        self.now = 0.0
        self._rng = random.Random(seed)
        self._net = random.Random(self._rng.getrandbits(64))
        self.default_link = link or Link()
        self.links: dict[tuple[str, str], Link] = {}
        self.stream_timeout = stream_timeout
        self.nodes: dict[str, SimNode] = {}
        self._by_addr: dict[Address, SimNode] = {}
        self._heap: list[tuple[float, int, int, Any]] = []
        self._tie = 0
        self._group: dict[str, int] = {}  # partition group per node; absent = group 0
        self._hash = hashlib.sha256()
        self.log_events = log_events
        self.log: list[str] = []
        self.dead_seen: dict[tuple[str, str], float] = {}  # (observer, member) → first dead event
        self.false_dead: list[tuple[float, str, str]] = []  # (time, observer, member) dead while running
        self.crashed_at: dict[str, float] = {}
        self._dead_count: dict[str, int] = {}  # member → live observers that have it in dead_seen
        self.packets_delivered = 0
        self.packets_dropped = 0
        self.event_hooks: list[Callable[[str, Event], None]] = []

    # ------------------------------------------------------------------------------------------ building

    def address_of(self, index: int) -> Address:
        return (f"10.{index // 62500}.{index // 250 % 250}.{index % 250 + 1}", 7946)

    def add_node(
        self,
        name: str,
        meta: Mapping[str, Any] | None = None,
        *,
        join: Sequence[str] = (),
        profile: Profile | None = None,
        incarnation: int = 0,
    ) -> SimNode:
        """Start a node, joining through the named members (none: it bootstraps a cluster of one)."""
        address = self.address_of(len(self.nodes)) if name not in self.nodes else self.nodes[name].address
        swim = Swim(
            name,
            address,
            meta or {},
            profile or self.profile,
            random.Random(self._rng.getrandbits(64)),
            self.now,
            incarnation=incarnation,
        )
        node = self.nodes.get(name)
        if node is None:
            node = SimNode(name, address, swim)
            self.nodes[name] = node
            self._by_addr[address] = node
        else:
            node.swim = swim
            node.instance += 1
            node.crashed = False
            node.paused = False
            node.backlog.clear()
            self.crashed_at.pop(name, None)
            for key in [k for k in self.dead_seen if k[0] == name]:  # a new core remembers nothing
                del self.dead_seen[key]
                self._dead_count[key[1]] -= 1
        if join:
            swim.join([self.nodes[j].address for j in join], self.now)
        self._after(node)
        return node

    def add_converged(self, count: int, meta: Mapping[str, Any] | None = None) -> list[str]:
        """``count`` nodes that already know each other (:meth:`Swim.preload`): a big cluster without
        the join storm. Returns their names, ``n0``, ``n1``, …"""
        names = [f"n{i}" for i in range(len(self.nodes), len(self.nodes) + count)]
        for name in names:
            self.add_node(name, meta)
        members = [self.nodes[n].swim.member(n) for n in names]
        table = [m for m in members if m is not None]
        for name in names:
            self.nodes[name].swim.preload(table, self.now)
            self._after(self.nodes[name])
        return names

    # ------------------------------------------------------------------------------------------ faults

    def link(self, src: str, dst: str) -> Link:
        return self.links.get((src, dst), self.default_link)

    def set_link(self, a: str, b: str, link: Link, *, both: bool = True) -> None:
        self.links[(a, b)] = link
        if both:
            self.links[(b, a)] = link

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the cluster: nodes in different groups cannot reach each other; unnamed nodes are
        in group 0 with the first group."""
        self._group = {}
        for i, group in enumerate(groups):
            for name in group:
                self._group[name] = i

    def heal(self) -> None:
        self._group = {}

    def crash(self, name: str) -> None:
        node = self.nodes[name]
        node.crashed = True
        node.paused = False
        node.backlog.clear()
        self.crashed_at[name] = self.now

    def restart(
        self, name: str, join: Sequence[str], meta: Mapping[str, Any] | None = None, incarnation: int = 0
    ) -> SimNode:
        """A crashed node comes back as a new core with the same name and address."""
        return self.add_node(name, meta, join=join, incarnation=incarnation)

    def pause(self, name: str, duration: float | None = None) -> None:
        """Stop running ``name``: its inputs queue up and its timers wait until :meth:`resume`."""
        self.nodes[name].paused = True
        if duration is not None:
            self.at(self.now + duration, lambda: self.resume(name))

    def resume(self, name: str) -> None:
        node = self.nodes[name]
        if not node.paused or node.crashed:
            return
        node.paused = False
        backlog, node.backlog = node.backlog, []
        for kind, src, data in backlog:
            if kind == _B_PACKET:
                self._deliver_packet(node, src, data)
            elif kind == _B_STREAM:
                self._serve_stream(node, src, data)
            else:
                self._deliver_reply(node, src, data)
        node.swim.handle_timer(self.now)
        self._after(node)

    def call(self, name: str, fn: Callable[[Swim], object]) -> None:
        """Run an API call on a node's core now (``sim.call("n0", lambda s: s.leave(sim.now))``)
        and route what it produced."""
        node = self.nodes[name]
        if node.crashed:
            return
        fn(node.swim)
        self._after(node)

    def at(self, when: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` at virtual time ``when`` (scripted faults and API calls)."""
        self._push(when, _CALL, fn)

    # ------------------------------------------------------------------------------------------ running

    def run_until(self, until: float, *, stop: Callable[[], bool] | None = None) -> None:
        heap = self._heap
        while heap and heap[0][0] <= until:
            when, _, kind, payload = heapq.heappop(heap)
            self.now = when
            if kind == _PACKET:
                node, instance, src, data = payload
                if node.crashed:
                    continue
                if node.paused:
                    node.backlog.append((_B_PACKET, src, data))
                    continue
                self._deliver_packet(node, src, data)
            elif kind == _TIMER:
                node, gen = payload
                if gen != node.timer_gen or node.crashed or node.paused:
                    continue
                node.timer_at = float("inf")
                node.swim.handle_timer(when)
                self._after(node)
            elif kind == _STREAM:
                node, src = payload[0], payload[1]
                if node.crashed:
                    self._fail_stream(src, node.address, self.now)
                elif node.paused:
                    node.backlog.append((_B_STREAM, src, payload[2]))
                else:
                    self._serve_stream(node, src, payload[2])
            elif kind == _REPLY:
                node, instance, src, data = payload
                if node.crashed or node.instance != instance:
                    continue
                if node.paused:
                    node.backlog.append((_B_REPLY, src, data))
                    continue
                self._deliver_reply(node, src, data)
            elif kind == _FAIL:
                node, instance, dst = payload
                if node.crashed or node.instance != instance or node.paused:
                    continue
                node.swim.stream_failed(dst, when)
                self._after(node)
            else:
                payload()
            if stop is not None and stop():
                return
        self.now = max(self.now, until)

    def run_for(self, duration: float, *, stop: Callable[[], bool] | None = None) -> None:
        self.run_until(self.now + duration, stop=stop)

    # ------------------------------------------------------------------------------------------ plumbing

    def _push(self, when: float, kind: int, payload: Any) -> None:
        self._tie += 1
        heapq.heappush(self._heap, (when, self._tie, kind, payload))

    def _reachable(self, a: str, b: str) -> bool:
        return not self._group or self._group.get(a, 0) == self._group.get(b, 0)

    def _deliver_packet(self, node: SimNode, src: Address, data: bytes) -> None:
        self.packets_delivered += 1
        self._hash.update(data)
        if node.open is not None:
            plain = node.open(data)
            if plain is None:
                return
            data = plain
        node.swim.receive(data, src, self.now)
        self._after(node)

    def _serve_stream(self, node: SimNode, src: Address, data: bytes) -> None:
        origin = self._by_addr.get(src)
        if node.open is not None:
            plain = node.open(data)
            if plain is None:  # not sealed with our keys: the driver closes the connection
                self._fail_stream(src, node.address, self.now)
                return
            data = plain
        reply = node.swim.handle_stream(data, src, self.now)
        self._after(node)
        if origin is None:
            return
        if reply is None:
            self._fail_stream(src, node.address, self.now)
            return
        if node.seal is not None:
            reply = node.seal(reply)
        link = self.link(node.name, origin.name)
        self._push(self.now + link.delay + link.jitter, _REPLY, (origin, origin.instance, node.address, reply))

    def _deliver_reply(self, node: SimNode, src: Address, data: bytes) -> None:
        if node.open is not None:
            plain = node.open(data)
            if plain is None:
                node.swim.stream_failed(src, self.now)
                self._after(node)
                return
            data = plain
        node.swim.handle_stream_reply(data, src, self.now)
        self._after(node)

    def _fail_stream(self, src: Address, dst: Address, when: float) -> None:
        origin = self._by_addr.get(src)
        if origin is not None:
            self._push(when, _FAIL, (origin, origin.instance, dst))

    def _after(self, node: SimNode) -> None:
        """Drain a core after an input: route its packets and streams, log its events, re-arm its timer."""
        swim = node.swim
        net = self._net
        for data, dst_addr in swim.datagrams_to_send():
            dst = self._by_addr.get(dst_addr)
            if dst is None:
                self.packets_dropped += 1
                continue
            if not self._reachable(node.name, dst.name):
                self.packets_dropped += 1
                continue
            link = self.links.get((node.name, dst.name), self.default_link)
            if node.seal is not None:
                data = node.seal(data)
            copies = 2 if link.duplicate and net.random() < link.duplicate else 1
            for _ in range(copies):
                if link.loss and net.random() < link.loss:
                    self.packets_dropped += 1
                    continue
                delay = link.delay + (net.random() * link.jitter if link.jitter else 0.0)
                if link.reorder and net.random() < link.reorder:
                    delay += net.random() * 10 * link.delay
                self._push(self.now + delay, _PACKET, (dst, dst.instance, node.address, data))
        for data, dst_addr in swim.streams_to_send():
            dst = self._by_addr.get(dst_addr)
            if dst is None or not self._reachable(node.name, dst.name):
                self._push(self.now + self.stream_timeout, _FAIL, (node, node.instance, dst_addr))
                continue
            link = self.link(node.name, dst.name)
            if node.seal is not None:
                data = node.seal(data)
            self._push(self.now + 2 * link.delay + link.jitter, _STREAM, (dst, node.address, data))
        events = []
        while (event := swim.next_event()) is not None:
            events.append(event)
        if events:
            self._record(node.name, events)
        timer = swim.get_timer()
        deadline = float("inf") if timer is None else timer
        if deadline != node.timer_at:
            node.timer_at = deadline
            node.timer_gen += 1
            if deadline != float("inf"):
                self._push(max(deadline, self.now), _TIMER, (node, node.timer_gen))

    def _record(self, observer: str, events: list[Event]) -> None:
        for ev in events:
            m = ev.member
            line = f"{self.now:.6f} {observer} {ev.kind} {m.name} {m.incarnation}"
            self._hash.update(line.encode())
            if self.log_events:
                self.log.append(line)
            if ev.kind == "dead":
                if (observer, m.name) not in self.dead_seen:
                    self.dead_seen[(observer, m.name)] = self.now
                    self._dead_count[m.name] = self._dead_count.get(m.name, 0) + 1
                target = self.nodes.get(m.name)
                if target is not None and not target.crashed:
                    self.false_dead.append((self.now, observer, m.name))
            elif ev.kind in ("joined", "alive") and self.dead_seen.pop((observer, m.name), None) is not None:
                self._dead_count[m.name] -= 1
            for hook in self.event_hooks:
                hook(observer, ev)

    # ------------------------------------------------------------------------------------------ queries

    def digest(self) -> str:
        """Hash of every delivered packet and every event so far: equal seeds give equal digests."""
        return self._hash.hexdigest()

    def live(self) -> list[str]:
        return [n for n, node in self.nodes.items() if not node.crashed]

    def view(self, observer: str, member: str) -> Member | None:
        return self.nodes[observer].swim.member(member)

    def state_of(self, observer: str, member: str) -> MemberState | None:
        m = self.view(observer, member)
        return None if m is None else m.state

    def all_see(self, member: str, state: MemberState, *, observers: Iterable[str] | None = None) -> bool:
        names = self.live() if observers is None else list(observers)
        return all(self.state_of(o, member) is state for o in names if o != member)

    def all_saw_dead_at(self, member: str) -> float | None:
        """When the last live node (other than ``member``) first saw ``member`` dead; None if some have not.
        Cheap enough to be a ``run_until`` stop condition: a count answers "not yet" in O(1)."""
        others = len(self.nodes) - len(self.crashed_at) - (0 if member in self.crashed_at else 1)
        if self._dead_count.get(member, 0) < others:
            return None
        latest = 0.0
        for o in self.live():
            if o == member:
                continue
            t = self.dead_seen.get((o, member))
            if t is None:
                return None
            latest = max(latest, t)
        return latest

    def converged(self, *, observers: Iterable[str] | None = None) -> bool:
        """Every live node sees every live node alive (and nothing else as alive)."""
        live = self.live()
        names = live if observers is None else list(observers)
        live_set = set(live)
        for o in names:
            alive = {m.name for m in self.nodes[o].swim.members() if m.state is MemberState.ALIVE}
            if alive != live_set:
                return False
        return True

    def check_invariants(self) -> None:
        """Raise AssertionError (with the seed) if a safety property is broken: every running node
        sees itself alive (or left), and nobody holds an incarnation for a member that the member
        itself never reached (incarnations only originate at their member; a restarted member
        may lag until it refutes, so only first instances are checked)."""
        for name, node in self.nodes.items():
            if node.crashed:
                continue
            me = node.swim.member(name)
            assert me is not None and me.state in (MemberState.ALIVE, MemberState.LEFT), (self.seed, name, me)
            for m in node.swim.members():
                owner = self.nodes.get(m.name)
                if owner is None or owner.crashed or owner.instance > 0:
                    continue
                assert m.incarnation <= owner.swim.incarnation, (self.seed, name, m, owner.swim.incarnation)

    def totals(self, key: str) -> int:
        """A core counter summed over every node (crashed ones keep their last count)."""
        return sum(node.swim.stats[key] for node in self.nodes.values())

    def mark(self) -> tuple[float, int, int]:
        """A point to measure load from: ``(now, packets sent, bytes sent)`` cluster-wide."""
        return self.now, self.totals("packets_sent"), self.totals("bytes_sent")

    def load_since(self, mark: tuple[float, int, int]) -> tuple[float, float]:
        """Packets and bytes sent per member per second since ``mark`` (members alive now)."""
        t0, packets, octets = mark
        seconds = max(self.now - t0, 1e-9)
        members = max(len(self.live()), 1)
        return (
            (self.totals("packets_sent") - packets) / members / seconds,
            (self.totals("bytes_sent") - octets) / members / seconds,
        )
