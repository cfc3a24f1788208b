"""Gossip membership on a real 5-host lab: a killed agent is seen dead by every other, and comes back.

Also: an outsider without the cluster's token cannot join (its packets are dropped as sealed with an
unknown key), and garbage at the gossip port is counted, never crashes anything, changes nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator

import pytest

from agent.lab import Lab
from mesh.keyring import Keyring
from mesh.node import GossipNode
from mesh.swim import Profile
from tests.lab.cluster import api, members_seen_by, until
from tests.lab.conftest import fresh_lab

HOSTS = ["h1", "h2", "h3", "h4", "h5"]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from fresh_lab(5)


def seen_as(lab: Lab, target: str, state: str, observers: list[str]) -> bool:
    return all(members_seen_by(lab, o).get(target) == state for o in observers)


def test_killed_agent_is_seen_dead_by_every_other_and_rejoins(lab: Lab) -> None:
    until("all alive", lambda: all(set(members_seen_by(lab, h).values()) == {"alive"}
                                   and len(members_seen_by(lab, h)) == 5 for h in HOSTS), timeout=30)
    victim, others = "h4", [h for h in HOSTS if h != "h4"]
    lab.kill_agent(victim)
    killed = time.monotonic()
    until(f"{victim} dead on every other agent", lambda: seen_as(lab, victim, "dead", others), timeout=20,
          every=0.05)
    print(f"{victim} seen dead by all {len(others)} others after {time.monotonic() - killed:.2f} s")
    for o in others:  # nobody else was taken for dead meanwhile
        assert {n: s for n, s in members_seen_by(lab, o).items() if n != victim} == dict.fromkeys(others, "alive")
    lab.start_agent(victim)
    until(f"{victim} alive again everywhere", lambda: seen_as(lab, victim, "alive", HOSTS), timeout=20)
    member = next(m for m in api(lab, "h1").get("/v1/members")["items"] if m["name"] == victim)
    assert member["incarnation"] >= 0 and member["meta"]["api"] == lab.host(victim).api_url


def test_an_outsider_without_the_token_cannot_join(lab: Lab) -> None:
    before = api(lab, "h1").get("/v1/members/stats")["sealing"]["drops"].get("unknown_key", 0)

    async def intrude() -> list[str]:
        bridge_ip = "10.77.0.1"  # the root namespace's address on the lab's underlay
        outsider = GossipNode("intruder", (bridge_ip, 17946), {"api": "http://nowhere"},
                              Keyring.from_secret(os.urandom(32)).channel(b"gossip"), Profile.lan())
        await outsider.start()
        try:
            outsider.join([(lab.host("h1").address, 7946)])
            await asyncio.sleep(3.0)
            return [m.name for m in outsider.members()]
        finally:
            await outsider.stop()

    outsider_view = asyncio.run(intrude())
    assert outsider_view == ["intruder"]
    for h in HOSTS:
        assert "intruder" not in members_seen_by(lab, h)
    after = api(lab, "h1").get("/v1/members/stats")["sealing"]["drops"].get("unknown_key", 0)
    assert after > before


def test_garbage_at_the_gossip_port_is_counted_and_harmless(lab: Lab) -> None:
    target = lab.host("h2")
    before = api(lab, "h2").get("/v1/members/stats")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(200):
            payload = os.urandom(i % 90) if i % 3 else b"\x01" + os.urandom(60)  # random, short, fake version 1
            sock.sendto(payload, (target.address, 7946))
    finally:
        sock.close()
    with socket.create_connection((target.address, 7946), timeout=2) as tcp:  # a bogus push-pull frame
        tcp.sendall(b"\x00\x00\x00\x10" + os.urandom(16))
    time.sleep(1.0)
    after = api(lab, "h2").get("/v1/members/stats")
    dropped = sum(after["drops"].values()) - sum(before["drops"].values())
    assert dropped >= 200, (before["drops"], after["drops"])
    assert set(members_seen_by(lab, "h2").values()) == {"alive"} and len(members_seen_by(lab, "h2")) == 5
