"""The OpenAPI document is the contract: a property-based fuzzer (schemathesis) holds the server to it.

For every operation, requests generated from the document — valid ones and ones that break it — go to
the real app over an in-memory cluster (``tests/unit/fakes.py``). The server must never answer 5xx,
answer only the statuses and content types it declares, refuse what the document refuses (negative
data rejection), answer an unsupported method with 405 and its ``Allow`` header, and accept what the
document allows (positive data acceptance) — except where a rule the document cannot express in JSON
Schema refuses valid-looking data: a service spec's cross-field rules (a health check's timeout
longer than its interval, a port published twice) and an image no host has are 400s by design, and
declared as such.

The suite's run is repeatable (derandomized, 25 examples per operation and mode); a longer hunt:
``CORRAL_FUZZ_RANDOM=1 CORRAL_FUZZ_EXAMPLES=500 pytest tests/unit/test_api_fuzz.py``.

Only time is bounded: a blocking read waits at most 10 ms here (``wait`` is parsed as ever) and a
valid ``stream``/``follow`` is turned off, so no request blocks for minutes (a bad value of either is
still sent: a 400 before anything waits).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from agent.api.openapi import document
from agent.api.params import TRUE, WAIT
from agent.api.routes import ROUTES
from tests.unit.fakes import running_api

SCHEMA = schemathesis.openapi.from_dict(document(ROUTES))
SCHEMA.config.generation.update(max_examples=int(os.environ.get("CORRAL_FUZZ_EXAMPLES", "25")))
RULES_BEYOND_JSON_SCHEMA = {("POST", "/v1/services"), ("PATCH", "/v1/services/{id}"), ("POST", "/v1/keys"),
                            ("POST", "/v1/auth/login"), ("POST", "/v1/apikeys"), ("PATCH", "/v1/users/{name}"),
                            ("POST", "/v1/auth/logout"), ("POST", "/v1/images"), ("POST", "/v1/registries"),
                            ("POST", "/v1/builds"), ("POST", "/v1/stacks/{id}/deploy"), ("POST", "/v1/configs"),
                            ("PATCH", "/v1/settings"), ("POST", "/v1/services/{id}/upgrade"),
                            ("GET", "/v1/hosts/{name}/stats"), ("GET", "/v1/containers/{id}/stats")}
"""Operations whose valid-looking bodies may still be refused by a documented 400 (see the module doc;
a key change is refused when the ring cannot take it: a key installed twice, the primary removed; a
ttl such as "999999d" matches the duration pattern but is over ten years; one's own password changes only
with the current one; a logout is for sessions, not API keys; an image upload is bytes that must be a
`docker save` tarball, a build context a tar with a Dockerfile; a registry's user name may not be one it takes;
a deploy's services are specs, and its configs' files base64 with relative paths; bind paths are absolute and
normalised, which a pattern says only in part; an upgrade must change the spec, with a parallelism no larger than the
service and a healthy deadline longer than min_healthy; a history's since, which its pattern allows, must also lie
within the last hour by the agent's clock)."""
TOKEN: list[str] = []
"""The in-memory agent's admin token, once it runs."""
ADMIN = "Bearer <the administrator's token>"
"""What cases carry until they are sent (cases are made before the agent runs)."""


@SCHEMA.auth()
class AdminToken:
    """Every case is sent as the cluster's administrator (the fuzzer tests the document, not the roles:
    tests/unit/test_access.py walks every route with every role)."""

    def get(self, case: schemathesis.Case, ctx: object) -> str:
        return ADMIN

    def set(self, case: schemathesis.Case, data: str, ctx: object) -> None:
        case.headers = {**(case.headers or {}), "Authorization": data}


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection, unsupported_method, allow_header_conformance]


class Agent:
    """The in-memory agent, on its own event loop in a thread (the fuzzer's client is synchronous)."""

    def __init__(self) -> None:
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with running_api() as api:
            self.url = api.url
            TOKEN[:] = [api.token]
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Agent:
        self._thread.start()
        assert self._ready.wait(30), "the in-memory agent did not start"
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def agent() -> Iterator[Agent]:
    saved = (WAIT.default, WAIT.maximum)
    object.__setattr__(WAIT, "default", 0.01)  # a blocking read waits at most 10 ms here (parsed as ever)
    object.__setattr__(WAIT, "maximum", 0.01)
    try:
        with Agent() as running:
            yield running
    finally:
        object.__setattr__(WAIT, "default", saved[0])
        object.__setattr__(WAIT, "maximum", saved[1])


@SCHEMA.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=os.environ.get("CORRAL_FUZZ_RANDOM") != "1")
def test_the_api_keeps_its_document(case: schemathesis.Case, agent: Agent) -> None:
    if case.query:
        for name in ("stream", "follow"):  # a stream lasts until its client goes: ask for a page instead
            if name in case.query and str(case.query[name]).lower() in TRUE:
                case.query[name] = "0"
    if case.headers and case.headers.get("Authorization") == ADMIN:
        case.headers["Authorization"] = f"Bearer {TOKEN[0]}"
    if case.headers:  # an unknown Expect is answered 417 by aiohttp before any route (RFC 9110 §10.1.1)
        case.headers = {k: v for k, v in case.headers.items() if k.lower() != "expect"}
    checks = list(CHECKS)
    if (case.method.upper(), case.path) not in RULES_BEYOND_JSON_SCHEMA:
        checks.append(positive_data_acceptance)
    case.call_and_validate(base_url=agent.url, checks=checks, timeout=20)
