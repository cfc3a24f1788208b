"""A host's side of volumes, configs and secrets: what the reconciler makes before a container, the
mounts in Docker's create body, files swept when no container needs them, volumes removed on request."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.model.commands import (
    ConfigFiles,
    HostRegister,
    PlacementsCommit,
    StackDeploy,
    StackRemove,
    VolumeGone,
)
from agent.model.storage import SECRET_PURPOSE
from agent.node.plan import HostPaths, container_config, desired_one
from agent.node.reconciler import Reconciler
from agent.node.storage import HostStorage
from mesh import sealing
from tests.unit.fakes import FakeEngine
from tests.unit.test_feed import Cluster, settle

SECRET = b"s" * 32


def deployed(cluster: Cluster, content: bytes = b"listen 80;\n") -> str:
    cluster.apply(HostRegister("h1", "10.77.0.11"))
    spec = {"image": "corral/base", "mounts": [
        {"type": "volume", "source": "data", "target": "/data"},
        {"type": "volume", "target": "/cache"},
        {"type": "config", "source": "nginx.conf", "target": "/etc/nginx/nginx.conf"},
        {"type": "secret", "source": "pw", "mode": 0o400},
        {"type": "tmpfs", "target": "/run/x", "size": "16m"}]}
    configs = (ConfigFiles("nginx.conf", (("", content),)),
               ConfigFiles("pw", (("", sealing.seal_deterministic(SECRET, SECRET_PURPOSE, b"hunter2")),), True))
    cluster.apply(StackDeploy("app", "default", {"web": spec}, configs))
    service = next(iter(cluster.state.services))
    cluster.apply(PlacementsCommit(service, ((1, "h1"),)))
    return next(iter(cluster.state.instances))


def test_the_create_body_mounts_volumes_by_name_and_configs_from_the_hosts_files(tmp_path: Path) -> None:
    cluster = Cluster()
    inst = deployed(cluster)
    paths = HostPaths(str(tmp_path / "configs"), str(tmp_path / "secrets"))
    mounts = container_config(cluster.state, cluster.state.instances[inst], paths)["HostConfig"]["Mounts"]
    by_target = {m["Target"]: m for m in mounts}
    assert by_target["/data"] == {"Type": "volume", "Source": "app_data", "Target": "/data", "ReadOnly": False}
    assert by_target["/cache"]["Source"] == "app_anon-cache-1", "an anonymous volume is the slot's own"
    conf = by_target["/etc/nginx/nginx.conf"]
    assert conf["ReadOnly"] and conf["Source"].startswith(str(tmp_path / "configs")) and \
        conf["Source"].endswith("-444/content")
    assert by_target["/run/secrets/pw"]["Source"].startswith(str(tmp_path / "secrets"))
    assert by_target["/run/x"] == {"Type": "tmpfs", "Target": "/run/x", "TmpfsOptions": {"SizeBytes": 16 * 2**20}}


def test_new_content_in_a_config_is_a_new_container(tmp_path: Path) -> None:
    one, two = Cluster(), Cluster()
    a = desired_one(one.state, one.state.instances[deployed(one, b"a")])
    b = desired_one(two.state, two.state.instances[deployed(two, b"b")])
    assert a.fingerprint != b.fingerprint


async def test_a_host_makes_volumes_and_files_then_sweeps_and_removes_what_goes(tmp_path: Path) -> None:
    cluster, engine = Cluster(), FakeEngine()
    inst = deployed(cluster)
    proposed = []

    async def propose(cmd: object) -> None:
        proposed.append(cmd)
        assert isinstance(cmd, VolumeGone)
        cluster.apply(cmd)

    async def report(instance: str, observed: object) -> None:
        pass

    paths = HostPaths(str(tmp_path / "configs"), str(tmp_path / "secrets"))
    storage = HostStorage("h1", cluster.state, engine, paths, SECRET, propose)
    rec = Reconciler("h1", cluster.state, engine, report, storage=storage, paths=paths)
    async with rec.running(cluster.feed):
        await settle(rec)
        assert set(engine.volume_labels) == {"app_data", "app_anon-cache-1"}
        assert engine.volume_labels["app_data"] == {"corral.volume": "default/app_data", "corral.stack": "app"}
        (conf_dir,) = os.listdir(tmp_path / "configs")
        content = tmp_path / "configs" / conf_dir / "content"
        assert content.read_bytes() == b"listen 80;\n" and (content.stat().st_mode & 0o777) == 0o444
        (secret_dir,) = os.listdir(tmp_path / "secrets")
        opened = tmp_path / "secrets" / secret_dir / "content"
        assert opened.read_bytes() == b"hunter2", "the host opens the sealed secret"
        assert (opened.stat().st_mode & 0o777) == 0o400
        created = next(iter(engine.containers_by_id.values()))
        assert created.name == cluster.state.container_name(cluster.state.instances[inst])

        cluster.apply(StackRemove(next(iter(cluster.state.stacks)), volumes=True))
        await settle(rec)
        assert os.listdir(tmp_path / "configs") == [] and os.listdir(tmp_path / "secrets") == []
        assert engine.volume_labels == {}, "the volumes of a stack removed with --volumes are deleted"
        assert {c.name for c in proposed} == {"app_data", "app_anon-cache-1"}
        assert cluster.state.storage.volumes == {}


async def test_a_volume_whose_record_is_missing_is_never_deleted(tmp_path: Path) -> None:
    cluster, engine = Cluster(), FakeEngine()
    cluster.apply(HostRegister("h1", "10.77.0.11"))
    engine.volume_labels["old_data"] = {"corral.volume": "default/old_data"}

    async def report(instance: str, observed: object) -> None:
        pass

    async def propose(cmd: object) -> None:
        raise AssertionError(f"nothing to propose: {cmd}")

    paths = HostPaths(str(tmp_path / "c"), str(tmp_path / "s"))
    rec = Reconciler("h1", cluster.state, engine, report,
                     storage=HostStorage("h1", cluster.state, engine, paths, SECRET, propose), paths=paths)
    async with rec.running(cluster.feed):
        await settle(rec)
    assert "old_data" in engine.volume_labels


def test_when_a_container_finished_is_read_from_dockers_rfc3339_nanoseconds() -> None:
    from agent.node.reconciler import _finished_at

    assert _finished_at({"State": {"FinishedAt": "2026-12-02T07:40:00.5Z"}}) == 1796197200.5
    assert _finished_at({"State": {"FinishedAt": "2026-12-02T08:40:00.123456789+01:00"}}) == \
        1796197200.123456789
    assert _finished_at({"State": {"FinishedAt": "0001-01-01T00:00:00Z"}}) is None, "never finished"
    assert _finished_at({"State": {"FinishedAt": "yesterday"}}) is None
    assert _finished_at(None) is None


async def test_two_containers_mounting_one_config_write_it_once_at_the_same_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import threading

    from agent.node import storage as storage_module

    cluster, engine = Cluster(), FakeEngine()
    inst = deployed(cluster)
    paths = HostPaths(str(tmp_path / "configs"), str(tmp_path / "secrets"))

    async def propose(cmd: object) -> None:
        raise AssertionError(cmd)

    storage = HostStorage("h1", cluster.state, engine, paths, SECRET, propose)
    want = desired_one(cluster.state, cluster.state.instances[inst], paths)
    both_written = threading.Barrier(2, timeout=5)
    rename = os.rename

    def rename_together(src: object, dst: object) -> None:  # both writers are past "is it there yet?"
        both_written.wait()
        rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(storage_module.os, "rename", rename_together)
    await asyncio.gather(storage.prepare(want), storage.prepare(want))
    assert len(os.listdir(tmp_path / "configs")) == 1, "one directory, no temporary one left"
    (only,) = os.listdir(tmp_path / "configs")
    assert (tmp_path / "configs" / only / "content").read_bytes() == b"listen 80;\n"
