"""What a node keeps to check passwords and logins (nothing of it is replicated): Argon2id hashing off
the event loop with bounded concurrency, the failed-login limiter, and the counters of what was refused.

Passwords are hashed with Argon2id (argon2-cffi) at OWASP's recommended floor (19 MiB, 2 passes, one
lane), at most :data:`HASH_CONCURRENCY` at once, with a bounded queue behind them, so a burst of
logins costs at most ``HASH_CONCURRENCY × 19 MiB`` and then a 503, never the host's memory.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import re
import secrets
import time
from collections.abc import Callable

import argon2

from agent.errors import BadRequest, TooManyRequests, Unavailable

MIN_PASSWORD, MAX_PASSWORD = 8, 256
"""Characters: a longer password only costs the hasher; 256 leaves room for any passphrase."""
SESSION_TTL = 12 * 3600.0
ARGON2 = {"time_cost": 2, "memory_cost": 19 * 1024, "parallelism": 1, "hash_len": 32, "salt_len": 16}
"""OWASP Password Storage Cheat Sheet: Argon2id, m=19 MiB, t=2, p=1."""
HASH_CONCURRENCY = 2
HASH_QUEUE = 64

TTL_PATTERN = r"^([1-9][0-9]{0,5})(s|m|h|d)?$"
TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
MIN_TTL, MAX_TTL = 1, 10 * 365 * 86400
KEY_TTL = 90 * 86400.0
"""An API key made without ``ttl`` expires after 90 days; ``"ttl": null`` asks for one that never does."""


def ttl_seconds(value: object, field: str = "ttl") -> float:
    match = re.match(TTL_PATTERN, value) if isinstance(value, str) else None
    if (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer()):
        seconds = float(value)
    elif match is not None:
        seconds = float(int(match.group(1)) * TTL_UNITS[match.group(2)])
    else:
        raise BadRequest(f"{field} is a number of seconds or a duration such as 12h or 90d", field=field)
    if not MIN_TTL <= seconds <= MAX_TTL:
        raise BadRequest(f"{field} is from {MIN_TTL} s to 10 years", field=field)
    return seconds


@dataclasses.dataclass
class AuthStats:
    """What the node refused and why: ``GET /v1/auth/stats``."""

    authenticated: int = 0
    rejected: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    forbidden: int = 0
    logins: int = 0
    login_failures: int = 0
    logins_limited: int = 0
    hasher_busy: int = 0

    def to_json(self) -> dict[str, object]:
        return {"authenticated": self.authenticated, "rejected": dict(self.rejected), "forbidden": self.forbidden,
                "logins": self.logins, "login_failures": self.login_failures, "logins_limited": self.logins_limited,
                "hasher_busy": self.hasher_busy}


class Passwords:
    """Argon2id hashing and checking in threads, :data:`HASH_CONCURRENCY` at once, a bounded queue."""

    def __init__(self, concurrency: int = HASH_CONCURRENCY, queue: int = HASH_QUEUE,
                 stats: AuthStats | None = None, **parameters: int) -> None:
        self.hasher = argon2.PasswordHasher(**{**ARGON2, **parameters}, type=argon2.Type.ID)  # type: ignore[arg-type]
        self._slots = asyncio.Semaphore(concurrency)
        self._limit = concurrency + queue
        self._waiting = 0
        self._stats = stats or AuthStats()
        self.dummy = self.hasher.hash(secrets.token_hex(16))
        """Checked against when the user does not exist, so a login costs the same either way."""

    @staticmethod
    def check(password: object, field: str = "password") -> str:
        if not isinstance(password, str):
            raise BadRequest(f"{field} is required (a string)", field=field)
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise BadRequest(f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters", field=field)
        return password

    async def _run(self, fn: Callable[[], object]) -> object:
        if self._waiting >= self._limit:
            self._stats.hasher_busy += 1
            raise Unavailable("too many password checks at once: retry in a moment")
        self._waiting += 1
        try:
            async with self._slots:
                return await asyncio.get_running_loop().run_in_executor(None, fn)
        finally:
            self._waiting -= 1

    async def hash(self, password: str) -> str:
        return str(await self._run(lambda: self.hasher.hash(password)))

    async def verify(self, password_hash: str, password: str) -> bool:
        def check() -> bool:
            try:
                return self.hasher.verify(password_hash, password)
            except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
                return False
        return bool(await self._run(check))


class LoginLimiter:
    """Failed logins per user and per client address in a sliding window; past the limit, a 429 with
    ``Retry-After`` until the oldest failure in the window ages out. Memory is bounded: at most
    ``max_tracked`` users and addresses are remembered (the oldest forgotten first)."""

    def __init__(self, per_user: int = 5, per_source: int = 20, window: float = 300.0,
                 max_tracked: int = 10_000) -> None:
        self.per_user, self.per_source, self.window, self.max_tracked = per_user, per_source, window, max_tracked
        self._failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def _recent(self, key: str, now: float) -> collections.deque[float]:
        times = self._failures.get(key)
        if times is None:
            return collections.deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def check(self, user: str, source: str, now: float) -> None:
        for key, limit in ((f"user:{user}", self.per_user), (f"source:{source}", self.per_source)):
            times = self._recent(key, now)
            if len(times) >= limit:
                raise TooManyRequests(f"too many failed logins for this {key.split(':')[0]}: try again later",
                                      retry_after=times[0] + self.window - now)

    def failed(self, user: str, source: str, now: float) -> None:
        for key in (f"user:{user}", f"source:{source}"):
            times = self._recent(key, now)
            times.append(now)
            self._failures[key] = times
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_tracked:
            self._failures.popitem(last=False)

    def succeeded(self, user: str) -> None:
        self._failures.pop(f"user:{user}", None)


@dataclasses.dataclass
class Auth:
    """What the API's authentication keeps on this node (nothing of it is replicated)."""

    stats: AuthStats = dataclasses.field(default_factory=AuthStats)
    limiter: LoginLimiter = dataclasses.field(default_factory=LoginLimiter)
    clock: Callable[[], float] = time.time
    session_ttl: float = SESSION_TTL
    _passwords: Passwords | None = None

    @property
    def passwords(self) -> Passwords:
        if self._passwords is None:  # made on first use: hashing the dummy costs a few milliseconds
            self._passwords = Passwords(stats=self.stats)
        return self._passwords


__all__ = [
    "ARGON2",
    "HASH_CONCURRENCY",
    "HASH_QUEUE",
    "KEY_TTL",
    "MAX_PASSWORD",
    "MAX_TTL",
    "MIN_PASSWORD",
    "MIN_TTL",
    "SESSION_TTL",
    "TTL_PATTERN",
    "Auth",
    "AuthStats",
    "LoginLimiter",
    "Passwords",
    "ttl_seconds",
]
