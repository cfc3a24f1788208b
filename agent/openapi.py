"""``GET /v1/openapi.json``: the API described, generated from what the app actually routes.

Each route the app serves must have an entry in :data:`DOCS` (summary, query parameters, body schema);
:func:`document` walks the app's router, so a route without docs is a start-up error, and a doc for
a route that is not served is never published; the unit test checks both directions on the app the
agent really builds (:func:`agent.api.build_app`).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from agent import __version__

STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
BOOL: dict[str, Any] = {"type": "boolean"}
OBJ: dict[str, Any] = {"type": "object"}
PAGE = ["limit", "offset"]

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "message"],
              "properties": {"error": STR, "message": STR, "field": STR, "details": OBJ}},
    "Page": {"type": "object", "properties": {"items": {"type": "array", "items": OBJ}, "total": INT,
                                               "limit": INT, "offset": INT}},
    "StackCreate": {"type": "object", "required": ["name"],
                    "properties": {"name": STR, "environment": STR, "description": STR}},
    "ServiceSpec": {
        "type": "object", "required": ["image"],
        "properties": {
            "image": STR, "command": {"oneOf": [STR, {"type": "array", "items": STR}]},
            "environment": {"type": "object", "additionalProperties": STR},
            "ports": {"type": "array", "items": {"oneOf": [STR, {"type": "object", "properties": {
                "target": INT, "published": INT, "protocol": {"enum": ["tcp", "udp"]}}}]}},
            "labels": {"type": "object", "additionalProperties": STR},
            "scale": {"type": "integer", "minimum": 0, "maximum": 1000},
            "restart": {"enum": ["always", "on-failure", "no"]},
            "cpus": {"type": "number", "minimum": 0}, "memory": {"oneOf": [INT, STR]},
            "placement": {"type": "object", "properties": {
                "constraints": {"type": "array", "items": STR}, "preferences": {"type": "array", "items": STR},
                "strategy": {"enum": ["spread", "pack"]}, "one_per_host": BOOL}},
            "health_check": OBJ,
        },
    },
    "ServiceCreate": {"allOf": [{"$ref": "#/components/schemas/ServiceSpec"},
                                {"type": "object", "required": ["name", "stack"],
                                 "properties": {"name": STR, "stack": STR}}]},
    "KeyChange": {"type": "object", "required": ["action", "key"], "properties": {
        "action": {"enum": ["install", "use", "remove"]},
        "key": {"type": "string", "description": "32 bytes, base64"}}},
    "Scale": {"type": "object", "required": ["scale"], "properties": {"scale": INT}},
}

PARAMS: dict[str, dict[str, Any]] = {
    "limit": {"schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
    "offset": {"schema": {"type": "integer", "minimum": 0, "default": 0}},
    "stack": {"schema": STR, "description": "stack id or name"},
    "service": {"schema": STR, "description": "service id or name"},
    "host": {"schema": STR, "description": "host name"},
    "state": {"schema": STR},
    "kind": {"schema": STR, "description": "event kind"},
    "index": {"schema": INT, "description": "only what changed after this Raft index"},
    "wait": {"schema": STR, "description": "block up to this long for a change (e.g. 30s)"},
    "stream": {"schema": BOOL, "description": "stream newline-delimited JSON"},
    "consistent": {"schema": BOOL, "description": "linearizable read (ReadIndex through the leader)"},
    "cas": {"schema": INT, "description": "write only if the key's modify index is this (0: absent)"},
    "follow": {"schema": BOOL}, "tail": {"schema": INT},
}

# (method, path) → (tag, summary, query parameters, request body schema)
DOCS: dict[tuple[str, str], tuple[str, str, list[str], str | None]] = {
    ("GET", "/v1/openapi.json"): ("meta", "This document", [], None),
    ("GET", "/v1/health"): ("node", "Liveness and the Docker Engine's state", [], None),
    ("GET", "/v1/host"): ("node", "This host: name, address, CPUs, memory, engine", [], None),
    ("GET", "/v1/members"): ("cluster", "Gossip members as this node sees them", ["state"], None),
    ("GET", "/v1/members/stats"): ("cluster", "Gossip counters, drops by reason", [], None),
    ("GET", "/v1/keys"): ("cluster", "Key ids, the primary, how many live members hold each", [], None),
    ("POST", "/v1/keys"): ("cluster", "Install, use (make primary) or remove a key", [], "KeyChange"),
    ("GET", "/v1/overlay"): ("overlay", "Overlay peers, sessions, RTT, traffic and drops by reason", [], None),
    ("GET", "/v1/raft"): ("cluster", "Raft role, term, leader, indexes, peers", [], None),
    ("POST", "/v1/internal/propose"): ("internal", "Sealed Raft command from a member (not for users)", [], None),
    ("GET", "/v1/kv/{key}"): ("kv", "Read a key", ["consistent", "index", "wait"], None),
    ("PUT", "/v1/kv/{key}"): ("kv", "Write a key (raw body)", ["cas"], None),
    ("DELETE", "/v1/kv/{key}"): ("kv", "Delete a key", ["cas"], None),
    ("GET", "/v1/environments"): ("stacks", "Environments", PAGE, None),
    ("GET", "/v1/hosts"): ("hosts", "Hosts with state, labels, capacity", [*PAGE, "state"], None),
    ("GET", "/v1/hosts/{name}"): ("hosts", "One host", [], None),
    ("GET", "/v1/hosts/{name}/stats"): ("hosts", "Host CPU, memory, network and block I/O from Docker", [], None),
    ("GET", "/v1/stacks"): ("stacks", "Stacks", PAGE, None),
    ("POST", "/v1/stacks"): ("stacks", "Create a stack", [], "StackCreate"),
    ("GET", "/v1/stacks/{id}"): ("stacks", "One stack", [], None),
    ("DELETE", "/v1/stacks/{id}"): ("stacks", "Remove a stack and its services", [], None),
    ("GET", "/v1/services"): ("services", "Services", [*PAGE, "stack", "state"], None),
    ("POST", "/v1/services"): ("services", "Create a service", [], "ServiceCreate"),
    ("GET", "/v1/services/{id}"): ("services", "One service", [], None),
    ("PATCH", "/v1/services/{id}"): ("services", "Change a service's spec", [], "ServiceSpec"),
    ("DELETE", "/v1/services/{id}"): ("services", "Remove a service and its containers", [], None),
    ("POST", "/v1/services/{id}/scale"): ("services", "Set the scale", [], "Scale"),
    ("POST", "/v1/services/{id}/stop"): ("services", "Stop every container", [], None),
    ("POST", "/v1/services/{id}/start"): ("services", "Start the service again", [], None),
    ("POST", "/v1/services/{id}/restart"): ("services", "Restart every container", [], None),
    ("GET", "/v1/containers"): ("containers", "Containers", [*PAGE, "stack", "service", "host", "state"], None),
    ("GET", "/v1/containers/{id}"): ("containers", "One container", [], None),
    ("DELETE", "/v1/containers/{id}"): ("containers", "Delete a container (the scheduler replaces it)", [], None),
    ("GET", "/v1/containers/{id}/logs"): ("containers", "Logs, from the owning host", ["follow", "tail"], None),
    ("GET", "/v1/containers/{id}/stats"): ("containers", "CPU, memory, network, block I/O", [], None),
    ("GET", "/v1/events"): ("events", "Cluster events", [*PAGE, "index", "wait", "stream", "kind"], None),
}

_PARAM_RE = re.compile(r"\{([^}:]+)(?::[^}]+)?\}")


class UndocumentedRoute(RuntimeError):
    pass


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or ""
        out.add((route.method, _PARAM_RE.sub(r"{\1}", path)))
    return out


def document(app: web.Application) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path in sorted(served_routes(app)):
        doc = DOCS.get((method, path))
        if doc is None:
            raise UndocumentedRoute(f"{method} {path} is served but not described in agent/openapi.py")
        tag, summary, query, body = doc
        params = [{"name": p, "in": "path", "required": True, "schema": STR} for p in _PARAM_RE.findall(path)]
        params += [{"name": q, "in": "query", **PARAMS[q]} for q in query]
        op: dict[str, Any] = {
            "tags": [tag], "summary": summary, "operationId": f"{method.lower()}_{path}",
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {}}},
                "4XX": {"description": "Bad request, not found or conflict",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "503": {"description": "No leader or no quorum",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        }
        if params:
            op["parameters"] = params
        if body:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{body}"}}}}
        if method == "POST" and path in ("/v1/stacks", "/v1/services"):
            op["responses"]["201"] = {"description": "Created", "content": {"application/json": {}}}
        paths.setdefault(path, {})[method.lower()] = op
    return {"openapi": "3.1.0", "info": {"title": "Corral agent API", "version": __version__},
            "paths": paths, "components": {"schemas": SCHEMAS}}


DOC_KEY = web.AppKey("openapi", dict)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[DOC_KEY])


def add_routes(app: web.Application) -> None:
    """Call last: the document is built from every route added before, once, at start-up."""
    app.router.add_get("/v1/openapi.json", openapi)
    app[DOC_KEY] = document(app)
