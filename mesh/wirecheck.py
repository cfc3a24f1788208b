"""Checks for values msgpack decoded from bytes a peer sent: the one validator of both wire formats.

``msgpack.unpackb`` turns any bytes into *some* nest of lists, maps, ints, strings and bytes; a decoder
then has to prove each field is what its format says before building a message from it. Every
decoder in ``mesh`` (Raft's frames in ``mesh/raft/messages.py``, SWIM's packets and push-pull streams
in ``mesh/gossip/wire.py``) does so with these functions: each returns the value, typed, or raises
:class:`Malformed` saying what was wrong. The decoders catch it at their edge and turn it into their
own never-raising result (Raft's ``DecodeFailure`` with the reason, gossip's counted ``Drop``).

The checks test exact types (``type(v) is int``, not ``isinstance``): msgpack never produces a
subclass, and a ``bool`` must not pass as an ``int``.
"""

from __future__ import annotations

from typing import Any

U64_MAX = 0xFFFF_FFFF_FFFF_FFFF


class Malformed(Exception):
    """A decoded value is not what the wire format says; ``str()`` tells what was expected."""


def uint(v: Any, limit: int = U64_MAX) -> int:
    """A non-negative int no larger than ``limit`` (a u64 unless told)."""
    if type(v) is not int or not 0 <= v <= limit:
        raise Malformed(f"expected an int in 0..{limit}, got {_kind(v)}")
    return v


def flag(v: Any) -> bool:
    if type(v) is not bool:
        raise Malformed(f"expected a bool, got {_kind(v)}")
    return v


def blob(v: Any) -> bytes:
    if type(v) is not bytes:
        raise Malformed(f"expected bytes, got {_kind(v)}")
    return v


def text(v: Any, max_len: int = 256) -> str:
    """A non-empty string of at most ``max_len`` characters (names, node ids, addresses)."""
    if type(v) is not str or not 0 < len(v) <= max_len:
        raise Malformed(f"expected a string of 1..{max_len} characters, got {_kind(v)}")
    return v


def items(v: Any, n: int | None = None) -> list[Any]:
    """A list (an array on the wire), of exactly ``n`` items when given."""
    if type(v) is not list:
        raise Malformed(f"expected a list, got {_kind(v)}")
    if n is not None and len(v) != n:
        raise Malformed(f"expected a list of {n}, got {len(v)} items")
    return v


def string_map(v: Any) -> dict[str, Any]:
    """A map whose keys are all strings (its values are the caller's to check)."""
    if type(v) is not dict or any(type(k) is not str for k in v):
        raise Malformed(f"expected a map with string keys, got {_kind(v)}")
    return v


def _kind(v: Any) -> str:
    if type(v) is int:
        return f"int {v}" if -(10**6) < v < 10**6 else "a large int"
    if type(v) in (str, bytes, list, dict):
        return f"{type(v).__name__} of {len(v)}"
    return type(v).__name__


__all__ = ["U64_MAX", "Malformed", "blob", "flag", "items", "string_map", "text", "uint"]
