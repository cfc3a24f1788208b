"""Putting the UI on the agent's app: its templates, every row of the page table behind the guard, the
security headers. The API's routes (``/v1/…``) are untouched: the UI sits beside them on one port."""

from __future__ import annotations

from collections import Counter
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import web

from agent.api.auth import PRINCIPAL, Principal, authenticate_token, authorize
from agent.api.errors import STATUS_OF
from agent.errors import CorralError, Unauthorized
from agent.model.errors import CommandError
from agent.model.policy import Permission
from agent.ui.guard import SAFE_METHODS, check_csrf, check_origin, clear_session_cookie, security_headers, session_token
from agent.ui.pages import PAGES, Handler, Kind, Page
from agent.ui.render import NAV, NavItem, check_environment, render
from agent.ui.streams import OPEN, stream_slot

LOGIN_FIRST = "log in first: this UI's requests need a session (its cookie)"


def _login_session(request: web.Request, token: str | None) -> Principal:
    """The caller the cookie names, if it is a login session: an API key (a metrics key above all, which
    may only scrape) pasted into the cookie is no session of this UI's (401)."""
    found = authenticate_token(request, token, LOGIN_FIRST)
    if not found.key.session or found.key.metrics:
        raise Unauthorized("the UI's cookie must hold a login session, not an API key: log in")
    return found


def _guarded(page: Page) -> Handler:
    """The page's handler, after the session (401, or a redirect to the login page for a whole page),
    the cluster-wide permission (403), and for an action the Origin and CSRF checks (403): all before
    the handler does anything."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            if page.kind is not Kind.PUBLIC:
                token = session_token(request)
                try:
                    request[PRINCIPAL] = _login_session(request, token)
                except Unauthorized:
                    if page.kind is not Kind.PAGE:
                        raise
                    redirect = web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='/?=')}")
                    if token is not None:
                        clear_session_cookie(redirect)
                    raise redirect from None
                authorize(request, Permission.AUTHENTICATED)
                if page.permission is Permission.ADMIN:
                    authorize(request, Permission.ADMIN)
                check_environment(request, request[PRINCIPAL].grants)
            if request.method not in SAFE_METHODS:
                check_origin(request)
                if page.kind is not Kind.PUBLIC:
                    await check_csrf(request, session_token(request) or "")
            if page.kind is Kind.STREAM:
                with stream_slot(request):  # a bounded number per session (agent/ui/streams.py)
                    return await page.handler(request)
            return await page.handler(request)
        except (CorralError, CommandError) as exc:
            if page.kind is not Kind.PAGE:
                raise  # the API's error path: JSON naming what is wrong (ui.js shows its message)
            status = exc.status if isinstance(exc, CorralError) else STATUS_OF[exc.code]
            return render(request, "error.html", {"status": status, "message": exc.message}, status=status)

    return handler


def mib(value: object) -> str:
    """Bytes as people read them on these pages: MiB, or GiB from 10 GiB up."""
    n = float(value) if isinstance(value, (int, float)) else 0.0
    return f"{n / 2**30:.1f} GiB" if n >= 10 * 2**30 else f"{n / 2**20:.0f} MiB"


def install(app: web.Application) -> None:
    """Serve the UI from ``app`` (the agent's API app): before it starts."""
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("agent.ui", "templates"),
                         autoescape=jinja2.select_autoescape(default=True), filters={"mib": mib})
    app[OPEN] = Counter()
    app[NAV] = tuple(NavItem(p.path, p.label, p.permission) for p in PAGES if p.label is not None)
    for page in PAGES:
        app.router.add_route(page.method, page.path, _guarded(page))
    app.on_response_prepare.append(security_headers)


__all__ = ["LOGIN_FIRST", "install", "mib"]
