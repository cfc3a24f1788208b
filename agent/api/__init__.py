"""The HTTP API every agent serves (``/v1``).

    app         create_app(deps): the app over the route table, its middlewares
    routes      every route, in one table (what the OpenAPI document is made from)
    params      query and path parameters: parsed and documented by the same objects
    schemas     request and response bodies as JSON schemas
    openapi     the OpenAPI 3.1 document
    errors      the one error middleware
    deps        what handlers use (ApiDeps) and the app's keys
    forward     writes to the leader, logs and stats from a container's host
    exec_wire   the websocket protocol of an exec (frames, control messages, the refused-upgrade middleware)
    views       the JSON form of the model's records, pagination, lookups by id or name
    body        request bodies
    auth        who is asking (bearer credentials) and may they (the policy's helpers for handlers)
    passwords   Argon2id off the loop with bounded concurrency, the failed-login limiter, the counters
    node, cluster, kv, hosts, stacks, services, containers, execs, events, users (logins, users, keys, teams,
    environments' members), join (join tokens, the join exchange, node certificates): the handlers
"""

__all__ = ["app", "auth", "deps", "errors", "exec_wire", "forward", "openapi", "params", "passwords", "routes",
           "schemas", "views"]
