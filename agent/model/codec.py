"""Frozen dataclasses to and from their wire form (msgpack-able maps, lists and scalars), by type hints.

One codec for everything the model stores or sends: commands in the Raft log, entities in snapshots,
results over the internal propose endpoint. :func:`to_wire` turns a dataclass into plain maps (tuples
become lists, enums their values), :func:`from_wire` checks a plain value against a class's field
types and builds it, raising :class:`WireError` with the path of the first field that is wrong — so a
corrupt or hand-made entry is refused with a reason and never half-applied.

Supported field types: ``str``, ``int``, ``float`` (an int is accepted), ``bool``, ``bytes``, ``None``
and unions of them, ``enum`` classes, nested dataclasses, ``tuple[X, ...]``, fixed ``tuple[X, Y]``,
``Mapping[str, X]`` and ``object`` (any wire value, kept as it is). A missing field takes its default;
a field without a default is required; a field the class does not have is refused.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from typing import TypeVar, cast

T = TypeVar("T")
Wire = object  # a msgpack-able value: None, bool, int, float, str, bytes, list, dict

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1  # what msgpack can carry


class WireError(ValueError):
    """A wire value does not fit the type it should be; ``path`` says where (``spec.ports[0]``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


def to_wire(value: object) -> Wire:
    """A dataclass (or anything inside one) as plain maps, lists and scalars."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_wire(getattr(value, f.name)) for f in _fields(type(value))}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_wire(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_wire(v) for k, v in value.items()}
    return value


def from_wire(cls: type[T], data: object, path: str = "") -> T:
    """Build ``cls`` (a dataclass) from its wire form; WireError naming the first wrong field."""
    return cast(T, _decode(cls, data, path))


@functools.cache
def _fields(cls: type) -> tuple[dataclasses.Field[object], ...]:
    return tuple(dataclasses.fields(cls))


@functools.cache
def _hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _decode(tp: object, data: object, path: str) -> object:
    if tp is object:
        return data
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, data, path)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(data)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in tp)
            raise WireError(path, f"must be one of {allowed}") from None
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return _decode_union(typing.get_args(tp), data, path)
    if origin is tuple:
        return _decode_tuple(typing.get_args(tp), data, path)
    if origin in (Mapping, dict):
        key_type, value_type = typing.get_args(tp)
        if not isinstance(data, dict):
            raise WireError(path, "must be a map")
        out = {}
        for k, v in data.items():
            out[_decode(key_type, k, f"{path}.<key>")] = _decode(value_type, v, f"{path}.{k}")
        return out
    return _decode_scalar(tp, data, path)


def _decode_dataclass(cls: type, data: object, path: str) -> object:
    if not isinstance(data, dict):
        raise WireError(path, f"must be a map ({cls.__name__})")
    fields = _fields(cls)
    names = {f.name for f in fields}
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise WireError(_join(path, unknown[0]), f"is not a field of {cls.__name__}")
    hints = _hints(cls)
    kwargs = {}
    for f in fields:
        if f.name in data:
            kwargs[f.name] = _decode(hints[f.name], data[f.name], _join(path, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise WireError(_join(path, f.name), "is required")
    return cls(**kwargs)


def _decode_union(options: tuple[object, ...], data: object, path: str) -> object:
    if data is None and type(None) in options:
        return None
    problems = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _decode(option, data, path)
        except WireError as exc:
            problems.append(exc.problem)
    raise WireError(path, " or ".join(dict.fromkeys(problems)) or "must not be null")


def _decode_tuple(args: tuple[object, ...], data: object, path: str) -> tuple[object, ...]:
    if not isinstance(data, list | tuple):
        raise WireError(path, "must be a list")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_decode(args[0], v, f"{path}[{i}]") for i, v in enumerate(data))
    if len(data) != len(args):
        raise WireError(path, f"must be a list of {len(args)}")
    return tuple(_decode(t, v, f"{path}[{i}]") for i, (t, v) in enumerate(zip(args, data, strict=True)))


def _decode_scalar(tp: object, data: object, path: str) -> object:
    if tp is bool:
        if isinstance(data, bool):
            return data
        raise WireError(path, "must be true or false")
    if tp is int:
        if isinstance(data, int) and not isinstance(data, bool) and INT64_MIN <= data <= UINT64_MAX:
            return data
        raise WireError(path, "must be a whole number")
    if tp is float:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return float(data)
        raise WireError(path, "must be a number")
    if tp is str:
        if isinstance(data, str):
            return data
        raise WireError(path, "must be a string")
    if tp is bytes:
        if isinstance(data, bytes):
            return data
        raise WireError(path, "must be bytes")
    if tp is type(None):
        if data is None:
            return None
        raise WireError(path, "must be null")
    raise TypeError(f"the wire codec does not know the type {tp!r}")  # a programming error, not bad data


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


__all__ = ["Wire", "WireError", "from_wire", "to_wire"]
