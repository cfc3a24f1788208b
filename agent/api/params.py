"""Query and path parameters: each one declared once, with the rule the server enforces and the schema
the OpenAPI document publishes — the same object does both, so the two cannot drift apart.

A handler reads a parameter with ``PARAM.get(request)``; a value that breaks the rule is a 400 naming
the parameter (:class:`~agent.errors.BadRequest`), never a 500 and never a silent default.
"""

from __future__ import annotations

import dataclasses
import re
import time

from aiohttp import web

from agent.errors import BadRequest
from agent.model.commands import EXEC_MAX_ARG, EXEC_MAX_ARGS
from agent.model.spec import DURATION_PATTERN, NAME_PATTERN, duration
from agent.node.history import MAX_POINTS, SINCE_PATTERN, SPAN, BadSince, window_start

MAX_INDEX = 2**63 - 1  # a Raft log index (and a kv modify index) fits a signed 64-bit integer
INT_PATTERN = r"^(0|[1-9][0-9]{0,18})$"
TRUE, FALSE = ("1", "true", "yes", ""), ("0", "false", "no")  # a flag given without a value is on


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    description: str
    where: str = "query"
    required: bool = False
    """A query parameter the route cannot do without (path parameters always are)."""

    def raw(self, request: web.Request) -> str | None:
        return request.match_info.get(self.name) if self.where == "path" else request.query.get(self.name)

    def schema(self) -> dict[str, object]:
        raise NotImplementedError

    def doc(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "in": self.where, "description": self.description,
                                  "schema": self.schema()}
        if self.where == "path" or self.required:
            out["required"] = True
        return out

    def bad(self, raw: str, problem: str) -> BadRequest:
        return BadRequest(f"{self.name}={raw[:100]!r} {problem}", field=self.name)

    def check(self, request: web.Request) -> None:
        """Parse the value (if given) and throw it away: a 400 now, before the handler does anything."""
        if self.raw(request) is not None:
            self.parse(request)

    def parse(self, request: web.Request) -> object:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class IntParam(Param):
    default: int = 0
    minimum: int = 0
    maximum: int = MAX_INDEX

    def schema(self) -> dict[str, object]:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum, "default": self.default}

    def get(self, request: web.Request) -> int:
        value = self.find(request)
        return self.default if value is None else value

    def parse(self, request: web.Request) -> object:
        return self.find(request)

    def find(self, request: web.Request) -> int | None:
        raw = self.raw(request)
        if raw is None:
            return None
        if not re.match(INT_PATTERN, raw) or not self.minimum <= int(raw) <= self.maximum:
            raise self.bad(raw, f"is not a whole number from {self.minimum} to {self.maximum}")
        return int(raw)


@dataclasses.dataclass(frozen=True)
class BoolParam(Param):
    def schema(self) -> dict[str, object]:
        return {"type": "string", "enum": [*TRUE, *FALSE],
                "description": "on: given without a value, 1, true or yes; off: 0, false or no"}

    def parse(self, request: web.Request) -> object:
        return self.get(request)

    def get(self, request: web.Request) -> bool:
        raw = self.raw(request)
        if raw is None:
            return False
        if raw.lower() in TRUE:
            return True
        if raw.lower() in FALSE:
            return False
        raise self.bad(raw, "is not 1, true, yes (or no value), 0, false or no")


@dataclasses.dataclass(frozen=True)
class DurationParam(Param):
    default: float = 30.0
    maximum: float = 300.0

    def schema(self) -> dict[str, object]:
        return {"type": "string", "pattern": DURATION_PATTERN,
                "description": f"a duration such as 30s, 500ms or 2m; at most {self.maximum:g} s is waited"}

    def parse(self, request: web.Request) -> object:
        return self.get(request)

    def get(self, request: web.Request) -> float:
        raw = self.raw(request)
        if raw is None:
            return self.default
        parsed = duration(raw)
        if parsed is None:
            raise self.bad(raw, "is not a duration such as 30s or 500ms")
        return min(parsed, self.maximum)


@dataclasses.dataclass(frozen=True)
class SinceParam(Param):
    """Where a history query starts: a duration back from now (``15m``, ``3600s``, ``900``) or a unix
    time (a number from 1e9 on), within the span the history keeps."""

    def schema(self) -> dict[str, object]:
        return {"type": "string", "minLength": 1, "maxLength": 40, "pattern": SINCE_PATTERN,
                "description": f"a duration back from now (15m, 3600s, 1h; a number of up to 9 digits is seconds) "
                               f"or a unix time in seconds (10 digits or more); at most {SPAN:g} s back, not in "
                               "the future"}

    def parse(self, request: web.Request) -> object:
        return self.find(request)

    def find(self, request: web.Request) -> float | None:
        """The unix time the window starts at (this node's clock), or None without ``since``."""
        raw = self.raw(request)
        if raw is None:
            return None
        if len(raw) > 40:
            raise self.bad(raw, "is longer than 40 characters")
        try:
            return window_start(raw, time.time())
        except BadSince as exc:
            raise self.bad(raw, str(exc)) from None


@dataclasses.dataclass(frozen=True)
class StrParam(Param):
    max_length: int = 256
    pattern: str | None = None

    def schema(self) -> dict[str, object]:
        out: dict[str, object] = {"type": "string", "minLength": 1, "maxLength": self.max_length}
        if self.pattern:
            out["pattern"] = self.pattern
        return out

    def find(self, request: web.Request) -> str | None:
        raw = self.raw(request)
        if raw is None:
            return None
        if not raw or len(raw) > self.max_length or (self.pattern and not re.search(self.pattern, raw)):
            raise self.bad(raw, f"must be 1-{self.max_length} characters" + (
                f" matching {self.pattern}" if self.pattern else ""))
        return raw

    def parse(self, request: web.Request) -> object:
        return self.find(request)

    def get(self, request: web.Request) -> str:
        value = self.find(request)
        if value is None:
            raise BadRequest(f"{self.name} is required", field=self.name)
        return value


@dataclasses.dataclass(frozen=True)
class EnumParam(Param):
    values: tuple[str, ...] = ()

    def schema(self) -> dict[str, object]:
        return {"type": "string", "enum": list(self.values)}

    def parse(self, request: web.Request) -> object:
        return self.find(request)

    def find(self, request: web.Request) -> str | None:
        raw = self.raw(request)
        if raw is not None and raw not in self.values:
            raise self.bad(raw, "must be one of " + ", ".join(self.values))
        return raw


@dataclasses.dataclass(frozen=True)
class ListParam(Param):
    """A query parameter given once per value (``?cmd=sh&cmd=-c``): the values in their order."""

    max_items: int = 256
    max_length: int = 4096

    def schema(self) -> dict[str, object]:
        return {"type": "array", "maxItems": self.max_items, "items": {"type": "string", "maxLength": self.max_length}}

    def doc(self) -> dict[str, object]:
        return {**super().doc(), "style": "form", "explode": True}

    def raw(self, request: web.Request) -> str | None:
        values = request.query.getall(self.name, [])
        return values[0] if values else None

    def parse(self, request: web.Request) -> object:
        return self.find(request)

    def find(self, request: web.Request) -> tuple[str, ...] | None:
        values = tuple(request.query.getall(self.name, []))
        if not values:
            return None
        if len(values) > self.max_items:
            raise BadRequest(f"{self.name} is given at most {self.max_items} times", field=self.name)
        for value in values:
            if len(value) > self.max_length:
                raise self.bad(value, f"is longer than {self.max_length} characters")
        return values


# ---------------------------------------------------------------------- the parameters the API takes

LIMIT = IntParam("limit", "page size", default=100, minimum=1, maximum=1000)
OFFSET = IntParam("offset", "items to skip", default=0, minimum=0, maximum=MAX_INDEX)
INDEX = IntParam("index", "only what changed after this Raft index (a blocking read with wait)")
CAS = IntParam("cas", "write only if the key's modify index is this (0: only if the key does not exist)")
WAIT = DurationParam("wait", "block up to this long for a change", default=30.0, maximum=300.0)
STREAM = BoolParam("stream", "stream newline-delimited JSON")
CONSISTENT = BoolParam("consistent", "linearizable read (ReadIndex through the leader)")
FOLLOW = BoolParam("follow", "keep streaming new lines")
VOLUMES = BoolParam("volumes", "remove the stack's volumes too, and their data (kept otherwise)")
DRY_RUN = BoolParam("dry_run", "check everything and say what would change, changing nothing")
NOW = BoolParam("now", "replace every container at once (no upgrade: not health-gated, not drained from load "
                "balancers); by default a change of what shapes the containers starts an upgrade with the "
                "service's update_config")
CONTENT = BoolParam("content", "with the files' content (base64; never a secret's)")
AUDIT = BoolParam("audit", "only what users' requests did (each with the user, key and client address)")
TAIL = IntParam("tail", "only the last N lines", default=0, minimum=0, maximum=100_000)
SINCE = SinceParam("since", "the history from then to now instead of the current figures (docs/HISTORY.md)")
POINTS = IntParam("points", "with since: at most this many samples (consecutive ones averaged; default: all)",
                  default=MAX_POINTS, minimum=1, maximum=MAX_POINTS)
STACK = StrParam("stack", "stack id or name")
SERVICE = StrParam("service", "service id or name")
HOST = StrParam("host", "host name")
ENVIRONMENT = StrParam("environment", "environment name")
IN_ENVIRONMENT = StrParam("environment", "the environment (default: default)", max_length=63,
                          pattern=NAME_PATTERN)
KIND = StrParam("kind", "event kind")
STATE = StrParam("state", "state")
USER = StrParam("user", "a user name", max_length=63)
CMD = ListParam("cmd", "the command and its arguments, one cmd= each, in order (none: sh)",
                max_items=EXEC_MAX_ARGS, max_length=EXEC_MAX_ARG)
TTY = BoolParam("tty", "a terminal in the container (output and errors merged, as a terminal does)")
INTERACTIVE = BoolParam("interactive", "attach the command's standard input")
DNS_NAME = StrParam("name", "a DNS name: SERVICE.STACK.ENVIRONMENT.corral.internal, a container's name under its "
                    "stack's domain, or Y.X.42.10.in-addr.arpa", max_length=255)
DNS_TYPE = EnumParam("type", "the record type asked for (default A)",
                     values=("A", "AAAA", "SRV", "PTR", "CNAME", "ANY"))
MEMBER_STATE = EnumParam("state", "member state", values=("alive", "suspect", "dead", "left"))

MAX_KEY = 512
ID = StrParam("id", "an id or a name", where="path", max_length=256)
NAME = StrParam("name", "a name", where="path", max_length=256)
SUBJECT = StrParam("subject", "user:NAME or team:NAME", where="path", max_length=68,
                   pattern=r"^(user|team):[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
KEY = StrParam("key", f"a key: 1-{MAX_KEY} characters, '/' allowed", where="path", max_length=MAX_KEY)

__all__ = [
    "AUDIT",
    "CAS",
    "CMD",
    "CONSISTENT",
    "DNS_NAME",
    "DNS_TYPE",
    "FOLLOW",
    "ID",
    "INDEX",
    "INTERACTIVE",
    "KEY",
    "LIMIT",
    "NAME",
    "NOW",
    "OFFSET",
    "POINTS",
    "SINCE",
    "STREAM",
    "SUBJECT",
    "TAIL",
    "TTY",
    "USER",
    "WAIT",
    "BoolParam",
    "DurationParam",
    "EnumParam",
    "IntParam",
    "ListParam",
    "Param",
    "SinceParam",
    "StrParam",
]
