"""Environments, hosts, stacks, services, containers and events: the part of the API users came for.

Reads come from this node's replica (every response carries ``X-Corral-Index``); writes are
validated here (a 400 names the field), then proposed through Raft on the leader (a follower
forwards the request). Collections take ``?limit=&offset=`` and filters (``stack``, ``service``,
``host``, ``state``) and answer ``{"items": […], "total": N, "limit": L, "offset": O}``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
from aiohttp import web

from agent import spec as specs
from agent.api_kv import CLUSTER_KEY, forward_to_leader
from agent.cluster import Cluster
from agent.docker import DockerEngine
from agent.errors import BadRequest, Conflict, NotFound, Unavailable
from agent.state import command

MAX_LIMIT = 1000
ERROR_STATUS = {"not_found": NotFound, "conflict": Conflict}


def _cluster(request: web.Request) -> Cluster:
    return request.app[CLUSTER_KEY]


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the request body is not JSON", field="body") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", field="body")
    return body


def _page(request: web.Request, items: Iterable[dict[str, Any]], filters: Iterable[str]) -> web.Response:
    rows = list(items)
    for name in filters:
        wanted = request.query.get(name)
        if wanted is not None:
            rows = [r for r in rows if str(r.get(name)) == wanted or r.get(f"{name}_name") == wanted]
    try:
        limit = int(request.query.get("limit", "100"))
        offset = int(request.query.get("offset", "0"))
    except ValueError:
        raise BadRequest("limit and offset must be whole numbers", field="limit") from None
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise BadRequest(f"limit must be 1-{MAX_LIMIT} and offset ≥ 0", field="limit")
    return web.json_response({"items": rows[offset:offset + limit], "total": len(rows), "limit": limit,
                              "offset": offset})


async def _write(request: web.Request, op: str, **fields: Any) -> dict[str, Any]:
    """Propose on the leader and map an error result to the matching 4xx."""
    result = await _cluster(request).write(command(op, **fields))
    if not result.get("ok"):
        error = ERROR_STATUS.get(result.get("error", ""), BadRequest)
        raise error(result.get("message", "refused"), field=result.get("field"))
    return result


def writes(handler: Callable[[web.Request], Any]) -> Callable[[web.Request], Any]:
    """Run a write handler on the leader; on a follower, forward the request there."""
    async def wrapper(request: web.Request) -> web.StreamResponse:
        cluster = _cluster(request)
        if not cluster.is_leader:
            return await forward_to_leader(request, cluster)
        response: web.StreamResponse = await handler(request)
        return response

    return wrapper


# ------------------------------------------------------------------ views


def stack_view(cluster: Cluster, stack: dict[str, Any]) -> dict[str, Any]:
    services = [s for s in cluster.state.services.values() if s["stack"] == stack["id"]]
    return {**stack, "services": [s["id"] for s in services]}


def service_view(cluster: Cluster, service: dict[str, Any]) -> dict[str, Any]:
    state = cluster.state
    instances = state.instances_of(service["id"])
    running = sum(1 for i in instances if i["status"] == "running")
    checked = bool(service["spec"].get("health_check"))
    healthy = sum(1 for i in instances if i["status"] == "running" and i.get("health") == "healthy")
    return {**service, "stack_name": state.stacks[service["stack"]]["name"], "scale": service["spec"]["scale"],
            "running": running, "healthy": healthy if checked else None,
            "containers": [i["id"] for i in instances]}


def container_view(cluster: Cluster, inst: dict[str, Any]) -> dict[str, Any]:
    state = cluster.state
    service = state.services.get(inst["service"], {})
    return {**inst, "name": state.container_name(inst) if service else inst["id"],
            "service_name": service.get("name"), "stack": service.get("stack"),
            "stack_name": state.stacks.get(service.get("stack", ""), {}).get("name"), "state": inst["status"]}


def _find(collection: dict[str, dict[str, Any]], key: str, what: str, name_of: Callable[[dict[str, Any]], str]
          ) -> dict[str, Any]:
    if key in collection:
        return collection[key]
    matches = [v for v in collection.values() if name_of(v) == key]
    if len(matches) == 1:
        return matches[0]
    raise NotFound(f"no {what} {key!r}", field=what)


def find_service(cluster: Cluster, key: str) -> dict[str, Any]:
    """By id, ``stack/service`` (``?`` query form, as paths cannot hold ``/``) or a unique service name."""
    state = cluster.state
    return _find(state.services, key, "service",
                 lambda s: s["name"] if "/" not in key else f"{state.stacks[s['stack']]['name']}/{s['name']}")


def find_stack(cluster: Cluster, key: str) -> dict[str, Any]:
    return _find(cluster.state.stacks, key, "stack", lambda s: str(s["name"]))


# ------------------------------------------------------------------ handlers


async def list_environments(request: web.Request) -> web.Response:
    return _page(request, _cluster(request).state.environments.values(), ())


async def list_hosts(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    rows = []
    for host in cluster.state.hosts.values():
        count = sum(1 for i in cluster.state.instances.values() if i["host"] == host["name"])
        rows.append({**host, "containers": count})
    return _page(request, sorted(rows, key=lambda h: h["name"]), ("state",))


async def get_host(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    return web.json_response(_find(cluster.state.hosts, request.match_info["name"], "host", lambda h: h["name"]))


async def list_stacks(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    return _page(request, (stack_view(cluster, s) for s in cluster.state.stacks.values()), ("environment",))


async def get_stack(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    return web.json_response(stack_view(cluster, find_stack(cluster, request.match_info["id"])))


@writes
async def create_stack(request: web.Request) -> web.Response:
    body = await _body(request)
    specs.name(body.get("name"))
    result = await _write(request, "stack.create", name=body["name"],
                          environment=body.get("environment", "default"))
    cluster = _cluster(request)
    return web.json_response(stack_view(cluster, cluster.state.stacks[result["id"]]), status=201)


@writes
async def delete_stack(request: web.Request) -> web.Response:
    stack = find_stack(_cluster(request), request.match_info["id"])
    await _write(request, "stack.remove", id=stack["id"])
    return web.json_response({"removed": stack["id"]})


async def list_services(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    return _page(request, (service_view(cluster, s) for s in cluster.state.services.values()), ("stack", "state"))


async def get_service(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    return web.json_response(service_view(cluster, find_service(cluster, request.match_info["id"])))


@writes
async def create_service(request: web.Request) -> web.Response:
    body = await _body(request)
    cluster = _cluster(request)
    name = specs.name(body.get("name"))
    stack_key = body.get("stack")
    if not isinstance(stack_key, str):
        raise BadRequest("stack is required (an id or a name)", field="stack")
    stack = find_stack(cluster, stack_key)
    raw = {k: v for k, v in body.items() if k not in ("stack", "name")}
    spec = specs.service_spec(raw)  # 400 naming the field before anything is proposed
    await _check_image(request, spec["image"])
    result = await _write(request, "service.create", stack=stack["id"], name=name, spec=raw)
    return web.json_response(service_view(cluster, cluster.state.services[result["id"]]), status=201)


async def _check_image(request: web.Request, image: str) -> None:
    """No registry is reachable: an image this host's engine does not have is a 400, not a stuck service.

    (Corral moves its images to every host itself, so this host's engine is a fair witness.)
    """
    engine = request.app.get(ENGINE_KEY)
    if engine is None:
        return
    tags = await engine.image_ids()
    wanted = image if ":" in image.rsplit("/", 1)[-1] else image + ":latest"
    if wanted not in tags and image not in tags.values():
        known = ", ".join(sorted(tags)) or "none"
        raise BadRequest(f"unknown image {image!r}: no registry is reachable; images on the hosts: {known}",
                         field="image")


@writes
async def update_service(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    service = find_service(cluster, request.match_info["id"])
    changes = await _body(request)
    if "image" in changes and isinstance(changes["image"], str):
        await _check_image(request, changes["image"])
    await _write(request, "service.update", id=service["id"], spec=changes)
    return web.json_response(service_view(cluster, cluster.state.services[service["id"]]))


@writes
async def scale_service(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    service = find_service(cluster, request.match_info["id"])
    body = await _body(request)
    await _write(request, "service.scale", id=service["id"], scale=body.get("scale"))
    return web.json_response(service_view(cluster, cluster.state.services[service["id"]]))


def _service_action(state: str, restart: bool = False) -> Callable[[web.Request], Any]:
    @writes
    async def action(request: web.Request) -> web.Response:
        cluster = _cluster(request)
        service = find_service(cluster, request.match_info["id"])
        await _write(request, "service.set_state", id=service["id"], state=state, restart=restart)
        return web.json_response(service_view(cluster, cluster.state.services[service["id"]]))

    return action


@writes
async def delete_service(request: web.Request) -> web.Response:
    service = find_service(_cluster(request), request.match_info["id"])
    await _write(request, "service.remove", id=service["id"])
    return web.json_response({"removed": service["id"]})


async def list_containers(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    rows = (container_view(cluster, i) for i in sorted(cluster.state.instances.values(),
                                                       key=lambda i: (i["service"], i["slot"])))
    return _page(request, rows, ("stack", "service", "host", "state"))


def find_container(cluster: Cluster, key: str) -> dict[str, Any]:
    state = cluster.state
    return _find(state.instances, key, "container", lambda i: state.container_name(i)
                 if i["service"] in state.services else "")


async def get_container(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    return web.json_response(container_view(cluster, find_container(cluster, request.match_info["id"])))


@writes
async def delete_container(request: web.Request) -> web.Response:
    inst = find_container(_cluster(request), request.match_info["id"])
    await _write(request, "instance.remove", id=inst["id"])
    return web.json_response({"removed": inst["id"]})


async def events(request: web.Request) -> web.StreamResponse:
    """``?index=N`` only events after N; ``&wait=30s`` blocks for one; ``?stream=1`` streams NDJSON."""
    cluster = _cluster(request)
    try:
        after = int(request.query.get("index", "0") or 0)
    except ValueError:
        raise BadRequest("index must be a whole number", field="index") from None
    if request.query.get("stream"):
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        while True:
            for event in [e for e in cluster.state.events if e["index"] > after]:
                await response.write((json.dumps(event) + "\n").encode())
                after = event["index"]
            await cluster.raft.wait_applied(cluster.applied_index + 1, 15.0)
    if "wait" in request.query and not any(e["index"] > after for e in cluster.state.events):
        await asyncio.wait_for(cluster.raft.wait_applied(max(after, cluster.applied_index) + 1, 30.0), 31.0)
    return _page(request, [e for e in cluster.state.events if e["index"] > after], ("kind",))


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/environments", list_environments)
    r.add_get("/v1/hosts", list_hosts)
    r.add_get("/v1/hosts/{name}", get_host)
    r.add_get("/v1/stacks", list_stacks)
    r.add_post("/v1/stacks", create_stack)
    r.add_get("/v1/stacks/{id}", get_stack)
    r.add_delete("/v1/stacks/{id}", delete_stack)
    r.add_get("/v1/services", list_services)
    r.add_post("/v1/services", create_service)
    r.add_get("/v1/services/{id}", get_service)
    r.add_patch("/v1/services/{id}", update_service)
    r.add_delete("/v1/services/{id}", delete_service)
    r.add_post("/v1/services/{id}/scale", scale_service)
    r.add_post("/v1/services/{id}/stop", _service_action("stopped"))
    r.add_post("/v1/services/{id}/start", _service_action("active"))
    r.add_post("/v1/services/{id}/restart", _service_action("active", restart=True))
    r.add_get("/v1/containers", list_containers)
    r.add_get("/v1/containers/{id}", get_container)
    r.add_delete("/v1/containers/{id}", delete_container)
    r.add_get("/v1/events", events)


# ------------------------------------------------------------------ logs and stats, from the owning host

ENGINE_KEY = web.AppKey("engine", DockerEngine)
HOST_NAME_KEY = web.AppKey("host_name", str)


async def _proxy_to_owner(request: web.Request, host: str) -> web.StreamResponse:
    """Stream the same request from the agent of the host that runs the container."""
    url = _cluster(request).api_of(host)
    if url is None:
        raise Unavailable(f"host {host} is not reachable (no API address known)", field="host")
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    response = web.StreamResponse()
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url + request.path_qs) as upstream:
            response.set_status(upstream.status)
            response.content_type = upstream.content_type
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        if not response.prepared:
            raise Unavailable(f"host {host}'s agent at {url} did not answer: {exc}", field="host") from exc
    return response


def _local_container(request: web.Request) -> tuple[dict[str, Any], str | None]:
    cluster = _cluster(request)
    inst = find_container(cluster, request.match_info["id"])
    return inst, inst.get("container_id")


async def container_logs(request: web.Request) -> web.StreamResponse:
    inst, container_id = _local_container(request)
    if inst["host"] != request.app[HOST_NAME_KEY]:
        return await _proxy_to_owner(request, inst["host"])
    if not container_id:
        raise NotFound(f"container {inst['id']} has not been created on {inst['host']} yet", field="id")
    tail_raw = request.query.get("tail")
    if tail_raw is not None and not tail_raw.isdigit():
        raise BadRequest("tail must be a whole number", field="tail")
    follow = request.query.get("follow") in ("1", "true")
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    engine = request.app[ENGINE_KEY]
    async for line in engine.containers.logs(container_id, int(tail_raw) if tail_raw else None, follow):
        await response.write(line.encode())
    return response


async def container_stats(request: web.Request) -> web.StreamResponse:
    inst, container_id = _local_container(request)
    if inst["host"] != request.app[HOST_NAME_KEY]:
        return await _proxy_to_owner(request, inst["host"])
    if not container_id:
        raise NotFound(f"container {inst['id']} has not been created yet", field="id")
    raw = await request.app[ENGINE_KEY].containers.stats(container_id)
    return web.json_response(summarize_stats(raw))


def summarize_stats(raw: dict[str, Any]) -> dict[str, Any]:
    """CPU %, memory, network and block I/O from one Docker stats sample."""
    cpu, pre = raw.get("cpu_stats", {}), raw.get("precpu_stats", {})
    cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0)
    sys_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    ncpu = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or []) or 1
    nets = raw.get("networks") or {}
    blk = (raw.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    return {
        "cpu_percent": round(cpu_delta / sys_delta * ncpu * 100, 2) if sys_delta > 0 else 0.0,
        "memory": {"usage": raw.get("memory_stats", {}).get("usage", 0),
                   "limit": raw.get("memory_stats", {}).get("limit", 0)},
        "network": {"rx_bytes": sum(n.get("rx_bytes", 0) for n in nets.values()),
                    "tx_bytes": sum(n.get("tx_bytes", 0) for n in nets.values())},
        "block_io": {"read_bytes": sum(b.get("value", 0) for b in blk if b.get("op", "").lower() == "read"),
                     "write_bytes": sum(b.get("value", 0) for b in blk if b.get("op", "").lower() == "write")},
    }


async def host_stats(request: web.Request) -> web.StreamResponse:
    """A host's Docker-side figures: its engine's capacity and the sum over Corral's containers on it."""
    cluster = _cluster(request)
    host = _find(cluster.state.hosts, request.match_info["name"], "host", lambda h: h["name"])
    if host["name"] != request.app[HOST_NAME_KEY]:
        return await _proxy_to_owner(request, host["name"])
    engine = request.app[ENGINE_KEY]
    info = await engine.info()
    containers = [c for c in await engine.containers.list() if c["state"] == "running"]
    samples = await asyncio.gather(*(engine.containers.stats(c["id"]) for c in containers), return_exceptions=True)
    per = [summarize_stats(s) for s in samples if isinstance(s, dict)]
    return web.json_response({
        "host": host["name"],
        "cpus": info.get("NCPU"),
        "memory_total": info.get("MemTotal"),
        "containers": {"running": len(containers), "sampled": len(per)},
        "cpu_percent": round(sum(p["cpu_percent"] for p in per), 2),
        "memory": {"usage": sum(p["memory"]["usage"] for p in per)},
        "network": {k: sum(p["network"][k] for p in per) for k in ("rx_bytes", "tx_bytes")},
        "block_io": {k: sum(p["block_io"][k] for p in per) for k in ("read_bytes", "write_bytes")},
    })


def add_container_io_routes(app: web.Application, engine: DockerEngine, host_name: str) -> None:
    app[ENGINE_KEY] = engine
    app[HOST_NAME_KEY] = host_name
    app.router.add_get("/v1/hosts/{name}/stats", host_stats)
    app.router.add_get("/v1/containers/{id}/logs", container_logs)
    app.router.add_get("/v1/containers/{id}/stats", container_stats)
