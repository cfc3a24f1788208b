"""The API's one error path: every failure becomes a JSON body with a status, never a page or a traceback.

``{"error": CODE, "message": TEXT, "details": {"field": …}}``: the agent's own errors
(:class:`~agent.errors.CorralError`) carry their status; the model's (:class:`~agent.model.errors.CommandError`)
map by code; aiohttp's own (404 no such route, 405 with its ``Allow`` header, 413 body too large…) keep
their status and headers; anything unforeseen is a logged 500 that says where to look.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from agent.errors import CorralError
from agent.model.errors import CommandError, ErrorCode

log = logging.getLogger("corral.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS_OF: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.CAS_FAILED: 409,
    ErrorCode.FORBIDDEN: 403,
}
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
              413: "too_large", 415: "unsupported_media_type"}


def json_error(status: int, code: str, message: str, field: str | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, object] = {"error": code, "message": message}
    if field is not None:
        body["details"] = {"field": field}
    return web.json_response(body, status=status, headers=headers)


def command_error(exc: CommandError) -> web.Response:
    return json_error(STATUS_OF[exc.code], exc.code.value, exc.message, exc.field)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except CorralError as exc:
        return web.json_response(exc.to_json(), status=exc.status, headers=exc.headers or None)
    except CommandError as exc:
        return command_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        keep = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return json_error(exc.status, HTTP_CODES.get(exc.status, "http_error"),
                          f"{request.method} {request.path}: {exc.reason}", headers=keep)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(500, "internal", "internal error; see the agent's log")


__all__ = ["STATUS_OF", "command_error", "error_middleware", "json_error"]
