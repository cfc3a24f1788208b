"""A Wing–Gong / Lowe linearizability checker for histories of key-value operations.

Each operation has an invocation time and either a completion time with its observed result, or no
completion (it timed out: it may or may not have taken effect). The checker searches for a total
order that respects real time (an op that completed before another was invoked comes first) and
that a single register per key would produce, after Wing & Gong's algorithm with Lowe's
memoisation ("Testing for linearizability", 2016): a doubly linked list of call/return events, a
stack for backtracking, and a cache of (set of linearized ops, state) already explored.

Operations on different keys commute, so a history is linearizable iff every per-key
sub-history is (the locality of linearizability, Herlihy & Wing 1990); each key is checked alone.
An indeterminate write is given a return at +inf with an unknown result: linearizing it last is the
same as it never having happened, so requiring every op to be placed loses nothing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

OpKind = Literal["put", "get", "delete", "cas"]
Value = str | None


@dataclass(frozen=True, slots=True)
class Op:
    """``result``: get -> the value read (None if absent); cas -> bool; put/delete -> None.
    ``complete`` None means the outcome is unknown (timed out, crashed)."""

    client: int
    kind: OpKind
    key: str
    invoke: float
    complete: float | None
    value: Value = None
    expected: Value = None
    result: object = None


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    key: str | None = None
    reason: str = ""
    unknown: bool = False  # search budget exhausted


def _apply(state: Value, op: Op) -> tuple[bool, Value]:
    """Run ``op`` on a single register; False if the observed result is impossible here."""
    known = op.complete is not None
    if op.kind == "put":
        return True, op.value
    if op.kind == "delete":
        return True, None
    if op.kind == "get":
        return (not known or op.result == state), state
    success = state == op.expected
    new = op.value if success else state
    return (not known or op.result == success), new


class _Node:
    __slots__ = ("is_call", "match", "next", "op", "prev")

    def __init__(self, op: int, is_call: bool) -> None:
        self.op = op
        self.is_call = is_call
        self.match: _Node | None = None
        self.prev: _Node | None = None
        self.next: _Node | None = None


def _lift(e: _Node) -> None:
    for n in (e, e.match):
        assert n is not None and n.prev is not None
        n.prev.next = n.next
        if n.next is not None:
            n.next.prev = n.prev


def _unlift(e: _Node) -> None:
    for n in (e.match, e):
        assert n is not None and n.prev is not None
        n.prev.next = n
        if n.next is not None:
            n.next.prev = n


def check_register(ops: list[Op], initial: Value = None, max_steps: int = 2_000_000) -> CheckResult:
    """Check one key's history. Indeterminate gets are ignored (they observed nothing)."""
    ops = [op for op in ops if not (op.kind == "get" and op.complete is None)]
    if not ops:
        return CheckResult(True)
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.invoke, 0, i))
        events.append((op.complete if op.complete is not None else math.inf, 1, i))
    events.sort()  # at equal times calls come first: touching intervals count as concurrent
    head = _Node(-1, False)
    calls: dict[int, _Node] = {}
    prev = head
    for _, kind, i in events:
        node = _Node(i, kind == 0)
        if kind == 0:
            calls[i] = node
        else:
            node.match = calls[i]
            calls[i].match = node
        node.prev = prev
        prev.next = node
        prev = node
    state = initial
    linearized = 0
    stack: list[tuple[_Node, Value]] = []
    cache: set[tuple[int, Value]] = set()
    entry = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if steps > max_steps:
            return CheckResult(False, ops[0].key, "search budget exhausted", unknown=True)
        assert entry is not None
        if entry.is_call:
            ok, new_state = _apply(state, ops[entry.op])
            if ok:
                new_lin = linearized | (1 << entry.op)
                if (new_lin, new_state) not in cache:
                    cache.add((new_lin, new_state))
                    stack.append((entry, state))
                    linearized, state = new_lin, new_state
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:
                op = ops[entry.op]
                return CheckResult(False, op.key, f"no linearization: {op.kind} by client {op.client} "
                                                  f"invoked at {op.invoke} returning {op.result!r} fits nowhere")
            entry, state = stack.pop()
            linearized &= ~(1 << entry.op)
            _unlift(entry)
            entry = entry.next
    return CheckResult(True)


def check_history(ops: list[Op], max_steps: int = 2_000_000) -> CheckResult:
    """Linearizability of a kv history: every key checked on its own, starting absent."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    for key in sorted(by_key):
        res = check_register(by_key[key], None, max_steps)
        if not res.ok:
            return res
    return CheckResult(True)
