"""Images peer to peer (issue 15, agent/node/peerpull.py): a holder's tarball indexed as a registry serves
it (both ``docker save`` layouts, symlinked layers; what cannot be served is refused), pull grants, the
registry routes over real HTTP (and their blob slots), the tar a delta is made of, and between two image
managers over real HTTP: a delta (only the layers the receiver's engine lacks; a fake engine that loads
as Docker does, taking a layer file missing from the tarball only if it has that chain of layers), the
whole tarball when a delta does not pay or breaks off, and a leaf of the relay tree that keeps nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import random
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast
from unittest.mock import ANY

import aiohttp
import pytest
from aiohttp import web

from agent.api.deps import DEPS, ApiDeps
from agent.api.images import registry_blob, registry_manifest, registry_ping, send_tarball
from agent.lab.image import build_base_image
from agent.model.commands import HostRegister, ImageAdd, ImageHeld
from agent.model.state import ClusterState
from agent.node import peerpull
from agent.node.images import MEMBER_HEADER, RELAY_HEADER, ImageManager, Job, Spool, proof
from mesh.keyring import Keyring
from tests.unit.fakes import FakeEngine
from tests.unit.test_images import save_tarball

SECRET = b"k" * 32
HEX_A = "a" * 64

# ---------------------------------------------------------------------- tarballs


def _tar(members: list[tuple[str, bytes | str]]) -> bytes:
    """A tarball of (name, bytes) members; a str is a symlink's target."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def _layer(payload: bytes) -> bytes:
    return _tar([("data", payload)])


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _config(layers: list[bytes]) -> bytes:
    return json.dumps({"rootfs": {"type": "layers", "diff_ids": [_sha(x) for x in layers]}}).encode()


def _legacy(layers: list[bytes], config: bytes | None = None, manifest: object = None,
            symlink_second: bool = False, skip: int | None = None,
            tags: tuple[str, ...] = ("t/x:1",)) -> tuple[bytes, str]:
    """A ``docker save`` of the old layout: HEX.json, ``N/layer.tar`` each, manifest.json."""
    config = config if config is not None else _config(layers)
    hexid = hashlib.sha256(config).hexdigest()
    members: list[tuple[str, bytes | str]] = [(f"{hexid}.json", config)]
    names = [f"l{n}/layer.tar" for n in range(len(layers))]
    for n, (name, layer) in enumerate(zip(names, layers, strict=True)):
        if n == skip:
            continue
        members.append((name, "../l0/layer.tar" if symlink_second and n == 1 else layer))
    if manifest is None:
        manifest = [{"Config": f"{hexid}.json", "RepoTags": list(tags), "Layers": names}]
    members.append(("manifest.json", json.dumps(manifest).encode()))
    return _tar(members), "sha256:" + hexid


def _oci(plain_layer: bytes) -> tuple[bytes, str, bytes]:
    """A Docker 25+ ``docker save`` (blobs/sha256/HEX), its one layer gzip'd: (tarball, image id, gz layer)."""
    gz = gzip.compress(plain_layer, mtime=0)
    config = _config([plain_layer])
    chex, lhex = hashlib.sha256(config).hexdigest(), hashlib.sha256(gz).hexdigest()
    manifest = [{"Config": f"blobs/sha256/{chex}", "RepoTags": ["t/oci:1"], "Layers": [f"blobs/sha256/{lhex}"]}]
    data = _tar([("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), (f"blobs/sha256/{chex}", config),
                 (f"blobs/sha256/{lhex}", gz), ("manifest.json", json.dumps(manifest).encode())])
    return data, "sha256:" + chex, gz


def _at(path: Path, blob: peerpull.Blob) -> bytes:
    with path.open("rb") as f:
        f.seek(blob.offset)
        return f.read(blob.size)


def _check_index(path: Path, index: peerpull.Index, image_id: str, layer_types: list[str]) -> dict[str, object]:
    """Every blob's bytes at its offset hash to its digest; the manifest names them: the manifest."""
    assert index.image_id == image_id and index.config.digest == image_id
    for blob in (index.config, *index.layers):
        assert _sha(_at(path, blob)) == blob.digest, blob
        assert index.blob(blob.digest) == blob
    assert index.blob(_sha(b"nothing")) is None
    document: dict[str, Any] = json.loads(index.manifest)
    assert document["schemaVersion"] == 2 and document["mediaType"] == peerpull.MANIFEST_TYPE
    assert document["config"] == {"mediaType": peerpull.CONFIG_TYPE, "size": index.config.size, "digest": image_id}
    assert document["layers"] == [{"mediaType": t, "size": b.size, "digest": b.digest}
                                  for t, b in zip(layer_types, index.layers, strict=True)]
    assert index.manifest_digest == _sha(index.manifest)
    return document


def test_a_legacy_save_is_indexed_blob_by_blob_at_its_offsets(tmp_path: Path) -> None:
    data, image_id = build_base_image(payload=5000, seed="peerpull")
    path = tmp_path / "base.tar"
    path.write_bytes(data)
    index = peerpull.index_tarball(path)
    _check_index(path, index, image_id, [peerpull.LAYER_TAR, peerpull.LAYER_TAR])
    diff_ids = json.loads(_at(path, index.config))["rootfs"]["diff_ids"]
    assert [b.digest for b in index.layers] == diff_ids, "a plain tar layer's digest is its diff_id"
    other = tmp_path / "other.tar"
    other.write_bytes(build_base_image(payload=5000, seed="another")[0])
    assert peerpull.index_tarball(other).layers[1].digest != index.layers[1].digest


def test_an_oci_save_is_indexed_by_its_blob_names_and_a_gzip_layer_says_so(tmp_path: Path) -> None:
    plain = _layer(os.urandom(3000))
    data, image_id, gz = _oci(plain)
    path = tmp_path / "oci.tar"
    path.write_bytes(data)
    index = peerpull.index_tarball(path)
    _check_index(path, index, image_id, [peerpull.LAYER_GZIP])
    assert index.layers[0].digest == _sha(gz) != _sha(plain), "named by the compressed bytes' digest"
    assert _at(path, index.layers[0]) == gz


def test_a_symlinked_layer_is_served_from_the_member_it_links_to(tmp_path: Path) -> None:
    layer = _layer(b"same" * 500)
    data, image_id = _legacy([layer, layer], symlink_second=True)
    path = tmp_path / "sym.tar"
    path.write_bytes(data)
    index = peerpull.index_tarball(path)
    _check_index(path, index, image_id, [peerpull.LAYER_TAR, peerpull.LAYER_TAR])
    assert index.layers[0].offset == index.layers[1].offset and _at(path, index.layers[1]) == layer


def _two_images() -> bytes:
    return _legacy([_layer(b"x")], manifest=[{"Config": "a.json", "Layers": []}, {"Config": "b.json", "Layers": []}])[0]


@pytest.mark.parametrize(("name", "make", "words"), [
    ("no manifest", lambda: _tar([("x.json", b"{}")]), "no manifest.json"),
    ("two images", _two_images, "exactly one image"),
    ("layers and diff_ids", lambda: _legacy([_layer(b"a"), _layer(b"b")], config=_config([_layer(b"a")]))[0],
     "names 2 layers, the config 1"),
    ("a missing layer", lambda: _legacy([_layer(b"a"), _layer(b"b")], skip=1)[0], "has no l1/layer.tar"),
    ("an xz layer", lambda: _legacy([b"\xfd7zXZ\x00" + b"\x00" * 100])[0], "bzip2 or xz"),
    ("a bzip2 layer", lambda: _legacy([b"BZh91AY&SY" + b"\x00" * 100])[0], "bzip2 or xz"),
    ("a gzip layer named by no digest", lambda: _legacy([gzip.compress(_layer(b"a"))])[0], "not named by its digest"),
    ("not a tarball", lambda: b"garbage" * 200, "cannot be read"),
])
def test_what_a_registry_could_not_serve_is_unservable(tmp_path: Path, name: str, make: object, words: str) -> None:
    path = tmp_path / "bad.tar"
    path.write_bytes(make())  # type: ignore[operator]
    with pytest.raises(peerpull.Unservable) as caught:
        peerpull.index_tarball(path)
    assert words in caught.value.reason, (name, caught.value.reason)


# ---------------------------------------------------------------------- grants, credentials, ranges, tags


def _sealer(secret: bytes = SECRET) -> object:
    return Keyring.from_secret(secret).channel(b"raft")


def test_a_pull_grant_names_its_image_for_its_age_under_this_clusters_key_only() -> None:
    sealer, other = _sealer(), _sealer(b"o" * 32)
    image_id, now = "sha256:" + HEX_A, 1_000_000.0
    good = peerpull.grant(sealer, image_id, now)
    assert peerpull.granted(sealer, good, now + 10) == image_id
    assert peerpull.granted(sealer, good, now + peerpull.GRANT_AGE - 1) == image_id
    assert peerpull.granted(sealer, good, now + peerpull.GRANT_AGE + 1) is None, "too old"
    assert peerpull.granted(sealer, good, now - peerpull.GRANT_AGE - 1) is None, "from the future"
    assert peerpull.granted(other, good, now) is None, "another cluster's key"
    assert peerpull.granted(other, peerpull.grant(other, image_id, now), now) == image_id
    for garbage in ("", "garbage!", "////", base64.urlsafe_b64encode(b"x" * 80).decode()):
        assert peerpull.granted(sealer, garbage, now) is None, garbage
    assert peerpull.granted(sealer, peerpull.grant(sealer, "nginx:latest", now), now) is None, "not a digest"
    assert peerpull.granted(sealer, peerpull.grant(sealer, "sha256:" + "A" * 64, now), now) is None
    sealed_other = base64.urlsafe_b64encode(sealer.seal(f"proof {image_id} {now}".encode())).decode()  # type: ignore[attr-defined]
    assert peerpull.granted(sealer, sealed_other, now) is None, "sealed by us, but no pull grant"
    sealed_no_time = base64.urlsafe_b64encode(sealer.seal(f"pull {image_id}".encode())).decode()  # type: ignore[attr-defined]
    assert peerpull.granted(sealer, sealed_no_time, now) is None


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(("header", "got"), [
    (None, None), ("", None), (_basic("h2:pw"), ("h2", "pw")), (_basic("h2:a:b"), ("h2", "a:b")),
    ("basic " + base64.b64encode(b"u:p").decode(), ("u", "p")), (_basic(":p"), ("", "p")),
    (_basic("nocolon"), None), ("Bearer abc", None), ("Basic ***", None), ("Basic", None),
    ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), None),
])
def test_basic_credentials_are_read_from_an_authorization_header(header: str | None,
                                                                 got: tuple[str, str] | None) -> None:
    assert peerpull.basic_credentials(header) == got


@pytest.mark.parametrize(("header", "span"), [
    (None, (0, 99)), ("bytes=0-", (0, 99)), ("bytes=10-", (10, 99)), ("bytes=10-19", (10, 19)),
    ("bytes=99-99", (99, 99)), ("bytes=90-500", (90, 99)),  # an end past the blob is the blob's end
    ("bytes=100-", None), ("bytes=150-160", None),  # past the end
    ("bytes=20-10", None),  # M < N
    ("bytes=0-1,5-6", None), ("bytes=0-,5-", None),  # several ranges
    ("bytes=-5", None), ("bytes=x-", None), ("bytes=5-x", None), ("bytes=5", None), ("items=0-", None), ("", None),
])
def test_a_blob_range_is_one_span_within_it(header: str | None, span: tuple[int, int] | None) -> None:
    assert peerpull.parse_range(header, 100) == span


def test_tags_name_an_image_by_its_id() -> None:
    image_id = "sha256:" + HEX_A
    assert peerpull.tag_image_id(HEX_A) == image_id
    for bad in ("latest", "A" * 64, "a" * 63, image_id):
        assert peerpull.tag_image_id(bad) is None, bad
    assert peerpull.is_digest(image_id) and not peerpull.is_digest(HEX_A)


# ---------------------------------------------------------------------- the tar a delta is made of


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 5000])
def test_tar_members_and_two_zero_blocks_read_back_exactly(size: int) -> None:
    data = os.urandom(size)
    header = peerpull.tar_header("abc/layer.tar", size)
    assert len(header) == peerpull.TAR_BLOCK
    piece = peerpull.tar_member("abc/layer.tar", data)
    assert piece.startswith(header) and len(piece) % peerpull.TAR_BLOCK == 0
    assert len(piece) == peerpull.TAR_BLOCK + -(-size // peerpull.TAR_BLOCK) * peerpull.TAR_BLOCK
    stream = peerpull.tar_member("c.json", b'{"a":1}') + piece + peerpull.tar_member("manifest.json", b"[]") \
        + bytes(2 * peerpull.TAR_BLOCK)
    with tarfile.open(fileobj=io.BytesIO(stream), mode="r:") as tar:
        members = tar.getmembers()
        assert [(m.name, m.size, m.mode, m.mtime, m.isfile()) for m in members] == [
            ("c.json", 7, 0o644, 0, True), ("abc/layer.tar", size, 0o644, 0, True),
            ("manifest.json", 2, 0o644, 0, True)]
        got = tar.extractfile("abc/layer.tar")
        assert got is not None and got.read() == data
    with tarfile.open(fileobj=io.BytesIO(stream), mode="r|") as tar:  # a stream reader (as an engine's) too
        assert [m.name for m in tar] == ["c.json", "abc/layer.tar", "manifest.json"]


# ---------------------------------------------------------------------- a holder's routes over HTTP


async def _propose(_cmd: object) -> None:
    return None


def _state(*images: tuple[str, str, int, str, tuple[str, ...]]) -> ClusterState:
    """A state with hosts h1..h3 and catalog images (id, digest, size, holder, tags)."""
    state = ClusterState()
    for n, host in enumerate(("h1", "h2", "h3")):
        state.execute(HostRegister(host, f"10.0.0.{n + 1}", {}, 2.0, 2**31, "ab" * 32), state.applied_index + 1)
    for image_id, digest, size, holder, tags in images:
        state.execute(ImageAdd(image_id, tags, digest, size, holder), state.applied_index + 1)
    return state


class _Deps:
    """What the image routes ask of the app's dependencies: the image manager and the cluster's sealer."""

    def __init__(self, manager: ImageManager, sealer: object) -> None:
        self.images = manager
        self.replica = type("Replica", (), {"sealer": sealer})()


@contextlib.asynccontextmanager
async def _serving(manager: ImageManager, sealer: object, log: list[str] | None = None) -> AsyncIterator[str]:
    """The image routes of ``manager`` on loopback; each request's ``METHOD path`` appended to ``log``."""

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        if log is not None:
            log.append(f"{request.method} {request.path}")
        return cast(web.StreamResponse, await handler(request))

    app = web.Application(middlewares=[record])
    app[DEPS] = cast(ApiDeps, _Deps(manager, sealer))
    app.router.add_get("/v1/internal/images/{id}", send_tarball)
    app.router.add_get("/v2/", registry_ping)
    app.router.add_get("/v2/corral/peer/manifests/{id}", registry_manifest)  # and HEAD
    app.router.add_get("/v2/corral/peer/blobs/{id}", registry_blob)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class Holder:
    """h1 holding image A (a tarball kept here, or with ``relay`` only a spool of it: h1 relays it) and
    knowing image B (held by h2 only)."""

    def __init__(self, tmp: Path, clock: list[float] | None = None, image: tuple[bytes, str] | None = None,
                 tags: tuple[str, ...] = ("t/a:1",), relay: bool = False, bulk: bool = False) -> None:
        self.data, self.image_id = image or save_tarball(tags, payload=os.urandom(50_000))
        self.tags = tags
        self.digest = hashlib.sha256(self.data).hexdigest()
        self.other, self.other_id = save_tarball(("t/b:1",), payload=os.urandom(1000))
        self.other_digest = hashlib.sha256(self.other).hexdigest()
        self.state = _state((self.image_id, self.digest, len(self.data), "h1", tags),
                            (self.other_id, self.other_digest, len(self.other), "h2", ("t/b:1",)))
        self.sealer = _sealer()
        now = clock if clock is not None else [1000.0]
        self.manager = ImageManager("h1", self.state, FakeEngine(), tmp, SECRET, self.sealer, None,
                                    lambda _h: None, _propose, clock=lambda: now[0],
                                    bulk_bind=("127.0.0.1", 0) if bulk else None)
        (tmp / "images" / "partial").mkdir(parents=True)
        if relay:  # every byte in its spool, the spool not yet kept: it sends as a relay
            spool = Spool(tmp / "images" / "partial" / f"{self.digest}.tar", len(self.data), len(self.data),
                          complete=True, readable=len(self.data))
            spool.path.write_bytes(self.data)
            self.manager.spools[self.digest] = spool
        else:
            self.manager.cached(self.digest).write_bytes(self.data)

    def auth(self, image_id: str | None = None, sealer: object = None) -> dict[str, str]:
        password = peerpull.grant(sealer or self.sealer, image_id or self.image_id, time.time())
        return {"Authorization": _basic(f"h2:{password}")}


async def test_the_registry_routes_want_a_grant_and_serve_only_its_image(tmp_path: Path) -> None:
    holder = Holder(tmp_path)
    index = await holder.manager.index(holder.image_id)
    tag = holder.image_id.removeprefix("sha256:")
    base = "/v2/corral/peer"
    async with _serving(holder.manager, holder.sealer) as url, aiohttp.ClientSession(url) as http:
        async with http.get("/v2/") as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Basic ")
            assert (await resp.json())["errors"][0]["code"] == "UNAUTHORIZED"
        async with http.get("/v2/", headers=holder.auth(sealer=_sealer(b"o" * 32))) as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Basic ")
        async with http.get("/v2/", headers={"Authorization": _basic("h2:not-a-grant")}) as resp:
            assert resp.status == 401
        async with http.get("/v2/", headers=holder.auth()) as resp:
            assert resp.status == 200 and resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        async with http.get(f"{base}/manifests/{tag}") as resp:
            assert resp.status == 401, "every route wants the grant"
        for ref in (tag, index.manifest_digest):
            async with http.get(f"{base}/manifests/{ref}", headers=holder.auth()) as resp:
                body = await resp.read()
                assert resp.status == 200, body
                assert resp.headers["Content-Type"] == peerpull.MANIFEST_TYPE
                assert resp.headers["Docker-Content-Digest"] == _sha(body) == index.manifest_digest
                assert json.loads(body)["config"]["digest"] == holder.image_id
        async with http.head(f"{base}/manifests/{tag}", headers=holder.auth()) as resp:
            assert resp.status == 200 and await resp.read() == b""
            assert int(resp.headers["Content-Length"]) == len(index.manifest)
            assert resp.headers["Docker-Content-Digest"] == index.manifest_digest
        other_tag = holder.other_id.removeprefix("sha256:")
        async with http.get(f"{base}/manifests/{other_tag}", headers=holder.auth()) as resp:
            assert resp.status == 404, "a grant for A asks B's manifest"
            assert (await resp.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        async with http.get(f"{base}/manifests/{other_tag}", headers=holder.auth(holder.other_id)) as resp:
            assert resp.status == 404, "a grant for B, which this host holds no tarball of"
        async with http.get(f"{base}/manifests/latest", headers=holder.auth()) as resp:
            assert resp.status == 404


async def test_blobs_come_whole_or_from_an_offset_from_the_tarballs_bytes(tmp_path: Path) -> None:
    holder = Holder(tmp_path)
    index = await holder.manager.index(holder.image_id)
    layer = index.layers[0]
    member = holder.data[layer.offset:layer.offset + layer.size]
    assert _sha(member) == layer.digest
    blobs = "/v2/corral/peer/blobs"
    async with _serving(holder.manager, holder.sealer) as url, aiohttp.ClientSession(url) as http:
        async with http.get(f"{blobs}/{layer.digest}") as resp:
            assert resp.status == 401
        async with http.get(f"{blobs}/{layer.digest}", headers=holder.auth()) as resp:
            assert resp.status == 200 and await resp.read() == member
            assert resp.headers["Docker-Content-Digest"] == layer.digest
            assert "Content-Range" not in resp.headers
        async with http.get(f"{blobs}/{index.config.digest}", headers=holder.auth()) as resp:
            assert resp.status == 200 and _sha(await resp.read()) == holder.image_id
        async with http.get(f"{blobs}/{layer.digest}", headers={**holder.auth(), "Range": "bytes=10-"}) as resp:
            assert resp.status == 206 and await resp.read() == member[10:]
            assert resp.headers["Content-Range"] == f"bytes 10-{layer.size - 1}/{layer.size}"
        async with http.get(f"{blobs}/{layer.digest}", headers={**holder.auth(), "Range": "bytes=5-9"}) as resp:
            assert resp.status == 206 and await resp.read() == member[5:10]
        async with http.get(f"{blobs}/{layer.digest}",
                            headers={**holder.auth(), "Range": f"bytes={layer.size}-"}) as resp:
            assert resp.status == 416 and resp.headers["Content-Range"] == f"bytes */{layer.size}"
        async with http.get(f"{blobs}/{_sha(b'unknown')}", headers=holder.auth()) as resp:
            assert resp.status == 404 and (await resp.json())["errors"][0]["code"] == "BLOB_UNKNOWN"
        async with http.head(f"{blobs}/{layer.digest}", headers=holder.auth()) as resp:
            assert resp.status == 200 and await resp.read() == b""
            assert int(resp.headers["Content-Length"]) == layer.size
    assert holder.manager.stats["blob_served_bytes"] == 2 * layer.size + index.config.size - 10 + 5, \
        "each byte served counted, a HEAD none"
    assert holder.manager.blob_streams == 0, "every blob's slot given back"
    assert holder.manager.stats["served_bytes"] == 0, "no tarball sent"


async def test_with_every_blob_slot_taken_a_blob_is_a_503_and_nothing_is_sent(tmp_path: Path) -> None:
    holder = Holder(tmp_path)
    index = await holder.manager.index(holder.image_id)
    layer = index.layers[0]
    blobs = "/v2/corral/peer/blobs"
    holder.manager.blob_streams = peerpull.BLOB_STREAMS - 1
    assert holder.manager.blob_slot()
    async with _serving(holder.manager, holder.sealer) as url, aiohttp.ClientSession(url) as http:
        async with http.get(f"{blobs}/{layer.digest}", headers=holder.auth()) as resp:
            assert resp.status == 200 and len(await resp.read()) == layer.size, "the 8th is sent"
        assert holder.manager.blob_streams == peerpull.BLOB_STREAMS - 1
        holder.manager.blob_streams = peerpull.BLOB_STREAMS
        assert not holder.manager.blob_slot()
        before = holder.manager.stats["blob_served_bytes"]
        for digest in (layer.digest, index.config.digest):
            async with http.get(f"{blobs}/{digest}", headers=holder.auth()) as resp:
                assert resp.status == 503, digest
                assert (await resp.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
        async with http.head(f"{blobs}/{layer.digest}", headers=holder.auth()) as resp:
            assert resp.status == 200, "a HEAD sends no bytes: no slot needed"
        tag = holder.image_id.removeprefix("sha256:")
        async with http.get(f"/v2/corral/peer/manifests/{tag}", headers=holder.auth()) as resp:
            assert resp.status == 200, "a manifest is no blob"
    assert holder.manager.stats["blob_served_bytes"] == before, "nothing sent"
    assert holder.manager.blob_streams == peerpull.BLOB_STREAMS




async def test_a_ninth_blob_at_once_is_a_503(tmp_path: Path) -> None:
    holder = Holder(tmp_path)
    layer = (await holder.manager.index(holder.image_id)).layers[0]
    holder.manager.send_rate = 200_000.0  # each blob takes a quarter of a second: all are open at once
    peak, real = [0], holder.manager.send_blob

    async def watched(*args: Any) -> AsyncIterator[bytes]:
        async for chunk in real(*args):
            peak[0] = max(peak[0], holder.manager.blob_streams)
            yield chunk

    holder.manager.send_blob = watched  # type: ignore[method-assign,assignment]
    async with _serving(holder.manager, holder.sealer) as url, aiohttp.ClientSession(url) as http:
        async def one() -> int:
            async with http.get(f"/v2/corral/peer/blobs/{layer.digest}", headers=holder.auth()) as resp:
                await resp.read()
                return resp.status
        statuses = await asyncio.gather(*[one() for _ in range(peerpull.BLOB_STREAMS + 4)])
    assert sorted(statuses) == [200] * peerpull.BLOB_STREAMS + [503] * 4
    assert peak[0] == peerpull.BLOB_STREAMS and holder.manager.blob_streams == 0
    assert holder.manager.stats["blob_served_bytes"] == peerpull.BLOB_STREAMS * layer.size


async def test_an_unservable_tarball_has_no_manifest_and_its_blobs_are_unknown(tmp_path: Path) -> None:
    data, image_id = _legacy([gzip.compress(_layer(b"zipped"))])
    holder = Holder(tmp_path, image=(data, image_id))
    tag = image_id.removeprefix("sha256:")
    async with _serving(holder.manager, holder.sealer) as url, aiohttp.ClientSession(url) as http:
        async with http.get(f"/v2/corral/peer/manifests/{tag}", headers=holder.auth()) as resp:
            assert resp.status == 404 and "not named by its digest" in (await resp.json())["message"]
        async with http.get(f"/v2/corral/peer/blobs/{image_id}", headers=holder.auth()) as resp:
            assert resp.status == 404
    assert holder.manager.stats["blob_served_bytes"] == 0


# ---------------------------------------------------------------------- a receiver: a delta, or the whole tarball

BASE = [_layer(os.urandom(60_000)), _layer(os.urandom(30_000))]
"""Image A's layers (the receiver's engine has them, as a stack)."""
NEW = _layer(os.urandom(2_000))
"""The one layer a rebuild of A adds."""


def _stack(layers: list[bytes]) -> tuple[str, ...]:
    return tuple(_sha(x) for x in layers)


class Receiver:
    """h2: an image manager on its own data dir whose engine has ``stacks``, asking h1 at ``url``."""

    def __init__(self, tmp: Path, url: str, holder: Holder, session: aiohttp.ClientSession,
                 stacks: list[tuple[str, ...]] | None, bulk: bool = False) -> None:
        self.engine = FakeEngine()
        self.engine.stacks = stacks
        self.proposed: list[object] = []

        async def propose(cmd: object) -> None:
            self.proposed.append(cmd)

        self.image = holder.state.images.catalog[holder.image_id]
        self.manager = ImageManager("h2", holder.state, self.engine, tmp / "h2", SECRET, _sealer(), session,
                                    {"h1": url}.get, propose, rng=random.Random(0),
                                    bulk_bind=("127.0.0.1", 0) if bulk else None)
        (tmp / "h2" / "images" / "partial").mkdir(parents=True)

    async def get(self, reference: str) -> Job:
        """What a container waiting for ``reference`` starts (``check``): the job, once it ended."""
        assert await self.manager.check(reference) is not None
        job = self.manager.jobs[reference]
        assert job.task is not None
        await job.task
        await self.manager.kept()
        if self.manager._wake is not None:
            self.manager._wake.cancel()
        return job

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in (self.manager.dir / "partial").iterdir())

    def held(self) -> bool:
        return any(isinstance(c, ImageHeld) for c in self.proposed)


def _shuffled(rng: random.Random, hosts: list[str]) -> list[str]:
    rng.shuffle(hosts)
    return hosts


def _rebuild(tags: tuple[str, ...] = ("t/app:2",)) -> tuple[bytes, str]:
    return _legacy([*BASE, NEW], tags=tags)


async def test_a_rebuild_on_a_base_the_receiver_has_is_a_delta_of_the_new_layer(tmp_path: Path) -> None:
    holder = Holder(tmp_path / "h1", image=_rebuild(("t/app:2", "t/app:latest")), tags=("t/app:2", "t/app:latest"))
    index = await holder.manager.index(holder.image_id)
    log: list[str] = []
    async with _serving(holder.manager, holder.sealer, log) as url, aiohttp.ClientSession() as session:
        rx = Receiver(tmp_path, url, holder, session, [_stack(BASE), _stack(BASE[:1])])
        job = await rx.get("t/app:2")
    assert job.error is None, job.error
    assert {"delta", "received", "loaded"} <= set(job.timeline) and "first_byte" not in job.timeline
    assert job.via == "h1" and job.delta_missing == len(NEW) and job.resumed == []
    stats = rx.manager.stats
    assert stats["delta_loads"] == 1 and stats["delta_bytes"] == len(NEW) and stats["delta_failures"] == 0
    assert stats["received_bytes"] == 0 and stats["leaf_fetches"] == 0
    assert holder.manager.stats["blob_served_bytes"] == index.config.size + len(NEW)
    assert holder.manager.stats["served_bytes"] == 0, "no tarball sent"
    assert not any(line.startswith("GET /v1/internal/images") for line in log)
    assert [line for line in log if "/blobs/" in line] == [
        f"GET /v2/corral/peer/blobs/{holder.image_id}", f"GET /v2/corral/peer/blobs/{_sha(NEW)}"]
    assert not rx.manager.cached(holder.digest).exists() and rx.leftovers() == [] and not rx.held(), \
        "a delta keeps no tarball: this host holds nothing"
    found = await rx.engine.image_inspect("t/app:latest")
    assert found is not None and found["Id"] == holder.image_id
    assert rx.engine.image_layers[holder.image_id] == _stack([*BASE, NEW])
    [tar_bytes] = rx.engine.load_tars
    assert rx.engine.load_sizes == [len(tar_bytes)], "the load's length said exactly"
    assert tar_bytes.endswith(bytes(2 * peerpull.TAR_BLOCK)) and len(tar_bytes) % peerpull.TAR_BLOCK == 0
    hexid = holder.image_id.removeprefix("sha256:")
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        assert tar.getnames() == [f"{hexid}.json", f"{_sha(NEW).removeprefix('sha256:')}/layer.tar", "manifest.json"]
        config, layer, manifest = (tar.extractfile(m).read() for m in tar.getmembers())  # type: ignore[union-attr]
    assert _sha(config) == holder.image_id and layer == NEW
    assert json.loads(manifest) == [{"Config": f"{hexid}.json", "RepoTags": ["t/app:2", "t/app:latest"],
                                     "Layers": [f"{d.removeprefix('sha256:')}/layer.tar"
                                                for d in _stack([*BASE, NEW])]}]
    assert await rx.manager.check("t/app:2") is None, "its containers may start"


@pytest.mark.parametrize(("stacks", "why"), [
    ([], "the engine has no layers"),
    ([_stack(BASE[1:])], "its layers are not the image's first"),
    ([_stack(BASE[::-1]), _stack([NEW])], "the same layers in another order: another chain"),
])
async def test_an_image_mostly_new_here_comes_as_the_tarball_without_a_blob_asked(
        tmp_path: Path, stacks: list[tuple[str, ...]], why: str) -> None:
    holder = Holder(tmp_path / "h1", image=_rebuild(("t/new:1",)), tags=("t/new:1",))
    log: list[str] = []
    async with _serving(holder.manager, holder.sealer, log) as url, aiohttp.ClientSession() as session:
        rx = Receiver(tmp_path, url, holder, session, stacks)
        job = await rx.get("t/new:1")
    assert job.error is None, (why, job.error)
    assert "delta" not in job.timeline and {"first_byte", "received", "loaded"} <= set(job.timeline), why
    assert job.delta_missing == sum(len(x) for x in [*BASE, NEW]), why
    assert not [line for line in log if "/blobs/" in line], "no blob asked"
    assert holder.manager.stats["blob_served_bytes"] == 0 and rx.manager.stats["delta_loads"] == 0
    assert rx.manager.stats["delta_failures"] == 0 and rx.manager.stats["leaf_fetches"] == 0
    assert holder.manager.stats["served_bytes"] == len(holder.data)
    assert rx.manager.cached(holder.digest).read_bytes() == holder.data and rx.held(), "from a holder: kept"
    assert rx.engine.load_tars == [holder.data]


async def test_a_base_that_is_half_the_image_or_less_is_no_delta(tmp_path: Path) -> None:
    """The missing bytes over DELTA_WHEN_MISSING of the image: the tarball, though the first layer is here."""
    layers = [_layer(os.urandom(20_000)), _layer(os.urandom(30_000))]
    holder = Holder(tmp_path / "h1", image=_legacy(layers, tags=("t/half:1",)), tags=("t/half:1",))
    log: list[str] = []
    async with _serving(holder.manager, holder.sealer, log) as url, aiohttp.ClientSession() as session:
        rx = Receiver(tmp_path, url, holder, session, [_stack(layers[:1])])
        job = await rx.get("t/half:1")
    assert job.error is None and "delta" not in job.timeline
    assert job.delta_missing == len(layers[1]) and not [line for line in log if "/blobs/" in line]
    assert rx.manager.cached(holder.digest).read_bytes() == holder.data


async def test_a_corrupted_layer_breaks_the_delta_and_the_tarball_is_refused_too(tmp_path: Path) -> None:
    holder = Holder(tmp_path / "h1", image=_rebuild(), tags=("t/app:2",))
    index = await holder.manager.index(holder.image_id)
    path = holder.manager.cached(holder.digest)
    spoiled = bytearray(path.read_bytes())
    spoiled[index.layers[2].offset + 700] ^= 1  # after indexing: the manifest still names the right digest
    path.write_bytes(bytes(spoiled))
    log: list[str] = []
    async with _serving(holder.manager, holder.sealer, log) as url, aiohttp.ClientSession() as session:
        rx = Receiver(tmp_path, url, holder, session, [_stack(BASE)])
        job = await rx.get("t/app:2")
    stats = rx.manager.stats
    assert stats["delta_failures"] == 1 and stats["delta_loads"] == 0
    assert job.resumed and job.resumed[0].startswith(f"h1: layer {_sha(NEW)[:19]}: the bytes received do not have")
    assert f"GET /v2/corral/peer/blobs/{_sha(NEW)}" in log and "GET /v1/internal/images/" + holder.digest in log, \
        "the delta, then the tarball"
    assert stats["digest_mismatch"] == 2, "the layer, then the whole tarball (the same flipped byte)"
    assert job.error is not None and "do not have the image's SHA-256" in job.error, job.error
    assert rx.engine.load_tars == [], "the engine never read a load to its end: neither the delta nor the tarball"
    assert await rx.engine.image_inspect(holder.image_id) is None
    assert not rx.manager.cached(holder.digest).exists() and rx.leftovers() == [] and not rx.held()


async def test_a_config_that_is_not_the_image_breaks_the_delta(tmp_path: Path) -> None:
    holder = Holder(tmp_path / "h1", image=_rebuild(), tags=("t/app:2",))
    index = await holder.manager.index(holder.image_id)
    path = holder.manager.cached(holder.digest)
    spoiled = bytearray(path.read_bytes())
    spoiled[index.config.offset + 2] ^= 1
    path.write_bytes(bytes(spoiled))
    async with _serving(holder.manager, holder.sealer) as url, aiohttp.ClientSession() as session:
        rx = Receiver(tmp_path, url, holder, session, [_stack(BASE)])
        job = await rx.get("t/app:2")
    assert rx.manager.stats["delta_failures"] == 1 and rx.manager.stats["delta_bytes"] == 0
    assert job.resumed == ["h1: its config does not have the image's id"]
    assert holder.manager.stats["blob_served_bytes"] == index.config.size, "no layer asked after a bad config"
    assert job.error is not None and rx.engine.load_tars == []


async def test_a_holder_with_every_blob_slot_taken_sends_the_tarball_instead(tmp_path: Path) -> None:
    holder = Holder(tmp_path / "h1", image=_rebuild(), tags=("t/app:2",))
    holder.manager.blob_streams = peerpull.BLOB_STREAMS
    async with _serving(holder.manager, holder.sealer) as url, aiohttp.ClientSession() as session:
        rx = Receiver(tmp_path, url, holder, session, [_stack(BASE)])
        job = await rx.get("t/app:2")
    assert job.error is None, job.error
    assert rx.manager.stats["delta_failures"] == 1 and rx.manager.stats["delta_loads"] == 0
    assert job.resumed == ["h1: its config: HTTP 503"] and "delta" in job.timeline and "first_byte" in job.timeline
    assert holder.manager.stats["blob_served_bytes"] == 0 and holder.manager.stats["served_bytes"] == len(holder.data)
    assert await rx.engine.image_inspect(holder.image_id) is not None
    assert rx.engine.load_tars == [holder.data], "the delta's load never completed; the tarball's did"
    assert rx.manager.cached(holder.digest).read_bytes() == holder.data and rx.held()


async def test_a_delta_that_breaks_off_is_taken_from_the_next_holder(tmp_path: Path) -> None:
    holder = Holder(tmp_path / "h1", image=_rebuild(), tags=("t/app:2",))
    holder.manager.blob_streams = peerpull.BLOB_STREAMS  # h1 answers its blobs 503
    holder.state.execute(ImageHeld(holder.image_id, "h3", True), holder.state.applied_index + 1)
    other = ImageManager("h3", holder.state, FakeEngine(), tmp_path / "h3", SECRET, holder.sealer, None,
                         lambda _h: None, _propose)
    (tmp_path / "h3" / "images").mkdir(parents=True)
    other.cached(holder.digest).write_bytes(holder.data)
    seed = next(n for n in range(50) if _shuffled(random.Random(n), ["h1", "h3"])[0] == "h1")  # h1 asked first
    async with _serving(holder.manager, holder.sealer) as url1, _serving(other, holder.sealer) as url3, \
            aiohttp.ClientSession() as session:
        rx = Receiver(tmp_path, url1, holder, session, [_stack(BASE)])
        rx.manager.api_of = {"h1": url1, "h3": url3}.get
        rx.manager.rng = random.Random(seed)
        job = await rx.get("t/app:2")
    assert job.error is None and job.via == "h3", job.error
    assert job.resumed == ["h1: its config: HTTP 503"]
    assert rx.manager.stats["delta_failures"] == 1 and rx.manager.stats["delta_loads"] == 1
    assert other.stats["blob_served_bytes"] == len(_config([*BASE, NEW])) + len(NEW)
    assert holder.manager.stats["served_bytes"] == other.stats["served_bytes"] == 0, "no tarball from either"
    assert not rx.manager.cached(holder.digest).exists()


async def test_an_engine_that_refuses_the_delta_gets_the_tarball(tmp_path: Path) -> None:
    """The engine said it had the base, and no longer has it when the delta comes (removed meanwhile): its
    load refuses the layer files it lacks; the whole tarball follows."""
    holder = Holder(tmp_path / "h1", image=_rebuild(), tags=("t/app:2",))
    async with _serving(holder.manager, holder.sealer) as url, aiohttp.ClientSession() as session:
        rx = Receiver(tmp_path, url, holder, session, [_stack(BASE)])
        said = rx.engine.layer_stacks

        async def once() -> list[tuple[str, ...]]:
            stacks = await said()
            rx.engine.stacks = []  # the base is gone after the receiver looked
            return stacks

        rx.engine.layer_stacks = once  # type: ignore[method-assign]
        job = await rx.get("t/app:2")
    assert job.error is None, job.error
    assert rx.manager.stats["delta_failures"] == 1 and rx.manager.stats["delta_loads"] == 0
    assert len(job.resumed) == 1, job.resumed
    assert job.resumed[0].startswith("h1: Docker Engine refused the image: open "), job.resumed
    assert rx.manager.stats["delta_bytes"] == len(NEW), "the delta's bytes came; the engine refused the load"
    assert len(rx.engine.load_tars) == 2 and rx.engine.load_tars[1] == holder.data
    assert rx.manager.cached(holder.digest).read_bytes() == holder.data and rx.held()


async def test_a_missing_layer_that_is_compressed_is_no_delta(tmp_path: Path) -> None:
    """A Docker 25+ save whose new layer is gzip'd: a loaded layer must be a plain tar, so the tarball."""
    gz = gzip.compress(NEW, mtime=0)
    config = _config([*BASE, NEW])
    chex = hashlib.sha256(config).hexdigest()
    names = [f"blobs/sha256/{hashlib.sha256(x).hexdigest()}" for x in (*BASE, gz)]
    manifest = [{"Config": f"blobs/sha256/{chex}", "RepoTags": ["t/gz:2"], "Layers": names}]
    data = _tar([(f"blobs/sha256/{chex}", config), *zip(names, [*BASE, gz], strict=True),
                 ("manifest.json", json.dumps(manifest).encode())])
    holder = Holder(tmp_path / "h1", image=(data, "sha256:" + chex), tags=("t/gz:2",))
    log: list[str] = []
    async with _serving(holder.manager, holder.sealer, log) as url, aiohttp.ClientSession() as session:
        rx = Receiver(tmp_path, url, holder, session, [_stack(BASE)])
        job = await rx.get("t/gz:2")
    assert job.error is None, job.error
    assert job.delta_missing == len(gz) and "delta" not in job.timeline
    assert not [line for line in log if "/blobs/" in line] and rx.engine.load_tars == [data]


async def test_a_keep_fetch_takes_no_delta(tmp_path: Path) -> None:
    """``corral image fetch`` (get_now) warms a host to be a holder: the tarball, though a delta would do."""
    holder = Holder(tmp_path / "h1", image=_rebuild(), tags=("t/app:2",))
    log: list[str] = []
    async with _serving(holder.manager, holder.sealer, log) as url, aiohttp.ClientSession() as session:
        rx = Receiver(tmp_path, url, holder, session, [_stack(BASE)])
        job = await rx.manager.get_now(rx.image)
        await rx.manager.kept()
    assert job.error is None and job.keep and "delta" not in job.timeline and job.delta_missing is None
    assert not [line for line in log if line.startswith("GET /v2/")], "not even the manifest asked"
    assert rx.manager.cached(holder.digest).read_bytes() == holder.data and rx.held()


async def test_a_keep_fetch_that_joins_a_running_fetch_still_keeps_the_tarball(tmp_path: Path) -> None:
    holder = Holder(tmp_path / "h1", image=_rebuild(), tags=("t/app:2",))
    async with _serving(holder.manager, holder.sealer) as url, aiohttp.ClientSession() as session:
        rx = Receiver(tmp_path, url, holder, session, [_stack(BASE)])
        assert await rx.manager.check("t/app:2") is not None  # a container waits: a job that need not keep
        job = await rx.manager.get_now(rx.image)  # then `corral image fetch`: this host must hold it
        await rx.manager.kept()
    assert job.error is None, job.error
    assert rx.manager.cached(holder.digest).read_bytes() == holder.data and rx.held()


# ---------------------------------------------------------------------- a leaf: its bytes from a relay


async def test_a_receiver_fed_by_a_relay_is_a_leaf_that_keeps_nothing_and_relays_nothing(tmp_path: Path) -> None:
    holder = Holder(tmp_path / "h1", relay=True)
    log: list[str] = []
    admissions: list[tuple[bool, tuple[str, ...], str]] = []
    async with _serving(holder.manager, holder.sealer, log) as url, aiohttp.ClientSession() as session:
        rx = Receiver(tmp_path, url, holder, session, [])
        load = rx.engine.load_stream

        async def watched(chunks: AsyncIterator[bytes], size: int | None = None) -> str:
            async def seen() -> AsyncIterator[bytes]:
                async for chunk in chunks:
                    if not admissions:  # mid-transfer: what it answers a host that asks it for the image
                        got = rx.manager.admission(holder.digest, "h3", 0)
                        admissions.append((got.serve, got.redirect, got.reason))
                        assert rx.manager.spools[holder.digest].path.stat().st_size == 0
                    yield chunk
            return await load(seen(), size)

        rx.engine.load_stream = watched  # type: ignore[method-assign]
        job = await rx.get("t/a:1")
    assert job.error is None, job.error
    assert f"GET /v1/internal/images/{holder.digest}" in log
    assert holder.manager.stats["served_bytes"] == len(holder.data)
    assert admissions == [(False, (), "this host keeps no copy of it (its bytes were relayed to it)")]
    assert rx.manager.stats["leaf_fetches"] == 1 and rx.manager.stats["received_bytes"] == len(holder.data)
    assert rx.engine.load_tars == [holder.data] and await rx.engine.image_inspect(holder.image_id) is not None
    assert not rx.manager.cached(holder.digest).exists() and rx.leftovers() == [] and not rx.held(), \
        "a leaf keeps nothing and says it holds nothing"
    assert holder.digest not in rx.manager.spools and "kept" not in job.timeline
    assert rx.manager.admission(holder.digest, "h3", 0).reason == "this host does not hold that image"


async def test_a_receiver_fed_by_a_relay_over_the_bulk_channel_is_a_leaf_too(tmp_path: Path) -> None:
    holder = Holder(tmp_path / "h1", relay=True, bulk=True)
    accepting = asyncio.get_running_loop().create_task(holder.manager._bulk_accept(holder.manager._bulk_listen()))
    log: list[str] = []
    try:
        async with _serving(holder.manager, holder.sealer, log) as url, aiohttp.ClientSession() as session:
            assert holder.manager.offer_bulk(holder.digest, "h9", 0) == {
                "port": holder.manager.bulk_port, "ticket": ANY, "relay": True}
            holder.manager.serving.clear()
            rx = Receiver(tmp_path, url, holder, session, [], bulk=True)
            job = await rx.get("t/a:1")
    finally:
        accepting.cancel()
    assert job.error is None, job.error
    assert holder.manager.stats["served_bytes"] == len(holder.data)
    assert [t.asker for t in holder.manager.tickets.open.values()] == ["h9"], "h2's ticket was taken: by bulk"
    assert rx.manager.stats["leaf_fetches"] == 1 and rx.engine.load_tars == [holder.data]
    assert not rx.manager.cached(holder.digest).exists() and rx.leftovers() == [] and not rx.held()


async def test_a_holders_bulk_offer_says_it_is_no_relay(tmp_path: Path) -> None:
    holder = Holder(tmp_path / "h1", bulk=True)
    listener = holder.manager._bulk_listen()
    try:
        assert holder.manager.offer_bulk(holder.digest, "h9", 0) == {
            "port": holder.manager.bulk_port, "ticket": ANY, "relay": False}
    finally:
        listener.close()


async def test_a_relays_answer_says_it_is_a_relay_and_a_holders_says_not(tmp_path: Path) -> None:
    relay, whole = Holder(tmp_path / "r", relay=True), Holder(tmp_path / "w")
    for holder, said in ((relay, "1"), (whole, "0")):
        async with _serving(holder.manager, holder.sealer) as url, aiohttp.ClientSession(url) as http:
            headers = {MEMBER_HEADER: proof(holder.sealer, holder.digest, time.time()), "Corral-Host": "h2"}
            async with http.get(f"/v1/internal/images/{holder.digest}", headers=headers) as resp:
                assert resp.status == 206 and resp.headers[RELAY_HEADER] == said
                assert await resp.read() == holder.data


async def test_a_keep_fetch_from_a_relay_still_spools_and_keeps(tmp_path: Path) -> None:
    holder = Holder(tmp_path / "h1", relay=True)
    async with _serving(holder.manager, holder.sealer) as url, aiohttp.ClientSession() as session:
        rx = Receiver(tmp_path, url, holder, session, [])
        job = await rx.manager.get_now(rx.image)
        await rx.manager.kept()
    assert job.error is None and job.keep, job.error
    assert rx.manager.stats["leaf_fetches"] == 0
    assert rx.manager.cached(holder.digest).read_bytes() == holder.data and rx.held() and "kept" in job.timeline


async def test_a_resume_from_a_relay_is_no_leaf(tmp_path: Path) -> None:
    """A leaf is decided at the first byte: bytes from a relay only after a part came from a holder keep
    the spool (the part on disk is this host's)."""
    holder = Holder(tmp_path / "h1", relay=True)
    async with _serving(holder.manager, holder.sealer) as url, aiohttp.ClientSession() as session:
        rx = Receiver(tmp_path, url, holder, session, [])
        spool = Spool(tmp_path / "x.tar", len(holder.data), may_skip=True)
        got = b"".join([c async for c in rx.manager._download("h1", holder.digest, 100, spool)])
        assert got == holder.data[100:] and not spool.leaf
        got = b"".join([c async for c in rx.manager._download("h1", holder.digest, 0, spool)])
        assert got == holder.data and spool.leaf
        kept = Spool(tmp_path / "y.tar", len(holder.data), may_skip=False)
        assert b"".join([c async for c in rx.manager._download("h1", holder.digest, 0, kept)]) == holder.data
        assert not kept.leaf, "a spool that must end up kept is never a leaf"


async def test_a_relay_that_sent_nothing_makes_no_leaf_of_a_fetch_a_holder_then_sends(tmp_path: Path) -> None:
    holder = Holder(tmp_path / "h1")
    holder.state.execute(ImageHeld(holder.image_id, "r", True), holder.state.applied_index + 1)
    asked: list[str] = []

    async def broken_relay(request: web.Request) -> web.StreamResponse:
        asked.append("r")
        response = web.StreamResponse(status=206, headers={RELAY_HEADER: "1", "Content-Length": str(len(holder.data))})
        await response.prepare(request)
        raise ConnectionResetError("its own transfer broke off")  # no byte sent

    app = web.Application()
    app.router.add_get("/v1/internal/images/{id}", broken_relay)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    relay_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with _serving(holder.manager, holder.sealer) as url, aiohttp.ClientSession() as session:
            rx = Receiver(tmp_path, url, holder, session, [])
            rx.manager.api_of = {"h1": url, "r": relay_url}.get
            def first_pick(seed: int) -> str:  # the delta's shuffle of the holders, then the tarball's pick
                rng = random.Random(seed)
                _shuffled(rng, ["h1", "r"])
                return rng.choice(["h1", "r"])

            rx.manager.rng = random.Random(next(n for n in range(50) if first_pick(n) == "r"))
            job = await rx.get("t/a:1")
    finally:
        await runner.cleanup()
    assert job.error is None, job.error
    assert asked == ["r"] and holder.manager.stats["served_bytes"] == len(holder.data), "every byte from h1"
    assert rx.manager.cached(holder.digest).read_bytes() == holder.data and rx.held()


def test_a_full_relay_redirects_nobody_and_a_full_holder_names_its_relays(tmp_path: Path) -> None:
    relay, whole = Holder(tmp_path / "r", relay=True), Holder(tmp_path / "w")
    for holder in (relay, whole):
        holder.manager.serving[holder.digest] = {"h5": 10, "h6": 50}
    got = whole.manager.admission(whole.digest, "h7", 0)
    assert not got.serve and got.redirect == ("h6", "h5")
    got = relay.manager.admission(relay.digest, "h7", 0)
    assert not got.serve and got.redirect == () and got.reason, "a relay's askers are leaves: nobody to send to"
    assert relay.manager.admission(relay.digest, "h5", 0).serve, "one it serves already, resuming"
    relay.manager.serving[relay.digest] = {"h5": 10}
    assert relay.manager.admission(relay.digest, "h7", 0).serve
