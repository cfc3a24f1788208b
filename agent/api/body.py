"""Request bodies: a JSON object, with only the fields a route takes."""

from __future__ import annotations

import json
from collections.abc import Collection

from aiohttp import web

from agent.errors import BadRequest


async def json_object(request: web.Request, allowed: Collection[str] | None = None) -> dict[str, object]:
    """The body as a JSON object; 400 if it is not one, or has a field not in ``allowed``."""
    try:
        body = json.loads(await request.read() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the request body is not JSON", field="body") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", field="body")
    if allowed is not None:
        unknown = sorted(k for k in body if k not in allowed)
        if unknown:
            raise BadRequest(f"{unknown[0]} is not a field of this request", field=unknown[0])
    return body


__all__ = ["json_object"]
