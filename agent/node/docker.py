"""The host's Docker Engine, through its API. The only module of Corral that imports aiodocker.

Everything else speaks to the engine through :class:`DockerEngine`, so the rest of the agent sees
Corral's own types (:class:`EngineContainer`) and errors, never aiodocker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Protocol, cast

import aiodocker
import aiodocker.volumes
import aiohttp

from agent.errors import Conflict, EngineUnreachable

# What /v1/host shows of `docker info`: enough to tell engines apart and size them, no secrets.
INFO_FIELDS = (
    "ID",
    "Name",
    "ServerVersion",
    "Containers",
    "ContainersRunning",
    "ContainersPaused",
    "ContainersStopped",
    "Images",
    "Driver",
    "CgroupDriver",
    "CgroupVersion",
    "KernelVersion",
    "OperatingSystem",
    "Architecture",
    "NCPU",
    "MemTotal",
    "DockerRootDir",
)


PULL_STALL = 60.0
"""Seconds a pull may go without a word from the engine (a registry that hangs) before it is given up."""
CHUNK = 256 * 1024

# aiodocker reports a failed connection as a DockerError with this pseudo HTTP status.
CONNECT_FAILED = 900
NOT_FOUND, CONFLICT = 404, 409
TRANSFER_TIMEOUT = 120.0
"""A push or a pull moves layers: it may take longer than an engine's usual answer."""


class EngineRefused(EngineUnreachable):
    """The engine answered, with an error status (``status``: 404 no such container, 409 a conflict…)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _cause(exc: BaseException) -> str:
    """The innermost reason (ECONNREFUSED, ENOENT …), not aiodocker's nested restatements."""
    inner: BaseException | None = exc
    while inner is not None:
        if isinstance(inner, OSError) and inner.strerror:
            return inner.strerror
        inner = inner.__cause__ or inner.__context__
    return str(exc)


class PullFailed(Exception):
    """A pull the registry (or the engine on its behalf) refused or could not finish: ``reason`` as
    Docker said it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BuildFailed(Exception):
    def __init__(self, reason: str, output: str = "") -> None:
        super().__init__(reason)
        self.reason, self.output = reason, output


class NameInUse(Conflict):
    """A container create found the name taken (by a container Corral left behind, or somebody's own)."""


@dataclasses.dataclass(frozen=True)
class RegistryAuth:
    """A registry user and password for one push or pull: the engine is handed them with the request
    (``X-Registry-Auth``) and keeps nothing, as ``docker login`` would."""

    username: str
    password: str = dataclasses.field(repr=False)


def split_reference(reference: str) -> tuple[str, str]:
    """``10.77.0.1:5000/corral/base:v2`` → (``10.77.0.1:5000/corral/base``, ``v2``); no tag means
    ``latest`` (a registry's port is not a tag: only a colon after the last slash is)."""
    slash, colon = reference.rfind("/"), reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1:]
    return reference, "latest"


class ContainerOps(Protocol):
    """What the agent does with containers (:class:`Containers`; a fake one in unit tests)."""

    async def list(self, label: str = ...) -> list[EngineContainer]: ...

    async def inspect(self, container_id: str) -> dict[str, Any]: ...

    async def create(self, name: str, config: Mapping[str, object]) -> str: ...

    async def start(self, container_id: str) -> None: ...

    async def stop(self, container_id: str, grace: int = ...) -> None: ...

    async def remove(self, container_id: str) -> None: ...

    def events(self, label: str = ...) -> AsyncIterator[dict[str, Any]]: ...

    def logs(self, container_id: str, tail: int | None, follow: bool) -> AsyncIterator[str]: ...

    async def stats(self, container_id: str) -> dict[str, Any]: ...

    async def exec(self, container_id: str, cmd: Sequence[str], tty: bool, stdin: bool) -> ExecSession:
        """Start ``cmd`` in a running container (``docker exec``); EngineRefused 404/409 when the engine
        has no such container or it is not running. The caller closes the session."""
        ...


STDOUT, STDERR = 1, 2
EXIT_WAIT = 5.0
"""Seconds an exec whose output has ended may take to be seen as exited by the engine."""


class ExecSession(Protocol):
    """A command started in a container, its output and input attached (:class:`DockerExec`)."""

    async def read(self) -> tuple[int, bytes] | None:
        """The next piece of output: (:data:`STDOUT` or :data:`STDERR`, bytes); None once it has ended.
        With a TTY everything is STDOUT (the terminal merges them, as Docker's does)."""
        ...

    async def write(self, data: bytes) -> None:
        """Into the command's standard input (when it was started with stdin)."""
        ...

    async def close_stdin(self) -> None:
        """End the command's standard input (what it reads next is end-of-file); output goes on."""
        ...

    async def resize(self, cols: int, rows: int) -> None: ...

    async def exit_code(self) -> int | None:
        """The command's exit status once its output has ended (None if the engine does not know it)."""
        ...

    async def close(self) -> None: ...


class Engine(Protocol):
    """What the agent asks of its host's engine (:class:`DockerEngine`; a fake one in unit tests)."""

    url: str

    async def version(self) -> dict[str, Any]: ...

    async def info(self) -> dict[str, Any]: ...

    async def image_ids(self) -> dict[str, str]: ...

    async def ensure_network(self, subnet: str) -> bool: ...

    async def network_addresses(self) -> set[str]:
        """The IPv4 addresses of every endpoint on the ``corral`` network, Corral's or not."""
        ...

    async def volumes(self) -> dict[str, dict[str, Any]]: ...

    async def create_volume(self, name: str, labels: Mapping[str, str]) -> None: ...

    async def remove_volume(self, name: str) -> None: ...

    @property
    def containers(self) -> ContainerOps: ...


ENGINE_SEND_BUFFER = 4 << 20
"""Bytes a request to the engine may have in flight on its unix socket (the kernel's buffer and the
transport's), so that a load's 1 MiB chunks each go in one send. With the kernel's default (208 KiB) a
chunk went in pieces, each a wake-up of the agent's loop and of the engine: feeding five engines 500 MB
each at 50 MB/s cost the feeder 1.45-1.61 CPU-s, and 0.80-0.84 with this, alternated in one run
(docs/IMAGES.md, "Spools around the page cache")."""


def widen(transport: asyncio.BaseTransport | None) -> None:
    """Give a connection to the engine :data:`ENGINE_SEND_BUFFER` of room (as root the kernel's cap is
    lifted, else it is what ``net.core.wmem_max`` allows)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or not isinstance(transport, asyncio.WriteTransport):
        return
    with contextlib.suppress(OSError):
        try:
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_SNDBUFFORCE", 32), ENGINE_SEND_BUFFER)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, ENGINE_SEND_BUFFER)
    transport.set_write_buffer_limits(high=ENGINE_SEND_BUFFER)


class EngineSocket(aiohttp.UnixConnector):
    """aiohttp's connector to a unix socket, each new connection :func:`widen`-ed (through aiohttp's
    ``_create_connection``, the one place a new connection's transport is at hand; a change of it fails
    every engine call at once, in every test, not quietly)."""

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        proto = await super()._create_connection(req, traces, timeout)
        widen(proto.transport)
        return proto


class DockerEngine:
    """A connected engine. Create it with :meth:`connect`; close it with :meth:`close`."""

    def __init__(self, url: str, client: aiodocker.Docker, timeout: float,
                 connector: aiohttp.BaseConnector | None = None) -> None:
        self.url = url
        self._client = client
        self._timeout = timeout
        self._connector = connector  # ours to close (aiodocker closes only one it made)

    @classmethod
    async def connect(cls, url: str, timeout: float = 5.0) -> DockerEngine:
        """Connect and prove the engine answers; raise EngineUnreachable with the reason if not."""
        connector = EngineSocket(url.removeprefix("unix://")) if url.startswith("unix://") else None
        try:
            client = aiodocker.Docker(url=url, connector=connector)
        except (ValueError, OSError, aiodocker.DockerError) as exc:
            if connector is not None:
                await connector.close()
            raise EngineUnreachable(f"cannot use Docker Engine at {url}: {exc}") from exc
        if connector is not None:
            client.docker_host = "unix://localhost"  # what aiodocker names a unix socket's host in its URLs
        engine = cls(url, client, timeout, connector)
        try:
            await engine.version()
        except EngineUnreachable:
            await engine.close()
            raise
        return engine

    async def close(self) -> None:
        await self._client.close()
        if self._connector is not None:
            await self._connector.close()

    async def _call(self, what: str, coro: Any, timeout: float | None = None) -> Any:
        limit = self._timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(coro, limit)
        except TimeoutError as exc:
            raise EngineUnreachable(f"Docker Engine at {self.url} did not answer {what} within {limit:g} s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineUnreachable(f"cannot reach Docker Engine at {self.url}: {exc}") from exc
        except aiodocker.DockerError as exc:
            if exc.status == CONNECT_FAILED:
                raise EngineUnreachable(f"cannot reach Docker Engine at {self.url}: {_cause(exc)}") from exc
            raise EngineRefused(exc.status, f"Docker Engine at {self.url} refused {what}: {exc.message}") from exc

    async def version(self) -> dict[str, Any]:
        """``GET /version``: ``Version``, ``ApiVersion``, ``Os``, ``Arch``, ``KernelVersion``…"""
        result: dict[str, Any] = await self._call("version", self._client.version())
        return result

    async def info(self) -> dict[str, Any]:
        """``GET /info``, cut down to :data:`INFO_FIELDS`."""
        info: dict[str, Any] = await self._call("info", self._client.system.info())
        return {key: info.get(key) for key in INFO_FIELDS}

    # ---------------------------------------------------------------- images, as the agent moves them

    async def image_inspect(self, reference: str) -> dict[str, Any] | None:
        """``GET /images/{ref}/json``, or None if the engine has no such image."""
        try:
            result: dict[str, Any] = await self._call("an image inspect", self._client.images.inspect(reference))
        except EngineRefused as exc:
            if exc.status == NOT_FOUND:
                return None
            raise
        return result

    async def layer_stacks(self, limit: int = 500) -> list[tuple[str, ...]]:
        """Each image's layers (``diff_id``, bottom first) of the engine's first ``limit`` images: the
        layer chains it has, which a load need not be given again."""
        images: list[dict[str, Any]] = await self._call("an image list", self._client.images.list())
        stacks: list[tuple[str, ...]] = []
        for image in images[:limit]:
            info = await self.image_inspect(str(image.get("Id") or ""))
            stacks.append(tuple(str(d) for d in ((info or {}).get("RootFS") or {}).get("Layers") or ()))
        return stacks

    async def remove_image(self, reference: str) -> None:
        try:
            await self._call("an image remove", self._client.images.delete(reference, force=True))
        except EngineRefused as exc:
            if exc.status != NOT_FOUND:
                raise

    async def pull(self, reference: str, auth: RegistryAuth | None,
                   progress: Callable[[float | None], None], stall: float = PULL_STALL) -> None:
        """``POST /images/create``: pull ``reference`` (with ``auth`` for its registry), calling
        ``progress`` with the share of bytes fetched so far (None while unknown). PullFailed with the
        registry's or the engine's reason; a registry that sends nothing for ``stall`` seconds is
        given up on."""
        layers: dict[str, tuple[int, int]] = {}
        stream = self._client.images.pull(reference, auth=_auth(auth), stream=True)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(anext(stream), stall)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise PullFailed(f"the registry sent nothing for {stall:g} s (it hangs)") from None
                if item.get("error"):
                    raise PullFailed(str(item["error"]))
                layer, detail = str(item.get("id") or ""), item.get("progressDetail") or {}
                status = str(item.get("status") or "")
                if layer and status == "Downloading" and detail.get("total"):
                    layers[layer] = (int(detail.get("current") or 0), int(detail["total"]))
                elif layer and status in ("Download complete", "Pull complete", "Already exists") and layer in layers:
                    layers[layer] = (layers[layer][1], layers[layer][1])
                total = sum(t for _, t in layers.values())
                progress(sum(c for c, _ in layers.values()) / total if total else None)
        except aiodocker.DockerError as exc:
            if exc.status == CONNECT_FAILED:
                raise EngineUnreachable(f"cannot reach Docker Engine at {self.url}: {_cause(exc)}") from exc
            raise PullFailed(str(exc.message)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineUnreachable(f"cannot reach Docker Engine at {self.url}: {exc}") from exc
        finally:
            await cast(Any, stream).aclose()  # an async generator: ends the engine's response

    async def load_stream(self, chunks: AsyncIterator[bytes], size: int | None = None) -> str:
        """``POST /images/load`` of a ``docker save`` tarball as it arrives; the engine's last message.
        EngineRefused if it refused the tarball (corrupt, truncated, a layer that does not match).

        With ``size`` the body goes with a Content-Length, not chunked: aiohttp's chunked writer joins
        every chunk with its framing (a copy of every byte), which cost more CPU than the TLS it came over.
        (aiodocker's ``import_image`` always sends chunked: this is its request, made with its client.)"""
        headers = {"Content-Type": "application/x-tar"}
        if size is not None:
            headers["Content-Length"] = str(size)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout)
        try:
            # quiet, as ``docker load`` asks when its output is no terminal: no per-layer progress bars
            async with self._client._query("images/load", "POST", data=chunks, headers=headers, timeout=timeout,
                                           params={"quiet": "1"},
                                           chunked=None if size is not None else True) as response:
                raw = await response.read()
        except aiodocker.DockerError as exc:
            if exc.status == CONNECT_FAILED:
                raise EngineUnreachable(f"cannot reach Docker Engine at {self.url}: {_cause(exc)}") from exc
            raise EngineRefused(exc.status, f"Docker Engine refused the image: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineUnreachable(f"cannot reach Docker Engine at {self.url}: {exc}") from exc
        messages = []
        for line in raw.splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict) and item.get("error"):
                raise EngineRefused(500, f"Docker Engine refused the image: {item['error']}")
            if isinstance(item, dict):
                messages.append(str(item.get("stream") or item.get("status") or "").strip())
        return next((m for m in reversed(messages) if m), "")

    async def save(self, reference: str) -> AsyncIterator[bytes]:
        """``GET /images/{ref}/get``: the image as a ``docker save`` tarball, streamed."""
        try:
            async with self._client.images.export_image(reference) as content:
                async for chunk in content.iter_chunked(CHUNK):
                    yield chunk
        except aiodocker.DockerError as exc:
            raise EngineRefused(exc.status, f"Docker Engine could not save {reference}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineUnreachable(f"cannot reach Docker Engine at {self.url}: {exc}") from exc

    async def build(self, context: bytes, tag: str, labels: Mapping[str, str] | None = None,
                    dockerfile: str = "Dockerfile", args: Mapping[str, str] | None = None) -> str:
        """``POST /build`` of a tar build context, tagged ``tag``; the build's output (its last lines).
        BuildFailed with Docker's message when a step fails."""
        output: list[str] = []
        try:
            async for item in self._client.images.build(fileobj=io.BytesIO(context), encoding="identity", tag=tag,
                                                         labels=dict(labels or {}), stream=True, rm=True,
                                                         forcerm=True, path_dockerfile=dockerfile,
                                                         buildargs=dict(args) if args else None):
                if item.get("error"):
                    raise BuildFailed(str(item["error"]).strip(), "\n".join(output[-10:]))
                if item.get("stream"):
                    output.append(str(item["stream"]).rstrip())
        except aiodocker.DockerError as exc:
            if exc.status == CONNECT_FAILED:
                raise EngineUnreachable(f"cannot reach Docker Engine at {self.url}: {_cause(exc)}") from exc
            raise BuildFailed(str(exc.message).strip(), "\n".join(output[-10:])) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineUnreachable(f"cannot reach Docker Engine at {self.url}: {exc}") from exc
        return "\n".join(line for line in output[-20:] if line)

    async def tag_image(self, image: str, reference: str) -> None:
        """``POST /images/{image}/tag``: ``image`` (a name or an id) is also known as ``reference``."""
        repo, tag = split_reference(reference)
        await self._call("an image tag", self._client.images.tag(image, repo, tag=tag))

    async def push_image(self, reference: str, auth: RegistryAuth | None = None,
                         timeout: float = TRANSFER_TIMEOUT) -> None:
        """``POST /images/{name}/push`` to the registry ``reference`` names; EngineRefused with the
        registry's reason (``unauthorized``, an unknown CA …) when the engine reports one."""
        repo, tag = split_reference(reference)
        await self._call("an image push", self._client.images.push(repo, tag=tag, auth=_auth(auth)), timeout)

    # ---------------------------------------------------------------- volumes

    async def volumes(self) -> dict[str, dict[str, Any]]:
        """The engine's volumes that Corral made (label ``corral.volume``), by name."""
        data = await self._call("a volume list",
                                cast(Any, self._client.volumes).list(filters={"label": [LABEL_PREFIX + "volume"]}))
        return {str(v["Name"]): v for v in (data or {}).get("Volumes") or ()}

    async def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        """``POST /volumes/create`` (the ``local`` driver); a volume of that name already there is kept
        as it is, data and all."""
        await self._call("a volume create", cast(Any, self._client.volumes).create(
            {"Name": name, "Driver": "local", "Labels": dict(labels)}))

    async def remove_volume(self, name: str) -> None:
        """``DELETE /volumes/{name}``; gone already is done. Conflict while a container uses it."""
        try:
            volume = cast(Any, aiodocker.volumes.DockerVolume)(self._client, name)
            await self._call("a volume remove", volume.delete())
        except EngineRefused as exc:
            if exc.status == NOT_FOUND:
                return
            if exc.status == CONFLICT:
                raise Conflict(f"volume {name} is in use by a container") from None
            raise

    async def ensure_network(self, subnet: str) -> bool:
        """The ``corral`` bridge network on this host's overlay /24 (gateway .1); True if it was (re)made.

        An existing network with another subnet (the host's lease changed) is removed and made again;
        Docker refuses that while containers are attached, so they are removed first by the caller's
        reconcile pass (their config names the network). Masquerade stays on for the outside world;
        overlay destinations are exempted by the overlay's own NAT rule.
        """
        client = self._client
        try:
            current = await self._call("a network inspect", client.networks.get(NETWORK))
            info = await self._call("a network inspect", current.show())
            configs = (info.get("IPAM") or {}).get("Config") or []
            if any(c.get("Subnet") == subnet for c in configs):
                return False
            for cid in list((info.get("Containers") or {}).keys()):
                await self.containers.remove(cid)
            await self._call("a network remove", current.delete())
        except EngineRefused as exc:
            if exc.status != NOT_FOUND:
                raise
        gateway = subnet.rsplit(".", 1)[0] + ".1"
        await self._call("a network create", client.networks.create({
            "Name": NETWORK, "Driver": "bridge", "CheckDuplicate": True,
            "IPAM": {"Driver": "default", "Config": [{"Subnet": subnet, "Gateway": gateway}]},
            "Options": {"com.docker.network.bridge.name": BRIDGE},
            "Labels": {LABEL_PREFIX + "network": "overlay"},
        }))
        return True

    async def network_addresses(self) -> set[str]:
        """The IPv4 addresses of every endpoint on the ``corral`` network, Corral's containers or not
        (a container someone ran with ``--network corral`` holds its address as much as ours do)."""
        try:
            current = await self._call("a network inspect", self._client.networks.get(NETWORK))
            info = await self._call("a network inspect", current.show())
        except EngineRefused as exc:
            if exc.status == NOT_FOUND:
                return set()
            raise
        return {str(e.get("IPv4Address") or "").split("/")[0]
                for e in (info.get("Containers") or {}).values() if e.get("IPv4Address")}

    @property
    def containers(self) -> Containers:
        return Containers(self)

    async def image_ids(self) -> dict[str, str]:
        """Every local tag mapped to its image id."""
        images: list[dict[str, Any]] = await self._call("an image list", self._client.images.list())
        return {tag: img["Id"] for img in images for tag in (img.get("RepoTags") or ())}


def _auth(auth: RegistryAuth | None) -> dict[str, str] | None:
    """What aiodocker turns into ``X-Registry-Auth`` (it adds the registry's address from the name)."""
    return None if auth is None else {"username": auth.username, "password": auth.password}


# ---------------------------------------------------------------------- containers

LABEL_PREFIX = "corral."
NETWORK = "corral"
BRIDGE = "corral-br"


@dataclasses.dataclass(frozen=True)
class EngineContainer:
    """A container as ``GET /containers/json`` shows it, and the health Corral gives it.

    ``docker_health`` is what Docker's own check (a command check) says; ``health`` and
    ``health_detail`` are filled in by the reconciler from whichever check the service has.
    """

    id: str
    name: str
    image: str
    labels: Mapping[str, str]
    state: str
    exit_code: int | None = None
    ip: str | None = None
    ports: tuple[str, ...] = ()
    docker_health: str | None = None
    health: str | None = None
    health_detail: str | None = None
    address: str | None = None
    """The address Corral gave it on the network (``IPAMConfig``), also while it is stopped."""

    @property
    def instance(self) -> str:
        return self.labels.get(LABEL_PREFIX + "instance", "")


def _summary(raw: Mapping[str, Any]) -> EngineContainer:
    """A container from ``GET /containers/json`` as Corral sees it."""
    names = raw.get("Names") or [""]
    status = raw.get("Status") or ""
    exit_code = None
    if status.startswith("Exited ("):
        code = status[len("Exited ("):].split(")", 1)[0]
        exit_code = int(code) if code.lstrip("-").isdigit() else None
    health = None  # Docker's own check (a command check): "Up 3 minutes (healthy)", "(health: starting)"
    if status.endswith("(healthy)"):
        health = "healthy"
    elif status.endswith("(unhealthy)"):
        health = "unhealthy"
    elif status.endswith("(health: starting)"):
        health = "starting"
    endpoint = ((raw.get("NetworkSettings") or {}).get("Networks") or {}).get(NETWORK) or {}
    return EngineContainer(
        id=str(raw.get("Id", "")),
        docker_health=health,
        address=(endpoint.get("IPAMConfig") or {}).get("IPv4Address") or None,
        name=str(names[0]).lstrip("/"),
        image=str(raw.get("Image", "")),
        labels={str(k): str(v) for k, v in (raw.get("Labels") or {}).items()},
        state=str(raw.get("State", "")),
        exit_code=exit_code,
        ip=endpoint.get("IPAddress") or None,
        ports=tuple(sorted({f"{p['PublicPort']}:{p['PrivatePort']}/{p.get('Type', 'tcp')}"
                            for p in raw.get("Ports") or () if p.get("PublicPort")})),
    )


class Containers:
    """The engine's containers that carry Corral's labels; everything returned is a plain dict."""

    def __init__(self, engine: DockerEngine) -> None:
        self._engine = engine
        self._client = engine._client

    async def list(self, label: str = LABEL_PREFIX + "instance") -> list[EngineContainer]:
        filters = json.dumps({"label": [label]})
        found = await self._engine._call("a container list", self._client.containers.list(all=True, filters=filters))
        return [_summary(c._container) for c in found]

    async def inspect(self, container_id: str) -> dict[str, Any]:
        container = await self._engine._call("an inspect", self._client.containers.get(container_id))
        return dict(container._container)

    async def create(self, name: str, config: Mapping[str, object]) -> str:
        """Create a container; ``NameInUse`` if another container already has ``name``."""
        try:
            container = await self._engine._call("a container create",
                                                 self._client.containers.create(cast(Any, dict(config)), name=name))
        except EngineRefused as exc:
            if exc.status == CONFLICT:
                raise NameInUse(f"the container name {name} is taken: {exc.message}", name=name) from exc
            raise
        return str(container.id)

    async def start(self, container_id: str) -> None:
        container = self._client.containers.container(container_id)
        await self._engine._call("a container start", container.start())

    async def stop(self, container_id: str, grace: int = 10) -> None:
        container = self._client.containers.container(container_id)
        await self._engine._call("a container stop", container.stop(t=grace))

    async def remove(self, container_id: str) -> None:
        container = self._client.containers.container(container_id)
        try:
            await self._engine._call("a container remove", container.delete(force=True, v=True))
        except EngineRefused as exc:
            if exc.status != NOT_FOUND:
                raise

    async def events(self, label: str = LABEL_PREFIX + "instance") -> AsyncIterator[dict[str, Any]]:
        """Container events (die, destroy, oom, start …) of Corral's containers, as they happen. (aiodocker
        keeps one stream per client, with the first subscriber's filter: every subscriber of the agent's
        client asks for the same ``label``.)"""
        subscriber = self._client.events.subscribe(  # type: ignore[no-untyped-call]
            filters=json.dumps({"type": ["container"], "label": [label]})
        )
        while True:
            event = await subscriber.get()
            if event is None:
                return
            yield event

    async def logs(self, container_id: str, tail: int | None, follow: bool) -> AsyncIterator[str]:
        container = self._client.containers.container(container_id)
        params: dict[str, Any] = {"stdout": True, "stderr": True, "follow": follow}
        if tail is not None:
            params["tail"] = str(tail)
        if follow:
            async for line in container.log(**params):
                yield line
        else:
            for line in await self._engine._call("a log read", container.log(**params)):
                yield line

    async def stats(self, container_id: str) -> dict[str, Any]:
        container = self._client.containers.container(container_id)
        result = await self._engine._call("a stats read", container.stats(stream=False))
        return dict(result[0] if isinstance(result, list) else result)

    async def exec(self, container_id: str, cmd: Sequence[str], tty: bool, stdin: bool) -> DockerExec:
        container = self._client.containers.container(container_id)
        created = await self._engine._call("an exec create", container.exec(list(cmd), stdin=stdin, tty=tty))
        stream = created.start(detach=False)
        await self._engine._call("an exec start", stream.__aenter__())
        return DockerExec(self._engine, created, stream)


class DockerExec:
    """``POST /exec/{id}/start`` with the connection hijacked: output as aiodocker parses it (stream 1 or
    2 without a TTY, all of it as 1 with one), input written straight to the connection."""

    def __init__(self, engine: DockerEngine, created: aiodocker.execs.Exec, stream: aiodocker.stream.Stream) -> None:
        self._engine, self._exec, self._stream = engine, created, stream

    async def read(self) -> tuple[int, bytes] | None:
        try:
            message = await self._stream.read_out()
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineUnreachable(f"the exec's connection to Docker Engine at {self._engine.url} broke: {exc}") \
                from exc
        if message is None:
            return None
        return (STDERR if message.stream == STDERR else STDOUT), bytes(message.data)

    async def write(self, data: bytes) -> None:
        try:
            await self._stream.write_in(data)
        except (aiohttp.ClientError, OSError, RuntimeError) as exc:  # RuntimeError: written after close
            raise EngineUnreachable(f"cannot write to the exec at Docker Engine {self._engine.url}: {exc}") from exc

    async def close_stdin(self) -> None:
        # aiodocker's Stream.close() half-closes and then drops the connection (and the output with it):
        # only the half-close is wanted here, as `docker exec -i` does on its stdin's end (CloseWrite).
        response = self._stream._resp
        transport = response.connection.transport if response is not None and response.connection else None
        if transport is not None and transport.can_write_eof():
            transport.write_eof()

    async def resize(self, cols: int, rows: int) -> None:
        await self._engine._call("an exec resize", self._exec.resize(h=rows, w=cols))

    async def exit_code(self) -> int | None:
        # the output ends a moment before the engine has seen the process exit: ask until it has
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EXIT_WAIT
        while True:
            info: dict[str, Any] = await self._engine._call("an exec inspect", self._exec.inspect())
            if not info.get("Running"):
                code = info.get("ExitCode")
                return int(code) if isinstance(code, int) else None
            if loop.time() > deadline:
                return None
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self._stream.close()
