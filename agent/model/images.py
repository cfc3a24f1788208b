"""The images the cluster knows: registries' credentials, and the catalog of images it distributes
itself (peer to peer: ``corral image load``, ``build:``).

A **registry** is ``HOST[:PORT]`` (as the first part of an image reference names it) with a user name
and a password sealed with the cluster secret (:mod:`mesh.sealing`). A host pulling from it opens the
password and passes it to Docker for that pull only.

A **catalog image** is a ``docker save`` tarball: its image id (``sha256:…`` of its config: what Docker
checks on load), its tags, and the SHA-256 and size of the tarball's bytes. Every holder keeps the very
same bytes (``agent/node/images.py``), so a transfer cut off resumes from another holder at the
offset it reached, and a receiver verifies the whole against the digest before the engine loads it.
``holders`` are the hosts that hold the tarball now.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Protocol

from agent.model.changes import Topic
from agent.model.codec import WireError, from_wire, to_wire
from agent.model.commands import ImageAdd, ImageHeld, ImageRemove, Outcome, RegistryRemove, RegistrySet
from agent.model.entities import EventKind
from agent.model.errors import bad_request, not_found

REGISTRY_RE = re.compile(r"^(localhost|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
                         r"|\[[0-9a-f:]+\])(:[0-9]{1,5})?$")
IMAGE_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
TAG_RE = re.compile(r"^[a-z0-9]+([._/:-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")
REFERENCE_RE = re.compile(
    r"^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-f:]+\])"
    r"(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$")
MAX_TAGS = 32
MAX_IMAGES = 1000
MAX_USERNAME = 255
MAX_SEALED = 4096
DEFAULT_REGISTRY = "docker.io"


def registry_of(reference: str) -> str:
    """The registry an image reference names (Docker's rule: a first part with a dot or a port, or
    ``localhost``), ``docker.io`` otherwise."""
    first, sep, _rest = reference.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return DEFAULT_REGISTRY


def reference_problem(reference: str) -> str | None:
    """What is wrong with an image reference (Docker's grammar: ``[REGISTRY[:PORT]/]NAME[:TAG][@DIGEST]``,
    or an image id), or None."""
    if IMAGE_ID_RE.match(reference) or REFERENCE_RE.match(reference):
        return None
    return (f"{reference!r} is not an image reference: [REGISTRY[:PORT]/]NAME[:TAG][@sha256:DIGEST], the name in "
            "lowercase (for example corral/base, registry.example:5000/team/app:1.2)")


def normal_tag(reference: str) -> str:
    """A reference as Docker lists it among an image's tags (``:latest`` when it names no tag)."""
    if "@" in reference:
        return reference
    last = reference.rsplit("/", 1)[-1]
    return reference if ":" in last else reference + ":latest"


@dataclasses.dataclass(frozen=True)
class Registry:
    host: str
    username: str
    sealed_password: bytes
    created: int


@dataclasses.dataclass(frozen=True)
class CatalogImage:
    id: str
    tags: tuple[str, ...]
    digest: str
    tar_size: int
    holders: tuple[str, ...]
    source: str
    created: int


class Sink(Protocol):
    def event(self, index: int, kind: EventKind, message: str, **refs: str) -> None: ...

    def change(self, index: int, topic: Topic, key: str, removed: bool = False) -> None: ...


def check_registry_host(host: str) -> str:
    if not isinstance(host, str) or not REGISTRY_RE.match(host) or len(host) > 255:
        raise bad_request(f"{host!r} is not a registry address: HOST or HOST:PORT, as an image reference begins "
                          "(registry.example:5000)", "host")
    return host


class Images:
    def __init__(self) -> None:
        self.registries: dict[str, Registry] = {}
        self.catalog: dict[str, CatalogImage] = {}
        self._by_tag: dict[str, str] = {}

    # -------------------------------------------------------------- reading

    def by_reference(self, reference: str) -> CatalogImage | None:
        """The catalog image a service's ``image`` names (a tag, or the image id itself)."""
        if reference in self.catalog:
            return self.catalog[reference]
        image_id = self._by_tag.get(normal_tag(reference))
        return self.catalog.get(image_id) if image_id else None

    # -------------------------------------------------------------- registries

    def registry_set(self, cmd: RegistrySet, index: int, sink: Sink) -> Outcome:
        check_registry_host(cmd.host)
        if not cmd.username or len(cmd.username) > MAX_USERNAME or any(c in cmd.username for c in ":\n\r\0"):
            raise bad_request("username is 1-255 characters, no colon or line break", "username")
        if not cmd.sealed_password or len(cmd.sealed_password) > MAX_SEALED:
            raise bad_request("the password is sealed with the cluster secret and at most 4 KiB", "password")
        old = self.registries.get(cmd.host)
        self.registries[cmd.host] = Registry(cmd.host, cmd.username, cmd.sealed_password,
                                             old.created if old else index)
        sink.change(index, Topic.IMAGE, f"registry:{cmd.host}")
        sink.event(index, EventKind.REGISTRY_CHANGED, f"registry {cmd.host}: credentials of {cmd.username} "
                   f"{'replaced' if old else 'added'}", registry=cmd.host)
        return Outcome(index, id=cmd.host)

    def registry_remove(self, cmd: RegistryRemove, index: int, sink: Sink) -> Outcome:
        if cmd.host not in self.registries:
            raise not_found("registry", cmd.host, "host")
        del self.registries[cmd.host]
        sink.change(index, Topic.IMAGE, f"registry:{cmd.host}", removed=True)
        sink.event(index, EventKind.REGISTRY_CHANGED, f"registry {cmd.host}: credentials removed",
                   registry=cmd.host)
        return Outcome(index, id=cmd.host)

    # -------------------------------------------------------------- the catalog

    def image_add(self, cmd: ImageAdd, index: int, hosts: Mapping[str, object], sink: Sink) -> Outcome:
        if not IMAGE_ID_RE.match(cmd.id):
            raise bad_request("an image id is sha256: and 64 hex digits", "id")
        if not DIGEST_RE.match(cmd.digest) or not isinstance(cmd.tar_size, int) or cmd.tar_size <= 0:
            raise bad_request("a tarball is named by its SHA-256 (64 hex digits) and its size", "digest")
        if len(cmd.tags) > MAX_TAGS or not all(isinstance(t, str) and len(t) <= 255 and TAG_RE.match(t)
                                               for t in cmd.tags):
            raise bad_request(f"tags are image references (name:tag), at most {MAX_TAGS}", "tags")
        if cmd.host not in hosts:
            raise not_found("host", cmd.host, "host")
        if cmd.source not in ("load", "build"):
            raise bad_request("an image's source is load or build", "source")
        old = self.catalog.get(cmd.id)
        if old is None and len(self.catalog) >= MAX_IMAGES:
            raise bad_request(f"the catalog holds at most {MAX_IMAGES} images: remove some (`corral image rm`)", "id")
        if old is not None and old.digest != cmd.digest:
            # the same image saved again (another host, another time) is other bytes: the holders of the
            # old tarball cannot resume one of the new; the new one replaces it, held by its host only
            old = None
        for tag in cmd.tags:  # a tag names one image: the newest to claim it
            previous = self._by_tag.get(tag)
            if previous is not None and previous != cmd.id and previous in self.catalog:
                other = self.catalog[previous]
                self.catalog[previous] = dataclasses.replace(other, tags=tuple(t for t in other.tags if t != tag))
            self._by_tag[tag] = cmd.id
        holders = tuple(sorted({*(old.holders if old else ()), cmd.host}))
        tags = tuple(sorted({*(old.tags if old else ()), *cmd.tags}))
        self.catalog[cmd.id] = CatalogImage(cmd.id, tags, cmd.digest, cmd.tar_size, holders,
                                            old.source if old else cmd.source, old.created if old else index)
        sink.change(index, Topic.IMAGE, cmd.id)
        if old is None:
            sink.event(index, EventKind.IMAGE_ADDED, f"image {', '.join(tags) or cmd.id[:19]} ({cmd.source}, "
                       f"{cmd.tar_size // 2**20} MiB) is on {cmd.host}", image=cmd.id, host=cmd.host)
        return Outcome(index, id=cmd.id)

    def image_held(self, cmd: ImageHeld, index: int, sink: Sink) -> Outcome:
        image = self.catalog.get(cmd.id)
        if image is None:
            raise not_found("image", cmd.id, "id")
        holders = set(image.holders)
        (holders.add if cmd.held else holders.discard)(cmd.host)
        self.catalog[cmd.id] = dataclasses.replace(image, holders=tuple(sorted(holders)))
        sink.change(index, Topic.IMAGE, cmd.id)
        return Outcome(index, id=cmd.id)

    def image_remove(self, cmd: ImageRemove, index: int, sink: Sink) -> Outcome:
        image = self.catalog.pop(cmd.id, None)
        if image is None:
            raise not_found("image", cmd.id, "id")
        for tag in image.tags:
            if self._by_tag.get(tag) == cmd.id:
                del self._by_tag[tag]
        sink.change(index, Topic.IMAGE, cmd.id, removed=True)
        sink.event(index, EventKind.IMAGE_REMOVED, f"image {', '.join(image.tags) or cmd.id[:19]} removed from the "
                   "catalog", image=cmd.id)
        return Outcome(index, id=cmd.id)

    # -------------------------------------------------------------- snapshots

    def to_wire(self) -> dict[str, object]:
        return {"registries": [to_wire(r) for r in self.registries.values()],
                "catalog": [to_wire(i) for i in self.catalog.values()]}

    @classmethod
    def from_wire(cls, raw: object) -> Images:
        images = cls()
        if raw is None:
            return images
        if not isinstance(raw, Mapping):
            raise WireError("images", "must be a map")
        for r in raw.get("registries") or ():
            registry = from_wire(Registry, r, "images.registries")
            images.registries[registry.host] = registry
        for i in raw.get("catalog") or ():
            image = from_wire(CatalogImage, i, "images.catalog")
            images.catalog[image.id] = image
            for tag in image.tags:
                images._by_tag[tag] = image.id
        return images


__all__ = ["DEFAULT_REGISTRY", "CatalogImage", "Images", "Registry", "check_registry_host", "normal_tag",
           "reference_problem", "registry_of"]
