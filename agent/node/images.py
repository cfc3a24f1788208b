"""Getting a service's image onto this host: pulled from its registry, or fetched from a peer.

The reconciler asks :meth:`ImageManager.check` before it creates a container. An image the engine has
(and, for ``pull: always``, pulled a moment ago) is ready; otherwise a background job gets it and the
instance waits, reported as ``pulling`` with how far it is, or ``pull-failed`` with the reason while
the job backs off (2 s, doubling to 5 min; at once again when the registry's credentials or the
catalog change). One job per image, however many instances wait for it; other instances are never
held up (the reconciler goes on without the ones that wait, and is kicked when a job ends).

**From a registry** (an image the catalog does not know): Docker pulls it, with the credentials of its
registry (``corral registry add``; the password opened from the replicated state for this pull only,
never logged). Docker's own words become a reason a user can act on (:func:`pull_reason`).

**From a peer** (an image of the catalog: ``corral image load``, a ``build:``): every holder keeps the
image's ``docker save`` tarball, the same bytes on each, in ``DATA_DIR/images/DIGEST.tar``. A host
whose engine has most of the image's layers already (a rebuild on its base) takes a delta: the config
and the missing layers by digest from a holder's registry routes (:mod:`agent.node.peerpull`), loaded
as a tarball that holds only those. Otherwise (or when no holder serves a delta, or it broke) the host
asks a holder (``GET /v1/internal/images/DIGEST`` over the agents' mTLS, with a proof of membership
sealed with the cluster key), which answers with a ticket for its bulk channel (:mod:`agent.node.bulk`:
plain TCP, every frame sealed under a key for that transfer alone) or, without one, with the bytes; they
go into a spool file and, at once, into its engine's ``POST /images/load``, hashed as they come. The
last chunk is held back until the whole has the catalog's SHA-256: bytes that do not match never
complete a load (the engine drops a load cut short, and checks each layer against the image config;
the loaded image must then have the catalog's id). A sender that stops is replaced by another at the
offset reached (``Range``); who sends to whom is :mod:`agent.node.transfer`'s (a tree of relays: a host
passes bytes on while it still receives them). Once loaded (its containers may start), the spool
becomes this host's copy, fsynced and renamed, and only then does the host say it holds the image
(:class:`~agent.model.commands.ImageHeld`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import socket
import tarfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import yarl

from agent.cluster.feed import Feed
from agent.errors import EngineUnreachable
from agent.model.changes import Topic
from agent.model.commands import Command, ImageAdd, ImageHeld
from agent.model.entities import Status
from agent.model.images import CatalogImage, normal_tag, registry_of
from agent.model.spec import PullPolicy
from agent.model.state import ClusterState
from agent.node import bulk, directio, peerpull, transfer
from agent.node.docker import CHUNK, EngineRefused, PullFailed, RegistryAuth
from mesh import sealing
from mesh.aio import supervised

log = logging.getLogger("corral.images")

CACHE_DIR = "images"
BACKOFF_FIRST, BACKOFF_MAX = 2.0, 300.0
ALWAYS_FRESH = 30.0
"""A ``pull: always`` pull serves the containers created within this many seconds of it (ten new
replicas are one pull, not ten)."""
MEMBER_HEADER = "Corral-Member"
PROOF_AGE = 60.0
SOURCE_STALL = 20.0
"""Seconds a sender may send nothing before the transfer moves to another; also how long a fetch asks
again while every holder is busy before it fails."""
BUSY = "busy:"
BUSY_RETRY = 0.5
"""Seconds between rounds of asking holders that were all busy."""
REGISTRY_PURPOSE = b"registry password"
PROGRESS_STEP = 0.05
"""Progress is reported (a reconcile pass, a status write) each time it moves this much..."""
PROGRESS_EVERY = 1.0
"""...and this many seconds have gone by since the last report: each report is a Raft write, and a fleet
fetching one image at once made one every 5 % per host (twenty per host per image, all through the
leader), at the moment its CPU is busiest. The first share and the end are reported at once."""
PENDING_AGE = 600.0
"""Seconds an uploaded tarball waits for its ImageAdd before it counts as an orphan."""
FREE_MARGIN = 256 * 2**20
"""An upload or fetch is refused unless the disk keeps this much free beyond the tarball."""
DELTA_WHEN_MISSING = 0.5
"""A host loads only the layers it lacks of a catalog image (a delta from a holder's registry routes,
instead of the whole tarball) when they are at most this share of the image's bytes."""
CONFIG_MAX = 4 * 2**20
"""An image config a delta takes, at most (Docker's are a few KiB)."""
RELAY_HEADER = "Corral-Relay"
"""Said (``1``) by a sender whose tarball is a spool still filling: the asker is a leaf of the tree."""


class ImageEngine(Protocol):
    """What moving images needs of the engine (:class:`~agent.node.docker.DockerEngine`)."""

    async def image_inspect(self, reference: str) -> dict[str, Any] | None: ...

    async def remove_image(self, reference: str) -> None: ...

    async def pull(self, reference: str, auth: RegistryAuth | None,
                   progress: Callable[[float | None], None]) -> None: ...

    async def load_stream(self, chunks: AsyncIterator[bytes], size: int | None = None) -> str: ...

    def save(self, reference: str) -> AsyncIterator[bytes]: ...

    async def layer_stacks(self) -> list[tuple[str, ...]]: ...

    async def build(self, context: bytes, tag: str, labels: Mapping[str, str] | None = None,
                    dockerfile: str = "Dockerfile", args: Mapping[str, str] | None = None) -> str: ...


class ImageError(Exception):
    """Why an image could not be got or taken."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SpoolFailed(ImageError):
    """This host's disk refused a tarball it was receiving: no other sender would help."""


class Redirected(Exception):
    """A holder that does not serve now (it sends to enough hosts, or has nothing yet to pass on) and the
    hosts it names instead."""

    def __init__(self, hosts: list[str], reason: str = "") -> None:
        super().__init__(", ".join(hosts))
        self.hosts, self.reason = hosts, reason


@dataclasses.dataclass(frozen=True)
class Wait:
    """Why an instance's container is not created yet: :data:`Status.PULLING` or :data:`Status.PULL_FAILED`."""

    status: Status
    detail: str


@dataclasses.dataclass
class Job:
    reference: str
    source: str
    """``registry HOST`` or ``peer``."""
    task: asyncio.Task[None] | None = None
    progress: float | None = None
    reported: tuple[float, float] | None = None
    """The share and the time (the manager's clock) of the last progress report."""
    via: str = ""
    error: str | None = None
    attempts: int = 0
    retry_at: float = 0.0
    done_at: float | None = None
    resumed: list[str] = dataclasses.field(default_factory=list)
    """``HOST@OFFSET`` for each source a peer transfer moved to after one broke."""
    timeline: dict[str, float] = dataclasses.field(default_factory=dict)
    """When (wall clock, the last attempt) each step was reached: ``started``, ``first_byte``, ``received``
    (every byte in, the SHA-256 checked), ``loaded`` (the engine has the image), ``kept`` (the tarball is
    this host's copy): where a transfer's time goes, comparable across hosts. A delta (only the missing
    layers) has ``delta`` (it began) and ``received`` = ``loaded`` (the engine has the image)."""
    keep: bool = False
    """The tarball must end up here too (``corral image fetch``: warm a host to be a holder): no delta."""
    delta_missing: int | None = None
    """Bytes of the image's layers this host's engine lacked (what a delta moves), once known."""

    def mark(self, step: str) -> None:
        self.timeline[step] = time.time()

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def describe(self) -> str:
        share = f" {self.progress * 100:.0f} %" if self.progress is not None else ""
        where = f" from {self.via}" if self.via else ""
        return f"{'fetching' if self.source == 'peer' else 'pulling'}{share}{where}"


def pull_reason(registry: str, reference: str, message: str, has_credentials: bool) -> str:
    """What Docker said about a failed pull, as a reason a user can act on."""
    text = message.strip().replace("\n", " ")
    low = text.lower()
    if "unauthorized" in low or "no basic auth credentials" in low or "authentication required" in low \
            or "incorrect username or password" in low or "denied" in low:
        said = f" ({text[:200]})"
        if has_credentials:
            return f"image.pull_failed: {registry} refused the credentials{said}"
        return f"image.pull_failed: {registry} asks for credentials: `corral registry add {registry}`{said}"
    if "manifest unknown" in low or ("not found" in low and "manifest" in low) or "name unknown" in low:
        return f"image.pull_failed: {reference} is not in {registry} (no such repository or tag)"
    if "no such host" in low or "server misbehaving" in low:
        return f"image.pull_failed: this host cannot resolve {registry} ({text[:200]})"
    if "connection refused" in low:
        return f"image.pull_failed: {registry} refused the connection"
    if "x509" in low or "certificate" in low:
        return (f"image.pull_failed: this host's Docker does not trust {registry}'s certificate "
                f"(/etc/docker/certs.d/{registry}/ca.crt): {text[:200]}")
    if "hangs" in low or "timeout" in low or "deadline" in low:
        return f"image.pull_failed: {registry} did not answer ({text[:200]})"
    return f"image.pull_failed: {registry}: {text[:300]}"


def proof(sealer: Any, digest: str, now: float) -> str:
    """A membership proof for one tarball's transfer: ``DIGEST:TIME`` sealed with the cluster key."""
    return base64.b64encode(sealer.seal(f"{digest}:{now:.3f}".encode())).decode()


def proof_ok(sealer: Any, header: str | None, digest: str, now: float) -> bool:
    if not header:
        return False
    try:
        plain = sealer.open(base64.b64decode(header, validate=True))
    except (ValueError, TypeError):
        return False
    if plain is None:
        return False
    said, _, at = plain.decode(errors="replace").rpartition(":")
    try:
        return said == digest and abs(now - float(at)) <= PROOF_AGE
    except ValueError:
        return False


@dataclasses.dataclass
class Spool:
    """A tarball this host is receiving (or receiving an upload of): readers follow the writer."""

    path: Path
    size: int
    received: int = 0
    complete: bool = False
    failed: str | None = None
    grew: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    may_skip: bool = False
    """A host that need not end up a holder (a service's container waits, not ``corral image fetch``): if
    its bytes come from a relay, it keeps no copy."""
    leaf: bool = False
    """Its bytes came from a relay, not a whole copy: they go into the engine only, never onto this host's
    disk, and this host relays nothing and holds nothing. Writing a tarball into the page cache costs as
    much CPU as the engine's own staging of it; a leaf of the tree has nobody to pass it on to."""

    readable: int = 0
    """The bytes in the file, what a relay may send on (the received ones reach it a block at a time)."""

    def advance(self, received: int) -> None:
        self.received = received
        self._wake()

    def wrote(self, readable: int) -> None:
        self.readable = readable
        self._wake()

    def _wake(self) -> None:
        self.grew.set()
        self.grew = asyncio.Event()


def _padded(size: int) -> int:
    """``size`` rounded up to whole tar blocks."""
    return -(-size // peerpull.TAR_BLOCK) * peerpull.TAR_BLOCK


def _shared(digests: list[str], stack: tuple[str, ...]) -> int:
    """How many of an image's first layers an engine's image has, in the same order (the same chain)."""
    count = 0
    for mine, theirs in zip(digests, stack, strict=False):
        if mine != theirs:
            break
        count += 1
    return count


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tarball_manifest(path: Path) -> tuple[str, tuple[str, ...]]:
    """(image id, tags) of a ``docker save`` tarball of one image: ImageError if it is not one."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            member = tar.extractfile("manifest.json")
            if member is None:
                raise ImageError("the tarball has no manifest.json: make it with `docker save`")
            manifest = json.loads(member.read(1 << 20))
    except KeyError:
        raise ImageError("the tarball has no manifest.json: make it with `docker save`") from None
    except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
        raise ImageError(f"the tarball cannot be read ({exc}): is it a whole `docker save` file?") \
            from None
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        raise ImageError("the tarball must hold exactly one image (`docker save IMAGE`)")
    config = str(manifest[0].get("Config") or "")
    hexid = config.rsplit("/", 1)[-1].removesuffix(".json")
    if len(hexid) != 64 or any(c not in "0123456789abcdef" for c in hexid):
        raise ImageError("the tarball's manifest names no image config")
    tags = tuple(str(t) for t in manifest[0].get("RepoTags") or ())
    return "sha256:" + hexid, tags


class ImageManager:
    def __init__(self, host: str, state: ClusterState, engine: ImageEngine, data_dir: Path, secret: bytes,
                 sealer: Any, session: aiohttp.ClientSession | None, api_of: Callable[[str], str | None],
                 propose: Callable[[Command], Awaitable[object]], kick: Callable[[], None] = lambda: None,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic,
                 send_rate: float | None = None, bulk_bind: tuple[str, int] | None = None) -> None:
        self.host, self.state, self.engine = host, state, engine
        self.dir = data_dir / CACHE_DIR
        self.secret, self.sealer, self.session = secret, sealer, session
        self.api_of, self.propose, self.kick = api_of, propose, kick
        self.rng = rng or random.Random()
        self.clock = clock
        self.send_rate = send_rate
        """Bytes/s at most per tarball sent (``--image-send-rate``)."""
        self.jobs: dict[str, Job] = {}
        self.spools: dict[str, Spool] = {}
        self.serving: dict[str, dict[str, int]] = {}
        """Tarball digest → the hosts this host sends it to now → the offset each has reached."""
        self.stats = {"served_bytes": 0, "received_bytes": 0, "redirects": 0, "resumes": 0, "digest_mismatch": 0}
        self._wake: asyncio.TimerHandle | None = None
        self._building = asyncio.Lock()
        self.pending: dict[str, float] = {}
        """Tarballs kept here whose ImageAdd is not committed yet (an upload, a build) → since when."""
        self.keeping: dict[str, asyncio.Task[None]] = {}
        """Fetched tarballs being made this host's copy (:meth:`_keep`), by digest."""
        self.bulk_bind = bulk_bind
        """Where this host's bulk channel listens (:mod:`agent.node.bulk`); None: tarballs go over the API."""
        self.bulk_port: int | None = None
        self.tickets = bulk.Tickets()
        self._bulk_conns: set[asyncio.Task[None]] = set()
        self.indexes: dict[str, peerpull.Index] = {}
        """Tarball digest → what its registry routes serve (:func:`peerpull.index_tarball`, made once)."""
        self.blob_streams = 0
        """Blobs this host sends to peers now (:meth:`send_blob`)."""
        self.stats.update(blob_served_bytes=0, delta_loads=0, delta_bytes=0, delta_failures=0, leaf_fetches=0)

    # ------------------------------------------------------------------ life cycle

    @contextlib.asynccontextmanager
    async def running(self, feed: Feed) -> AsyncIterator[ImageManager]:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "partial").mkdir(exist_ok=True)
        for stale in (self.dir / "partial").iterdir():  # a transfer the last run did not finish
            stale.unlink(missing_ok=True)
        changes = feed.subscribe(lambda c: c.topic in (Topic.IMAGE, Topic.ALL), "images")

        async def follow() -> None:
            while True:
                await self.sync_holdings()
                await changes.next()
                waiting = [j for j in self.jobs.values() if not j.running and j.error is not None]
                for job in waiting:  # new credentials or a new holder: try again now
                    job.retry_at = 0.0
                if waiting:
                    self.kick()

        listener = self._bulk_listen() if self.bulk_bind is not None else None
        try:
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(supervised(follow(), "image catalog"))
                if listener is not None:
                    await stack.enter_async_context(supervised(self._bulk_accept(listener), "image bulk channel"))
                yield self
        finally:
            if listener is not None:
                listener.close()
                self.bulk_port = None
            for task in [*self._bulk_conns, *self.keeping.values()]:
                task.cancel()
            await asyncio.gather(*self._bulk_conns, *self.keeping.values(), return_exceptions=True)
            changes.close()
            for job in self.jobs.values():
                if job.task is not None:
                    job.task.cancel()
            await asyncio.gather(*(j.task for j in self.jobs.values() if j.task), return_exceptions=True)
            if self._wake is not None:
                self._wake.cancel()

    def cached(self, digest: str) -> Path:
        return self.dir / f"{digest}.tar"

    async def sync_holdings(self) -> None:
        """Say which catalog tarballs this host holds (after a restart, a lost file) and drop the files of
        images the catalog no longer has."""
        digests = {image.digest: image for image in self.state.images.catalog.values()}
        now = time.monotonic()
        for digest in [d for d, since in self.pending.items() if d in digests or now - since > PENDING_AGE]:
            del self.pending[digest]
        for path in self.dir.glob("*.tar"):
            # an upload or a build is kept before its ImageAdd is committed: not an orphan yet
            if path.stem not in digests and path.stem not in self.pending:
                path.unlink(missing_ok=True)
        for digest in [d for d in self.indexes if d not in digests]:
            del self.indexes[digest]
        for image in digests.values():
            has = self.cached(image.digest).exists()
            if has != (self.host in image.holders) and image.digest not in self.spools:
                with contextlib.suppress(Exception):
                    await self.propose(ImageHeld(image.id, self.host, has))

    # ------------------------------------------------------------------ what the reconciler asks

    async def check(self, reference: str, policy: PullPolicy = PullPolicy.IF_NOT_PRESENT) -> Wait | None:
        """None if a container of ``reference`` can be created now; else why not, with a job started."""
        now = self.clock()
        catalog = self.state.images.by_reference(reference)
        job = self.jobs.get(reference)
        if job is not None and job.running:
            return Wait(Status.PULLING, job.describe())
        always = policy is PullPolicy.ALWAYS and catalog is None  # a catalog image has no registry to ask again
        fresh = job is not None and job.error is None and job.done_at is not None and now - job.done_at < ALWAYS_FRESH
        if (not always or fresh) and await self.engine.image_inspect(catalog.id if catalog else reference):
            return None
        if job is not None and job.error is not None and now < job.retry_at:
            return Wait(Status.PULL_FAILED, job.error)
        self._start(reference, catalog)
        return Wait(Status.PULLING, self.jobs[reference].describe())

    async def get_now(self, image: CatalogImage) -> Job:
        """Make this host hold a catalog image now (``corral image fetch``: warm a host before it is
        needed); the job, done or failed. A job already getting it is waited for, not doubled."""
        reference = image.tags[0] if image.tags else image.id
        job = self.jobs.get(reference)
        if (job is None or not job.running) and await self.engine.image_inspect(image.id) is not None \
                and self.cached(image.digest).exists():
            return job or Job(reference, "peer", progress=1.0, done_at=self.clock())
        if job is not None and job.running and not job.keep:
            # a container's fetch is under way: it may end as a delta or a leaf, which keep no tarball
            assert job.task is not None
            await asyncio.shield(job.task)
            if job.error is None and self.cached(image.digest).exists():
                return job
            if image.digest in self.keeping:
                await asyncio.shield(self.keeping[image.digest])
                if self.cached(image.digest).exists():
                    return job
        if job is None or not job.running:
            self._start(reference, image)
            job = self.jobs[reference]
            job.keep = True
        assert job.task is not None
        await asyncio.shield(job.task)
        return job

    def _start(self, reference: str, catalog: CatalogImage | None) -> None:
        old = self.jobs.get(reference)
        job = Job(reference, "peer" if catalog else f"registry {registry_of(reference)}",
                  attempts=(old.attempts if old and old.error else 0))
        job.via = "" if catalog else registry_of(reference)
        self.jobs[reference] = job
        job.task = asyncio.get_running_loop().create_task(self._run(job, catalog), name=f"image {reference}")

    async def _run(self, job: Job, catalog: CatalogImage | None) -> None:
        job.attempts += 1
        job.timeline = {}
        job.delta_missing = None
        job.mark("started")
        try:
            if catalog is not None:
                await self.fetch(catalog, job)
            else:
                await self._pull(job)
                job.mark("loaded")
        except asyncio.CancelledError:
            raise
        except (ImageError, PullFailed) as exc:
            self._failed(job, exc.reason)
        except EngineUnreachable as exc:
            self._failed(job, f"image.pull_failed: {exc.message}")
        except Exception as exc:  # a bug: say so, and retry like any failure
            log.exception("getting image %s failed", job.reference)
            self._failed(job, f"image.pull_failed: {type(exc).__name__}: {exc}")
        else:
            job.error, job.done_at, job.progress = None, self.clock(), 1.0
            log.info("image %s is here (%s)", job.reference, job.describe())
        self.kick()

    def _failed(self, job: Job, reason: str) -> None:
        delay = min(BACKOFF_FIRST * 2 ** (job.attempts - 1), BACKOFF_MAX)
        job.error, job.retry_at = reason, self.clock() + delay
        log.warning("%s (attempt %d; again in %.0f s)", reason, job.attempts, delay)
        loop = asyncio.get_running_loop()
        if self._wake is None or self._wake.when() > loop.time() + delay:
            if self._wake is not None:
                self._wake.cancel()
            self._wake = loop.call_later(delay + 0.01, self.kick)

    def _progress(self, job: Job, share: float | None) -> None:
        """Keep the job's share; report it (wake the reconciler, which writes the status) when it is the
        first, the end, or has moved ``PROGRESS_STEP`` in at least ``PROGRESS_EVERY`` seconds."""
        if share == job.progress:
            return
        job.progress = share
        now = self.clock()
        last = job.reported
        if share is None or share >= 1.0 or last is None \
                or (share - last[0] >= PROGRESS_STEP and now - last[1] >= PROGRESS_EVERY):
            job.reported = (share if share is not None else 0.0, now)
            self.kick()

    # ------------------------------------------------------------------ from a registry

    def credentials(self, registry: str) -> RegistryAuth | None:
        record = self.state.images.registries.get(registry)
        if record is None:
            return None
        return RegistryAuth(record.username,
                            sealing.open_sealed(self.secret, REGISTRY_PURPOSE, record.sealed_password).decode())

    async def _pull(self, job: Job) -> None:
        registry = registry_of(job.reference)
        try:
            auth = self.credentials(registry)
        except sealing.SealError as exc:
            raise ImageError(f"image.pull_failed: the credentials of {registry} cannot be opened: {exc}") from None
        try:
            await self.engine.pull(job.reference, auth, lambda share: self._progress(job, share))
        except PullFailed as exc:
            raise ImageError(pull_reason(registry, job.reference, exc.reason, auth is not None)) from None

    # ------------------------------------------------------------------ from a peer

    async def fetch(self, image: CatalogImage, job: Job | None = None) -> None:
        """Get the catalog image's tarball from its holders into the engine (and keep it here)."""
        job = job or Job(image.id, "peer")
        if image.digest in self.keeping:  # fetched a moment ago and still being kept: never write it twice
            await asyncio.shield(self.keeping[image.digest])
        if self.cached(image.digest).exists():  # the tarball is here, the image not (removed by hand)
            await self._load_file(image)
            return
        if not job.keep and await self._delta_from_peers(image, job):
            return
        self._check_space(image.tar_size)
        spool = Spool(self.dir / "partial" / f"{image.digest}.tar", image.tar_size, may_skip=not job.keep)
        self.spools[image.digest] = spool
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=16)

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item

        load = asyncio.get_running_loop().create_task(self.engine.load_stream(chunks(), image.tar_size))
        try:
            await self._receive(image, job, spool, queue)
            job.mark("received")
            await load
            if await self.engine.image_inspect(image.id) is None:
                raise ImageError(f"image.pull_failed: the tarball loaded, but not as image {image.id[:19]}")
            job.mark("loaded")
        except BaseException as exc:
            spool.failed = str(exc) or type(exc).__name__
            spool.advance(spool.received)
            if not load.done():
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(ImageError(spool.failed))
                load.cancel()
            with contextlib.suppress(BaseException):
                await load
            spool.path.unlink(missing_ok=True)
            if self.spools.get(image.digest) is spool:
                del self.spools[image.digest]
            if isinstance(exc, EngineRefused):
                raise ImageError(f"image.pull_failed: this host's engine refused the tarball: {exc.message}") \
                    from None
            raise
        if spool.leaf:  # relayed to it: nothing kept, nothing held
            spool.path.unlink(missing_ok=True)
            if self.spools.get(image.digest) is spool:
                del self.spools[image.digest]
            self.stats["leaf_fetches"] += 1
            return
        # The image is in the engine: its containers can start. Keeping the tarball (on disk, then said to
        # be held) goes on beside them: an fsync of a whole tarball takes seconds on a busy disk.
        task = asyncio.get_running_loop().create_task(self._keep(image, spool, job), name=f"keep {image.digest[:12]}")
        self.keeping[image.digest] = task
        task.add_done_callback(lambda t: self.keeping.pop(image.digest, None) if self.keeping.get(image.digest)
                               is t else None)

    async def _keep(self, image: CatalogImage, spool: Spool, job: Job) -> None:
        """Make a fetched tarball this host's copy: on disk first (fsync, in a thread), renamed, and only
        then said to be held (:class:`ImageHeld`). Until then it is relayed from its spool."""
        try:
            await asyncio.to_thread(_fsync_path, spool.path)
            spool.path.replace(self.cached(image.digest))
        except OSError as exc:
            log.warning("image %s is loaded, but its tarball could not be kept: %s", image.id[:19], exc)
            spool.path.unlink(missing_ok=True)
            return
        finally:
            if self.spools.get(image.digest) is spool:
                del self.spools[image.digest]
        spool.complete = True
        spool.advance(spool.received)
        job.mark("kept")
        try:
            await self.propose(ImageHeld(image.id, self.host, True))
        except Exception as exc:  # removed from the catalog meanwhile, or no leader: the next sync says it
            log.info("could not say this host holds %s: %s", image.id[:19], getattr(exc, "message", exc))
            await self.sync_holdings()

    async def kept(self) -> None:
        """Wait until every fetched tarball is kept (tests, shutdown)."""
        while self.keeping:
            await asyncio.gather(*list(self.keeping.values()), return_exceptions=True)

    def _check_space(self, size: int) -> None:
        free = shutil.disk_usage(self.dir).free
        if free < size + FREE_MARGIN:
            raise ImageError(f"image.pull_failed: {size // 2**20} MiB do not fit on this host's disk "
                             f"({free // 2**20} MiB free, {FREE_MARGIN // 2**20} MiB kept)")

    async def _receive(self, image: CatalogImage, job: Job, spool: Spool,
                       queue: asyncio.Queue[bytes | BaseException | None]) -> None:
        hasher = hashlib.sha256()
        failed: dict[str, str] = {}
        hints: list[str] = []
        held_back = b""
        moved = time.monotonic()  # when the last bytes came (or the fetch began)
        # around the page cache (agent.node.directio); a relay reads the file up to ``spool.readable``
        out = directio.BlockWriter(spool.path, spool.wrote)
        try:
            while spool.received < image.tar_size:
                current = self.state.images.catalog.get(image.id)
                holders = current.holders if current is not None else image.holders
                source = transfer.next_source(holders, hints, self.host, failed, self.rng)
                busy = [h for h, why in failed.items() if why.startswith(BUSY)]
                if source is None and busy and time.monotonic() - moved < SOURCE_STALL:
                    # every holder was busy or had nothing yet to pass on (relays that have just begun):
                    # ask again shortly rather than fail the job and start over after its back-off
                    await asyncio.sleep(BUSY_RETRY)
                    for host in busy:
                        del failed[host]
                    continue
                if source is None:
                    tried = ", ".join(f"{h} ({why})" for h, why in failed.items()) or "none"
                    raise ImageError(f"image.pull_failed: no host that holds the image could send it (tried: "
                                     f"{tried})")
                if spool.received:
                    job.resumed.append(f"{source}@{spool.received}")
                    self.stats["resumes"] += 1
                job.via = source
                hints = [h for h in hints if h != source]
                try:
                    async for chunk in self._download(source, image.digest, spool.received, spool):
                        chunk = chunk[:image.tar_size - spool.received]
                        if not spool.leaf:
                            try:
                                await out.write(chunk)
                            except OSError as exc:  # this host's disk, not the sender: no other source helps
                                raise SpoolFailed(f"image.pull_failed: this host's disk refused the tarball: "
                                                  f"{exc.strerror or exc}") from None
                        hasher.update(chunk)
                        if not spool.received:
                            job.mark("first_byte")
                        if held_back:
                            await queue.put(held_back)
                        held_back = chunk
                        moved = time.monotonic()
                        spool.advance(spool.received + len(chunk))
                        self.stats["received_bytes"] += len(chunk)
                        self._progress(job, spool.received / image.tar_size)
                        if spool.received >= image.tar_size:
                            break
                except SpoolFailed:
                    raise
                except Redirected as exc:
                    self.stats["redirects"] += 1
                    hints = [h for h in exc.hosts if h not in failed] + hints
                    failed[source] = f"{BUSY} {exc.reason or 'redirected'}"
                except (aiohttp.ClientError, TimeoutError, OSError, ImageError) as exc:
                    failed[source] = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
                    log.info("image %s: %s stopped sending at %d bytes (%s)", image.id[:19], source,
                             spool.received, failed[source])
                if spool.received < image.tar_size and source not in failed:
                    failed[source] = "ended early"
            await out.finish()
            if hasher.hexdigest() != image.digest:
                self.stats["digest_mismatch"] += 1
                raise ImageError(f"image.pull_failed: the bytes received (from {', '.join(failed) or job.via}) do "
                                 "not have the image's SHA-256: not loaded")
            await queue.put(held_back)
            await queue.put(None)
        finally:
            await out.close()

    async def _download(self, host: str, digest: str, offset: int, spool: Spool | None = None) -> AsyncIterator[bytes]:
        """The tarball from ``offset``, from ``host``; a transfer that begins at 0 from a relay makes
        ``spool`` a leaf (when it may be one) with its first byte, not before: a relay that sends nothing
        leaves the spool as it was for the next source."""
        url = self.api_of(host)
        if url is None or self.session is None:
            raise ImageError("no API address known")
        headers = {"Range": f"bytes={offset}-", MEMBER_HEADER: proof(self.sealer, digest, time.time()),
                   "Corral-Host": self.host}
        if self.bulk_bind is not None:
            headers[bulk.HEADER] = "1"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=SOURCE_STALL)
        offer: dict[str, Any] | None = None
        async with self.session.get(f"{url}/v1/internal/images/{digest}", headers=headers, timeout=timeout) as resp:
            if resp.status == 503:
                body = await resp.json(content_type=None)
                redirect = body.get("redirect") if isinstance(body, dict) else None
                reason = str(body.get("message") or "") if isinstance(body, dict) else ""
                raise Redirected([str(h) for h in redirect or ()], reason[:200])
            if resp.status == 200 and resp.headers.get(bulk.HEADER):
                body = await resp.json(content_type=None)
                offer = body.get("bulk") if isinstance(body, dict) else None
                if not isinstance(offer, dict):
                    raise ImageError("the holder's bulk offer has no ticket")
                relay = bool(offer.get("relay"))
            elif resp.status != 206:
                raise ImageError(f"HTTP {resp.status}: {(await resp.read())[:200]!r}")
            else:
                leafy = spool is not None and spool.may_skip and offset == 0 and resp.headers.get(RELAY_HEADER) == "1"
                async for chunk in resp.content.iter_chunked(CHUNK):
                    if leafy and spool is not None and chunk and not spool.received:
                        spool.leaf = True
                    yield chunk
                return
        try:
            ticket, port = bytes.fromhex(str(offer["ticket"])), int(offer["port"])
        except (KeyError, ValueError, TypeError):
            raise ImageError("the holder's bulk offer is malformed") from None
        leafy = spool is not None and spool.may_skip and offset == 0 and relay
        key = bulk.transfer_key(self.secret, ticket, digest, offset)
        address = yarl.URL(url).host or ""
        async for chunk in bulk.receive(address, port, ticket, key, SOURCE_STALL):
            if leafy and spool is not None and chunk and not spool.received:
                spool.leaf = True
            yield chunk

    async def _load_file(self, image: CatalogImage) -> None:
        path = self.cached(image.digest)

        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk

        try:
            await self.engine.load_stream(chunks(), path.stat().st_size)
        except EngineRefused as exc:
            path.unlink(missing_ok=True)
            raise ImageError(f"image.pull_failed: this host's copy of the tarball was refused: {exc.message}") \
                from None
        if await self.engine.image_inspect(image.id) is None:
            raise ImageError(f"image.pull_failed: the tarball loaded, but not as image {image.id[:19]}")

    # ------------------------------------------------------------------ a delta: the missing layers only

    async def _delta_from_peers(self, image: CatalogImage, job: Job) -> bool:
        """Load only the layers this host's engine lacks, when that is at most :data:`DELTA_WHEN_MISSING`
        of the image (a rebuild on a base the host has): the config and the missing layers come by digest
        from a holder's registry routes, each checked against its digest, and go into the engine's load
        as a ``docker save`` tarball that names every layer but holds only those (Docker skips a layer
        file it has the layer of). True once the engine has the image; False when the whole tarball is the
        way (most of the image is new here, no holder serves it so, or every delta broke off)."""
        if self.session is None:
            return False
        current = self.state.images.catalog.get(image.id)
        holders = sorted(h for h in (current.holders if current is not None else image.holders) if h != self.host)
        self.rng.shuffle(holders)
        stacks: list[tuple[str, ...]] | None = None
        for host in holders:
            url = self.api_of(host)
            if url is None:
                continue
            try:
                layers = await self._peer_layers(url, image)
                if layers is None:  # this holder cannot serve it by digest: the next may
                    continue
                if stacks is None:
                    stacks = await self.engine.layer_stacks()
                digests = [d for d, _, _ in layers]
                have = max((_shared(digests, stack) for stack in stacks), default=0)
                missing = layers[have:]
                total = sum(size for _, size, _ in layers) or 1
                job.delta_missing = sum(size for _, size, _ in missing)
                if not have or job.delta_missing > DELTA_WHEN_MISSING * total \
                        or any(kind != peerpull.LAYER_TAR for _, _, kind in missing):
                    return False
                job.via = host
                job.mark("delta")
                await self._load_delta(url, image, digests, missing, job)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError, TypeError, ImageError,
                    EngineRefused) as exc:
                reason = getattr(exc, "reason", None) or getattr(exc, "message", None) or str(exc) or type(exc).__name__
                self.stats["delta_failures"] += 1
                job.progress = None  # what comes next (another holder, the tarball) counts from its own start
                job.resumed.append(f"{host}: {reason[:120]}")
                log.info("image %s: the delta from %s broke off (%s)", image.id[:19], host, reason)
                continue
            job.mark("received")
            job.mark("loaded")
            self.stats["delta_loads"] += 1
            return True
        return False

    def _grant_header(self, image: CatalogImage) -> dict[str, str]:
        grant = peerpull.grant(self.sealer, image.id, time.time())
        return {"Authorization": "Basic " + base64.b64encode(f"{self.host}:{grant}".encode()).decode()}

    async def _peer_layers(self, url: str, image: CatalogImage) -> list[tuple[str, int, str]] | None:
        """(digest, size, media type) of each layer of the manifest the holder at ``url`` serves for
        ``image`` (an uncompressed layer's digest is its ``diff_id``); None if it serves none."""
        assert self.session is not None
        path = f"/v2/{peerpull.REPOSITORY}/manifests/{image.id.removeprefix('sha256:')}"
        timeout = aiohttp.ClientTimeout(total=10, sock_connect=5)
        async with self.session.get(url + path, headers=self._grant_header(image), timeout=timeout) as resp:
            if resp.status != 200:
                return None
            body = await resp.json(content_type=None)
        layers = body.get("layers") if isinstance(body, dict) else None
        if not isinstance(layers, list):
            return None
        return [(str(layer.get("digest")), int(layer.get("size") or 0), str(layer.get("mediaType")))
                for layer in layers if isinstance(layer, dict)]

    async def _load_delta(self, url: str, image: CatalogImage, digests: list[str],
                          missing: list[tuple[str, int, str]], job: Job) -> None:
        """The engine's load of the config and the ``missing`` layers of ``image`` from the holder at
        ``url``; the manifest (which names every layer) goes last, only once every byte matched its
        digest: a delta that breaks off or does not match never completes a load."""
        assert self.session is not None
        headers = self._grant_header(image)
        blobs = f"{url}/v2/{peerpull.REPOSITORY}/blobs/"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=SOURCE_STALL)
        async with self.session.get(blobs + image.id, headers=headers, timeout=timeout) as resp:
            if resp.status != 200:
                raise ImageError(f"its config: HTTP {resp.status}")
            config = b""
            async for chunk in resp.content.iter_chunked(CHUNK):
                config += chunk
                if len(config) > CONFIG_MAX:
                    raise ImageError(f"its config is larger than {CONFIG_MAX} bytes")
        if "sha256:" + hashlib.sha256(config).hexdigest() != image.id:
            raise ImageError("its config does not have the image's id")
        if list((json.loads(config).get("rootfs") or {}).get("diff_ids") or []) != digests:
            raise ImageError("its manifest's layers are not the config's")
        hexid = image.id.removeprefix("sha256:")
        names = [f"{d.removeprefix('sha256:')}/layer.tar" for d in digests]
        manifest = json.dumps([{"Config": f"{hexid}.json", "RepoTags": list(image.tags), "Layers": names}]).encode()
        sizes = [len(config), *(size for _, size, _ in missing), len(manifest)]
        total = sum(peerpull.TAR_BLOCK + _padded(size) for size in sizes) + 2 * peerpull.TAR_BLOCK
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=16)

        async def body() -> AsyncIterator[bytes]:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item

        load = asyncio.get_running_loop().create_task(self.engine.load_stream(body(), total))

        async def put(item: bytes | BaseException | None) -> None:
            if load.done():  # the engine stopped reading: its answer says why
                await load
                raise ImageError("this host's engine ended the load early")
            await asyncio.wait_for(queue.put(item), SOURCE_STALL)

        moved = 0
        try:
            await put(peerpull.tar_member(f"{hexid}.json", config))
            for digest, size, _ in missing:
                await put(peerpull.tar_header(f"{digest.removeprefix('sha256:')}/layer.tar", size))
                hasher, got = hashlib.sha256(), 0
                async with self.session.get(blobs + digest, headers=headers, timeout=timeout) as resp:
                    if resp.status != 200:
                        raise ImageError(f"layer {digest[:19]}: HTTP {resp.status}")
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        got += len(chunk)
                        if got > size:
                            raise ImageError(f"layer {digest[:19]} is longer than its manifest says")
                        hasher.update(chunk)
                        await put(chunk)
                        moved += len(chunk)
                        self.stats["delta_bytes"] += len(chunk)
                        self._progress(job, moved / max(1, job.delta_missing or 1))
                if got != size or "sha256:" + hasher.hexdigest() != digest:
                    self.stats["digest_mismatch"] += 1
                    raise ImageError(f"layer {digest[:19]}: the bytes received do not have its digest: not loaded")
                await put(bytes(_padded(size) - size))
            await put(peerpull.tar_member("manifest.json", manifest) + bytes(2 * peerpull.TAR_BLOCK))
            await put(None)
            await load
        except BaseException as exc:
            if not load.done():
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(ImageError(str(exc)))
                load.cancel()
            with contextlib.suppress(BaseException):
                await load
            raise
        if await self.engine.image_inspect(image.id) is None:
            raise ImageError(f"the delta loaded, but not as image {image.id[:19]}")

    async def index(self, image_id: str) -> peerpull.Index:
        """What this host's registry routes serve of a catalog image (ImageError: it holds no tarball of it,
        or the tarball cannot be served so)."""
        image = self.state.images.catalog.get(image_id)
        if image is None or not self.cached(image.digest).exists():
            raise ImageError(f"this host holds no tarball of {image_id[:19]}")
        index = self.indexes.get(image.digest)
        if index is None:
            try:
                index = await asyncio.to_thread(peerpull.index_tarball, self.cached(image.digest))
            except peerpull.Unservable as exc:
                raise ImageError(exc.reason) from None
            if index.image_id != image.id:
                raise ImageError(f"the tarball's config is image {index.image_id[:19]}, not {image.id[:19]}")
            self.indexes[image.digest] = index
        return index

    async def _pace(self, sent: int, began: float) -> None:
        """Keep a send of ``sent`` bytes since ``began`` (monotonic) under ``--image-send-rate``."""
        if self.send_rate:
            await asyncio.sleep(max(0.0, sent / self.send_rate - (time.monotonic() - began)))

    def blob_slot(self) -> bool:
        """May one more blob be sent now (at most :data:`peerpull.BLOB_STREAMS` at once)?"""
        return self.blob_streams < peerpull.BLOB_STREAMS

    async def send_blob(self, index: peerpull.Index, blob: peerpull.Blob, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start``…``end`` of one blob, from this host's tarball (counted in ``blob_streams``)."""
        image = self.state.images.catalog.get(index.image_id)
        if image is None:
            raise ImageError(f"image {index.image_id[:19]} left the catalog")
        self.blob_streams += 1
        view = memoryview(bytearray(CHUNK))
        began, sent = time.monotonic(), 0
        try:
            with self.cached(image.digest).open("rb", buffering=0) as f:
                f.seek(blob.offset + start)
                left = end - start
                while left > 0:
                    n = f.readinto(view[:min(left, CHUNK)])
                    if not n:
                        raise ImageError("this host's tarball ended early")
                    left -= n
                    self.stats["blob_served_bytes"] += n
                    yield bytes(view[:n])
                    sent += n
                    await self._pace(sent, began)  # --image-send-rate caps a blob as it caps a tarball
        finally:
            self.blob_streams -= 1

    # ------------------------------------------------------------------ sending to a peer

    def admission(self, digest: str, asker: str, offset: int) -> transfer.Admission:
        spool = self.spools.get(digest)
        complete = self.cached(digest).exists()
        if not complete and spool is None:
            return transfer.Admission(False, (), "this host does not hold that image")
        if not complete and spool is not None and spool.leaf:
            return transfer.Admission(False, (), "this host keeps no copy of it (its bytes were relayed to it)")
        admitted = transfer.admit(asker, offset, complete, spool.readable if spool else 0,
                                  self.serving.get(digest, {}))
        if not complete and not admitted.serve:  # a relay's askers are leaves: nobody to send the asker to
            return dataclasses.replace(admitted, redirect=())
        return admitted

    async def send(self, digest: str, asker: str, offset: int) -> AsyncIterator[bytes]:
        """The tarball from ``offset``: from this host's copy, or relayed from its spool as it fills."""
        async for piece in self._spans(digest, asker, offset):
            yield bytes(piece)

    async def _spans(self, digest: str, asker: str, offset: int) -> AsyncIterator[memoryview]:
        """The tarball from ``offset``, a block at a time (each view good until the next), from this host's
        copy or from its spool as it fills, read around the page cache (agent.node.directio); counted in
        ``serving``."""
        serving = self.serving.setdefault(digest, {})
        serving[asker] = offset
        started, sent = time.monotonic(), 0
        try:
            spool = self.spools.get(digest)
            path = self.cached(digest) if spool is None else spool.path
            reader = directio.BlockReader(path, cached_first=spool is None)  # a spool went around the cache
            try:
                size = path.stat().st_size if spool is None else spool.size
                while True:
                    limit = size if spool is None or spool.complete else spool.readable
                    piece = await reader.read(offset, limit)
                    if piece:
                        n = len(piece)
                        offset += n
                        serving[asker] = offset
                        self.stats["served_bytes"] += n
                        yield piece
                        sent += n
                        await self._pace(sent, started)
                        continue
                    if spool is None or spool.complete or offset >= size:
                        return
                    if spool.failed:
                        raise ImageError(f"this host's own transfer failed: {spool.failed}")
                    await asyncio.wait_for(spool.grew.wait(), SOURCE_STALL)
            finally:
                reader.close()
        finally:
            serving.pop(asker, None)
            if not serving:
                self.serving.pop(digest, None)

    # ------------------------------------------------------------------ the bulk channel (agent.node.bulk)

    def offer_bulk(self, digest: str, asker: str, offset: int) -> dict[str, object] | None:
        """A ticket for ``asker`` to take the tarball over the bulk channel (None: this host has none). Its
        slot counts as taken from now (the tree's admission), until the ticket is used or runs out."""
        if self.bulk_port is None:
            return None
        now = time.monotonic()
        self._expire_tickets(now)
        ticket = self.tickets.issue(self.secret, digest, asker, offset, now)
        self.serving.setdefault(digest, {})[asker] = offset
        asyncio.get_running_loop().call_later(bulk.TICKET_AGE + 0.5, self._expire_tickets)
        return {"port": self.bulk_port, "ticket": ticket.hex(), "relay": not self.cached(digest).exists()}

    def relays(self, digest: str) -> bool:
        """Does this host send ``digest`` from a spool still filling (a relay), not a whole copy?"""
        return not self.cached(digest).exists()

    def _expire_tickets(self, now: float | None = None) -> None:
        for ticket in self.tickets.expired(time.monotonic() if now is None else now):
            serving = self.serving.get(ticket.digest, {})
            if serving.get(ticket.asker) == ticket.offset:  # never came: its slot is free again
                serving.pop(ticket.asker, None)
                if not serving:
                    self.serving.pop(ticket.digest, None)

    def _bulk_listen(self) -> socket.socket:
        assert self.bulk_bind is not None
        host, port = self.bulk_bind
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"the image bulk channel cannot listen on {host}:{port} ({exc.strerror}; "
                                     "--image-port, 0 for none)") from None
        self.bulk_port = sock.getsockname()[1]
        return sock

    async def _bulk_accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            task = loop.create_task(self._bulk_serve(conn), name="image bulk send")
            self._bulk_conns.add(task)
            task.add_done_callback(self._bulk_conns.discard)

    async def _bulk_serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            first = memoryview(bytearray(bulk.TICKET_BYTES + bulk.TAG))
            try:
                async with asyncio.timeout(bulk.CONNECT_TIMEOUT):
                    await bulk.recv_exactly(conn, first)
            except (TimeoutError, OSError):
                return
            ticket = self.tickets.take(bytes(first[:bulk.TICKET_BYTES]), time.monotonic())
            if ticket is None or not bulk.hello_ok(ticket.key, bytes(first[bulk.TICKET_BYTES:])):
                log.info("a bulk connection with no valid ticket was refused")
                return
            sealer = bulk.FrameSealer(ticket.key)
            async for piece in self._spans(ticket.digest, ticket.asker, ticket.offset):
                await loop.sock_sendall(conn, sealer.seal(piece))
        except (OSError, ImageError, TimeoutError) as exc:
            log.info("bulk send stopped: %s", exc)
        finally:
            conn.close()

    def size_of(self, digest: str) -> int | None:
        spool = self.spools.get(digest)
        if spool is not None:
            return spool.size
        path = self.cached(digest)
        return path.stat().st_size if path.exists() else None

    # ------------------------------------------------------------------ an upload: `corral image load`

    async def receive_upload(self, body: AsyncIterator[bytes], length: int | None, max_size: int,
                             load: bool = True) -> ImageAdd:
        """Keep an uploaded ``docker save`` tarball, load it into this host's engine (``load``: it is
        not there yet), and say what it is (the command that puts it into the catalog). ImageError
        (nothing kept) if it is not one."""
        if length is not None:
            if length > max_size:
                raise ImageError(f"the tarball is {length} bytes; at most {max_size} are taken")
            self._check_space(length)
        partial = self.dir / "partial" / f"upload-{os.getpid()}-{self.rng.getrandbits(48):012x}.tar"
        hasher = hashlib.sha256()
        size = 0
        try:
            with partial.open("wb") as out:
                async for chunk in body:
                    size += len(chunk)
                    if size > max_size:
                        raise ImageError(f"the tarball is larger than {max_size} bytes")
                    out.write(chunk)
                    hasher.update(chunk)
            if size == 0:
                raise ImageError("the request has no tarball")
            image_id, tags = tarball_manifest(partial)
            digest = hasher.hexdigest()
            self.dir.mkdir(parents=True, exist_ok=True)
            final = self.cached(digest)
            self.pending[digest] = time.monotonic()
            partial.replace(final)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ImageError(f"the tarball could not be kept on this host: {exc.strerror or exc}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        image = CatalogImage(image_id, tags, digest, size, (self.host,), "load", 0)
        try:
            if load:
                await self._load_file(image)
        except ImageError as exc:
            final.unlink(missing_ok=True)
            raise ImageError(exc.reason.removeprefix("image.pull_failed: ")) from None
        return ImageAdd(image_id, tags, digest, size, self.host, "load")

    async def build(self, context: bytes, tag: str, dockerfile: str, args: Mapping[str, str]) -> str:
        """Build a context with this host's engine (one build at a time per host: builds are heavy)."""
        async with self._building:
            return await self.engine.build(context, tag, {"corral.built": tag}, dockerfile, args)

    async def keep_local(self, reference: str, source: str) -> ImageAdd:
        """Save an image this host's engine has (one it built) as a catalog tarball kept here."""
        present = await self.engine.image_inspect(reference)
        if present is None:
            raise ImageError(f"this host's engine has no image {reference}")

        add = await self.receive_upload(self.engine.save(reference), None, 1 << 40, load=False)
        return dataclasses.replace(add, tags=tuple(sorted({*add.tags, normal_tag(reference)})), source=source)

    # ------------------------------------------------------------------ for the API

    def status(self) -> dict[str, object]:
        return {
            "jobs": [{"image": j.reference, "source": j.source, "state": "running" if j.running else
                      ("failed" if j.error else "done"), "detail": j.error or j.describe(), "attempts": j.attempts,
                      "resumed": list(j.resumed), "via": j.via, "delta_missing": j.delta_missing,
                      "timeline": {step: round(at, 3) for step, at in j.timeline.items()}} for j in self.jobs.values()],
            "serving": {d[:16]: dict(s) for d, s in self.serving.items()},
            "blob_streams": self.blob_streams,
            **self.stats,
        }


__all__ = ["ALWAYS_FRESH", "MEMBER_HEADER", "REGISTRY_PURPOSE", "RELAY_HEADER", "ImageEngine", "ImageError",
           "ImageManager", "Job", "Spool", "Wait", "proof", "proof_ok", "pull_reason", "tarball_manifest"]
