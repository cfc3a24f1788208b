"""Logging in and out of the web UI, through the API's own code: the same password check, login
limiter and session records as ``POST /v1/auth/login`` (``agent.api.users.open_session``); the
session's token goes into the cookie instead of the answer."""

from __future__ import annotations

from aiohttp import web

from agent.api.deps import DEPS
from agent.api.users import end_session, open_session
from agent.errors import BadRequest, TooManyRequests, Unauthorized
from agent.ui.guard import clear_session_cookie, set_session_cookie
from agent.ui.render import render

HOME = "/"


def local_path(value: object) -> str:
    """Where to go after logging in: a path of this UI only (never another site: an open redirect)."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//") or "\\" in value \
            or any(ord(c) < 0x20 for c in value):
        return HOME
    return value


async def login_page(request: web.Request) -> web.StreamResponse:
    return render(request, "login.html", {"next": local_path(request.query.get("next")), "error": None})


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    name, password = form.get("user"), form.get("password")
    target = local_path(form.get("next"))
    try:
        session = await open_session(request, name, password)
    except (BadRequest, Unauthorized, TooManyRequests) as exc:
        response = render(request, "login.html", {"next": target, "error": exc.message,
                                                  "user": name if isinstance(name, str) else ""}, status=exc.status)
        if "Retry-After" in exc.headers:
            response.headers["Retry-After"] = exc.headers["Retry-After"]
        return response
    response = web.HTTPSeeOther(target)
    set_session_cookie(response, session.token, session.expires - request.app[DEPS].auth.clock())
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    await end_session(request)
    response = web.HTTPSeeOther("/login")
    clear_session_cookie(response)
    raise response


__all__ = ["local_path", "login", "login_page", "logout"]
