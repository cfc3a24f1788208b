"""A holder's tarballs served by digest over the registry protocol, for deltas (issue 15).

A host that holds a catalog image's ``docker save`` tarball answers, read-only, the part of the Docker
Registry HTTP API V2 a pull uses (``/v2/``, a manifest, blobs) for that image: its config and its
layers are members of the tarball, served from their offsets in the file, so nothing is unpacked,
copied or recompressed to serve them (:func:`index_tarball` makes the manifest).

A host that needs an image and has most of its layers already (a rebuild on a base it has) reads that
manifest, and fetches only the config and the layers it lacks, each checked against its digest; it
loads them as a ``docker save`` tarball naming every layer but holding only those (made here:
:func:`tar_header`, :func:`tar_member`), and Docker skips the layer files of layers it has.

Who may ask: the routes are internal (the agents' mTLS: a node certificate), and the request says, as
its Basic password, a pull grant: the image id and the time sealed with the cluster key
(:func:`grant`), good for :data:`GRANT_AGE` seconds, for that image only. Pure functions here (no
sockets); the routes are in ``agent/api/images.py``, the fetch in ``agent/node/images.py``.

(Docker's own pull from these routes works too, and was tried as the way to move every image: it
costs the engine about twice the CPU of a load, and Docker re-downloads layers that came by a load,
so neither fresh images nor rebuilds got faster: docs/IMAGES.md, "Tried".)
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import aiohttp

REPOSITORY = "corral/peer"
"""The one repository a holder serves; the tag is the image id's 64 hex digits."""
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
BLOB_STREAMS = 8
"""Blobs a holder sends at once; a further request is a 503 (the asker fetches the tarball instead)."""
GRANT_AGE = 1800.0
"""Seconds a pull grant is good for."""
TAR_BLOCK = 512
_SHA = re.compile(r"^sha256:[0-9a-f]{64}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_BLOB_NAME = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")


class Unservable(Exception):
    """This tarball cannot be served as a registry would (the asker fetches the tarball instead)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Blob:
    digest: str
    offset: int
    """Where its bytes begin in the tarball."""
    size: int
    media_type: str


@dataclasses.dataclass(frozen=True)
class Index:
    """A tarball as a registry serves it: the manifest, and where each blob is in the file."""

    image_id: str
    config: Blob
    layers: tuple[Blob, ...]
    manifest: bytes

    @property
    def manifest_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()

    def blob(self, digest: str) -> Blob | None:
        if digest == self.config.digest:
            return self.config
        return next((b for b in self.layers if b.digest == digest), None)


def _member(tar: tarfile.TarFile, name: str, depth: int = 0) -> tarfile.TarInfo:
    """The regular member ``name`` names, following links (``docker save`` of old engines makes a
    repeated layer a symlink to the first)."""
    if depth > 8:
        raise Unservable(f"{name}: too many links")
    try:
        info = tar.getmember(name)
    except KeyError:
        raise Unservable(f"the tarball has no {name}") from None
    if info.issym():
        target = os.path.normpath(os.path.join(os.path.dirname(name), info.linkname))
        return _member(tar, target, depth + 1)
    if info.islnk():
        return _member(tar, info.linkname, depth + 1)
    if not info.isfile():
        raise Unservable(f"{name} is not a file in the tarball")
    return info


def _layer_type(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return LAYER_GZIP
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return LAYER_ZSTD
    if head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        raise Unservable("a layer is bzip2 or xz: a registry manifest cannot name it")
    return LAYER_TAR


def index_tarball(path: Path) -> Index:
    """Read a ``docker save`` tarball of one image (both layouts: ``ID/layer.tar`` and the OCI
    ``blobs/sha256/…`` of Docker 25+) into what a registry serves; Unservable if it cannot be."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            manifest_file = tar.extractfile(_member(tar, "manifest.json"))
            assert manifest_file is not None
            saved = json.loads(manifest_file.read(1 << 20))
            if not isinstance(saved, list) or len(saved) != 1 or not isinstance(saved[0], dict):
                raise Unservable("the tarball does not hold exactly one image")
            config_info = _member(tar, str(saved[0].get("Config") or ""))
            config_file = tar.extractfile(config_info)
            assert config_file is not None
            config_bytes = config_file.read(config_info.size)
            image_id = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
            config = json.loads(config_bytes)
            diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
            names = [str(n) for n in saved[0].get("Layers") or []]
            if len(names) != len(diff_ids):
                raise Unservable(f"the manifest names {len(names)} layers, the config {len(diff_ids)}")
            layers = []
            with path.open("rb") as raw:
                for name, diff_id in zip(names, diff_ids, strict=True):
                    info = _member(tar, name)
                    raw.seek(info.offset_data)
                    media_type = _layer_type(raw.read(8))
                    named = _BLOB_NAME.match(info.name)
                    digest = f"sha256:{named.group(1)}" if named else str(diff_id)
                    if not named and media_type != LAYER_TAR:
                        raise Unservable(f"{name} is compressed and not named by its digest")
                    layers.append(Blob(digest, info.offset_data, info.size, media_type))
    except (tarfile.TarError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise Unservable(f"the tarball cannot be read as an image ({exc})") from None
    config_blob = Blob(image_id, config_info.offset_data, config_info.size, CONFIG_TYPE)
    document = {
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "size": config_blob.size, "digest": config_blob.digest},
        "layers": [{"mediaType": b.media_type, "size": b.size, "digest": b.digest} for b in layers],
    }
    return Index(image_id, config_blob, tuple(layers),
                 json.dumps(document, separators=(",", ":"), sort_keys=True).encode())


def tag_image_id(tag: str) -> str | None:
    """The image id a manifest request's tag names (None: not one this protocol serves)."""
    return f"sha256:{tag}" if _HEX.match(tag) else None


def is_digest(text: str) -> bool:
    return bool(_SHA.match(text))


def grant(sealer: Any, image_id: str, now: float) -> str:
    """A pull grant: the image id and the time sealed with the cluster key (the engine's password)."""
    return base64.urlsafe_b64encode(sealer.seal(f"pull {image_id} {now:.3f}".encode())).decode()


def granted(sealer: Any, password: str, now: float) -> str | None:
    """The image id a pull grant is for, if it opens and is fresh; else None."""
    try:
        plain = sealer.open(base64.urlsafe_b64decode(password.encode()))
    except (ValueError, TypeError, binascii.Error):
        return None
    if plain is None:
        return None
    word, image_id, at = [*plain.decode(errors="replace").split(" "), "", "", ""][:3]
    try:
        fresh = abs(now - float(at)) <= GRANT_AGE
    except ValueError:
        return None
    return image_id if word == "pull" and fresh and is_digest(image_id) else None


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic …`` header (UTF-8); None if it is not one."""
    if not header:
        return None
    try:
        auth = aiohttp.BasicAuth.decode(header.strip(), encoding="utf-8")
    except ValueError:  # not Basic, not base64, no colon, not UTF-8
        return None
    return auth.login, auth.password


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of ``Range: bytes=N-`` or ``bytes=N-M`` (what an engine resuming a blob
    sends); (0, size - 1) with no header; None if it cannot be served (answered 416)."""
    if header is None:
        return 0, size - 1
    unit, _, spec = header.strip().partition("=")
    start, dash, end = spec.partition("-")
    if unit.strip() != "bytes" or not dash or not start.strip().isdigit() or "," in spec:
        return None
    first = int(start)
    last = int(end) if end.strip().isdigit() else size - 1
    if end.strip() and not end.strip().isdigit():
        return None
    if first >= size or last < first:
        return None
    return first, min(last, size - 1)


def tar_header(name: str, size: int) -> bytes:
    """The tar header of a regular file ``name`` of ``size`` bytes (as ``docker save`` writes them: mode
    0644, time 0)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def tar_member(name: str, data: bytes) -> bytes:
    """A whole tar member: header, data, padding to the block."""
    return tar_header(name, len(data)) + data + bytes(-len(data) % TAR_BLOCK)


__all__ = ["BLOB_STREAMS", "CONFIG_TYPE", "GRANT_AGE", "LAYER_GZIP", "LAYER_TAR", "MANIFEST_TYPE", "REPOSITORY",
           "TAR_BLOCK", "Blob", "Index", "Unservable", "basic_credentials", "grant", "granted", "index_tarball",
           "is_digest", "parse_range", "tag_image_id", "tar_header", "tar_member"]
