"""A fake Docker Engine (unit tests only: every lab test uses a real dockerd) and an in-memory agent
for API tests: a real single-voter Raft driver on loopback with in-memory storage, a real (unstarted)
gossip node, a real keyring, the real app — only the engine is fake."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import random
import shutil
import ssl
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import argon2
from aiohttp import web

from agent import ui
from agent.api.app import MAX_LINE_SIZE, create_app
from agent.api.auth import new_key
from agent.api.deps import ApiDeps, NodeInfo
from agent.api.passwords import ARGON2
from agent.cluster.feed import Feed
from agent.cluster.replica import Replica
from agent.model.commands import AdminBootstrap, CaSet, HostRegister, KeyCreate, UserCreate
from agent.model.state import ClusterState
from agent.node.dns import DnsServer
from agent.node.docker import LABEL_PREFIX, EngineContainer, EngineRefused, NameInUse, PullFailed
from agent.node.history import History
from agent.node.images import ImageManager
from agent.node.lb import LoadBalancers
from agent.node.overlay import OverlayRuntime
from agent.node.plan import Observed
from agent.node.reconciler import Reconciler
from agent.process.health import HealthMonitor
from mesh import pki
from mesh.gossip.node import GossipNode
from mesh.keyring import Keyring
from mesh.raft import config as raft_config
from mesh.raft.core import RaftNode
from mesh.raft.driver import RaftDriver
from mesh.raft.messages import ConfChangeOp
from mesh.raft.storage import AsyncMemoryStorage
from mesh.raft.transport import RaftTransport
from mesh.waiting import until_async

IMAGES = {"corral/base:latest": "sha256:" + "b" * 64}


@dataclasses.dataclass
class FakeContainer:
    id: str
    name: str
    config: Mapping[str, Any]
    state: str = "created"
    exit_code: int | None = None
    logs: list[str] = dataclasses.field(default_factory=list)
    finished_at: str | None = None  # State.FinishedAt, as Docker writes it
    starts: list[float] = dataclasses.field(default_factory=list)  # time.time() of each start

    def summary(self) -> EngineContainer:
        """As Docker lists it: the address asked for (``IPAMConfig``) is its address once it runs."""
        labels = dict(self.config.get("Labels") or {})
        endpoints = (self.config.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
        address = ((endpoints.get("corral") or {}).get("IPAMConfig") or {}).get("IPv4Address")
        return EngineContainer(self.id, self.name, str(self.config.get("Image", "")), labels, self.state,
                               self.exit_code, (address or "10.42.1.9") if self.state == "running" else None,
                               address=address)


class FakeContainers:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    async def list(self, label: str = LABEL_PREFIX + "instance") -> list[EngineContainer]:
        self.engine.calls["list"] += 1
        return [c.summary() for c in self.engine.containers_by_id.values()
                if label.split("=")[0] in (c.config.get("Labels") or {})]

    async def inspect(self, container_id: str) -> dict[str, Any]:
        c = self._get(container_id)
        state: dict[str, Any] = {"OOMKilled": False, "Running": c.state == "running"}
        if c.finished_at is not None:
            state["FinishedAt"] = c.finished_at
        return {"Id": c.id, "Config": {"Labels": dict(c.config.get("Labels") or {})}, "State": state}

    async def create(self, name: str, config: Mapping[str, object]) -> str:
        self.engine.calls["create"] += 1
        if any(c.name == name for c in self.engine.containers_by_id.values()):
            raise NameInUse(f"the container name {name} is taken", name=name)
        self.engine.serial += 1
        cid = f"{self.engine.serial:064x}"
        self.engine.containers_by_id[cid] = FakeContainer(cid, name, dict(config))
        return cid

    async def start(self, container_id: str) -> None:
        c = self._get(container_id)
        address = c.summary().address
        if address and address in await self.engine.network_addresses():  # Docker's IPAM refuses it
            raise EngineRefused(500, "Docker Engine at fake://docker refused a container start: "
                                "Address already in use")
        c.state = "running"
        c.starts.append(time.time())

    async def stop(self, container_id: str, grace: int = 10) -> None:
        c = self._get(container_id)
        c.state, c.exit_code = "exited", 0

    async def remove(self, container_id: str) -> None:  # an id or a name, as Docker takes
        for c in list(self.engine.containers_by_id.values()):
            if container_id in (c.id, c.name):
                del self.engine.containers_by_id[c.id]

    async def events(self, label: str = LABEL_PREFIX + "instance") -> AsyncIterator[dict[str, Any]]:
        queue = self.engine.events.subscribe()
        try:
            while True:
                yield await queue.get()
        finally:
            self.engine.events.unsubscribe(queue)

    async def logs(self, container_id: str, tail: int | None, follow: bool) -> AsyncIterator[str]:
        lines = self._get(container_id).logs
        for line in lines[-tail:] if tail else lines:
            yield line

    async def stats(self, container_id: str) -> dict[str, Any]:
        self._get(container_id)
        return {"cpu_stats": {"cpu_usage": {"total_usage": 200}, "system_cpu_usage": 1000, "online_cpus": 2},
                "precpu_stats": {"cpu_usage": {"total_usage": 100}, "system_cpu_usage": 500},
                "memory_stats": {"usage": 2**20, "limit": 2**30},
                "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20}},
                "blkio_stats": {"io_service_bytes_recursive": [{"op": "Read", "value": 5}]}}

    async def exec(self, container_id: str, cmd: Sequence[str], tty: bool, stdin: bool) -> FakeExec:
        c = self._get(container_id)
        if c.state != "running":
            raise EngineRefused(409, f"Docker Engine at fake://docker refused an exec create: container {c.id} is "
                                "not running")
        session = FakeExec(tuple(cmd), tty, stdin)
        self.engine.execs.append(session)
        return session

    def _get(self, container_id: str) -> FakeContainer:
        for c in self.engine.containers_by_id.values():
            if container_id in (c.id, c.name):
                return c
        raise EngineRefused(404, f"no such container {container_id}")


NOT_FOUND_IN_PATH = ('OCI runtime exec failed: exec failed: unable to start container process: exec: "{}": '
                     'executable file not found in $PATH: unknown\r\n')


class FakeExec:
    """A command in a fake container, as a few programs: ``true``; ``echo ARGS``; ``cat`` (its input,
    until it ends); ``warn ARGS`` (to standard error, exit 1); ``exitwith N``; anything else is not
    found (Docker's message on the output, exit 127, as the engine does)."""

    def __init__(self, cmd: tuple[str, ...], tty: bool, stdin: bool) -> None:
        self.cmd, self.tty, self.stdin = cmd, tty, stdin
        self.resizes: list[tuple[int, int]] = []
        self.closed = False
        self.code: int | None = None
        self._out: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        program, args = cmd[0], cmd[1:]
        if program == "cat":
            return  # until its input ends
        if program == "echo":
            self._emit(1, (" ".join(args) + "\n").encode())
        elif program == "warn":
            self._emit(2, (" ".join(args) + "\n").encode())
        elif program not in ("true", "exitwith"):
            self._emit(1, NOT_FOUND_IN_PATH.format(program).encode())
        self.code = {"true": 0, "echo": 0, "warn": 1}.get(program, int(args[0]) if program == "exitwith" else 127)
        self._out.put_nowait(None)

    def _emit(self, stream: int, data: bytes) -> None:
        self._out.put_nowait((1 if self.tty else stream, data))

    async def read(self) -> tuple[int, bytes] | None:
        return await self._out.get()

    async def write(self, data: bytes) -> None:
        assert self.stdin, "input to an exec started without stdin"
        if self.cmd[0] == "cat":
            self._emit(1, data)

    async def close_stdin(self) -> None:
        if self.cmd[0] == "cat" and self.code is None:
            self.code = 0
            self._out.put_nowait(None)

    async def resize(self, cols: int, rows: int) -> None:
        self.resizes.append((cols, rows))

    async def exit_code(self) -> int | None:
        return self.code

    async def close(self) -> None:
        self.closed = True


class EventHub:
    """Docker's event stream as aiodocker gives it: every subscriber sees every event (the reconciler and
    the stats sampler each their own copy). What is put before anyone subscribed waits for the first."""

    def __init__(self) -> None:
        self._subscribers: list[asyncio.Queue[dict[str, Any]]] = []
        self._early: list[dict[str, Any]] = []

    async def put(self, event: dict[str, Any]) -> None:
        if not self._subscribers:
            self._early.append(event)
        for queue in self._subscribers:
            queue.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for event in self._early:
            queue.put_nowait(event)
        self._early.clear()
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.remove(queue)


class FakeEngine:
    url = "fake://docker"

    def __init__(self) -> None:
        self.containers_by_id: dict[str, FakeContainer] = {}
        self.serial = 0
        self.calls: dict[str, int] = {"list": 0, "create": 0}
        self.events = EventHub()
        self.networks: list[str] = []
        self.loaded: dict[str, str] = {}
        self.saved: dict[str, bytes] = {}
        self.volume_labels: dict[str, dict[str, str]] = {}
        self.execs: list[FakeExec] = []
        self.foreign: set[str] = set()  # addresses held on the network by containers Corral does not manage
        self.stacks: list[tuple[str, ...]] | None = None  # what ``layer_stacks`` says, if a test sets it
        self.image_layers: dict[str, tuple[str, ...]] = {}  # image id -> its diff_ids (from the configs loaded)
        self.load_tars: list[bytes] = []  # each tarball a load read to its end (refused or not)
        self.load_sizes: list[int | None] = []  # the size each of those loads was said to be

    async def version(self) -> dict[str, Any]:
        return {"Version": "fake", "ApiVersion": "1.41"}

    async def info(self) -> dict[str, Any]:
        return {"ID": "fake", "NCPU": 2, "MemTotal": 2**31}

    async def image_ids(self) -> dict[str, str]:
        return dict(IMAGES)

    # what the image manager asks (agent/node/images.py): a load reads the tarball's manifest, as Docker does

    async def image_inspect(self, reference: str) -> dict[str, Any] | None:
        for tag, image_id in {**IMAGES, **self.loaded}.items():
            if reference in (tag, image_id) or f"{reference}:latest" == tag:
                return {"Id": image_id, "RepoTags": [t for t, i in {**IMAGES, **self.loaded}.items() if i == image_id]}
        return None

    async def remove_image(self, reference: str) -> None:
        self.loaded = {t: i for t, i in self.loaded.items() if reference not in (t, i)}

    async def pull(self, reference: str, auth: Any, progress: Any) -> None:
        raise PullFailed(f"Get \"https://{reference.split('/')[0]}/v2/\": dial tcp: connect: connection refused")

    async def layer_stacks(self) -> list[tuple[str, ...]]:
        """Each image's layer chain (bottom first): ``stacks`` if a test set it, else the images loaded."""
        if self.stacks is not None:
            return [tuple(s) for s in self.stacks]
        return [self.image_layers[i] for i in sorted(set(self.loaded.values())) if i in self.image_layers]

    async def load_stream(self, chunks: AsyncIterator[bytes], size: int | None = None) -> str:
        """A load as Docker's: the manifest names the config and the layers; a layer file in the tarball
        must have its diff_id, and one missing from it is taken only if the engine has that chain of layers
        already (then it skips the file), else the load is refused."""
        data = b"".join([c async for c in chunks])
        self.load_tars.append(data)
        self.load_sizes.append(size)
        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                member = tar.extractfile("manifest.json")
                manifest = json.loads(member.read()) if member else None
                names = set(tar.getnames())
                config_name = str((manifest or [{}])[0].get("Config") or "")
                config_file = tar.extractfile(config_name) if config_name in names else None
                config = json.loads(config_file.read()) if config_file else None
                layer_names = [str(n) for n in (manifest or [{}])[0].get("Layers") or []]
                diff_ids = [str(d) for d in ((config or {}).get("rootfs") or {}).get("diff_ids") or []]
                if config is not None and len(diff_ids) == len(layer_names):
                    chains = await self.layer_stacks()
                    for n, name in enumerate(layer_names):
                        if name not in names:
                            chain = tuple(diff_ids[:n + 1])
                            if not any(stack[:n + 1] == chain for stack in chains):
                                raise EngineRefused(500, f"Docker Engine refused the image: open /var/lib/docker/"
                                                    f"tmp/docker-import-1/{name}: no such file or directory")
                            continue
                        layer = tar.extractfile(name)
                        content = layer.read() if layer else b""
                        if content[:2] == b"\x1f\x8b":  # a gzip'd layer (an OCI save): its diff_id is of the tar
                            content = gzip.decompress(content)
                        got = "sha256:" + hashlib.sha256(content).hexdigest()
                        if got != diff_ids[n]:
                            raise EngineRefused(500, f"Docker Engine refused the image: invalid diffID for layer "
                                                f"{n}: expected {diff_ids[n]!r}, got {got!r}")
        except (tarfile.TarError, KeyError, ValueError) as exc:
            raise EngineRefused(500, f"Docker Engine refused the image: {exc}") from None
        if not manifest:
            raise EngineRefused(500, "Docker Engine refused the image: no manifest")
        # the config's name: HEX.json (the old layout) or blobs/sha256/HEX (Docker 25+)
        image_id = "sha256:" + manifest[0]["Config"].rpartition("/")[2].removesuffix(".json")
        if config is not None and len(diff_ids) == len(layer_names):
            self.image_layers[image_id] = tuple(diff_ids)
        for tag in manifest[0].get("RepoTags") or [image_id]:
            self.loaded[tag] = image_id
        return f"Loaded image ID: {image_id}"

    async def save(self, reference: str) -> AsyncIterator[bytes]:
        if reference not in self.saved:
            raise EngineRefused(404, f"no image {reference}")
        yield self.saved[reference]

    async def build(self, context: bytes, tag: str, labels: Mapping[str, str] | None = None,
                    dockerfile: str = "Dockerfile", args: Mapping[str, str] | None = None) -> str:
        """A "build": an image of the context's bytes, tagged, that ``save`` gives back as docker save would."""
        from tests.unit.test_images import save_tarball

        data, image_id = save_tarball((tag,), payload=context)
        self.loaded[tag] = image_id
        self.saved[tag] = data
        return f"Successfully tagged {tag}"

    async def volumes(self) -> dict[str, dict[str, Any]]:
        return {name: {"Name": name, "Labels": dict(labels)} for name, labels in self.volume_labels.items()}

    async def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        self.volume_labels.setdefault(name, dict(labels))

    async def remove_volume(self, name: str) -> None:
        self.volume_labels.pop(name, None)

    async def network_addresses(self) -> set[str]:
        """Addresses of the running containers, Corral's or not (``foreign``: others on the network)."""
        return {c.summary().ip or "" for c in self.containers_by_id.values() if c.state == "running"} | self.foreign

    async def ensure_network(self, subnet: str) -> bool:
        if self.networks and self.networks[-1] == subnet:
            return False
        self.networks.append(subnet)
        return True

    @property
    def containers(self) -> FakeContainers:
        return FakeContainers(self)


class NoHealth:
    def problems(self) -> dict[str, str | None]:
        return {}


@dataclasses.dataclass
class Harness:
    app: web.Application
    replica: Replica
    engine: FakeEngine
    url: str
    token: str = ""
    """The first administrator's API key (``admin``, password :data:`ADMIN_PASSWORD`)."""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


ADMIN_PASSWORD = "correct horse battery staple"
_ADMIN_HASH: list[str] = []
SECRET = b"k" * 32
"""The harness cluster's secret (its keyring and the seal of its CA's key)."""
_CA: list[tuple[bytes, bytes]] = []


def harness_ca() -> tuple[bytes, bytes]:
    """The harness cluster's CA (certificate PEM, key PEM): one for the whole run."""
    if not _CA:
        _CA.append(pki.make_ca("harness", time.time()))
    return _CA[0]


async def bootstrap_admin(replica: Replica, through_raft: bool = True) -> str:
    """Make the first administrator as ``corral agent --bootstrap`` does; its API key's token.
    ``through_raft=False``: straight into the state (a member that never hears from a leader)."""
    if not _ADMIN_HASH:  # one Argon2 hash for every harness of the run
        _ADMIN_HASH.append(argon2.PasswordHasher(**ARGON2, type=argon2.Type.ID).hash(ADMIN_PASSWORD))  # type: ignore[arg-type]
    key_id, secret_hash, token = new_key()
    cmd = AdminBootstrap(UserCreate("admin", _ADMIN_HASH[0], True), KeyCreate(key_id, "admin", secret_hash, "test"),
                         at=time.time())
    ca_pem, ca_key = harness_ca()
    ca = CaSet(ca_pem.decode(), pki.seal_ca_key(SECRET, ca_key), pki.fingerprint(ca_pem))
    if through_raft:
        await replica.write(ca)
        await replica.write(cmd)
    else:
        replica.state.execute(ca, 1)
        replica.state.execute(cmd, 2)
    return token


@contextlib.asynccontextmanager
async def running_api(node: str = "h1", register_host: bool = True, leads: bool = True,
                      voters: tuple[str, ...] | None = None,
                      directory: dict[str, str] | None = None,
                      ssl_context: ssl.SSLContext | None = None, parts: bool = False) -> AsyncIterator[Harness]:
    """The agent's real app on a loopback port over a real Raft member with in-memory storage; a fake
    engine. By default the member is the only voter and leads; ``leads=False`` makes it a member of a
    cluster whose only voter is never heard from; ``voters=()`` starts it empty, to be added as a
    learner by another harness (``directory`` maps member names to API URLs, as gossip would);
    ``parts``: with an (unstarted) reconciler, DNS server and load balancers, for what they count."""
    ring = Keyring.from_secret(SECRET)
    sealer = ring.channel(b"raft")
    cfg = raft_config.local()
    storage = AsyncMemoryStorage()
    if voters is None:
        voters = (node,) if leads else ("gone",)
    core = RaftNode(node, cfg, random.Random(1), state=await storage.load(), voters=voters)
    state, feed = ClusterState(), Feed()
    transport = RaftTransport(("127.0.0.1", 0), sealer, lambda m: driver.deliver(m))
    driver = RaftDriver(core, storage, state, transport, cfg.tick_seconds, on_applied=lambda i: replica.on_applied(i))
    urls = directory if directory is not None else {}
    token = ""
    async with aiohttp.ClientSession() as session:
        replica = Replica(state, driver, feed, urls.get, sealer, session)
        await transport.start()
        await driver.start()
        try:
            if leads and voters == (node,):
                await until_async("the single voter leads", lambda: driver.is_leader, 10)
                if register_host:
                    await replica.write(HostRegister(node, "127.0.0.1", {"zone": "a"}, 2.0, 2**31, "ab" * 32))
                token = await bootstrap_admin(replica)
            elif voters != ():
                token = await bootstrap_admin(replica, through_raft=False)
            engine = FakeEngine()
            gossip = GossipNode(node, ("127.0.0.1", 0), {"api": "http://127.0.0.1:0", "health": "ok"},
                                ring.channel(b"gossip"))
            overlay = OverlayRuntime(node, "127.0.0.1", Path("/nonexistent"), False, state,
                                     b"\x00" * 32, b"k" * 32)
            health = HealthMonitor(lambda _summary: None)
            health.add("raft", driver.problem)
            images_dir = Path(tempfile.mkdtemp(prefix="corral-images-"))
            images = ImageManager(node, state, engine, images_dir, SECRET, sealer, session, urls.get,
                                  replica.propose_anywhere)
            extra = _parts(node, state, engine, images_dir) if parts else {}
            deps = ApiDeps(NodeInfo(node, "127.0.0.1", "http://127.0.0.1:0", "0123456789abcdef"), replica, engine,
                           gossip, ring, overlay, health, secret=SECRET, images=images, history=History(10.0),
                           **extra)
            app = create_app(deps)
            ui.install(app)  # as the agent does: the web UI beside the API
            runner = web.AppRunner(app, max_line_size=MAX_LINE_SIZE)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
            await site.start()
            url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{runner.addresses[0][1]}"
            urls[node] = url
            try:
                async with images.running(feed):
                    yield Harness(app, replica, engine, url, token)
            finally:
                await runner.cleanup()
                shutil.rmtree(images_dir, ignore_errors=True)
        finally:
            await replica.close()
            await driver.stop()
            await transport.close()


def _parts(node: str, state: ClusterState, engine: FakeEngine, root: Path) -> dict[str, Any]:
    async def report(_instance: str, _observed: Observed) -> None:
        return None

    return {"reconciler": Reconciler(node, state, engine, report), "dns": DnsServer(node, state),
            "load_balancers": LoadBalancers(node, state, root, report, None, {})}


@contextlib.asynccontextmanager
async def running_pair() -> AsyncIterator[tuple[Harness, Harness]]:
    """Two agents in one Raft group: h1 leads (the only voter), h2 a learner that forwards its writes."""
    directory: dict[str, str] = {}
    async with running_api("h1", directory=directory) as h1, \
            running_api("h2", voters=(), directory=directory) as h2:
        t1, t2 = h1.replica.raft.transport, h2.replica.raft.transport
        t1.set_peer("h2", t2.address)
        t2.set_peer("h1", t1.address)
        assert h1.replica.raft.propose_conf_change(ConfChangeOp.ADD_LEARNER, "h2")
        await until_async("h2 has the log and knows its leader",
                          lambda: h2.replica.leader == "h1" and h2.replica.applied_index >= h1.replica.applied_index,
                          10)
        h2.token = h1.token
        yield h1, h2


__all__ = ["ADMIN_PASSWORD", "SECRET", "FakeEngine", "FakeExec", "Harness", "NoHealth", "bootstrap_admin", "harness_ca",
           "running_api", "running_pair"]
