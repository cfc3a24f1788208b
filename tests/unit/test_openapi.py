"""The OpenAPI document describes exactly what the agent serves, and is a valid OpenAPI 3.1 document."""

from __future__ import annotations

import json
import re

import aiohttp
from aiohttp import web
from openapi_spec_validator import validate

from agent.api import routes
from agent.api.deps import DOCUMENT
from agent.api.openapi import document
from agent.ui.pages import PAGES
from tests.unit.fakes import running_api


def served(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        if route.method == "*" or route.resource is None:
            continue
        info = route.resource.get_info()
        out.add((route.method, str(info.get("path") or info.get("formatter"))))
    # aiohttp answers HEAD beside every GET added with add_get: only a HEAD of the route table is a route
    table = {(r.method, r.path) for r in routes.ROUTES}
    return {(m, p) for m, p in out if m != "HEAD" or (m, p) in table}


def ui_routes() -> set[tuple[str, str]]:
    return {(p.method, re.sub(r"\{(\w+):[^}]*\}", r"{\1}", p.path)) for p in PAGES}


async def test_every_served_route_is_documented_and_nothing_else() -> None:
    async with running_api() as api:
        doc = api.app[DOCUMENT]
        documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}  # type: ignore[attr-defined]
        table = {(r.method, r.path) for r in routes.ROUTES}
        assert documented == table
        ui = ui_routes()
        assert {r for r in served(api.app) if r not in ui} == table
        # the rest is the web UI, every route of it a row of its page table (tests/unit/test_ui.py)
        assert {r for r in served(api.app) if r not in table} == ui
        assert not ui & table, "a UI route never shadows an API route"
        assert ("GET", "/v1/services/{id}") in documented


def test_document_is_valid_openapi() -> None:
    validate(document(routes.ROUTES))


async def test_the_served_document_is_the_one_the_routes_make() -> None:
    async with running_api() as api, aiohttp.ClientSession(headers=api.auth) as session, session.get(
        api.url + "/v1/openapi.json"
    ) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        served_doc = await resp.json()
    assert served_doc == json.loads(json.dumps(document(routes.ROUTES)))
    validate(served_doc)


def test_every_route_declares_its_parameters_and_writes_their_503() -> None:
    doc = document(routes.ROUTES)
    for route in routes.ROUTES:
        op = doc["paths"][route.path][route.method.lower()]  # type: ignore[index]
        names = {p["name"] for p in op.get("parameters", [])}
        assert {n.strip("{}") for n in route.path.split("/") if n.startswith("{")} <= names, route.path
        assert "400" in op["responses"], route.path
        if route.write:
            assert "503" in op["responses"], route.path
