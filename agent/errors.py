"""Domain errors of the agent. The API's one error middleware maps each to a JSON response."""

from __future__ import annotations

from typing import Any


class CorralError(Exception):
    """An error a user can act on: it carries an HTTP status and a machine-readable code."""

    status = 500
    code = "internal"
    headers: dict[str, str] = {}  # noqa: RUF012 (an instance may set its own: Retry-After)

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class BadRequest(CorralError):
    status = 400
    code = "bad_request"


class NotFound(CorralError):
    status = 404
    code = "not_found"


class Conflict(CorralError):
    status = 409
    code = "conflict"


class Unauthorized(CorralError):
    """No credentials, or ones that are not (or no longer) valid: the client must authenticate."""

    status = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="corral"'}  # noqa: RUF012


class Forbidden(CorralError):
    """Authenticated, but the caller's roles do not allow this."""

    status = 403
    code = "forbidden"


class TooManyRequests(CorralError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: float, **details: Any) -> None:
        super().__init__(message, **details)
        self.headers = {"Retry-After": str(max(1, round(retry_after)))}


class Unavailable(CorralError):
    status = 503
    code = "unavailable"


class EngineUnreachable(Unavailable):
    """The host's Docker Engine did not answer (not running, wrong socket, or too slow)."""

    code = "docker_unreachable"


class DataDirError(CorralError):
    """The data directory cannot be created, written or locked."""

    code = "data_dir"
