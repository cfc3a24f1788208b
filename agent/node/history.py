"""The built-in stats history: one ring buffer of samples per host and per container, and the pure maths
around it (a CPU % from two counter readings, the window a ``since`` names, downsampling a range).

Theory of operation. The sampler (``agent/node/sampler.py``, the I/O) reads cumulative counters every
interval: CPU time in nanoseconds, memory in use and its limit, network and block I/O bytes. Two
readings make a :class:`Sample` (the CPU % of the time between them; the other figures as read);
each sample goes into the :class:`Ring` of its host or container. A ring holds ``capacity`` samples
in one ``array`` per field (8 bytes per figure, no Python object per sample: 1 h at 10 s is 361 ×
64 bytes ≈ 23 KB per container), overwriting the oldest. A query names a window by ``since`` (a
duration back from now, or a unix time) and gets the samples inside it, downsampled to ``points`` if
asked: CPU averaged over each bucket, memory its peak, the byte counters their last reading (they
are cumulative, so the last one is exact).

Nothing here reads a clock or a file: time is an argument.
"""

from __future__ import annotations

import dataclasses
import math
import re
from array import array
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from agent.model.spec import DURATION_PATTERN, duration
from agent.node.stats import Stats

SPAN = 3600.0
"""Seconds of history kept (1 h): what ``since`` may reach back to."""
MIN_INTERVAL, MAX_INTERVAL = 1.0, 300.0
TIMESTAMP = r"\d{10,12}(?:\.\d{1,9})?"
"""A number of 10 digits or more is a unix time (2001-09-09 on); a shorter one is a duration in seconds."""
SINCE_PATTERN = rf"^\s*{TIMESTAMP}\s*$|{DURATION_PATTERN}"
"""What ``since`` may look like (the OpenAPI document's pattern; :func:`window_start` also bounds it)."""
_TIMESTAMP_RE = re.compile(rf"^\s*{TIMESTAMP}\s*$")
MAX_POINTS = 10_000


class Sample(NamedTuple):
    """One sample: at ``t`` (unix seconds), the CPU % over the interval before it (of one CPU, so 200 is
    two busy CPUs, as ``docker stats`` counts), memory then, and the cumulative byte counters."""

    t: float
    stats: Stats

    def to_json(self) -> dict[str, object]:
        """The shape of ``GET …/stats`` (one sample) with ``t``."""
        return {"t": round(self.t, 3), **dataclasses.replace(self.stats, cpu_percent=round(self.stats.cpu_percent, 2))
                .to_json()}


@dataclasses.dataclass(frozen=True)
class Reading:
    """Counters as read at ``t``: ``cpu_ns`` is the CPU time used since some start (it only grows);
    ``figures`` the rest as read (their ``cpu_percent`` is 0: a CPU % needs the reading before)."""

    t: float
    cpu_ns: int
    figures: Stats


def rate(before: float, after: float, seconds: float) -> float:
    """Per-second rate of a cumulative counter; 0 when no time passed or the counter went back (a
    restart reset it: what came before is unknown, so nothing is made up)."""
    if seconds <= 0 or after < before:
        return 0.0
    return (after - before) / seconds


def cpu_percent(before: Reading, after: Reading) -> float:
    """CPU % between two readings: CPU nanoseconds used per wall nanosecond, × 100."""
    return rate(before.cpu_ns, after.cpu_ns, after.t - before.t) / 1e9 * 100


def sample(before: Reading, after: Reading) -> Sample:
    """The sample two consecutive readings make (at the time of the second)."""
    return Sample(after.t, dataclasses.replace(after.figures, cpu_percent=cpu_percent(before, after)))


def capacity(interval: float, span: float = SPAN) -> int:
    """Samples a ring needs to cover ``span`` at one per ``interval`` (both ends included)."""
    return math.ceil(span / interval) + 1


# typecodes: t and CPU % as doubles, the rest as unsigned 64-bit integers
_CODES = ("d", "d", "Q", "Q", "Q", "Q", "Q", "Q")
_MAX_COUNTER = 2**64 - 1


class Ring:
    """The last ``capacity`` samples, oldest overwritten, one preallocated ``array`` per field."""

    __slots__ = ("_columns", "_next", "_size", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a ring holds at least one sample")
        self.capacity = capacity
        self._columns: tuple[array[Any], ...] = tuple(array(code, bytes(8 * capacity)) for code in _CODES)
        self._next = 0  # where the next sample goes
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, s: Sample) -> None:
        """Add the newest sample (samples come in time order: one older than the newest is refused)."""
        newest = self.newest()
        if newest is not None and s.t < newest.t:
            raise ValueError(f"sample at {s.t} is older than the newest one ({newest.t})")
        i, f = self._next, s.stats
        self._columns[0][i], self._columns[1][i] = s.t, f.cpu_percent
        counters = (f.memory_usage, f.memory_limit, f.rx_bytes, f.tx_bytes, f.read_bytes, f.write_bytes)
        for column, value in zip(self._columns[2:], counters, strict=True):
            column[i] = min(max(value, 0), _MAX_COUNTER)
        self._next = (i + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def _at(self, k: int) -> Sample:
        """The k-th oldest sample held."""
        i = (self._next - self._size + k) % self.capacity
        c = self._columns
        return Sample(c[0][i], Stats(c[1][i], c[2][i], c[3][i], c[4][i], c[5][i], c[6][i], c[7][i]))

    def newest(self) -> Sample | None:
        return self._at(self._size - 1) if self._size else None

    def since(self, start: float) -> list[Sample]:
        """The samples at ``start`` or later, oldest first (a binary search: the ring is in time order)."""
        lo, hi = 0, self._size
        times, base = self._columns[0], self._next - self._size
        while lo < hi:
            mid = (lo + hi) // 2
            if times[(base + mid) % self.capacity] < start:
                lo = mid + 1
            else:
                hi = mid
        return [self._at(k) for k in range(lo, self._size)]

    def __iter__(self) -> Iterator[Sample]:
        return (self._at(k) for k in range(self._size))

    def nbytes(self) -> int:
        """Bytes of the arrays' buffers (what a ring costs, beyond a few small objects)."""
        return sum(c.itemsize * len(c) for c in self._columns)


class History:
    """The rings of one host: its own and each of its containers', fed with readings.

    A container's first reading only primes its CPU counter; a container not read in a pass (stopped,
    removed) forgets its last reading, and its ring is dropped once its newest sample is older than
    ``span``: a crashed container's last hour stays visible, a churning host's rings stay bounded.
    """

    HOST = ""
    """The key of the host's own ring."""

    def __init__(self, interval: float, span: float = SPAN) -> None:
        if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
            raise ValueError(f"the sampling interval must be {MIN_INTERVAL:g}-{MAX_INTERVAL:g} s")
        self.interval, self.span, self.capacity = interval, span, capacity(interval, span)
        self.rings: dict[str, Ring] = {}
        self._last: dict[str, Reading] = {}

    def record(self, readings: dict[str, Reading], now: float) -> None:
        """One pass: every key read now (the host's under :attr:`HOST`); the others are forgotten."""
        for key, reading in readings.items():
            before = self._last.get(key)
            if before is not None and reading.t > before.t:
                ring = self.rings.get(key)
                if ring is None:
                    ring = self.rings[key] = Ring(self.capacity)
                ring.append(sample(before, reading))
        self._last = dict(readings)
        for key in [k for k, r in self.rings.items() if k not in readings
                    and (newest := r.newest()) is not None and newest.t < now - self.span]:
            del self.rings[key]

    def query(self, key: str, start: float, points: int | None = None) -> list[Sample]:
        """The samples of ``key`` from ``start`` on (none for a key with no history)."""
        ring = self.rings.get(key)
        found = ring.since(start) if ring is not None else []
        return found if points is None else downsample(found, points)

    def answer(self, key: str, start: float, points: int | None = None) -> dict[str, object]:
        """The JSON of ``GET …/stats?since=``."""
        interval = int(self.interval) if float(self.interval).is_integer() else self.interval
        return {"interval_seconds": interval,
                "samples": [s.to_json() for s in self.query(key, start, points)]}

    def nbytes(self) -> int:
        return sum(r.nbytes() for r in self.rings.values())


class BadSince(ValueError):
    """A ``since`` that is not a duration or a unix time, or names a window the history does not hold."""


def window_start(since: str, now: float, span: float = SPAN) -> float:
    """The unix time a ``since`` names: ``15m``, ``3600s``, ``1h30m``, ``900`` (seconds back from
    ``now``) or ``1764770000`` (a unix time: a number of 10 digits or more). Refused (:class:`BadSince`):
    anything else, a window longer than ``span``, a time in the future."""
    if _TIMESTAMP_RE.match(since):
        start = float(since)
        if start > now:
            raise BadSince(f"is {start - now:.0f} s in the future (the history ends now)")
        if now - start > span:
            raise BadSince(f"is {now - start:.0f} s ago: the history holds the last {span:g} s")
        return start
    seconds = duration(since)
    if seconds is None:
        raise BadSince("is neither a duration (15m, 3600s, 1h) nor a unix time")
    if seconds > span:
        raise BadSince(f"asks for {seconds:g} s: the history holds the last {span:g} s")
    return now - seconds


def downsample(samples: Sequence[Sample], points: int) -> list[Sample]:
    """At most ``points`` samples: consecutive ones grouped (equal groups, the last maybe smaller), each
    group one sample at its last time with the mean CPU %, the peak memory (and its limit then), and the
    counters' last reading."""
    if points < 1:
        raise ValueError("points must be at least 1")
    if len(samples) <= points:
        return list(samples)
    size = math.ceil(len(samples) / points)
    out = []
    for start in range(0, len(samples), size):
        group = samples[start:start + size]
        peak = max((s.stats for s in group), key=lambda f: f.memory_usage)
        cpu = sum(s.stats.cpu_percent for s in group) / len(group)
        out.append(Sample(group[-1].t, dataclasses.replace(group[-1].stats, cpu_percent=cpu,
                                                           memory_usage=peak.memory_usage,
                                                           memory_limit=peak.memory_limit)))
    return out


__all__ = ["MAX_INTERVAL", "MAX_POINTS", "MIN_INTERVAL", "SINCE_PATTERN", "SPAN", "BadSince", "History", "Reading",
           "Ring", "Sample", "capacity", "cpu_percent", "downsample", "rate", "sample", "window_start"]
