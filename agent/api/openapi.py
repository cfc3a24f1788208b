"""``GET /v1/openapi.json``: the API described from the route table, the parameters and the schemas the
server itself enforces (:mod:`agent.api.routes`, :mod:`agent.api.params`, :mod:`agent.api.schemas`).

Nothing here is written twice: a route's parameters are the objects its handler parses with, and
its bodies are the schemas written from the validators' own constants. The unit tests check that the
document is valid OpenAPI 3.1 and that it describes exactly what the app serves.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent import __version__
from agent.api.routes import Route
from agent.api.schemas import SCHEMAS
from agent.model.policy import Permission

ERROR_REF = {"$ref": "#/components/schemas/Error"}
REASONS = {400: "Bad request: a parameter or a field of the body is wrong (the body names it)",
           401: "No token, or one that is malformed, unknown, revoked or expired",
           403: "The caller's roles do not allow this (internal routes: not sealed with the cluster's key)",
           404: "No such object (or one in an environment the caller has no role in)",
           429: "Too many failed logins for this user or this address: see Retry-After",
           409: "Conflict: the name is taken, or the compare-and-set index did not match",
           413: "The request body is too large", 416: "The Range asked for is not within the body",
           503: "No leader, no quorum, or another agent did not answer"}


def _error(status: int) -> dict[str, object]:
    return {"description": REASONS[status], "content": {"application/json": {"schema": ERROR_REF}}}


def operation(route: Route) -> dict[str, object]:
    ok: dict[str, object] = {"application/json": {"schema": {"$ref": "#/components/schemas/Page"}}} \
        if any(p.name == "limit" for p in route.params) else {"application/json": {"schema": {"type": "object"}}}
    if route.stream:
        ok = {**ok, route.stream: {"schema": {"type": "string"}}}
    responses: dict[str, object] = {"201" if route.created else "200": {
        "description": "Created" if route.created else "OK", "content": ok}}
    if route.websocket:
        responses = {"101": {"description": "Switching Protocols: the websocket (its framing: docs/EXEC.md); "
                                            "without the upgrade headers, a 400"}}
    authenticated = route.permission not in (Permission.PUBLIC, Permission.SYSTEM)
    for status in sorted({400, *route.statuses, *((503,) if route.write else ()),
                          *((401, 403) if authenticated else ())}):
        responses[str(status)] = _error(status)
    op: dict[str, object] = {"tags": [route.tag], "summary": route.summary,
                             "operationId": f"{route.method.lower()}_{route.path}", "responses": responses}
    if route.params:
        op["parameters"] = [p.doc() for p in route.params]
    if route.body == "raw":
        op["requestBody"] = {"required": False, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}}
    elif route.body:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{route.body}"}}}}
    words = [f"Needs: {route.permission.value}" + (f" in environment {route.environment}" if route.environment
                                                    else "") + "."]
    if route.write:
        words.append("A write: any node takes it and forwards it to the leader.")
    if route.websocket:
        words.append("A websocket (send Connection: Upgrade, Upgrade: websocket); any node takes it and relays it "
                     "to the container's host.")
    op["description"] = " ".join(words)
    op["x-corral-permission"] = route.permission.value
    if not authenticated:
        op["security"] = []
    return op


def document(routes: Iterable[Route]) -> dict[str, object]:
    paths: dict[str, dict[str, object]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = operation(route)
    return {"openapi": "3.1.0", "info": {"title": "Corral agent API", "version": __version__},
            "paths": paths, "security": [{"bearer": []}],
            "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "crl_<id>_<secret>: a session token from POST /v1/auth/login or an API key"}}}}


__all__ = ["document", "operation"]
