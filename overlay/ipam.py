"""Overlay address management: one /24 per host from 10.42.0.0/16, container addresses within it.

Pure values with methods that return new values, so the same code can run inside the Raft state
machine (apply a committed "lease"/"release" command, snapshot with ``to_dict``) and in tests.

Decisions:

* **10.42.0.0/24 is reserved**, never leased: host subnets are 10.42.1.0/24 … 10.42.255.0/24
  (255 hosts). It keeps 10.42.0.0 from looking like a host network and leaves a /24 for
  overlay-wide addresses later (service VIPs, DNS).
* **Stable**: a host that already holds a lease gets the same subnet back (an agent restarting
  re-applies its join and keeps its containers' addresses). A lease is freed only by ``release``
  (the host is removed from the cluster).
* **Freed last**: never-used subnets (and container addresses) are handed out first; freed ones
  only when no fresh one is left, oldest freed first. Stale routes, ARP entries and peers' caches
  that still point at an old owner then have the longest time to age out.
* In a host's /24: .0 network, .1 gateway (the bridge), .2–.254 containers, .255 broadcast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

OVERLAY_NETWORK = IPv4Network("10.42.0.0/16")
RESERVED_SUBNET = 0  # third octet of 10.42.0.0/24, never leased
FIRST_SUBNET = 1
LAST_SUBNET = 255
GATEWAY_HOST = 1
FIRST_CONTAINER_HOST = 2
LAST_CONTAINER_HOST = 254


class PoolExhausted(Exception):
    """No free subnet (more than 255 hosts) or no free container address (more than 253 containers)."""


def subnet_for(octet: int) -> IPv4Network:
    return IPv4Network((int(OVERLAY_NETWORK.network_address) + (octet << 8), 24))


def _take(next_fresh: int, last: int, freed: tuple[int, ...]) -> tuple[int, int, tuple[int, ...]]:
    """Pick a slot: a never-used one first, else the one freed longest ago."""
    if next_fresh <= last:
        return next_fresh, next_fresh + 1, freed
    if freed:
        return freed[0], next_fresh, freed[1:]
    raise PoolExhausted("no free slot")


@dataclass(frozen=True, slots=True)
class SubnetLeases:
    """Which host holds which /24. Treat as immutable: methods return a new value."""

    leases: Mapping[str, int] = field(default_factory=dict)  # host id → third octet
    next_fresh: int = FIRST_SUBNET
    freed: tuple[int, ...] = ()  # oldest first

    def subnet_of(self, host_id: str) -> IPv4Network | None:
        octet = self.leases.get(host_id)
        return None if octet is None else subnet_for(octet)

    def lease(self, host_id: str) -> tuple[SubnetLeases, IPv4Network]:
        """The host's subnet, leasing one if it has none. Deterministic in (state, host_id)."""
        octet = self.leases.get(host_id)
        if octet is not None:
            return self, subnet_for(octet)
        try:
            octet, next_fresh, freed = _take(self.next_fresh, LAST_SUBNET, self.freed)
        except PoolExhausted:
            raise PoolExhausted(f"all {LAST_SUBNET} host subnets of {OVERLAY_NETWORK} are leased") from None
        leases = {**self.leases, host_id: octet}
        return SubnetLeases(leases, next_fresh, freed), subnet_for(octet)

    def release(self, host_id: str) -> SubnetLeases:
        octet = self.leases.get(host_id)
        if octet is None:
            return self
        leases = {h: o for h, o in self.leases.items() if h != host_id}
        return SubnetLeases(leases, self.next_fresh, (*self.freed, octet))

    def owner_of(self, address: IPv4Address) -> str | None:
        """The host whose /24 holds ``address`` (the data path's routing question), or None."""
        if address not in OVERLAY_NETWORK:
            return None
        octet = (int(address) >> 8) & 0xFF
        for host, o in self.leases.items():
            if o == octet:
                return host
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"leases": dict(self.leases), "next_fresh": self.next_fresh, "freed": list(self.freed)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SubnetLeases:
        """Rebuild from a snapshot, refusing one that breaks the invariants."""
        leases = {str(h): int(o) for h, o in d["leases"].items()}
        value = cls(leases, int(d["next_fresh"]), tuple(int(o) for o in d["freed"]))
        value.check()
        return value

    def check(self) -> None:
        """Invariants: no subnet twice (leased or freed), never the reserved one, all below next_fresh."""
        used = [*self.leases.values(), *self.freed]
        if len(used) != len(set(used)):
            raise ValueError("a subnet is leased twice or both leased and free")
        if any(not FIRST_SUBNET <= o < self.next_fresh or o > LAST_SUBNET for o in used):
            raise ValueError("subnet octet out of range")
        if not FIRST_SUBNET <= self.next_fresh <= LAST_SUBNET + 1:
            raise ValueError("next_fresh out of range")


@dataclass(frozen=True, slots=True)
class AddressPool:
    """Container addresses inside one host's /24. Treat as immutable: methods return a new value."""

    subnet: IPv4Network
    allocations: Mapping[str, int] = field(default_factory=dict)  # container id → last octet
    next_fresh: int = FIRST_CONTAINER_HOST
    freed: tuple[int, ...] = ()  # oldest first

    def __post_init__(self) -> None:
        if self.subnet.prefixlen != 24 or not self.subnet.subnet_of(OVERLAY_NETWORK):
            raise ValueError(f"{self.subnet} is not a /24 of {OVERLAY_NETWORK}")

    @property
    def gateway(self) -> IPv4Address:
        return self.subnet.network_address + GATEWAY_HOST

    def address_of(self, container_id: str) -> IPv4Address | None:
        o = self.allocations.get(container_id)
        return None if o is None else self.subnet.network_address + o

    def allocate(self, container_id: str) -> tuple[AddressPool, IPv4Address]:
        """The container's address, allocating one if it has none (same container → same address)."""
        o = self.allocations.get(container_id)
        if o is not None:
            return self, self.subnet.network_address + o
        try:
            o, next_fresh, freed = _take(self.next_fresh, LAST_CONTAINER_HOST, self.freed)
        except PoolExhausted:
            raise PoolExhausted(f"no free container address in {self.subnet}") from None
        pool = AddressPool(self.subnet, {**self.allocations, container_id: o}, next_fresh, freed)
        return pool, self.subnet.network_address + o

    def release(self, container_id: str) -> AddressPool:
        o = self.allocations.get(container_id)
        if o is None:
            return self
        allocations = {c: x for c, x in self.allocations.items() if c != container_id}
        return AddressPool(self.subnet, allocations, self.next_fresh, (*self.freed, o))

    def to_dict(self) -> dict[str, Any]:
        return {"subnet": str(self.subnet), "allocations": dict(self.allocations), "next_fresh": self.next_fresh,
                "freed": list(self.freed)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AddressPool:
        return cls(IPv4Network(d["subnet"]), {str(c): int(o) for c, o in d["allocations"].items()},
                   int(d["next_fresh"]), tuple(int(o) for o in d["freed"]))
