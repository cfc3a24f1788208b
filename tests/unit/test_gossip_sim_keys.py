"""Sealed gossip in the simulator: key rotation mid-run loses no member; a wrong secret cannot join."""

from __future__ import annotations

import random

from mesh.gossip.sim import Link, Sim, SimNode
from mesh.gossip.swim import MemberState
from mesh.keyring import Channel, Keyring

SECRET = b"cluster secret for the simulator"


def seal_with(sim: Sim, node: SimNode, ring: Keyring) -> Channel:
    """Seal and open the node's packets with ``ring`` (deterministic nonces, virtual clock)."""
    rng = random.Random(f"{sim.seed}/{node.name}")
    channel = ring.channel(b"gossip", replay_window=30.0, clock=lambda: sim.now, rand=rng.randbytes)
    node.seal = channel.seal
    node.open = channel.open
    return channel


def test_key_rotation_mid_run_loses_no_member() -> None:
    sim = Sim(31, link=Link(loss=0.01, jitter=0.001))
    rings: dict[str, Keyring] = {}
    channels: dict[str, Channel] = {}
    names = [f"n{i}" for i in range(12)]
    for i, name in enumerate(names):
        node = sim.add_node(name, join=["n0"] if i else ())
        rings[name] = Keyring.from_secret(SECRET)
        channels[name] = seal_with(sim, node, rings[name])
        sim.run_for(0.05)
    sim.run_for(3.0)
    assert sim.converged()
    new_key = random.Random(1).randbytes(32)
    old_key = rings["n0"].primary
    order = list(names)
    random.Random(2).shuffle(order)
    # install everywhere → use everywhere → remove the old key everywhere, each step rolled out
    # over a second in random order (as `corral keys …` reaches agents one by one).
    for step, t0 in (("install", 4.0), ("use", 6.0), ("remove", 8.0)):
        for k, name in enumerate(order):
            def apply(name: str = name, step: str = step) -> None:
                getattr(rings[name], step)(new_key if step != "remove" else old_key)
            sim.at(t0 + k / len(order), apply)
    sim.run_until(15.0)
    assert sim.false_dead == []
    assert sim.converged()
    assert all(rings[n].installed() == [new_key] for n in names)
    assert sum(c.drops.get("unknown_key", 0) for c in channels.values()) == 0
    assert sum(c.opened for c in channels.values()) > 1000


def test_node_with_the_wrong_secret_cannot_join() -> None:
    sim = Sim(32)
    rings = {}
    for i in range(3):
        node = sim.add_node(f"n{i}", join=["n0"] if i else ())
        rings[node.name] = seal_with(sim, node, Keyring.from_secret(SECRET))
        sim.run_for(0.1)
    # The stranger tries to join, then even gets the member table by other means: every packet and
    # stream it sends is dropped as sealed with an unknown key.
    stranger = sim.add_node("x")
    seal_with(sim, stranger, Keyring.from_secret(b"some other secret"))
    sim.call("x", lambda s: s.join([sim.nodes["n1"].address], sim.now))
    sim.run_for(2.0)
    assert not stranger.swim.joined and stranger.swim.stats["join_retries"] > 0
    sim.call("x", lambda s: s.preload([m for m in sim.nodes["n0"].swim.members()], sim.now))
    sim.run_for(20.0)
    for o in ("n0", "n1", "n2"):
        assert sim.view(o, "x") is None
    assert sum(c.drops.get("unknown_key", 0) for c in rings.values()) > 0
    # …and to the stranger, nobody ever answers: it has declared all of them dead.
    assert all(sim.state_of("x", o) is MemberState.DEAD for o in ("n0", "n1", "n2"))
