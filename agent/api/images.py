"""Images: registries' credentials, the catalog of images the cluster distributes itself, and the
agents' transfer of a catalog tarball (``agent/node/images.py`` does the work).

- ``POST /v1/registries`` ``{"host", "username", "password"}`` keeps a registry's credentials, the
  password sealed with the cluster secret; nothing returns it (``GET`` shows the host and the user).
- ``POST /v1/images`` takes a ``docker save`` tarball (streamed, at most ``MAX_UPLOAD``), loads it into
  this host's engine, keeps it, and adds it to the catalog: hosts that are placed a container of it
  later fetch it from a peer. ``GET /v1/images`` lists the catalog and which hosts hold each image.
- ``GET /v1/internal/images/{digest}`` sends a tarball to another agent (``Range`` to resume), or says
  whom to ask instead (503 with ``redirect``): only with a membership proof sealed with the cluster key.
  An asker that sends ``Corral-Bulk: 1`` gets a ticket for the holder's bulk channel instead of the body
  (200 ``{"bulk": {"port", "ticket"}}``: ``agent/node/bulk.py``).
- ``GET /v2/``, ``GET|HEAD /v2/corral/peer/manifests/{ref}``, ``GET|HEAD /v2/corral/peer/blobs/{digest}``:
  a catalog image's manifest and blobs by digest, from this host's tarball, as a registry serves them:
  what a peer that lacks only some of its layers fetches (``agent/node/peerpull.py``; a node certificate
  and a pull grant sealed with the cluster key as the Basic password).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time

from aiohttp import web

from agent.api.auth import authorize, write
from agent.api.body import json_object
from agent.api.deps import DEPS, ApiDeps
from agent.api.params import ID, NAME, StrParam
from agent.api.views import page
from agent.errors import BadRequest, Forbidden, NotFound, Unavailable
from agent.model.commands import ImageRemove, RegistryRemove, RegistrySet
from agent.model.images import CatalogImage, Registry, check_registry_host
from agent.model.policy import Permission
from agent.node import bulk, peerpull, transfer
from agent.node.docker import BuildFailed
from agent.node.images import MEMBER_HEADER, REGISTRY_PURPOSE, RELAY_HEADER, ImageError, ImageManager, proof_ok
from mesh import sealing

MAX_UPLOAD = 8 * 2**30
MAX_PASSWORD = 1024


def _manager(deps: ApiDeps) -> ImageManager:
    if deps.images is None:
        raise Unavailable("this agent moves no images (it runs without an engine)")
    return deps.images


def registry_view(registry: Registry) -> dict[str, object]:
    return {"host": registry.host, "username": registry.username, "created": registry.created}


def image_view(image: CatalogImage) -> dict[str, object]:
    return {"id": image.id, "tags": list(image.tags), "digest": image.digest, "size": image.tar_size,
            "holders": list(image.holders), "source": image.source, "created": image.created}


# ---------------------------------------------------------------------- registries


async def list_registries(request: web.Request) -> web.Response:
    registries = request.app[DEPS].replica.state.images.registries
    return page(request, (registry_view(r) for r in sorted(registries.values(), key=lambda r: r.host)))


async def set_registry(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    body = await json_object(request, ("host", "username", "password"))
    host, username, password = body.get("host"), body.get("username"), body.get("password")
    if not isinstance(host, str):
        raise BadRequest("host is required: the registry as image references name it (registry.example:5000)",
                         field="host")
    check_registry_host(host)
    if not isinstance(username, str) or not username:
        raise BadRequest("username is required", field="username")
    if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD:
        raise BadRequest(f"password is required: 1-{MAX_PASSWORD} characters", field="password")
    sealed = sealing.seal(deps.secret, REGISTRY_PURPOSE, password.encode())
    await write(request, RegistrySet(host, username, sealed))
    return web.json_response(registry_view(deps.replica.state.images.registries[host]), status=201)


async def remove_registry(request: web.Request) -> web.Response:
    host = NAME.get(request)
    if host not in request.app[DEPS].replica.state.images.registries:
        raise NotFound(f"no registry {host} has credentials here", field="host")
    await write(request, RegistryRemove(host))
    return web.json_response({"removed": host})


# ---------------------------------------------------------------------- the catalog


async def list_images(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    catalog = deps.replica.state.images.catalog
    return page(request, (image_view(i) for i in sorted(catalog.values(), key=lambda i: (i.tags, i.id))))


async def image_status(request: web.Request) -> web.Response:
    """What this host's image manager is doing: pulls and fetches, what it sends to whom, counters."""
    return web.json_response(_manager(request.app[DEPS]).status())


async def load_image(request: web.Request) -> web.Response:
    """A ``docker save`` tarball (the request body, streamed) into the catalog, held by this host."""
    deps = request.app[DEPS]
    authorize(request, Permission.DEPLOY)  # any environment: images are the cluster's
    manager = _manager(deps)

    try:
        add = await manager.receive_upload(request.content.iter_chunked(256 * 1024), request.content_length,
                                           MAX_UPLOAD)
    except ImageError as exc:
        raise BadRequest(exc.reason, field="body") from None
    try:
        await write(request, add)
    finally:
        manager.pending.pop(add.digest, None)  # in the catalog now, or an orphan the next sync removes
    return web.json_response(image_view(deps.replica.state.images.catalog[add.id]), status=201)


BUILD_TAG = StrParam("tag", "the image's tag (name:tag)", required=True, max_length=255,
                     pattern=r"^[a-z0-9]+([._/-][a-z0-9]+)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DOCKERFILE = StrParam("dockerfile", "the Dockerfile's path in the context", max_length=255)
BUILD_ARGS = StrParam("args", "build arguments: a JSON map of strings", max_length=4096)
MAX_CONTEXT = 256 * 2**20
FROM_RE = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)", re.IGNORECASE | re.MULTILINE)


def _base_images(context: bytes, dockerfile: str) -> list[str]:
    """The images a build context's Dockerfile starts FROM (BadRequest if it has no Dockerfile)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(context), mode="r:*") as tar:
            member = tar.extractfile(dockerfile.removeprefix("./"))
            text = member.read(1 << 20).decode(errors="replace") if member is not None else None
    except KeyError:
        text = None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadRequest(f"the build context is not a tar archive: {exc}", field="body") from None
    if text is None:
        raise BadRequest(f"the build context has no {dockerfile}", field="dockerfile")
    return [m for m in FROM_RE.findall(text) if m.lower() != "scratch" and "$" not in m]


async def build_image(request: web.Request) -> web.Response:
    """Build a context (a tar, the body) with this host's Docker, tagged ``tag``; the image goes into the
    catalog (source ``build``) and reaches other hosts peer to peer. Its FROM images that the catalog
    holds are fetched from peers first (a build never asks a registry for what the cluster has)."""
    deps = request.app[DEPS]
    authorize(request, Permission.DEPLOY)
    manager = _manager(deps)
    tag, dockerfile = BUILD_TAG.get(request), DOCKERFILE.find(request) or "Dockerfile"
    try:
        args = json.loads(BUILD_ARGS.find(request) or "{}")
    except ValueError:
        args = None
    if not isinstance(args, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in args.items()):
        raise BadRequest("args is a JSON map of strings", field="args")
    if request.content_length is not None and request.content_length > MAX_CONTEXT:
        raise BadRequest(f"a build context is at most {MAX_CONTEXT // 2**20} MiB", field="body")
    context = await request.content.read(MAX_CONTEXT + 1)
    if len(context) > MAX_CONTEXT:
        raise BadRequest(f"a build context is at most {MAX_CONTEXT // 2**20} MiB", field="body")
    for base in _base_images(context, dockerfile):
        image = deps.replica.state.images.by_reference(base)
        if image is not None:
            job = await manager.get_now(image)
            if job.error is not None:
                raise Unavailable(f"the build needs {base}, which this host could not fetch: {job.error}")
    try:
        output = await manager.build(context, tag, dockerfile, args)
        add = await manager.keep_local(tag, "build")
    except BuildFailed as exc:
        raise BadRequest(f"the build failed: {exc.reason}" + (f"\n{exc.output}" if exc.output else ""),
                         field="body") from None
    except ImageError as exc:
        raise BadRequest(exc.reason, field="body") from None
    try:
        await write(request, add)
    finally:
        manager.pending.pop(add.digest, None)
    return web.json_response({**image_view(deps.replica.state.images.catalog[add.id]), "output": output[-4000:]},
                             status=201)


async def fetch_image(request: web.Request) -> web.Response:
    """This host gets a catalog image now (from its peers), and keeps it: answered once it is here."""
    deps = request.app[DEPS]
    authorize(request, Permission.DEPLOY)
    image = await _catalog_image(deps, ID.get(request))
    job = await _manager(deps).get_now(image)
    if job.error is not None:
        raise Unavailable(job.error, field="id")
    return web.json_response({"image": image.id, "host": deps.node.name, "detail": job.describe(),
                              "resumed": list(job.resumed)})


async def _catalog_image(deps: ApiDeps, reference: str) -> CatalogImage:
    """The catalog image ``reference`` names; if this replica has not heard of it, it asks the leader how
    far the log is and looks again (an image just loaded through another host), then 404."""
    image = deps.replica.state.images.by_reference(reference)
    if image is None:
        await deps.replica.consistent()
        image = deps.replica.state.images.by_reference(reference)
    if image is None:
        raise NotFound(f"no image {reference} in the catalog", field="id")
    return image


async def remove_image(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    image = await _catalog_image(deps, ID.get(request))
    await write(request, ImageRemove(image.id))
    return web.json_response({"removed": image.id})


# ---------------------------------------------------------------------- agent to agent


async def send_tarball(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    manager = _manager(deps)
    digest = ID.get(request)
    if not proof_ok(deps.replica.sealer, request.headers.get(MEMBER_HEADER), digest, time.time()):
        raise Forbidden("a tarball goes to members only: no valid membership proof")
    asker = request.headers.get("Corral-Host", request.remote or "?")
    size = manager.size_of(digest)
    if size is None:
        raise NotFound(f"this host holds no tarball {digest[:16]}", field="id")
    offset = transfer.parse_range(request.headers.get("Range"), size)
    if offset is None:
        return web.json_response({"error": "bad_request", "message": f"Range is bytes=N- with N below {size}"},
                                 status=416, headers={"Content-Range": f"bytes */{size}"})
    admission = manager.admission(digest, asker, offset)
    if not admission.serve:
        return web.json_response({"error": "unavailable", "message": admission.reason,
                                  "redirect": list(admission.redirect)}, status=503)
    if request.headers.get(bulk.HEADER) == "1":
        offer = manager.offer_bulk(digest, asker, offset)
        if offer is not None:  # the bytes go over the bulk channel (agent/node/bulk.py)
            return web.json_response({"bulk": offer}, headers={bulk.HEADER: "1"})
    response = web.StreamResponse(status=206, headers={
        "Content-Type": "application/x-tar", "Content-Range": f"bytes {offset}-{size - 1}/{size}",
        "Content-Length": str(size - offset), RELAY_HEADER: "1" if manager.relays(digest) else "0"})
    await response.prepare(request)
    async for chunk in manager.send(digest, asker, offset):
        await response.write(chunk)
    await response.write_eof()
    return response


# ---------------------------------------------------------------------- blobs by digest (agent/node/peerpull.py)

_REGISTRY_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}


def _registry_error(status: int, code: str, message: str, challenge: bool = False) -> web.Response:
    """A registry's error (its ``errors`` list, which an engine reads) with ours beside it."""
    headers = dict(_REGISTRY_HEADERS)
    if challenge:
        headers["WWW-Authenticate"] = 'Basic realm="corral peers"'
    body = {"error": code.lower(), "message": message, "errors": [{"code": code, "message": message}]}
    return web.json_response(body, status=status, headers=headers)


def _pull_grant(request: web.Request) -> str | web.Response:
    """The image id of the request's pull grant, or the 401 that asks for one."""
    credentials = peerpull.basic_credentials(request.headers.get("Authorization"))
    if credentials is None:
        return _registry_error(401, "UNAUTHORIZED", "a peer asks with a pull grant as its password",
                               challenge=True)
    image_id = peerpull.granted(request.app[DEPS].replica.sealer, credentials[1], time.time())
    if image_id is None:
        return _registry_error(401, "UNAUTHORIZED", "the pull grant does not open with this cluster's key, "
                               "or is too old", challenge=True)
    return image_id


async def registry_ping(request: web.Request) -> web.Response:
    _manager(request.app[DEPS])
    grant = _pull_grant(request)
    if isinstance(grant, web.Response):
        return grant
    return web.json_response({}, headers=_REGISTRY_HEADERS)


async def _granted_index(request: web.Request) -> tuple[ImageManager, peerpull.Index] | web.Response:
    manager = _manager(request.app[DEPS])
    image_id = _pull_grant(request)
    if isinstance(image_id, web.Response):
        return image_id
    try:
        index = await manager.index(image_id)
    except ImageError as exc:
        return _registry_error(404, "MANIFEST_UNKNOWN", exc.reason)
    return manager, index


async def registry_manifest(request: web.Request) -> web.StreamResponse:
    found = await _granted_index(request)
    if isinstance(found, web.Response):
        return found
    _, index = found
    ref = ID.get(request)
    if ref != index.manifest_digest and peerpull.tag_image_id(ref) != index.image_id:
        return _registry_error(404, "MANIFEST_UNKNOWN", f"the pull grant is for {index.image_id[:19]}, not {ref[:80]}")
    headers = {**_REGISTRY_HEADERS, "Content-Type": peerpull.MANIFEST_TYPE,
               "Docker-Content-Digest": index.manifest_digest}
    if request.method == "HEAD":
        return web.Response(headers={**headers, "Content-Length": str(len(index.manifest))})
    return web.Response(body=index.manifest, headers=headers)


async def registry_blob(request: web.Request) -> web.StreamResponse:
    found = await _granted_index(request)
    if isinstance(found, web.Response):
        return found
    manager, index = found
    blob = index.blob(ID.get(request))
    if blob is None:
        return _registry_error(404, "BLOB_UNKNOWN", f"image {index.image_id[:19]} has no blob {ID.get(request)[:80]}")
    span = peerpull.parse_range(request.headers.get("Range"), blob.size)
    if span is None:
        message = f"Range is bytes=N- or bytes=N-M below {blob.size}"
        return web.json_response({"error": "bad_request", "message": message,
                                  "errors": [{"code": "BLOB_UNKNOWN", "message": "range not satisfiable"}]},
                                 status=416, headers={"Content-Range": f"bytes */{blob.size}"})
    start, end = span
    headers = {**_REGISTRY_HEADERS, "Content-Type": "application/octet-stream", "Docker-Content-Digest": blob.digest,
               "Accept-Ranges": "bytes", "Content-Length": str(end - start + 1)}
    ranged = request.headers.get("Range") is not None
    if ranged:
        headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
    response = web.StreamResponse(status=206 if ranged else 200, headers=headers)
    if request.method == "HEAD":
        return response
    if not manager.blob_slot():
        return _registry_error(503, "TOOMANYREQUESTS", f"this host sends {peerpull.BLOB_STREAMS} blobs already")
    await response.prepare(request)
    async for chunk in manager.send_blob(index, blob, start, end + 1):
        await response.write(chunk)
    await response.write_eof()
    return response


__all__ = ["MAX_UPLOAD", "build_image", "fetch_image", "image_status", "image_view", "list_images", "list_registries",
           "load_image", "registry_blob", "registry_manifest", "registry_ping", "registry_view", "remove_image",
           "remove_registry", "send_tarball", "set_registry"]
