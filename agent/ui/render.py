"""Rendering a page: the template's own context plus what ``base.html`` draws on every page (the
caller, the navigation it may see, the environment switcher, the CSRF token)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import aiohttp_jinja2
from aiohttp import web

from agent.api.auth import PRINCIPAL, Principal
from agent.api.deps import DEPS
from agent.model.errors import not_found
from agent.model.policy import Grants, Permission, allowed, role_in
from agent.ui.guard import ENV_COOKIE, csrf_token, session_token


@dataclasses.dataclass(frozen=True)
class NavItem:
    path: str
    label: str
    permission: Permission


NAV = web.AppKey("ui-nav", tuple[NavItem, ...])
"""The navigation: the labelled rows of the page table, in its order."""


def environments(request: web.Request, grants: Grants) -> list[tuple[str, str]]:
    """(name, the caller's role) of every environment the caller has a role in."""
    return [(name, r.value) for name in sorted(request.app[DEPS].replica.state.environments)
            if (r := role_in(grants, name)) is not None]


ALL_ENVIRONMENTS = ""


def current_environment(request: web.Request, grants: Grants) -> str | None:
    """The environment the caller chose (``?env=``, else its cookie), if it may read it; None: all of them."""
    wanted = request.query.get("env")
    if wanted is None:
        wanted = request.cookies.get(ENV_COOKIE, ALL_ENVIRONMENTS)
    if wanted == ALL_ENVIRONMENTS or role_in(grants, wanted) is None or \
            wanted not in request.app[DEPS].replica.state.environments:
        return None
    return wanted


def check_environment(request: web.Request, grants: Grants) -> None:
    """A ``?env=`` the caller has no role in (or that does not exist) is a 404, as the API's answer for
    such an environment: never "all of them" instead, nor whether it exists."""
    wanted = request.query.get("env")
    if wanted and (wanted not in request.app[DEPS].replica.state.environments or role_in(grants, wanted) is None):
        raise not_found("environment", wanted)


def render(request: web.Request, template: str, context: Mapping[str, object], status: int = 200) -> web.Response:
    found = request.get(PRINCIPAL)
    base: dict[str, object] = {"path": request.path, "node": request.app[DEPS].node.name}
    if isinstance(found, Principal):
        token = session_token(request) or ""
        env = current_environment(request, found.grants)
        base.update(me=found.user.name, csrf=csrf_token(token), environments=environments(request, found.grants),
                    env=env, nav=[n for n in request.app[NAV] if allowed(found.grants, n.permission)])
    response = aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)
    if isinstance(found, Principal) and "env" in request.query and status == 200:  # remembered for the next pages
        response.set_cookie(ENV_COOKIE, str(base["env"] or ALL_ENVIRONMENTS), path="/", secure=True, httponly=True,
                            samesite="Strict")
    return response


def is_htmx(request: web.Request) -> bool:
    return request.headers.get("HX-Request") == "true"


__all__ = ["ALL_ENVIRONMENTS", "NAV", "NavItem", "check_environment", "current_environment", "environments", "is_htmx",
           "render"]
