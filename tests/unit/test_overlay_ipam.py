"""Overlay IPAM: host /24 leases and container addresses, as pure values."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.ipam import AddressPool, PoolExhausted, SubnetLeases


def test_first_lease_skips_the_reserved_subnet() -> None:
    s, net = SubnetLeases().lease("h1")
    assert net == IPv4Network("10.42.1.0/24")
    s, net2 = s.lease("h2")
    assert net2 == IPv4Network("10.42.2.0/24")


def test_lease_is_stable_and_deterministic() -> None:
    s, n1 = SubnetLeases().lease("h1")
    s2, again = s.lease("h1")
    assert again == n1 and s2 is s
    t, m1 = SubnetLeases().lease("h1")
    assert t == s and m1 == n1
    restored = SubnetLeases.from_dict(s.to_dict())
    assert restored.lease("h1")[1] == n1


def test_freed_subnets_are_reused_last_oldest_first() -> None:
    s = SubnetLeases()
    for h in ("a", "b", "c"):
        s, _ = s.lease(h)
    s = s.release("b").release("a")
    s, nd = s.lease("d")
    assert nd == IPv4Network("10.42.4.0/24")  # fresh before freed
    assert s.subnet_of("a") is None
    for i in range(251):
        s, _ = s.lease(f"x{i}")
    s, ne = s.lease("e")
    s, nf = s.lease("f")
    assert (ne, nf) == (IPv4Network("10.42.2.0/24"), IPv4Network("10.42.1.0/24"))
    with pytest.raises(PoolExhausted):
        s.lease("g")
    s.check()


def test_owner_of() -> None:
    s, _ = SubnetLeases().lease("a")
    s, _ = s.lease("b")
    assert s.owner_of(IPv4Address("10.42.2.77")) == "b"
    assert s.owner_of(IPv4Address("10.42.9.1")) is None
    assert s.owner_of(IPv4Address("10.43.2.1")) is None


def test_snapshot_with_duplicates_is_refused() -> None:
    with pytest.raises(ValueError):
        SubnetLeases.from_dict({"leases": {"a": 1, "b": 1}, "next_fresh": 2, "freed": []})
    with pytest.raises(ValueError):
        SubnetLeases.from_dict({"leases": {"a": 0}, "next_fresh": 2, "freed": []})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=200))
def test_never_two_hosts_with_one_subnet(ops: list[tuple[bool, int]]) -> None:
    s = SubnetLeases()
    for add, h in ops:
        if add:
            before = s.subnet_of(f"h{h}")
            s, net = s.lease(f"h{h}")
            assert before is None or before == net
        else:
            s = s.release(f"h{h}")
        s.check()
        nets = [s.subnet_of(h) for h in s.leases]
        assert len(set(nets)) == len(nets)
        assert IPv4Network("10.42.0.0/24") not in nets


def test_container_addresses() -> None:
    p = AddressPool(IPv4Network("10.42.7.0/24"))
    assert p.gateway == IPv4Address("10.42.7.1")
    p, a = p.allocate("c1")
    p, b = p.allocate("c2")
    assert (a, b) == (IPv4Address("10.42.7.2"), IPv4Address("10.42.7.3"))
    assert p.allocate("c1")[1] == a
    p = p.release("c1")
    p, c = p.allocate("c3")
    assert c == IPv4Address("10.42.7.4")  # freed .2 is reused last
    for i in range(250):
        p, _ = p.allocate(f"y{i}")
    p, last = p.allocate("z")
    assert last == IPv4Address("10.42.7.2")
    assert IPv4Address("10.42.7.255") not in [p.address_of(k) for k in p.allocations]
    with pytest.raises(PoolExhausted):
        p.allocate("one too many")
    assert AddressPool.from_dict(p.to_dict()) == p


def test_pool_must_be_an_overlay_slash24() -> None:
    with pytest.raises(ValueError):
        AddressPool(IPv4Network("10.43.0.0/24"))
    with pytest.raises(ValueError):
        AddressPool(IPv4Network("10.42.0.0/23"))
