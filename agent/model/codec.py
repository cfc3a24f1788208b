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
from collections.abc import Callable, Mapping
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
    encode = _ENCODERS.get(type(value))
    if encode is not None:
        return encode(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _dataclass_encoder(type(value))(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_wire(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_wire(v) for k, v in value.items()}
    return value


# Encoders made once per dataclass from its field types (a snapshot encodes every record: the
# generic walk above, asking each value what it is, cost a quarter of a busy follower's CPU).
Encoder = Callable[[object], Wire]
_ENCODERS: dict[type, Encoder] = {}
_SCALARS = (str, int, float, bool, bytes, type(None), object)


def _dataclass_encoder(cls: type) -> Encoder:
    encoder = _ENCODERS.get(cls)
    if encoder is not None:
        return encoder
    hints = _hints(cls)
    plan = [(f.name, _encoder_for(hints[f.name])) for f in _fields(cls)]
    plain = tuple(name for name, enc in plan if enc is None)
    converted = tuple((name, enc) for name, enc in plan if enc is not None)

    def encode(value: object) -> Wire:
        out = {name: getattr(value, name) for name in plain}
        for name, enc in converted:
            out[name] = enc(getattr(value, name))
        return out

    _ENCODERS[cls] = encode
    return encode


def _encoder_for(tp: object) -> Encoder | None:
    """How to encode a value of type ``tp``; None when it is its own wire form (a scalar)."""
    if tp in _SCALARS:
        return None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass_encoder(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [_encoder_for(a) for a in args if a is not type(None)]
        if all(e is None for e in inner):
            return None
        return _optional(inner[0]) if len(inner) == 1 and inner[0] is not None else to_wire
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _sequence(_encoder_for(args[0]))
        return to_wire
    if origin in (Mapping, dict):
        return _mapping(_encoder_for(args[1]))
    return to_wire


def _optional(encode: Encoder) -> Encoder:
    return lambda value: None if value is None else encode(value)


def _sequence(item: Encoder | None) -> Encoder:
    def encode(value: object) -> Wire:
        assert isinstance(value, tuple | list)
        return list(value) if item is None else [item(v) for v in value]

    return encode


def _mapping(item: Encoder | None) -> Encoder:
    def encode(value: object) -> Wire:
        assert isinstance(value, Mapping)
        return dict(value) if item is None else {k: item(v) for k, v in value.items()}

    return encode


def _enum_value(value: object) -> Wire:
    return value.value if isinstance(value, enum.Enum) else value


def from_wire(cls: type[T], data: object, path: str = "") -> T:
    """Build ``cls`` (a dataclass) from its wire form; WireError naming the first wrong field."""
    return cast(T, _decoder(cls)(data, path))


@functools.cache
def _fields(cls: type) -> tuple[dataclasses.Field[object], ...]:
    return tuple(dataclasses.fields(cls))


@functools.cache
def _hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


# Decoders made once per type (every applied command is decoded on every node).
Decoder = Callable[[object, str], object]
_DECODERS: dict[object, Decoder] = {}


def _decoder(tp: object) -> Decoder:
    decoder = _DECODERS.get(tp)
    if decoder is None:
        decoder = _DECODERS[tp] = _make_decoder(tp)
    return decoder


def _make_decoder(tp: object) -> Decoder:
    if tp is object:
        return lambda data, path: data
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass_decoder(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_decoder(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return _union_decoder(args)
    if origin is tuple:
        return _tuple_decoder(args)
    if origin in (Mapping, dict):
        return _mapping_decoder(args[0], args[1])
    return _scalar_decoder(tp)


def _dataclass_decoder(cls: type) -> Decoder:
    fields = _fields(cls)
    names = frozenset(f.name for f in fields)
    required = tuple(f.name for f in fields
                     if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    hints = _hints(cls)

    def decode(data: object, path: str) -> object:
        if not isinstance(data, dict):
            raise WireError(path, f"must be a map ({cls.__name__})")
        if not names.issuperset(data):
            unknown = sorted(str(k) for k in data if k not in names)
            raise WireError(_join(path, unknown[0]), f"is not a field of {cls.__name__}")
        for name in required:
            if name not in data:
                raise WireError(_join(path, name), "is required")
        return cls(**{k: _decoder(hints[k])(v, _join(path, k)) for k, v in data.items()})

    return decode


def _enum_decoder(cls: type[enum.Enum]) -> Decoder:
    members = {m.value: m for m in cls}
    allowed = ", ".join(str(m.value) for m in cls)

    def decode(data: object, path: str) -> object:
        try:
            return members[data]
        except (KeyError, TypeError):  # TypeError: a list or a map is no member's value
            raise WireError(path, f"must be one of {allowed}") from None

    return decode


def _union_decoder(args: tuple[object, ...]) -> Decoder:
    nullable = type(None) in args
    options = [a for a in args if a is not type(None)]

    def decode(data: object, path: str) -> object:
        if data is None and nullable:
            return None
        problems = []
        for option in options:
            try:
                return _decoder(option)(data, path)
            except WireError as exc:
                problems.append(exc.problem)
        raise WireError(path, " or ".join(dict.fromkeys(problems)) or "must not be null")

    return decode


def _tuple_decoder(args: tuple[object, ...]) -> Decoder:
    if len(args) == 2 and args[1] is Ellipsis:
        item = args[0]

        def decode_all(data: object, path: str) -> object:
            if not isinstance(data, list | tuple):
                raise WireError(path, "must be a list")
            each = _decoder(item)
            return tuple(each(v, f"{path}[{i}]") for i, v in enumerate(data))

        return decode_all

    def decode_fixed(data: object, path: str) -> object:
        if not isinstance(data, list | tuple):
            raise WireError(path, "must be a list")
        if len(data) != len(args):
            raise WireError(path, f"must be a list of {len(args)}")
        return tuple(_decoder(t)(v, f"{path}[{i}]") for i, (t, v) in enumerate(zip(args, data, strict=True)))

    return decode_fixed


def _mapping_decoder(key_type: object, value_type: object) -> Decoder:
    def decode(data: object, path: str) -> object:
        if not isinstance(data, dict):
            raise WireError(path, "must be a map")
        keys, values = _decoder(key_type), _decoder(value_type)
        return {keys(k, f"{path}.<key>"): values(v, f"{path}.{k}") for k, v in data.items()}

    return decode


def _scalar_decoder(tp: object) -> Decoder:
    def expect(ok: Callable[[object], bool], problem: str, convert: Callable[[object], object] | None = None
               ) -> Decoder:
        def decode(data: object, path: str) -> object:
            if not ok(data):
                raise WireError(path, problem)
            return convert(data) if convert is not None else data

        return decode

    if tp is bool:
        return expect(lambda d: isinstance(d, bool), "must be true or false")
    if tp is int:
        return expect(lambda d: isinstance(d, int) and not isinstance(d, bool) and INT64_MIN <= d <= UINT64_MAX,
                      "must be a whole number")
    if tp is float:
        return expect(lambda d: isinstance(d, int | float) and not isinstance(d, bool), "must be a number",
                      lambda d: float(d))  # type: ignore[arg-type]
    if tp is str:
        return expect(lambda d: isinstance(d, str), "must be a string")
    if tp is bytes:
        return expect(lambda d: isinstance(d, bytes), "must be bytes")
    if tp is type(None):
        return expect(lambda d: d is None, "must be null")
    raise TypeError(f"the wire codec does not know the type {tp!r}")  # a programming error, not bad data


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


__all__ = ["Wire", "WireError", "from_wire", "to_wire"]
