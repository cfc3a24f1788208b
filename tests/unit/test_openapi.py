"""The OpenAPI document matches what the agent serves, both ways, and is a valid OpenAPI 3.1 document."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from agent import openapi
from agent.api import AgentDeps, build_app
from agent.cluster import Cluster
from agent.config import AgentConfig
from agent.overlay_runtime import OverlayRuntime
from mesh.keyring import Keyring
from mesh.node import GossipNode


def _app() -> web.Application:
    deps = AgentDeps(engine=cast(Any, object()), data_dir=cast(Any, object()))
    return build_app(AgentConfig(bind="127.0.0.1", data_dir=Path("/nonexistent")), deps,
                     cast(Cluster, object()), cast(GossipNode, object()), Keyring.from_secret(b"k" * 32),
                     cast(OverlayRuntime, object()))


def test_every_served_route_is_documented_and_nothing_else() -> None:
    app = _app()
    doc = app[openapi.DOC_KEY]
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = openapi.served_routes(app)
    assert documented == served
    assert set(openapi.DOCS) == served, "DOCS has entries for routes the agent does not serve"
    assert ("GET", "/v1/services/{id}") in served


def test_document_is_valid_openapi() -> None:
    validate(_app()[openapi.DOC_KEY])


def test_a_route_without_docs_is_a_start_up_error() -> None:
    app = web.Application()

    async def handler(_request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/v1/undocumented", handler)
    with pytest.raises(openapi.UndocumentedRoute, match="/v1/undocumented"):
        openapi.add_routes(app)
