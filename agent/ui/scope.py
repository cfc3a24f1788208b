"""What a UI request may see: the caller's environments, narrowed to the one the switcher chose."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from agent.api.auth import grants
from agent.api.views import readable
from agent.ui.render import current_environment

Shown = Callable[[str | None], bool]


def shown(request: web.Request) -> Shown:
    """A predicate over environments: those the caller may read (as the API's lists), and only the
    chosen one when the switcher names one."""
    g = grants(request)
    env = current_environment(request, g)

    def accepts(environment: str | None) -> bool:
        return readable(g, environment) and (env is None or environment == env)

    return accepts


__all__ = ["Shown", "shown"]
