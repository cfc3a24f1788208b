"""Gossip membership: SWIM with Lifeguard, sans-I/O, split as memberlist splits it.

    swim        Swim: the state machine (probe, suspect, refute, dissemination, push-pull)
    suspicion   a suspicion's shrinking timer
    broadcasts  the transmit-limited broadcast queue
    awareness   Lifeguard's local health score
    profile     every tunable, and the pure maths that use them
    wire        the versioned msgpack wire format
    node        the asyncio driver on real UDP and TCP sockets
    sim         the deterministic simulator (thousands of nodes in one process)
"""

__all__ = ["awareness", "broadcasts", "node", "profile", "sim", "suspicion", "swim", "wire"]
