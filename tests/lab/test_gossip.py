"""Gossip membership on a real 5-host lab: a killed agent is seen dead by every other, and comes back.

Also: an outsider without the cluster's token cannot join (its packets are dropped as sealed with an
unknown key), and garbage at the gossip port is counted, never crashes anything, changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.lab import Lab
from mesh.gossip.node import GossipNode
from mesh.gossip.swim import Profile
from mesh.keyring import Keyring
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


def test_key_rotation_loses_no_member_and_survives_a_restart(lab: Lab) -> None:
    import base64
    import stat

    client = api(lab, "h3")
    old_id = client.get("/v1/keys")["keys"][0]["id"]
    new_key = base64.b64encode(os.urandom(32)).decode()

    def held_by_all(kid: str) -> bool:
        body = client.get("/v1/keys")
        return any(k["id"] == kid and k["members"] == 5 for k in body["keys"])

    new_id = client.post("/v1/keys", {"action": "install", "key": new_key})["key_id"]
    until("the new key on every member", lambda: held_by_all(new_id), timeout=20)
    client.post("/v1/keys", {"action": "use", "key": new_key})
    bad = raw_post(lab, "h2", {"action": "remove", "key": new_key})
    assert bad[0] == 400 and "primary" in bad[1]["message"]
    old_key = base64.b64encode(
        bytes.fromhex(json_load(lab.host("h1").agent_data / "keyring.json")["keys"][-1])).decode()
    client.post("/v1/keys", {"action": "remove", "key": old_key})
    until("one key left everywhere", lambda: [k["id"] for k in client.get("/v1/keys")["keys"]] == [new_id]
          and held_by_all(new_id), timeout=20)
    assert old_id != new_id
    time.sleep(2.0)  # several probe rounds sealed with the new key only
    for h in HOSTS:
        assert set(members_seen_by(lab, h).values()) == {"alive"} and len(members_seen_by(lab, h)) == 5
    saved = lab.host("h5").agent_data / "keyring.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    lab.kill_agent("h5")
    lab.start_agent("h5")  # it must come back with the saved ring: the derived key is gone everywhere
    until("h5 alive again everywhere", lambda: seen_as(lab, "h5", "alive", HOSTS), timeout=20)


def raw_post(lab: Lab, host: str, body: dict[str, str]) -> tuple[int, dict[str, str]]:
    from tests.lab.cluster import raw

    status, _, answer = raw(lab.host(host).api_url + "/v1/keys", "POST", json.dumps(body).encode())
    return status, answer


def json_load(path: Path) -> dict[str, list[str]]:
    data: dict[str, list[str]] = json.loads(path.read_text())
    return data
