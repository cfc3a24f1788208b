"""The model's errors: one exception type with a code from a closed set, and the field it is about.

A command the state machine refuses raises :class:`CommandError`; so does a request field the spec
rules refuse (:class:`SpecError`, a ``bad_request``). The API maps the code to an HTTP status in one
place (``agent/api/errors.py``); nothing branches on the message, which is for people.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Append only: values travel in results between nodes and in the API's error bodies."""

    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    CAS_FAILED = "cas_failed"
    FORBIDDEN = "forbidden"


class CommandError(Exception):
    """Why a command (or a request) is refused: a code, words for a person, and the field at fault."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CommandError) and (self.code, self.message, self.field) == (
            other.code, other.message, other.field)

    def __hash__(self) -> int:
        return hash((self.code, self.message, self.field))

    def __repr__(self) -> str:
        return f"CommandError({self.code.value!r}, {self.message!r}, field={self.field!r})"


class SpecError(CommandError):
    """A field of a request is wrong; ``field`` is its dotted path (``health_check.port``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(ErrorCode.BAD_REQUEST, f"{field}: {problem}", field)
        self.problem = problem


def not_found(what: str, key: str, field: str | None = None) -> CommandError:
    return CommandError(ErrorCode.NOT_FOUND, f"no {what} {key!r}", field or what)


def conflict(message: str, field: str | None = None) -> CommandError:
    return CommandError(ErrorCode.CONFLICT, message, field)


def forbidden(message: str, field: str | None = None) -> CommandError:
    return CommandError(ErrorCode.FORBIDDEN, message, field)


def bad_request(message: str, field: str | None = None) -> CommandError:
    return CommandError(ErrorCode.BAD_REQUEST, message, field)


__all__ = ["CommandError", "ErrorCode", "SpecError", "bad_request", "conflict", "forbidden", "not_found"]
