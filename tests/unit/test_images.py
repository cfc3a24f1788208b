"""Images: the transfer planner (who sends to whom), the catalog and registries in the model, Docker's
pull errors as reasons, membership proofs, and a whole peer transfer between two image managers over
real HTTP (a fake engine that checks what it is loaded with)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import os
import random
import tarfile
import time

import pytest

from agent.model.commands import ImageAdd, ImageHeld, ImageRemove, RegistryRemove, RegistrySet
from agent.model.errors import CommandError
from agent.model.images import normal_tag, registry_of
from agent.model.state import ClusterState
from agent.node import transfer
from agent.node.images import proof, proof_ok, pull_reason, tarball_manifest
from mesh import sealing
from mesh.keyring import Keyring


@pytest.mark.parametrize(("asker", "offset", "complete", "have", "serving", "serve", "redirect"), [
    ("h2", 0, True, 0, {}, True, ()),
    ("h3", 0, True, 0, {"h2": 10}, True, ()),
    ("h4", 0, True, 0, {"h2": 10, "h3": 50}, False, ("h3", "h2")),  # full: the furthest along first
    ("h2", 0, True, 0, {"h2": 10, "h3": 50}, True, ()),  # the same asker again (it resumes): not counted twice
    ("h5", 0, False, 100, {}, True, ()),  # a relay: it has 100 bytes to pass on
    ("h5", 100, False, 100, {}, False, ()),  # ... but nothing the asker lacks
    ("h5", 300, False, 100, {}, False, ()),
])
def test_a_host_serves_two_then_redirects_to_its_relays(asker: str, offset: int, complete: bool, have: int,
                                                        serving: dict[str, int], serve: bool,
                                                        redirect: tuple[str, ...]) -> None:
    got = transfer.admit(asker, offset, complete, have, serving)
    assert (got.serve, got.redirect) == (serve, redirect)
    assert got.serve or got.reason


def test_the_next_source_is_a_hint_first_then_a_holder_never_me_never_a_failed_one() -> None:
    rng = random.Random(1)
    assert transfer.next_source(["h1", "h2"], ["h3"], "h4", set(), rng) == "h3"
    assert transfer.next_source(["h1", "h2"], ["h3", "h4"], "h4", {"h3"}, rng) in ("h1", "h2")
    assert transfer.next_source(["h1"], [], "h1", set(), rng) is None
    assert transfer.next_source(["h1", "h2"], [], "h3", {"h1", "h2"}, rng) is None
    picks = {transfer.next_source(["h1", "h2", "h3"], [], "h9", set(), random.Random(seed)) for seed in range(20)}
    assert picks == {"h1", "h2", "h3"}, "holders share the load"


@pytest.mark.parametrize(("header", "size", "offset"), [
    (None, 10, 0), ("bytes=0-", 10, 0), ("bytes=7-", 10, 7), ("bytes=10-", 10, None), ("bytes=0-5", 10, None),
    ("items=0-", 10, None), ("bytes=-5", 10, None), ("bytes=x-", 10, None),
])
def test_a_resume_asks_for_the_rest_from_an_offset(header: str | None, size: int, offset: int | None) -> None:
    assert transfer.parse_range(header, size) == offset


def test_image_references_name_their_registry() -> None:
    assert registry_of("corral/base") == "docker.io"
    assert registry_of("nginx:1.25") == "docker.io"
    assert registry_of("10.77.0.1:5000/corral/base:latest") == "10.77.0.1:5000"
    assert registry_of("registry.example/team/app") == "registry.example"
    assert registry_of("localhost/app") == "localhost"
    assert normal_tag("corral/base") == "corral/base:latest"
    assert normal_tag("10.77.0.1:5000/corral/base") == "10.77.0.1:5000/corral/base:latest"
    assert normal_tag("app:v2") == "app:v2"


@pytest.mark.parametrize(("message", "has", "words"), [
    ("Head \"https://r:5000/v2/x/manifests/latest\": no basic auth credentials", False, "asks for credentials"),
    ("unauthorized: authentication required", True, "r:5000 refused the credentials"),
    ("manifest for r:5000/x:nope not found: manifest unknown: manifest unknown", True, "is not in r:5000"),
    ("Get \"https://r:5000/v2/\": dial tcp: lookup r: no such host", False, "cannot resolve"),
    ("Get \"https://r:5000/v2/\": dial tcp 10.0.0.1:5000: connect: connection refused", False,
     "refused the connection"),
    ("Get \"https://r:5000/v2/\": x509: certificate signed by unknown authority", False, "does not trust"),
    ("the registry sent nothing for 60 s (it hangs)", False, "did not answer"),
])
def test_docker_pull_errors_become_reasons_a_user_can_act_on(message: str, has: bool, words: str) -> None:
    reason = pull_reason("r:5000", "r:5000/x:nope", message, has)
    assert reason.startswith("image.pull_failed: ") and words in reason


def test_registry_credentials_are_sealed_and_replicated_never_in_the_clear() -> None:
    secret = b"s" * 32
    state = ClusterState()
    sealed = sealing.seal(secret, b"registry password", b"hunter2")
    state.execute(RegistrySet("10.77.0.1:5000", "lab", sealed), 1)
    assert b"hunter2" not in state.snapshot(), "the snapshot holds no password in the clear"
    restored = ClusterState()
    restored.restore(state.snapshot())
    got = restored.images.registries["10.77.0.1:5000"]
    assert sealing.open_sealed(secret, b"registry password", got.sealed_password) == b"hunter2"
    with pytest.raises(sealing.SealError):
        sealing.open_sealed(b"t" * 32, b"registry password", got.sealed_password)
    with pytest.raises(sealing.SealError):
        sealing.open_sealed(secret, b"ca key", got.sealed_password)  # one purpose's key opens nothing else
    for bad in (RegistrySet("not a host!", "u", sealed), RegistrySet("r:5000", "", sealed),
                RegistrySet("r:5000", "a:b", sealed), RegistrySet("r:5000", "u", b"")):
        with pytest.raises(CommandError):
            state.execute(bad, 2)
    state.execute(RegistryRemove("10.77.0.1:5000"), 3)
    assert not state.images.registries
    with pytest.raises(CommandError):
        state.execute(RegistryRemove("10.77.0.1:5000"), 4)


def _host(state: ClusterState, name: str) -> None:
    from agent.model.commands import HostRegister
    state.execute(HostRegister(name, "10.0.0.1", {}, 2.0, 2**31, "ab" * 32), state.applied_index + 1)


def test_the_catalog_knows_images_by_tag_and_who_holds_them() -> None:
    state = ClusterState()
    for h in ("h1", "h2"):
        _host(state, h)
    image_id, digest = "sha256:" + "a" * 64, "b" * 64
    state.execute(ImageAdd(image_id, ("corral/base:latest",), digest, 1000, "h1"), 10)
    assert state.images.by_reference("corral/base").id == image_id
    assert state.images.by_reference(image_id).holders == ("h1",)
    state.execute(ImageHeld(image_id, "h2"), 11)
    assert state.images.by_reference("corral/base:latest").holders == ("h1", "h2")
    state.execute(ImageHeld(image_id, "h1", False), 12)
    assert state.images.catalog[image_id].holders == ("h2",)
    newer = "sha256:" + "c" * 64
    state.execute(ImageAdd(newer, ("corral/base:latest",), "d" * 64, 2000, "h1"), 13)
    assert state.images.by_reference("corral/base").id == newer, "a tag names the newest image to claim it"
    assert state.images.catalog[image_id].tags == ()
    for bad in (ImageAdd("sha256:short", (), digest, 1, "h1"), ImageAdd(image_id, (), "x", 1, "h1"),
                ImageAdd(image_id, (), digest, 0, "h1"), ImageAdd(image_id, ("Bad Tag",), digest, 1, "h1"),
                ImageAdd(image_id, (), digest, 1, "h9"), ImageHeld("sha256:" + "e" * 64, "h1")):
        before = state.snapshot()
        with pytest.raises(CommandError):
            state.execute(bad, 14)
        assert state.snapshot() == before
    state.execute(ImageRemove(newer), 15)
    assert state.images.by_reference("corral/base") is None
    restored = ClusterState()
    restored.restore(state.snapshot())
    assert restored.images.catalog == state.images.catalog


def test_membership_proofs_are_for_one_tarball_and_a_minute() -> None:
    sealer = Keyring.from_secret(b"k" * 32).channel(b"raft")
    other = Keyring.from_secret(b"o" * 32).channel(b"raft")
    now = time.time()
    good = proof(sealer, "ab" * 32, now)
    assert proof_ok(sealer, good, "ab" * 32, now + 5)
    assert not proof_ok(sealer, good, "cd" * 32, now), "for another tarball"
    assert not proof_ok(sealer, good, "ab" * 32, now + 120), "too old"
    assert not proof_ok(other, good, "ab" * 32, now), "another cluster's key"
    assert not proof_ok(sealer, "garbage!", "ab" * 32, now) and not proof_ok(sealer, None, "ab" * 32, now)


def save_tarball(tags: tuple[str, ...] = ("test/app:latest",), payload: bytes = b"x" * 1000) -> tuple[bytes, str]:
    """A tarball in `docker save`'s form: (bytes, image id)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        info = tarfile.TarInfo("data")
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    config = json.dumps({"rootfs": {"type": "layers",
                                    "diff_ids": ["sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()]}}).encode()
    hexid = hashlib.sha256(config).hexdigest()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        for name, data in ((f"{hexid}.json", config), ("l/layer.tar", layer.getvalue()),
                           ("manifest.json", json.dumps([{"Config": f"{hexid}.json", "RepoTags": list(tags),
                                                          "Layers": ["l/layer.tar"]}]).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return out.getvalue(), "sha256:" + hexid


def test_a_tarball_says_its_image_and_tags_and_garbage_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from agent.node.images import ImageError
    data, image_id = save_tarball()
    (tmp_path / "ok.tar").write_bytes(data)
    assert tarball_manifest(tmp_path / "ok.tar") == (image_id, ("test/app:latest",))
    (tmp_path / "cut.tar").write_bytes(data[:700])
    (tmp_path / "junk.tar").write_bytes(b"not a tarball at all" * 100)
    for name in ("cut.tar", "junk.tar"):
        with pytest.raises(ImageError):
            tarball_manifest(tmp_path / name)


async def test_a_container_waits_for_its_image_and_the_others_do_not(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The reconciler with an image manager: an instance whose image is not here is reported pull-failed
    with the registry's reason (retried, not created), while an instance of an image that is here runs;
    once the image is here (loaded), the waiting one is created too."""
    from agent.model.commands import HostRegister, InstanceStatus, PlacementsCommit, ServiceCreate, StackCreate
    from agent.model.entities import Status
    from agent.node.images import ImageManager
    from agent.node.plan import Observed
    from agent.node.reconciler import Reconciler
    from mesh.waiting import until_async
    from tests.unit.fakes import FakeEngine
    from tests.unit.test_feed import Cluster, settle

    cluster, engine = Cluster(), FakeEngine()
    cluster.apply(HostRegister("h1", "10.77.0.11"))
    cluster.apply(StackCreate("web"))
    cluster.apply(ServiceCreate("st2", "here", {"image": "corral/base", "scale": 1}))
    cluster.apply(ServiceCreate("st2", "away", {"image": "127.0.0.1:9/away:1", "scale": 1}))
    cluster.apply(PlacementsCommit("sv3", ((1, "h1"),)))
    cluster.apply(PlacementsCommit("sv4", ((1, "h1"),)))

    async def report(instance: str, observed: Observed) -> None:
        cluster.apply(InstanceStatus(instance, "h1", observed.status, observed.exit_code, observed.container_id,
                                     observed.ip, observed.ports, observed.error))

    async def propose(cmd: object) -> None:
        return None

    manager = ImageManager("h1", cluster.state, engine, tmp_path, b"k" * 32, None, None, lambda _h: None, propose)
    rec = Reconciler("h1", cluster.state, engine, report, manager)
    manager.kick = rec.kick
    async with manager.running(cluster.feed), rec.running(cluster.feed):
        await until_async("the other instance is pull-failed", lambda: cluster.state.instances["c6-1"].status
                          == Status.PULL_FAILED, 5)
        here, away = cluster.state.instances["c5-1"], cluster.state.instances["c6-1"]
        assert here.status == Status.RUNNING, "an instance of an image that is here is not held up"
        assert away.error and away.error.startswith("image.pull_failed: 127.0.0.1:9 refused the connection")
        assert [c.config["Image"] for c in engine.containers_by_id.values()] == ["corral/base"], "nothing made for it"
        assert manager.jobs["127.0.0.1:9/away:1"].attempts == 1
        data, _ = save_tarball(("127.0.0.1:9/away:1",))

        async def chunks():  # type: ignore[no-untyped-def]
            yield data

        await engine.load_stream(chunks())  # the image arrives (as by hand): the next try finds it
        manager.jobs["127.0.0.1:9/away:1"].retry_at = 0
        rec.kick()
        await until_async("it runs", lambda: cluster.state.instances["c6-1"].status == Status.RUNNING, 5)
        await settle(rec)
        images = sorted(c.config["Image"] for c in engine.containers_by_id.values())
        assert images == ["127.0.0.1:9/away:1", "corral/base"]


SEED_QUITTER_FIRST = 1


async def test_a_fetch_resumes_from_another_peer_and_refuses_bytes_that_do_not_match(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Peers over real HTTP: one stops half way (the fetch goes on from another at the offset reached),
    one sends the right number of wrong bytes (the load never completes; nothing is left behind)."""
    import aiohttp
    from aiohttp import web

    from agent.model.images import CatalogImage
    from agent.node.images import ImageError, ImageManager, Job
    from tests.unit.fakes import FakeEngine

    assert random.Random(SEED_QUITTER_FIRST).choice(["quitter", "steady"]) == "quitter"
    data, image_id = save_tarball(("test/peer:1",), payload=os.urandom(600_000))
    digest = hashlib.sha256(data).hexdigest()
    asked: list[tuple[str, str]] = []

    def peer(behaviour: str) -> web.Application:
        async def send(request: web.Request) -> web.StreamResponse:
            offset = int(request.headers["Range"].removeprefix("bytes=").rstrip("-"))
            asked.append((behaviour, request.headers["Range"]))
            body = data if behaviour != "liar" else bytes(len(data))
            response = web.StreamResponse(status=206)
            await response.prepare(request)
            end = len(data) // 2 if behaviour == "quitter" else len(data)
            await response.write(body[offset:end])
            if behaviour == "quitter":
                raise ConnectionResetError("the sender went away")
            return response
        app = web.Application()
        app.router.add_get("/v1/internal/images/{id}", send)
        return app

    runners, urls = [], {}
    for name in ("quitter", "steady", "liar"):
        runner = web.AppRunner(peer(name))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        urls[name] = f"http://127.0.0.1:{runner.addresses[0][1]}"
    sealer = Keyring.from_secret(b"k" * 32).channel(b"raft")
    held: list[object] = []

    async def propose(cmd: object) -> None:
        held.append(cmd)

    try:
        async with aiohttp.ClientSession() as session:
            engine = FakeEngine()
            manager = ImageManager("me", ClusterState(), engine, tmp_path / "a", b"k" * 32, sealer, session,
                                   urls.get, propose, rng=random.Random(0))
            (tmp_path / "a" / "images" / "partial").mkdir(parents=True)
            image = CatalogImage(image_id, ("test/peer:1",), digest, len(data), ("quitter",), "load", 1)
            image = dataclasses.replace(image, holders=("quitter", "steady"))
            manager.rng = random.Random(SEED_QUITTER_FIRST)  # the quitter is asked first
            job = Job("test/peer:1", "peer")
            await manager.fetch(image, job)
            assert await engine.image_inspect(image_id) is not None, "loaded: its containers may start"
            await manager.kept()  # the tarball on disk, then said to be held
            assert manager.cached(digest).exists()
            assert held and held[-1].host == "me"  # type: ignore[attr-defined]
            assert asked[:2] == [("quitter", "bytes=0-"), ("steady", f"bytes={len(data) // 2}-")]
            assert job.resumed == [f"steady@{len(data) // 2}"] and manager.stats["resumes"] == 1
            # where the time went, step by step, in the order the steps happen (a resume is no new first byte)
            steps = job.timeline
            assert list(steps) == ["first_byte", "received", "loaded", "kept"], steps
            assert steps["first_byte"] <= steps["received"] <= steps["loaded"] <= steps["kept"]
            manager.jobs[job.reference] = job
            shown = manager.status()["jobs"][0]
            assert shown["via"] == "steady" and list(shown["timeline"]) == list(steps)

            other = FakeEngine()
            liar = ImageManager("me2", ClusterState(), other, tmp_path / "b", b"k" * 32, sealer, session, urls.get,
                                propose)
            (tmp_path / "b" / "images" / "partial").mkdir(parents=True)
            with pytest.raises(ImageError, match="do not have the image's SHA-256"):
                await liar.fetch(dataclasses.replace(image, holders=("liar",)))
            assert await other.image_inspect(image_id) is None, "the load never completed"
            assert not list((tmp_path / "b" / "images" / "partial").iterdir())
            assert not liar.cached(digest).exists() and liar.stats["digest_mismatch"] == 1
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_a_disk_that_refuses_the_spool_fails_the_fetch_without_asking_another_peer(  # type: ignore[no-untyped-def]
        tmp_path, monkeypatch) -> None:
    """This host's disk, not the sender, is what failed: no other holder is asked, nothing is left."""
    import aiohttp
    from aiohttp import web

    from agent.model.images import CatalogImage
    from agent.node import directio
    from agent.node.images import ImageError, ImageManager
    from tests.unit.fakes import FakeEngine

    data, image_id = save_tarball(("test/full:1",), payload=os.urandom(3 * directio.BLOCK))
    digest = hashlib.sha256(data).hexdigest()
    asked: list[str] = []

    async def send(request: web.Request) -> web.StreamResponse:
        asked.append(request.host)
        response = web.StreamResponse(status=206)
        await response.prepare(request)
        await response.write(data)
        return response

    app = web.Application()
    app.router.add_get("/v1/internal/images/{id}", send)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"

    def full(fd: int, view: memoryview) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(directio, "_write_all", full)
    try:
        async with aiohttp.ClientSession() as session:
            engine = FakeEngine()
            manager = ImageManager("me", ClusterState(), engine, tmp_path / "a", b"k" * 32,
                                   Keyring.from_secret(b"k" * 32).channel(b"raft"), session,
                                   {"p1": url, "p2": url}.get, lambda _c: asyncio.sleep(0))
            (tmp_path / "a" / "images" / "partial").mkdir(parents=True)
            image = CatalogImage(image_id, ("test/full:1",), digest, len(data), ("p1", "p2"), "load", 1)
            with pytest.raises(ImageError, match="this host's disk refused the tarball: No space left on device"):
                await manager.fetch(image)
            assert len(asked) == 1, "the other holder was not asked: it would have met the same disk"
            assert await engine.image_inspect(image_id) is None, "the load never completed"
            assert not list((tmp_path / "a" / "images" / "partial").iterdir()) and not manager.cached(digest).exists()
    finally:
        await runner.cleanup()


async def test_a_failing_pull_backs_off_doubling_and_a_tarball_bigger_than_the_disk_is_refused(
        tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from agent.model.entities import Status
    from agent.node import images as images_module
    from agent.node.images import ImageError, ImageManager
    from tests.unit.fakes import FakeEngine

    now = [1000.0]
    kicks: list[int] = []

    async def propose(cmd: object) -> None:
        return None

    manager = ImageManager("h1", ClusterState(), FakeEngine(), tmp_path, b"k" * 32, None, None, lambda _h: None,
                           propose, kick=lambda: kicks.append(1), clock=lambda: now[0])
    reference = "127.0.0.1:9/x:1"
    delays = []
    for _ in range(5):
        first = await manager.check(reference)
        assert first is not None and first.status is Status.PULLING
        job = manager.jobs[reference]
        assert job.task is not None
        await job.task
        waiting = await manager.check(reference)
        assert waiting is not None and waiting.status is Status.PULL_FAILED
        assert "refused the connection" in waiting.detail
        delays.append(job.retry_at - now[0])
        now[0] = job.retry_at + 0.001  # past the back-off: the next check tries again
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0], "doubling from 2 s"
    assert kicks, "a failed job wakes the reconciler"
    if manager._wake is not None:
        manager._wake.cancel()

    monkeypatch.setattr(images_module.shutil, "disk_usage", lambda _p: type("U", (), {"free": 100 * 2**20})())

    async def body():  # type: ignore[no-untyped-def]
        yield b"x" * 10

    (tmp_path / "images" / "partial").mkdir(parents=True)
    with pytest.raises(ImageError, match="do not fit on this host's disk"):
        await manager.receive_upload(body(), 2**30, 2**33)
    assert not list((tmp_path / "images" / "partial").iterdir())


async def test_a_removed_image_drops_its_tarball_and_a_pending_upload_is_kept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from agent.model.commands import HostRegister
    from agent.node.images import ImageManager
    from tests.unit.fakes import FakeEngine
    from tests.unit.test_feed import Cluster

    cluster = Cluster()
    cluster.apply(HostRegister("h1", "10.77.0.11"))

    async def propose(cmd: object) -> None:
        cluster.apply(cmd)  # type: ignore[arg-type]

    manager = ImageManager("h1", cluster.state, FakeEngine(), tmp_path, b"k" * 32, None, None, lambda _h: None,
                           propose)
    async with manager.running(cluster.feed):
        data, _ = save_tarball(("test/app:1",))

        async def body():  # type: ignore[no-untyped-def]
            yield data

        add = await manager.receive_upload(body(), len(data), 2**30)
        assert manager.cached(add.digest).exists() and add.digest in manager.pending
        cluster.apply(ImageAdd("sha256:" + "f" * 64, ("other:1",), "e" * 64, 10, "h1"))  # any catalog change
        await asyncio.sleep(0.05)
        assert manager.cached(add.digest).exists(), "an upload not committed yet is not an orphan"
        await propose(add)
        manager.pending.pop(add.digest, None)
        cluster.apply(ImageRemove(add.id))
        await asyncio.sleep(0.05)
        assert not manager.cached(add.digest).exists(), "a removed image's tarball goes at once"


async def test_a_fetch_asks_again_while_every_holder_is_busy_instead_of_failing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A holder that is busy (a relay with nothing yet to pass on) for its first answers: the fetch asks
    again shortly and gets the image, rather than failing its job and starting over after the back-off."""
    import aiohttp
    from aiohttp import web

    from agent.model.images import CatalogImage
    from agent.node.images import ImageManager, Job
    from tests.unit.fakes import FakeEngine

    data, image_id = save_tarball(("test/busy:1",), payload=os.urandom(100_000))
    digest = hashlib.sha256(data).hexdigest()
    answers: list[int] = []

    async def send(request: web.Request) -> web.StreamResponse:
        if len(answers) < 3:
            answers.append(503)
            return web.json_response({"error": "unavailable", "redirect": [],
                                      "message": "this host has 0 bytes of it, the asker 0: nothing to relay"},
                                     status=503)
        answers.append(206)
        response = web.StreamResponse(status=206)
        await response.prepare(request)
        await response.write(data)
        return response

    app = web.Application()
    app.router.add_get("/v1/internal/images/{id}", send)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    sealer = Keyring.from_secret(b"k" * 32).channel(b"raft")

    async def propose(cmd: object) -> None:
        return None

    try:
        async with aiohttp.ClientSession() as session:
            engine = FakeEngine()
            manager = ImageManager("me", ClusterState(), engine, tmp_path, b"k" * 32, sealer, session,
                                   {"relay": url}.get, propose)
            (tmp_path / "images" / "partial").mkdir(parents=True)
            image = CatalogImage(image_id, ("test/busy:1",), digest, len(data), ("relay",), "load", 1)
            await manager.fetch(image, Job("test/busy:1", "peer"))
            assert await engine.image_inspect(image_id) is not None
            assert answers == [503, 503, 503, 206] and manager.stats["redirects"] == 3
            await manager.kept()
    finally:
        await runner.cleanup()


def test_image_transfers_shows_each_jobs_steps_after_its_start() -> None:
    from agent.cli.images import _steps

    assert _steps({"started": 100.0, "first_byte": 100.25, "received": 103.1, "loaded": 107.44}) == \
        "first_byte 0.2, received 3.1, loaded 7.4"
    assert _steps({"started": 5.0}) == "-"
    assert _steps({"loaded": 5.0}) == "-", "no start (a job before this version): nothing to measure from"


def test_progress_is_reported_at_the_start_the_end_and_at_most_once_a_second(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Each report is a status write through Raft: a fleet fetching an image must not make one per host
    every 5 %, however fast the bytes come; the job still knows its latest share between reports."""
    from agent.node.images import PROGRESS_EVERY, ImageManager, Job
    from tests.unit.fakes import FakeEngine

    now = [50.0]
    kicks: list[float] = []

    async def propose(cmd: object) -> None:
        return None

    manager = ImageManager("h1", ClusterState(), FakeEngine(), tmp_path, b"k" * 32, None, None, lambda _h: None,
                           propose, kick=lambda: kicks.append(now[0]), clock=lambda: now[0])
    job = Job("test/app:1", "peer")
    for share in (0.0, 0.01, 0.2, 0.4):  # fast: all within the first second
        manager._progress(job, share)
        now[0] += 0.1
    assert kicks == [50.0], "the first share at once, the next not before a second has gone"
    assert job.progress == 0.4, "the job keeps the latest share for whatever pass comes"
    now[0] = 50.0 + PROGRESS_EVERY
    manager._progress(job, 0.42)
    assert kicks == [50.0, 51.0], "a second on and 42 % further: reported"
    now[0] += 5.0
    manager._progress(job, 0.43)
    assert len(kicks) == 2, "a second on but only 1 % further: not reported"
    manager._progress(job, 1.0)
    assert len(kicks) == 3 and job.reported == (1.0, now[0]), "the end at once"
    manager._progress(job, 1.0)
    assert len(kicks) == 3, "the same share again: nothing"
