"""THE table of the web UI's routes: one row per route (path, handler, nav label, permission, kind).

``install`` registers these rows and nothing else, so this table is the UI's whole surface: a test
(``tests/unit/test_ui.py``) holds the app's routes to it and it to docs/ACCESS.md. The permission is
what the caller needs anywhere (as the API's routes name theirs): ``admin`` is checked before the
handler runs, the environment permissions by the handler for the object's environment, exactly as
the API route the page mirrors does (a 404 for what the caller cannot see, a 403 for what it may
only read).

Kinds: a ``PAGE`` is a whole HTML page (no session: a redirect to the login page); a ``FRAGMENT`` is
a part of a page that htmx fetches again when the live feed says so, and an ``ACTION`` changes
something (any method but GET: the Origin and CSRF checks first) — both answer 401 JSON without a
session; a ``STREAM`` is the live feed; ``PUBLIC`` needs no session (the login page, static files).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Awaitable, Callable

from aiohttp import web

from agent.model.policy import Permission
from agent.ui import (
    containers,
    drills,
    events,
    home,
    hosts,
    live,
    logs,
    overlay,
    services,
    session,
    shell,
    stacks,
    static,
    stats,
    topology,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
P = Permission


class Kind(enum.StrEnum):
    PAGE = "page"
    FRAGMENT = "fragment"
    ACTION = "action"
    STREAM = "stream"
    PUBLIC = "public"


@dataclasses.dataclass(frozen=True)
class Page:
    path: str
    handler: Handler
    label: str | None
    """Its entry in the navigation (shown to those the permission allows); None: not in it."""
    permission: Permission
    kind: Kind = Kind.PAGE
    method: str = "GET"


PAGES: tuple[Page, ...] = (
    Page("/", home.overview, "Overview", P.AUTHENTICATED),
    Page("/overview/fragment", home.overview_fragment, None, P.AUTHENTICATED, Kind.FRAGMENT),
    Page("/hosts", hosts.hosts_page, "Hosts", P.AUTHENTICATED),
    Page("/hosts/fragment", hosts.hosts_fragment, None, P.AUTHENTICATED, Kind.FRAGMENT),
    Page("/hosts/{name}/stats.json", stats.host_history, None, P.READ, Kind.FRAGMENT),
    Page("/stacks", stacks.stacks_page, "Stacks", P.READ),
    Page("/stacks/fragment", stacks.stacks_fragment, None, P.READ, Kind.FRAGMENT),
    Page("/stacks/{id}", stacks.stack_page, None, P.READ),
    Page("/stacks/{id}/fragment", stacks.stack_fragment, None, P.READ, Kind.FRAGMENT),
    Page("/services/{id}", services.service_page, None, P.READ),
    Page("/services/{id}/fragment", services.service_fragment, None, P.READ, Kind.FRAGMENT),
    Page("/services/{id}/scale", services.scale, None, P.DEPLOY, Kind.ACTION, "POST"),
    Page("/services/{id}/stop", services.stop, None, P.DEPLOY, Kind.ACTION, "POST"),
    Page("/services/{id}/start", services.start, None, P.DEPLOY, Kind.ACTION, "POST"),
    Page("/services/{id}/upgrade", services.upgrade, None, P.DEPLOY, Kind.ACTION, "POST"),
    Page("/services/{id}/upgrade/pause", services.pause, None, P.DEPLOY, Kind.ACTION, "POST"),
    Page("/services/{id}/upgrade/resume", services.resume, None, P.DEPLOY, Kind.ACTION, "POST"),
    Page("/services/{id}/upgrade/rollback", services.rollback, None, P.DEPLOY, Kind.ACTION, "POST"),
    Page("/containers", containers.containers_page, "Containers", P.READ),
    Page("/containers/fragment", containers.containers_fragment, None, P.READ, Kind.FRAGMENT),
    Page("/containers/{id}/stats.json", stats.container_history, None, P.READ, Kind.FRAGMENT),
    Page("/live", live.live, None, P.AUTHENTICATED, Kind.STREAM),
    Page("/login", session.login_page, None, P.PUBLIC, Kind.PUBLIC),
    Page("/login", session.login, None, P.PUBLIC, Kind.PUBLIC, "POST"),
    Page("/logout", session.logout, None, P.AUTHENTICATED, Kind.ACTION, "POST"),
    Page("/static/{name:.+}", static.asset, None, P.PUBLIC, Kind.PUBLIC),
    # ---- a container's logs and shell, the events feed, the overlay matrix, a stack's topology, the drills
    Page("/containers/{id}/logs", logs.logs_page, None, P.READ),
    Page("/containers/{id}/logs/stream", logs.logs_stream, None, P.READ, Kind.STREAM),
    Page("/containers/{id}/shell", shell.shell_page, None, P.DEPLOY),
    Page("/containers/{id}/shell/ws", shell.shell_socket, None, P.DEPLOY, Kind.STREAM),
    Page("/stacks/{id}/topology", topology.topology_page, None, P.READ),
    Page("/stacks/{id}/topology/fragment", topology.topology_fragment, None, P.READ, Kind.FRAGMENT),
    Page("/events", events.events_page, "Events", P.AUTHENTICATED),
    Page("/events/stream", events.events_stream, None, P.AUTHENTICATED, Kind.STREAM),
    Page("/overlay", overlay.overlay_page, "Overlay", P.AUTHENTICATED),
    Page("/overlay/fragment", overlay.overlay_fragment, None, P.AUTHENTICATED, Kind.FRAGMENT),
    Page("/drills", drills.drills_page, "Drills", P.READ),
)

__all__ = ["PAGES", "Handler", "Kind", "Page"]
