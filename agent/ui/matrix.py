"""The overlay's peer matrix: what each host's ``/v1/overlay`` says of each other host (pure).

Row ``a``, column ``b`` is ``a``'s view of its tunnel to ``b``: its state (``up``, ``handshaking``,
``degraded``, ``down``, as the data path's probes judge it), the last round-trip time and the loss the
probes measured. A tunnel is two views; they can differ (a one-way loss is seen as ``degraded`` by
one side only), which is why the matrix shows both. A host that did not answer has its row marked
with the reason; a host whose overlay is off or starting, with that state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

STATES = ("up", "handshaking", "degraded", "down")


@dataclasses.dataclass(frozen=True)
class Cell:
    state: str
    """up / handshaking / degraded / down; ``absent`` when the row's host has no tunnel to the column's."""
    rtt_ms: float | None = None
    loss: float | None = None
    handshakes: int | None = None
    last_handshake_ago: float | None = None

    def title(self) -> str:
        parts = [self.state]
        if self.rtt_ms is not None:
            parts.append(f"RTT {self.rtt_ms:.3g} ms")
        if self.loss:
            parts.append(f"loss {self.loss:.0%}")
        if self.handshakes is not None:
            parts.append(f"{self.handshakes} handshakes")
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class Row:
    host: str
    overlay: str
    """The host's overlay: ``running`` (it answered with peers), ``off``, ``starting``, ``retrying``, or
    ``unreachable`` (its agent did not answer: ``error`` says why)."""
    cells: tuple[Cell | None, ...]
    """One per column, None on the diagonal."""
    error: str | None = None
    drops: int = 0


@dataclasses.dataclass(frozen=True)
class Matrix:
    hosts: tuple[str, ...]
    rows: tuple[Row, ...]

    def counts(self) -> dict[str, int]:
        """How many views are in each state (the diagonal left out)."""
        out = dict.fromkeys((*STATES, "absent", "unknown"), 0)
        for row in self.rows:
            for cell in row.cells:
                if cell is not None:
                    out[cell.state] = out.get(cell.state, 0) + 1
        return out


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def build(hosts: list[str], answers: Mapping[str, Mapping[str, Any] | str]) -> Matrix:
    """``answers``: host → its ``/v1/overlay`` document, or the reason it gave none."""
    order = tuple(sorted(hosts))
    rows = []
    for host in order:
        answer = answers.get(host, "not asked")
        if isinstance(answer, str):
            rows.append(Row(host, "unreachable", tuple(None if h == host else Cell("unknown") for h in order),
                            error=answer))
            continue
        peers = answer.get("peers")
        if not isinstance(peers, Mapping):
            state = str(answer.get("state") or "unknown")
            rows.append(Row(host, state, tuple(None if h == host else Cell("unknown") for h in order),
                            error=str(answer["error"]) if answer.get("error") else None))
            continue
        cells: list[Cell | None] = []
        for other in order:
            if other == host:
                cells.append(None)
                continue
            peer = peers.get(other)
            if not isinstance(peer, Mapping):
                cells.append(Cell("absent"))
                continue
            state = str(peer.get("state"))
            handshakes = peer.get("handshakes")
            cells.append(Cell(state if state in STATES else "unknown", _num(peer.get("rtt_ms")),
                              _num(peer.get("loss")), handshakes if isinstance(handshakes, int) else None,
                              _num(peer.get("last_handshake_ago"))))
        drops = answer.get("drops")
        total = sum(v for v in drops.values() if isinstance(v, int)) if isinstance(drops, Mapping) else 0
        rows.append(Row(host, "running", tuple(cells), drops=total))
    return Matrix(order, tuple(rows))


__all__ = ["STATES", "Cell", "Matrix", "Row", "build"]
