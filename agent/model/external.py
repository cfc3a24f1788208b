"""An external service: a name in the cluster's DNS for something that runs outside it (pure).

Rancher 1.x's "external service": a stack's ``db`` may be a database the cluster does not run, at
fixed addresses (``external: {addresses: [192.0.2.10, 192.0.2.11]}``: ``db`` answers those A records)
or behind a name of its own (``external: {hostname: db.example.com}``: ``db`` answers a CNAME to it,
and the host's DNS server follows the CNAME upstream so stub resolvers get addresses in one answer).
Containers then use ``db`` whatever it is; moving the database into the cluster later is a change of
this one service, not of its clients. Nothing is placed or run: such a service has no instances (its
scale is 0), no health check, no ports.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping

from agent.model.errors import SpecError

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_RE = re.compile(rf"^(?=.{{1,254}}$){_LABEL}(\.{_LABEL})+\.?$")
"""At least two labels: a CNAME to a single label would be resolved by each client's own search list."""
MAX_ADDRESSES = 32
KEYS = ("addresses", "hostname")
OVERLAY = ipaddress.IPv4Network("10.42.0.0/16")


@dataclasses.dataclass(frozen=True)
class ExternalSpec:
    addresses: tuple[str, ...] = ()
    """IPv4 addresses the name answers (A records), in the order given."""
    hostname: str | None = None
    """Or a name it is an alias of (a CNAME), outside the cluster's zone."""

    def to_request(self) -> dict[str, object]:
        return {"addresses": list(self.addresses), "hostname": self.hostname}


def parse(raw: object, field: str = "external") -> ExternalSpec:
    """``{"addresses": [...]}`` or ``{"hostname": "..."}``; SpecError naming the field otherwise."""
    if not isinstance(raw, Mapping):
        raise SpecError(field, "is required for kind: external: {addresses: [IPv4, ...]} or {hostname: NAME}")
    unknown = sorted(str(k) for k in raw if k not in KEYS)
    if unknown:
        raise SpecError(f"{field}.{unknown[0]}", "is not a field of an external service (addresses, hostname)")
    addresses, hostname = raw.get("addresses") or [], raw.get("hostname")
    if not isinstance(addresses, list) or len(addresses) > MAX_ADDRESSES:
        raise SpecError(f"{field}.addresses", f"must be a list of at most {MAX_ADDRESSES} IPv4 addresses")
    if bool(addresses) == (hostname is not None):
        raise SpecError(field, "needs exactly one of addresses (A records) and hostname (a CNAME)")
    checked = []
    for i, text in enumerate(addresses):
        try:
            address = ipaddress.IPv4Address(text) if isinstance(text, str) else None
        except ValueError:
            address = None
        if address is None:
            raise SpecError(f"{field}.addresses[{i}]", f"{text!r} is not an IPv4 address")
        if address in OVERLAY:
            raise SpecError(f"{field}.addresses[{i}]", f"{address} is a container address of the overlay "
                            "(10.42.0.0/16), not outside the cluster: name the service instead")
        if address.is_unspecified or address.is_multicast:
            raise SpecError(f"{field}.addresses[{i}]", f"{address} cannot be a service's address")
        checked.append(str(address))
    if hostname is not None:
        if not isinstance(hostname, str) or not HOSTNAME_RE.match(hostname):
            raise SpecError(f"{field}.hostname", f"{hostname!r} is not a host name with a domain (db.example.com)")
        hostname = hostname.rstrip(".").lower()
        from agent.model.dns import zone_of  # the cluster's own zone: an alias of a cluster name is `aliases`
        if zone_of(hostname) is not None:
            raise SpecError(f"{field}.hostname", f"{hostname} is a name of the cluster: give the service an "
                            "alias (aliases) instead")
    return ExternalSpec(tuple(dict.fromkeys(checked)), hostname)


__all__ = ["ExternalSpec", "parse"]
