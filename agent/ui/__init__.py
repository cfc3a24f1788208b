"""The web UI: server-rendered pages (aiohttp-jinja2, htmx, uPlot) served by every agent at ``/`` on the
API's port, with the API's users, login sessions and policy (docs/UI.md).

What it is made of:

- :mod:`agent.ui.pages` — THE table of the UI's routes (:data:`~agent.ui.pages.PAGES`): path, handler,
  nav label, permission, and what kind of route it is (a page, a fragment htmx swaps in, an action that
  changes something, a stream, a public page). Every UI route is a row there; nothing else registers one.
- :mod:`agent.ui.guard` — what every UI request goes through: the session cookie (HttpOnly, Secure,
  SameSite=Strict) read into the API's :class:`~agent.api.auth.Principal`; for an action, the Origin
  check and the per-session CSRF token; the security headers (a strict Content-Security-Policy: no
  inline script or style) on every answer that is not the API's.
- :mod:`agent.ui.session` — log in and out through the API's own code (``agent.api.users.open_session``:
  the same password check, the same login limiter, the same session records).
- :mod:`agent.ui.live` — the live feed (server-sent events from the change feed) that tells a page
  which parts to fetch again.
- ``templates/`` (``base.html`` draws the navigation from the table) and ``static/`` (``ui.css``,
  ``ui.js`` and the vendored libraries under ``static/vendor/``, listed in its ``VENDOR.md``).

How to add a page:

1. Write a handler ``async def my_page(request) -> web.StreamResponse`` in a module of this package
   (one per subject: ``hosts.py``, ``services.py``…). Read the caller with ``principal(request)`` /
   ``grants(request)`` (:mod:`agent.api.auth`, set by the guard) and find records with the API's own
   finders (``agent.api.views.find_service`` …): they hide what the caller may not see (a 404) exactly
   as the API does. Answer with ``render(request, "my_page.html", {...})`` (:func:`agent.ui.render.render`).
2. Write ``templates/my_page.html``: ``{% extends "base.html" %}`` and fill ``{% block content %}``.
   No inline ``<script>`` or ``style=``: the CSP refuses them; behaviour goes into ``static/ui.js``
   (by ``data-`` attributes), looks into ``static/ui.css``.
3. Add ONE row to :data:`agent.ui.pages.PAGES`: ``Page("/my-page", my_page, "My page", Permission.READ)``.
   A label puts it in the navigation (for those who may see it); ``kind=FRAGMENT`` for a part a page
   fetches again when the live feed says so (``hx-trigger="live:instance from:body"``), ``kind=ACTION``
   for a POST (the guard checks the CSRF token and the Origin; the handler asks the policy for the
   object's environment, like the API route it mirrors, and calls the same function the API does).
4. Add the row's path to docs/UI.md and docs/ACCESS.md (``tests/unit/test_ui.py`` keeps every UI route
   in the table and the table in docs/ACCESS.md).
"""

from agent.ui.app import install
from agent.ui.pages import PAGES, Kind, Page

__all__ = ["PAGES", "Kind", "Page", "install"]
