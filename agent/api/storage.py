"""Stack deploys (a whole compose file at once), volumes, configs and secrets, and the bind-mount setting.

- ``POST /v1/stacks/{id}/deploy`` ``{"environment", "services": {NAME: SPEC}, "configs": {NAME: {"secret",
  "files": [{"path", "data"}]}}, "prune"}`` (``data`` base64; ``path`` ``""`` for a single file) makes or
  updates the stack named ``id`` whole, or changes nothing and says why; ``?dry_run=true`` says what it
  would make, change and leave, and changes nothing. A secret's bytes are sealed here, with the cluster
  secret, before they are proposed: no route shows them back.
- ``/v1/volumes``: list, inspect, create (external volumes, ``corral volume create``) and remove.
- ``/v1/configs``: list (never a secret's bytes), inspect (a config's files with ``?content=true``),
  create (a config or secret of the environment, not of a stack) and remove.
- ``/v1/settings``: the cluster's settings (the host folders services may bind-mount); administrators change them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

from aiohttp import web

from agent.api.auth import authorize, grants, write
from agent.api.deps import DEPS
from agent.api.params import CONTENT, DRY_RUN, ID, IN_ENVIRONMENT, NAME
from agent.api.views import page, readable, stack_view, wire
from agent.errors import BadRequest, NotFound
from agent.model import spec as specs
from agent.model.commands import (
    BindPathsSet,
    ConfigFiles,
    ConfigRemove,
    ConfigSet,
    StackDeploy,
    VolumeCreate,
    VolumeRemove,
)
from agent.model.errors import bad_request
from agent.model.policy import Permission
from agent.model.state import ClusterState
from agent.model.storage import MAX_CONFIG, SECRET_PURPOSE, Config, Volume
from mesh import sealing

MAX_DEPLOY_BODY = 24 * 2**20
"""A deploy's body: its specs and its configs' files in base64 (each config at most 512 KiB)."""


async def _body(request: web.Request, allowed: tuple[str, ...], limit: int = 2**20) -> dict[str, object]:
    """The JSON object body, up to ``limit`` bytes (413 beyond), with only the ``allowed`` fields."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        body = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the request body is not JSON", field="body") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", field="body")
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise BadRequest(f"{unknown[0]} is not a field of this request", field=unknown[0])
    return body


def _configs(raw: object, secret_key: bytes, field: str = "configs") -> tuple[ConfigFiles, ...]:
    """``{NAME: {"secret": bool, "files": [{"path": "", "data": BASE64}]}}`` as commands' configs (a
    secret's bytes sealed)."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise BadRequest(f"{field} is a map of name → {{secret, files}}", field=field)
    out = []
    for name, body in sorted(raw.items()):
        where = f"{field}.{name}"
        if not isinstance(body, Mapping) or not isinstance(body.get("files"), list) \
                or set(body) - {"secret", "files"}:
            raise BadRequest(f"{where} is {{\"secret\": bool, \"files\": [{{\"path\", \"data\"}}]}}", field=where)
        secret = body.get("secret", False)
        if not isinstance(secret, bool):
            raise BadRequest(f"{where}.secret must be true or false", field=f"{where}.secret")
        files = []
        for i, item in enumerate(body["files"]):
            if not isinstance(item, Mapping) or not isinstance(item.get("path"), str) \
                    or not isinstance(item.get("data"), str) or set(item) - {"path", "data"}:
                raise BadRequest(f"{where}.files[{i}] is {{\"path\": str, \"data\": base64}}", field=f"{where}.files")
            try:
                data = base64.b64decode(item["data"], validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest(f"{where}.files[{i}].data is not base64", field=f"{where}.files") from None
            if len(data) > MAX_CONFIG:
                raise BadRequest(f"{where} is over {MAX_CONFIG // 1024} KiB", field=where)
            files.append((item["path"], sealing.seal_deterministic(secret_key, SECRET_PURPOSE, data) if secret
                          else data))
        out.append(ConfigFiles(str(name), tuple(files), secret))
    return tuple(out)


# ---------------------------------------------------------------------- deploys


async def deploy_stack(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    state = deps.replica.state
    body = await _body(request, ("environment", "services", "configs", "prune"), MAX_DEPLOY_BODY)
    environment = specs.name(body.get("environment", "default"), "environment")
    authorize(request, Permission.DEPLOY, environment, hidden=("environment", environment))
    key = ID.get(request)
    existing = next((s for s in state.stacks.values() if s.environment == environment and key in (s.name, s.id)),
                    None)
    name = existing.name if existing else specs.name(key, "name")
    services = body.get("services")
    if not isinstance(services, Mapping) or not services or not all(isinstance(v, Mapping) for v in services.values()):
        raise BadRequest("services is a map of name → service spec, at least one", field="services")
    prune = body.get("prune", False)
    if not isinstance(prune, bool):
        raise BadRequest("prune must be true or false", field="prune")
    cmd = StackDeploy(name, environment, {str(k): dict(v) for k, v in services.items()},
                      _configs(body.get("configs"), deps.secret), prune)
    plan = state.check_deploy(cmd)  # every error, before anything is proposed
    if DRY_RUN.get(request):
        return web.json_response({**plan.to_view(), "dry_run": True})
    outcome = await write(request, cmd)
    assert outcome.id is not None
    return web.json_response({**plan.to_view(), "dry_run": False,
                              "stack_view": stack_view(deps.replica.state, deps.replica.state.stacks[outcome.id])})


# ---------------------------------------------------------------------- volumes


def volume_view(state: ClusterState, volume: Volume) -> dict[str, object]:
    users = state.volume_users(volume.environment, volume.name)
    return {**wire(volume), "id": volume.key, "used_by": users,
            "state": "removing" if volume.removing else "ready" if volume.host else "not made yet"}


def _environment(request: web.Request) -> str:
    return specs.name(IN_ENVIRONMENT.find(request) or "default", "environment")


def _volume(request: web.Request) -> Volume:
    state, environment = request.app[DEPS].replica.state, _environment(request)
    volume = state.storage.volume(environment, NAME.get(request))
    if volume is None or not readable(grants(request), environment):
        raise NotFound(f"no volume {NAME.get(request)!r} in environment {environment}", field="name")
    return volume


async def list_volumes(request: web.Request) -> web.Response:
    state, g = request.app[DEPS].replica.state, grants(request)
    wanted = IN_ENVIRONMENT.find(request)
    rows = (volume_view(state, v) for v in sorted(state.storage.volumes.values(), key=lambda v: v.key)
            if readable(g, v.environment) and wanted in (None, v.environment))
    return page(request, rows)


async def get_volume(request: web.Request) -> web.Response:
    return web.json_response(volume_view(request.app[DEPS].replica.state, _volume(request)))


async def create_volume(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    body = await _body(request, ("name", "environment", "host", "labels"))
    environment = specs.name(body.get("environment", "default"), "environment")
    authorize(request, Permission.DEPLOY, environment, hidden=("environment", environment))
    name, host = body.get("name"), body.get("host")
    if not isinstance(name, str):
        raise BadRequest("name is required", field="name")
    if host is not None and not isinstance(host, str):
        raise BadRequest("host is a host's name", field="host")
    labels = specs.str_map(body.get("labels"), "labels")
    outcome = await write(request, VolumeCreate(name, environment, host, labels))
    assert outcome.id is not None
    return web.json_response(volume_view(deps.replica.state, deps.replica.state.storage.volumes[outcome.id]),
                             status=201)


async def remove_volume(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    volume = _volume(request)
    authorize(request, Permission.DEPLOY, volume.environment)
    await write(request, VolumeRemove(volume.name, volume.environment))
    gone = deps.replica.state.storage.volumes.get(volume.key)
    return web.json_response({"removed": volume.key, "state": "removing" if gone else "removed"})


# ---------------------------------------------------------------------- configs


def config_view(config: Config, content: bool = False) -> dict[str, object]:
    out: dict[str, object] = {
        "id": config.key, "name": config.name, "environment": config.environment, "stack": config.stack,
        "secret": config.secret, "digest": config.digest, "size": config.size, "created": config.created,
        "updated": config.updated, "files": [path for path, _ in config.files]}
    if content and not config.secret:
        out["content"] = [{"path": path, "data": base64.b64encode(data).decode()} for path, data in config.files]
    return out


def _config(request: web.Request) -> Config:
    state, environment = request.app[DEPS].replica.state, _environment(request)
    config = state.storage.configs.get(f"{environment}/{NAME.get(request)}")
    if config is None or not readable(grants(request), environment):
        raise NotFound(f"no config or secret {NAME.get(request)!r} in environment {environment}", field="name")
    return config


async def list_configs(request: web.Request) -> web.Response:
    state, g = request.app[DEPS].replica.state, grants(request)
    wanted = IN_ENVIRONMENT.find(request)
    return page(request, (config_view(c) for c in sorted(state.storage.configs.values(), key=lambda c: c.key)
                          if readable(g, c.environment) and wanted in (None, c.environment)))


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(config_view(_config(request), CONTENT.get(request)))


async def create_config(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    body = await _body(request, ("name", "environment", "secret", "files"), 2 * MAX_CONFIG)
    environment = specs.name(body.get("environment", "default"), "environment")
    authorize(request, Permission.DEPLOY, environment, hidden=("environment", environment))
    name = body.get("name")
    if not isinstance(name, str):
        raise BadRequest("name is required", field="name")
    (config,) = _configs({name: {k: body[k] for k in ("secret", "files") if k in body}}, deps.secret, "config")
    outcome = await write(request, ConfigSet(environment, None, config))
    assert outcome.id is not None
    return web.json_response(config_view(deps.replica.state.storage.configs[outcome.id]), status=201)


async def remove_config(request: web.Request) -> web.Response:
    config = _config(request)
    authorize(request, Permission.DEPLOY, config.environment)
    if config.stack is not None:
        raise bad_request(f"{config.name} is stack {config.stack}'s: it goes with the stack (or a deploy without "
                          "it)", "name")
    await write(request, ConfigRemove(config.name, config.environment))
    return web.json_response({"removed": config.key})


# ---------------------------------------------------------------------- settings


async def get_settings(request: web.Request) -> web.Response:
    state = request.app[DEPS].replica.state
    return web.json_response({"bind_paths": list(state.storage.bind_paths)})


async def change_settings(request: web.Request) -> web.Response:
    body = await _body(request, ("bind_paths",))
    paths = body.get("bind_paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise BadRequest("bind_paths is a list of absolute paths", field="bind_paths")
    await write(request, BindPathsSet(tuple(paths)))
    return await get_settings(request)


__all__ = ["change_settings", "create_config", "create_volume", "deploy_stack", "get_config", "get_settings",
           "get_volume", "list_configs", "list_volumes", "remove_config", "remove_volume"]
