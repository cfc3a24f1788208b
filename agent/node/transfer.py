"""Who sends an image's tarball to whom (pure: no clock, no I/O; table-tested).

A host that needs a catalog image asks a holder for the tarball. A host serves at most ``SLOTS``
transfers of one tarball at a time; a further asker is not served but redirected to the hosts it is
serving now, which are fetching the same bytes and pass them on as they arrive (a relay serves from
its spool file while it is still filling). So the first holder feeds ``SLOTS`` hosts, each of them
``SLOTS`` more, and so on: a tree whose depth grows with the log of the number of hosts, not N full
copies from one source, and every host keeps loading while its bytes stream through.

A relay serves an asker only if it has more of the tarball than the asker has already (its offset):
two hosts that lost their source cannot end up waiting on each other.

A transfer that breaks (the sender stopped) resumes from another source at the offset it reached:
every holder keeps the very same bytes, so any of them can go on from there.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Collection, Mapping, Sequence

SLOTS = 2
"""Transfers of one tarball a host serves at once."""


@dataclasses.dataclass(frozen=True)
class Admission:
    serve: bool
    redirect: tuple[str, ...] = ()
    """When not served: the hosts to ask instead (those this host is sending the same tarball to)."""
    reason: str = ""


def admit(asker: str, offset: int, complete: bool, have: int, serving: Mapping[str, int],
          slots: int = SLOTS) -> Admission:
    """Does this host send its tarball to ``asker`` (which has ``offset`` bytes already)?

    ``complete``: this host holds the whole tarball; else it is fetching it and has ``have`` bytes.
    ``serving``: the hosts it sends this tarball to now → the offset each has reached.
    """
    if not complete and have <= offset:
        return Admission(False, (), f"this host has {have} bytes of it, the asker {offset}: nothing to relay")
    others = {h: o for h, o in serving.items() if h != asker}
    if len(others) < slots:
        return Admission(True)
    # the furthest along first: they have the most to pass on
    relays = tuple(h for h, _ in sorted(others.items(), key=lambda item: (-item[1], item[0])))
    return Admission(False, relays, f"this host sends it to {len(others)} hosts already")


def next_source(holders: Sequence[str], hints: Sequence[str], me: str, failed: Collection[str],
                rng: random.Random) -> str | None:
    """Whom to ask next: a host a full sender pointed to (in its order), else a holder at random; never
    this host, never one that already failed this transfer. None when nobody is left to ask."""
    for host in hints:
        if host != me and host not in failed:
            return host
    left = [h for h in holders if h != me and h not in failed]
    return rng.choice(sorted(left)) if left else None


def parse_range(header: str | None, size: int) -> int | None:
    """The offset of ``Range: bytes=N-`` (the only form a resuming host sends); 0 with no header;
    None if the header is another form or past the end (answered 416)."""
    if header is None:
        return 0
    unit, _, spec = header.strip().partition("=")
    start, dash, end = spec.partition("-")
    if unit.strip() != "bytes" or not dash or end.strip() or not start.strip().isdigit():
        return None
    offset = int(start)
    return offset if offset < size or size == 0 == offset else None


__all__ = ["SLOTS", "Admission", "admit", "next_source", "parse_range"]
