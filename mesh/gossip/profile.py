"""Every SWIM/Lifeguard tunable in one frozen profile, and the pure maths that use them.

The formulas are memberlist's (hashicorp/memberlist ``util.go``, ``suspicion.go``, ``state.go``,
``awareness.go``), so a profile with memberlist's values behaves like memberlist; ``Profile.lan()`` is
Corral's default, tuned in the simulator (``bench/gossip.py``) to the targets of issue 3.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Profile:
    """SWIM + Lifeguard tunables. Times are seconds of whatever clock ``now`` comes from."""

    probe_interval: float
    """One member is probed per interval (memberlist ``ProbeInterval``); Lifeguard stretches it to
    ``probe_interval × (health + 1)``."""
    probe_timeout: float
    """Wait this long for a direct ack before the indirect probes (``ProbeTimeout``); also stretched by
    ``health + 1`` (the Lifeguard paper does; memberlist leaves the direct wait unscaled)."""
    indirect_checks: int
    """Members asked to ping the target when the direct probe times out (``IndirectChecks``)."""
    direct_retry: bool
    """Re-send the direct ping alongside the indirect pings (memberlist sends a TCP ping instead)."""
    suspicion_mult: float
    """``min suspicion timeout = suspicion_mult × max(1, log10(max(1, n))) × probe_interval``
    (``SuspicionMult``, ``util.go suspicionTimeout``)."""
    suspicion_max_timeout_mult: float
    """``max suspicion timeout = suspicion_max_timeout_mult × min`` (``SuspicionMaxTimeoutMult``)."""
    suspicion_confirmations: int
    """k: independent confirmations that shrink the timeout from max to min (memberlist hard-wires
    ``k = SuspicionMult − 2`` in ``state.go suspectNode``, and uses k = 0, i.e. min, when ``n − 2 < k``)."""
    retransmit_mult: int
    """Each broadcast is sent ``retransmit_mult × ceil(log10(n + 1))`` times (``RetransmitMult``)."""
    gossip_interval: float
    """Period of the gossip tick that sends pending broadcasts to random members (``GossipInterval``)."""
    gossip_nodes: int
    """Members gossiped to per tick (``GossipNodes``)."""
    gossip_to_the_dead_time: float
    """Dead members still receive gossip (so they learn it and refute) for this long (``GossipToTheDeadTime``)."""
    push_pull_interval: float
    """Full-state anti-entropy with one random member, scaled up past 32 members (``PushPullInterval``,
    ``util.go pushPullScale``); 0 disables it."""
    awareness_max_multiplier: int
    """Health score ranges over ``[0, awareness_max_multiplier − 1]`` (``AwarenessMaxMultiplier``)."""
    reconnect_interval: float = 30.0
    """Push-pull with a random dead member, with probability dead/alive, this often (Serf's
    ``ReconnectInterval`` = 30 s; memberlist alone never contacts the dead); 0 disables it."""
    refutation_repair: bool = False
    """Corral's refinements over memberlist (False = memberlist's rules), all so that every member
    that timed a suspicion hears the refutation, at 20 % loss too:
    (1) a suspect message at a *higher* incarnation than the suspicion being timed restarts the
    timer instead of confirming it (memberlist confirms it, so the stale timer can declare a refuted
    member dead); (2) a member that receives an accusation it already refuted answers the sender
    with its current alive directly (memberlist ignores it and relies on one round of gossip);
    (3) a member holding a suspicion pings the suspect with the suspect message at 0.3 and 0.6 of the
    minimum timeout, and a relay of an indirect probe adds the suspect message too (buddy system on
    every path); (4) an ack is sent after the rest of its packet is handled, so a refutation caused
    by the buddy message rides on the ack. Cost: ~2 pings per member per suspicion that outlives
    0.3 × min, i.e. only for members that are really down or paused."""
    max_packet: int = 1336
    """Largest plaintext UDP packet built: 1400 (``UDPBufferSize``) minus 64 bytes for the driver's seal."""
    meta_max_bytes: int = 512
    """Largest encoded metadata accepted from the application (memberlist ``MetaMaxSize`` = 512)."""
    join_retry_initial: float = 0.5
    """First join retry delay after every seed failed; doubles (with ±25 % jitter) up to ``join_retry_max``."""
    join_retry_max: float = 16.0
    dead_reap_time: float = 24 * 3600.0
    """Dead and left members are kept this long, so a returning name is recognised (Serf's reap/
    tombstone time is 24 h; memberlist drops them after ``GossipToTheDeadTime``)."""

    @classmethod
    def memberlist_lan(cls) -> Profile:
        """memberlist ``config.go DefaultLANConfig`` exactly: ProbeInterval 1 s, ProbeTimeout 500 ms,
        IndirectChecks 3, SuspicionMult 4, SuspicionMaxTimeoutMult 6, RetransmitMult 4,
        GossipInterval 200 ms, GossipNodes 3, GossipToTheDeadTime 30 s, PushPullInterval 30 s,
        AwarenessMaxMultiplier 8, UDPBufferSize 1400; k = SuspicionMult − 2 = 2."""
        return cls(
            probe_interval=1.0,
            probe_timeout=0.5,
            indirect_checks=3,
            direct_retry=False,
            suspicion_mult=4.0,
            suspicion_max_timeout_mult=6.0,
            suspicion_confirmations=2,
            retransmit_mult=4,
            gossip_interval=0.2,
            gossip_nodes=3,
            gossip_to_the_dead_time=30.0,
            push_pull_interval=30.0,
            awareness_max_multiplier=8,
            refutation_repair=False,
        )

    @classmethod
    def lan(cls) -> Profile:
        """Corral's default: memberlist's LAN profile retuned for a LAN (~1 ms RTT) to detect a crash
        everywhere in < 3 s p50 / < 5 s p99 for small clusters, never declare a member paused for 2 s
        dead, and spread news to 99.9 % of 1000 members in < 1.5 s.

        Trade-off, measured by ``bench/gossip.py``: probing 5× as often (200 ms) with an 80 ms direct
        timeout costs 5× memberlist's steady probe traffic per member (still flat in N, ~10 small
        packets/s) and tolerates less network jitter before an indirect probe. The minimum suspicion
        timeout, ``12 × 200 ms = 2.4 s`` for n ≤ 10 (memberlist: 4 s), is both most of the detection
        time (≈ 0.35 s to the first failed probe + 2.4 s) and what decides the longest pause a
        member survives: the earliest suspicion of a paused member ends a probe window after the
        pause starts, so it must be back within ≈ min + 0.1 s. Measured in the simulator (5 nodes,
        5 % loss, 180 pauses each): no false dead for pauses up to 2.5 s, some from 2.6 s; with
        mult 12.5 (2.5 s) pauses up to 2.6 s survive and detection p50 is 0.1 s later; with 11.5
        up to 2.4 s. Each 0.1 s of min buys 0.1 s of pause tolerance for 0.1 s of detection time;
        12 leaves a 2 s pause a 25 % margin and detection p50 ~2.75 s. Confirmations (k = 2) and a
        max of only 2× min keep the dogpile gain for free in small clusters. Gossip runs twice as
        often (100 ms) to 4 members, which only costs traffic while there is news, and each piece
        of news is sent 6 × ceil(log10(n + 1)) times (memberlist: 4×), which with
        ``refutation_repair`` is what keeps 20 % loss free of false dead verdicts in the simulator.
        Metadata may be 1024 bytes encoded (memberlist: 512): an agent's labels and addresses.
        """
        return dataclasses.replace(
            cls.memberlist_lan(),
            probe_interval=0.2,
            probe_timeout=0.08,
            direct_retry=True,
            suspicion_mult=12.0,
            suspicion_max_timeout_mult=2.0,
            suspicion_confirmations=2,
            retransmit_mult=6,
            refutation_repair=True,
            reconnect_interval=10.0,
            gossip_interval=0.1,
            gossip_nodes=4,
            meta_max_bytes=1024,
        )

    @classmethod
    def local(cls) -> Profile:
        """Fast timers for unit tests and loopback drivers (not for real networks): probes every
        100 ms, dead ~1 s after a crash (min suspicion 10 × 100 ms), which still rides out an event
        loop stalled for half a second on a loaded test machine."""
        return dataclasses.replace(
            cls.lan(),
            probe_interval=0.1,
            probe_timeout=0.05,
            suspicion_mult=10.0,
            gossip_interval=0.05,
            gossip_to_the_dead_time=5.0,
            push_pull_interval=5.0,
            reconnect_interval=2.0,
            join_retry_initial=0.1,
            join_retry_max=1.0,
        )


def suspicion_timeout(suspicion_mult: float, n: int, interval: float) -> float:
    """memberlist ``util.go suspicionTimeout``: ``mult × max(1, log10(max(1, n))) × interval``
    (memberlist truncates the node scale to milliseconds; so do we)."""
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    return suspicion_mult * math.floor(node_scale * 1000) / 1000 * interval


def remaining_suspicion_time(n: int, k: int, elapsed: float, min_timeout: float, max_timeout: float) -> float:
    """memberlist ``suspicion.go remainingSuspicionTime``: with n of k confirmations, the timeout
    falls from max to min as ``log(n + 1) / log(k + 1)``, floored to ms and never below min."""
    frac = math.log(n + 1.0) / math.log(k + 1.0)
    raw = max_timeout - frac * (max_timeout - min_timeout)
    timeout = math.floor(1000.0 * raw) / 1000.0
    return max(timeout, min_timeout) - elapsed


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """memberlist ``util.go retransmitLimit``: ``retransmitMult × ceil(log10(n + 1))``."""
    return retransmit_mult * math.ceil(math.log10(n + 1))


def push_pull_scale(interval: float, n: int) -> float:
    """memberlist ``util.go pushPullScale``: above 32 members the interval grows by
    ``ceil(log2(n) − log2(32)) + 1`` so the cluster-wide TCP load stays bounded."""
    threshold = 32
    if n <= threshold:
        return interval
    multiplier = math.ceil(math.log2(n) - math.log2(threshold)) + 1.0
    return multiplier * interval
