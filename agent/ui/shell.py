"""A container's shell in the browser: xterm.js over the API's exec websocket.

A browser cannot put an ``Authorization`` header on a websocket, and it sends cookies with one from
any site that opens it (cross-site websocket hijacking), so the UI's websocket
(``/containers/{id}/shell/ws``) is let through only when all of these hold, before anything runs:

- the session cookie is a live session (the guard, as for every UI route);
- its ``Origin`` is this UI's own (browsers always send it on a websocket handshake: a page of another
  site cannot forge it);
- its ``csrf`` query parameter is the session's CSRF token (only a page of ours can have read it);
- the caller may ``deploy`` in the container's environment — exactly what ``corral exec`` needs.

Then it is the API's exec, unchanged: the request, with the session as its bearer credential (and no
cookie), goes to the API's own handler (:func:`agent.api.execs.exec_container`) with the route's
parameters checked as the API checks them. So the exec is recorded in the audit events as a
``container.exec`` by this user through the state machine (which authorizes it again), relayed to the
container's host when it is elsewhere, and framed as docs/EXEC.md says; ``static/shell.js`` speaks
that framing to xterm.js.

The page opens the default shell (``sh``) by itself; a command named in its link (``?cmd=``) is only
filled into the form and runs when the person presses Open, so a link sent to someone cannot run a
command as them (the websocket's checks cannot tell our page's script from a person).

The page's Content-Security-Policy adds a per-response nonce to ``style-src``: xterm.js writes
``<style>`` elements (its cell sizes, its theme), and ``shell.js`` stamps that nonce on each before it
is inserted; no page gets ``'unsafe-inline'``.
"""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web
from yarl import URL

from agent.api import execs
from agent.api.auth import authorize, grants
from agent.api.deps import DEPS
from agent.api.exec_wire import AUDITED
from agent.api.routes import ROUTES
from agent.api.views import container_env, container_view, find_container
from agent.errors import Forbidden
from agent.model.policy import Permission
from agent.ui.guard import CSP, check_origin, csrf_token, session_token
from agent.ui.render import render

EXEC_ROUTE = next(r for r in ROUTES if r.path == "/v1/containers/{id}/exec")
CSRF_PARAM = "csrf"
DEFAULT_COMMAND = "sh"


def shell_csp(nonce: str) -> str:
    """The UI's policy with the page's nonce for the ``<style>`` elements xterm.js makes."""
    return CSP.replace("style-src 'self'", f"style-src 'self' 'nonce-{nonce}'")


async def shell_page(request: web.Request) -> web.StreamResponse:
    state = request.app[DEPS].replica.state
    inst = find_container(state, request.match_info["id"], grants(request))
    authorize(request, Permission.DEPLOY, container_env(state, inst))  # the page of a shell one may not open: 403
    nonce = secrets.token_urlsafe(16)
    command = request.query.get("cmd", DEFAULT_COMMAND)
    # A link can name any command (`…/shell?cmd=…`, even through the login's `next=`): the page runs one
    # of its own only when the person presses Open; on its own it opens the default shell, nothing else.
    response = render(request, "shell.html", {"c": container_view(state, inst), "nonce": nonce, "command": command,
                                               "autostart": command == DEFAULT_COMMAND,
                                               "ws": f"/containers/{inst.id}/shell/ws"})
    response.headers["Content-Security-Policy"] = shell_csp(nonce)
    return response


def check_csrf_param(request: web.Request) -> None:
    sent = request.query.get(CSRF_PARAM, "")
    if not sent:
        raise Forbidden(f"the CSRF token is missing: the shell's websocket carries it as ?{CSRF_PARAM}= "
                        "(reload the page)", check="csrf")
    if not hmac.compare_digest(sent.encode(), csrf_token(session_token(request) or "").encode()):
        raise Forbidden("the CSRF token is not this session's (reload the page)", check="csrf")


async def shell_socket(request: web.Request) -> web.StreamResponse:
    check_origin(request)  # cross-site websocket hijacking: a page of another site opening ours
    check_csrf_param(request)
    state = request.app[DEPS].replica.state
    inst = find_container(state, request.match_info["id"], grants(request))
    authorize(request, Permission.DEPLOY, container_env(state, inst))
    dropped = ("cookie", "authorization", AUDITED.lower())  # the session goes as the bearer; the audit is ours
    headers = {k: v for k, v in request.headers.items() if k.lower() not in dropped}
    headers["Authorization"] = f"Bearer {session_token(request)}"
    query = [(k, v) for k, v in request.query.items() if k != CSRF_PARAM]
    # the API's exec, as `corral exec` asks it (its path too: a relay to the container's host asks that)
    api_request = request.clone(headers=headers, rel_url=URL(f"/v1/containers/{inst.id}/exec").with_query(query))
    for param in EXEC_ROUTE.params:
        param.check(api_request)
    return await execs.exec_container(api_request)


__all__ = ["CSRF_PARAM", "shell_csp", "shell_page", "shell_socket"]
