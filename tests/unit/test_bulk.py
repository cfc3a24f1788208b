"""The bulk channel (agent/node/bulk.py): tickets taken once and in time, keys per transfer, and whole
fetches between two real image managers — the holder's own API handler admits, its bulk channel sends;
a connection without a valid ticket gets nothing, a frame changed on the way is never loaded."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.api.deps import DEPS
from agent.api.images import send_tarball
from agent.model.images import CatalogImage
from agent.model.state import ClusterState
from agent.node import bulk
from agent.node.images import ImageError, ImageManager, Job
from mesh.keyring import Keyring
from tests.unit.fakes import FakeEngine
from tests.unit.test_images import save_tarball

SECRET = b"k" * 32


def test_a_ticket_is_taken_once_and_only_in_time() -> None:
    tickets = bulk.Tickets(rand_bytes=lambda n: bytes(range(n)))
    ticket = tickets.issue(SECRET, "ab" * 32, "h2", 100, now=10.0)
    assert tickets.take(ticket, now=10.0 + bulk.TICKET_AGE + 1) is None, "too late"
    ticket = tickets.issue(SECRET, "ab" * 32, "h2", 100, now=10.0)
    got = tickets.take(ticket, now=11.0)
    assert got is not None and (got.digest, got.asker, got.offset) == ("ab" * 32, "h2", 100)
    assert tickets.take(ticket, now=11.0) is None, "taken once"
    tickets.issue(SECRET, "cd" * 32, "h3", 0, now=20.0)
    assert [t.asker for t in tickets.expired(now=20.0 + bulk.TICKET_AGE + 1)] == ["h3"] and not tickets.open


def test_keys_are_per_transfer_and_from_the_cluster_secret() -> None:
    t1, t2 = os.urandom(16), os.urandom(16)
    key = bulk.transfer_key(SECRET, t1, "ab" * 32, 0)
    assert key != bulk.transfer_key(SECRET, t2, "ab" * 32, 0), "another ticket"
    assert key != bulk.transfer_key(SECRET, t1, "ab" * 32, 5), "another offset"
    assert key != bulk.transfer_key(b"o" * 32, t1, "ab" * 32, 0), "another cluster"
    assert bulk.hello_ok(key, bulk.hello(key, t1)[16:])
    assert not bulk.hello_ok(bulk.transfer_key(b"o" * 32, t1, "ab" * 32, 0), bulk.hello(key, t1)[16:])


class _Deps:
    def __init__(self, manager: ImageManager, sealer: Any) -> None:
        self.images = manager
        self.replica = type("Replica", (), {"sealer": sealer})()


async def _holder(tmp: Path, data: bytes, digest: str) -> tuple[ImageManager, web.AppRunner, str, asyncio.Task[None]]:
    sealer = Keyring.from_secret(SECRET).channel(b"raft")

    async def propose(cmd: object) -> None:
        return None

    manager = ImageManager("h1", ClusterState(), FakeEngine(), tmp, SECRET, sealer, None, lambda _h: None, propose,
                           bulk_bind=("127.0.0.1", 0))
    (tmp / "images").mkdir(parents=True)
    manager.cached(digest).write_bytes(data)
    app = web.Application()
    app[DEPS] = _Deps(manager, sealer)  # type: ignore[assignment]
    app.router.add_get("/v1/internal/images/{id}", send_tarball)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    accepting = asyncio.get_running_loop().create_task(manager._bulk_accept(manager._bulk_listen()))
    return manager, runner, f"http://127.0.0.1:{runner.addresses[0][1]}", accepting


async def test_a_fetch_over_the_bulk_channel_and_a_connection_without_a_ticket_gets_nothing(tmp_path: Path) -> None:
    import aiohttp

    data, image_id = save_tarball(("test/bulk:1",), payload=os.urandom(3 * bulk.FRAME + 12345))
    digest = hashlib.sha256(data).hexdigest()
    holder, runner, url, accepting = await _holder(tmp_path / "h1", data, digest)
    sealer = Keyring.from_secret(SECRET).channel(b"raft")
    held: list[object] = []

    async def propose(cmd: object) -> None:
        held.append(cmd)

    try:
        assert holder.bulk_port
        reader, writer = await asyncio.open_connection("127.0.0.1", holder.bulk_port)
        writer.write(bulk.hello(bulk.transfer_key(SECRET, b"x" * 16, digest, 0), b"x" * 16))  # a ticket never given
        assert await asyncio.wait_for(reader.read(), 5) == b"", "closed, nothing sent"
        writer.close()

        async with aiohttp.ClientSession() as session:
            engine = FakeEngine()
            me = ImageManager("h2", ClusterState(), engine, tmp_path / "h2", SECRET, sealer, session,
                              {"h1": url}.get, propose, bulk_bind=("127.0.0.1", 0))
            (tmp_path / "h2" / "images" / "partial").mkdir(parents=True)
            image = CatalogImage(image_id, ("test/bulk:1",), digest, len(data), ("h1",), "load", 1)
            await me.fetch(image, Job("test/bulk:1", "peer"))
            await me.kept()
            assert await engine.image_inspect(image_id) is not None
            assert me.cached(digest).read_bytes() == data and held
            assert holder.stats["served_bytes"] == len(data) and not holder.serving, "the slot is free again"
            assert not holder.tickets.open, "the ticket was taken"
    finally:
        accepting.cancel()
        await runner.cleanup()


async def test_a_fetch_again_while_the_last_one_is_still_kept_loads_the_kept_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image is removed from the engine right after its load, while its tarball is still being kept (a
    slow fsync): the next fetch waits for the keep and loads that copy, and never writes the spool twice."""
    import threading

    import aiohttp

    from agent.node import images as images_module

    data, image_id = save_tarball(("test/bulk:3",), payload=os.urandom(bulk.FRAME + 10))
    digest = hashlib.sha256(data).hexdigest()
    _manager, runner, url, accepting = await _holder(tmp_path / "h1", data, digest)
    sealer = Keyring.from_secret(SECRET).channel(b"raft")
    release = threading.Event()
    real_fsync = images_module._fsync_path

    def slow_fsync(path: Path) -> None:
        release.wait(10)
        real_fsync(path)

    monkeypatch.setattr(images_module, "_fsync_path", slow_fsync)

    async def propose(cmd: object) -> None:
        return None

    try:
        async with aiohttp.ClientSession() as session:
            engine = FakeEngine()
            me = ImageManager("h2", ClusterState(), engine, tmp_path / "h2", SECRET, sealer, session,
                              {"h1": url}.get, propose, bulk_bind=("127.0.0.1", 0))
            (tmp_path / "h2" / "images" / "partial").mkdir(parents=True)
            image = CatalogImage(image_id, ("test/bulk:3",), digest, len(data), ("h1",), "load", 1)
            await me.fetch(image, Job("test/bulk:3", "peer"))
            assert digest in me.keeping, "the keep goes on after the load"
            await engine.remove_image(image_id)
            again = asyncio.get_running_loop().create_task(me.fetch(image, Job("test/bulk:3", "peer")))
            await asyncio.sleep(0.2)
            assert not again.done(), "it waits for the keep"
            release.set()
            await again
            assert await engine.image_inspect(image_id) is not None
            assert me.cached(digest).read_bytes() == data
            assert holder_sent(_manager) == len(data), "the second fetch loaded the kept copy, fetched nothing"
    finally:
        release.set()
        accepting.cancel()
        await runner.cleanup()


def holder_sent(manager: ImageManager) -> int:
    return manager.stats["served_bytes"]


async def test_a_frame_changed_on_the_way_is_never_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import aiohttp

    data, image_id = save_tarball(("test/bulk:2",), payload=os.urandom(2 * bulk.FRAME))
    digest = hashlib.sha256(data).hexdigest()
    _holder_manager, runner, url, accepting = await _holder(tmp_path / "h1", data, digest)
    sealer = Keyring.from_secret(SECRET).channel(b"raft")
    real_seal = bulk.FrameSealer.seal

    def flip(self: bulk.FrameSealer, chunk: memoryview) -> memoryview:
        framed = real_seal(self, chunk)
        if self.counter == 2:
            self.buf[100] ^= 1  # one bit of the second frame, after it was sealed
        return framed

    monkeypatch.setattr(bulk.FrameSealer, "seal", flip)

    async def propose(cmd: object) -> None:
        return None

    try:
        async with aiohttp.ClientSession() as session:
            engine = FakeEngine()
            me = ImageManager("h2", ClusterState(), engine, tmp_path / "h2", SECRET, sealer, session,
                              {"h1": url}.get, propose, rng=random.Random(0), bulk_bind=("127.0.0.1", 0))
            (tmp_path / "h2" / "images" / "partial").mkdir(parents=True)
            image = CatalogImage(image_id, ("test/bulk:2",), digest, len(data), ("h1",), "load", 1)
            with pytest.raises(ImageError, match="did not open"):
                await me.fetch(image, Job("test/bulk:2", "peer"))
            assert await engine.image_inspect(image_id) is None, "never loaded"
            assert not list((tmp_path / "h2" / "images" / "partial").iterdir()), "nothing left behind"
    finally:
        accepting.cancel()
        await runner.cleanup()




async def test_a_bulk_port_in_use_is_a_clear_error_and_the_listener_closes_with_the_manager(tmp_path: Path) -> None:
    import socket

    from tests.unit.test_feed import Cluster

    cluster = Cluster()

    async def propose(cmd: object) -> None:
        return None

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        busy = ImageManager("h1", cluster.state, FakeEngine(), tmp_path / "a", SECRET, None, None, lambda _h: None,
                            propose, bulk_bind=taken.getsockname())
        with pytest.raises(OSError, match=r"image bulk channel cannot listen on 127.0.0.1.*--image-port"):
            async with busy.running(cluster.feed):
                pass
    finally:
        taken.close()
    manager = ImageManager("h1", cluster.state, FakeEngine(), tmp_path / "b", SECRET, None, None, lambda _h: None,
                           propose, bulk_bind=("127.0.0.1", 0))
    async with manager.running(cluster.feed):
        port = manager.bulk_port
        assert port
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
    assert manager.bulk_port is None
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


def test_a_bulk_socket_wakes_its_reader_for_batches_not_segments() -> None:
    """``SO_RCVLOWAT``: the reader's event loop wakes once 256 KiB are in, not for each segment (in the lab
    this cut the agents' CPU for five hosts from 10.6-12.2 to 8.3-8.8 CPU-s)."""
    import socket as sockets

    with sockets.socket(sockets.AF_INET, sockets.SOCK_STREAM) as sock:
        before = sock.getsockopt(sockets.SOL_SOCKET, sockets.SO_RCVLOWAT)
        bulk.wake_for_batches(sock)
        assert before == 1 and sock.getsockopt(sockets.SOL_SOCKET, sockets.SO_RCVLOWAT) == bulk.RECV_LOW
