"""What every request to the web UI goes through: the session cookie, the Origin and CSRF checks for
anything that changes state, and the security headers on every answer that is not the API's.

- **The session** is an API login session (``agent.api.users.open_session``) whose token is kept in the
  ``__Host-corral-session`` cookie: ``HttpOnly`` (no script reads it), ``Secure``, ``SameSite=Strict``
  (no other site's page sends it), ``Path=/``. It is checked exactly as a bearer token is
  (:func:`agent.api.auth.authenticate_token`): revoked, expired or unknown, it is no session.
- **CSRF**: an action (any method but GET) must come from this origin (its ``Origin`` header, or failing
  that its ``Referer``, equals the request's own scheme, host and port) and carry the session's CSRF
  token (``X-CSRF-Token``, which ``ui.js`` adds to every htmx request, or the form field
  ``csrf_token``). The token is an HMAC of the session's secret, so it is per session, needs no storage
  on any node and means nothing to anyone who has not the cookie. Either check failing is a 403 before
  the handler runs: nothing is changed.
- **Headers**: a Content-Security-Policy that allows only this origin's own scripts, styles, images and
  connections (no inline script or style, no eval, no frames of us anywhere), and the usual others.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlsplit

from aiohttp import web

from agent.errors import Forbidden

SESSION_COOKIE = "__Host-corral-session"
ENV_COOKIE = "__Host-corral-env"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

CSP = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "font-src 'self'",
    "connect-src 'self'", "object-src 'none'", "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
))
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
HSTS = "max-age=31536000"


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: derived from its secret, so only the cookie's holder can know it."""
    digest = hmac.new(session_token.encode(), b"corral-ui csrf v1", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def session_token(request: web.Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE)


def set_session_cookie(response: web.StreamResponse, token: str, max_age: float) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=max(0, int(max_age)), path="/", secure=True,
                        httponly=True, samesite="Strict")


def clear_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}".lower()


def check_origin(request: web.Request) -> None:
    """403 unless the request says it comes from a page of this origin."""
    origin = request.headers.get("Origin")
    claimed = _origin_of(origin) if origin and origin != "null" else None
    if claimed is None and (referer := request.headers.get("Referer")):
        claimed = _origin_of(referer)
    if claimed is None:
        raise Forbidden("this request names no origin (no Origin or Referer header): the UI's actions are taken "
                        "only from its own pages", check="origin")
    if claimed != own_origin(request):
        raise Forbidden(f"this request comes from {claimed}, not from this UI ({own_origin(request)})",
                        check="origin")


async def check_csrf(request: web.Request, session: str) -> None:
    """403 unless the request carries the session's CSRF token (header, or form field)."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        field = (await request.post()).get(CSRF_FIELD)
        sent = field if isinstance(field, str) else None
    if not sent:
        raise Forbidden(f"the CSRF token is missing: send the page's token in {CSRF_HEADER} or the form field "
                        f"{CSRF_FIELD} (reload the page)", check="csrf")
    if not hmac.compare_digest(sent.encode(), csrf_token(session).encode()):
        raise Forbidden("the CSRF token is not this session's (reload the page)", check="csrf")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the headers every UI answer carries (the API's, JSON, keep their own)."""
    if request.path.startswith("/v1/"):
        return
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")


__all__ = ["CSP", "CSRF_FIELD", "CSRF_HEADER", "ENV_COOKIE", "SAFE_METHODS", "SECURITY_HEADERS", "SESSION_COOKIE",
           "check_csrf", "check_origin", "clear_session_cookie", "csrf_token", "own_origin", "security_headers",
           "session_token", "set_session_cookie"]
