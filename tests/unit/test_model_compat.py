"""A data dir written by the previous version starts under the typed model with everything intact.

``tests/fixtures/datadir-v1`` was made by the untyped state machine (commit f571825, with the script
``tests/fixtures/make_datadir_v1.py`` of that commit): a Raft log in SQLite holding a snapshot at index
25 (format 1: maps of plain maps) and 15 entries after it, the last one committed but not yet marked
so on disk. ``expected.json`` is that code's own view of the state it ended with, and the container
configs its reconciler asked Docker for. A real Raft driver is started on a copy: it must elect
itself, apply the entries after the snapshot, and hold every record as the old code did; and the
reconciler must ask Docker for the very same containers (or an upgrade would replace them all).
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path
from typing import Any

from agent.model.codec import to_wire
from agent.model.state import ClusterState
from agent.node.plan import container_config
from mesh.raft import config as raft_config
from mesh.raft.core import RaftNode
from mesh.raft.driver import RaftDriver
from mesh.raft.storage import SqliteStorage
from mesh.raft.transport import RaftTransport

FIXTURE = Path(__file__).parent.parent / "fixtures" / "datadir-v1"


class Plain:
    def seal(self, plaintext: bytes) -> bytes:
        return plaintext

    def open(self, sealed: bytes) -> bytes | None:
        return sealed


def old_shape(record: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    """The new record's wire form, cut to the fields the old record had (it left unset ones out)."""
    return {k: v for k, v in json.loads(json.dumps(record)).items() if k in like}


async def started_on_fixture(tmp_path: Path) -> tuple[ClusterState, RaftDriver, SqliteStorage, RaftTransport]:
    shutil.copytree(FIXTURE / "raft", tmp_path / "raft")
    storage = await SqliteStorage.open(tmp_path / "raft")
    persistent = await storage.load()
    assert persistent.snapshot is not None and persistent.snapshot.meta.index == 25 and len(persistent.entries) == 15
    cfg = dataclasses.replace(raft_config.local(), snapshot_threshold=1000)
    core = RaftNode("h1", cfg, random.Random(1), state=persistent)
    state = ClusterState()
    transport = RaftTransport(("127.0.0.1", 0), Plain(), lambda m: None)
    driver = RaftDriver(core, storage, state, transport, cfg.tick_seconds)
    await transport.start()
    await driver.start(persistent.snapshot.data)
    return state, driver, storage, transport


SPEC_FIELDS_SINCE = {"pull": "if-not-present", "mounts": [], "on_host_loss": "wait", "mode": "replicated",
                     # issue 16: compose files as people write them
                     "entrypoint": None, "user": None, "working_dir": None, "hostname": None, "cap_add": [],
                     "cap_drop": [], "read_only": False, "init": None, "sysctls": {}, "ulimits": {},
                     "extra_hosts": [], "dns": [], "stop_signal": None, "stop_grace_period": None, "shm_size": 0,
                     "expose": [], "privileged": False, "tty": False, "stdin_open": False, "cpu_limit": 0.0,
                     "memory_limit": 0, "restart_max_attempts": 0, "restart_delay": 0.0, "restart_window": 0.0,
                     "depends_on": {}, "service_labels": {}, "aliases": [], "no_new_privileges": False,
                     # issue 17: load balancers, external services, compose links
                     "kind": "container", "lb": None, "external": None, "links": {},
                     # issue 18: rolling upgrades (strategies, not in the fingerprint)
                     "update_config": None, "rollback_config": None}
PLACEMENT_FIELDS_SINCE = {"spread": []}
PORT_FIELDS_SINCE = {"host_ip": None}


async def test_a_v1_data_dir_starts_with_every_record_intact(tmp_path: Path) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    state, driver, storage, transport = await started_on_fixture(tmp_path)
    try:
        assert await driver.wait_applied(expected["applied_index"], timeout=10), "entries after the snapshot apply"
        assert driver.is_leader
        for collection in ("environments", "hosts", "stacks", "services"):
            got = {k: json.loads(json.dumps(to_wire(v))) for k, v in getattr(state, collection).items()}
            if collection == "hosts":  # hosts have an environment since; an old host is the default one's
                assert all(h.pop("environment") == "default" for h in got.values())
                assert all(h.pop("manager") is False for h in got.values())  # since issue 16
            if collection == "services":  # fields specs have had since: an old service has their defaults
                for field, default in SPEC_FIELDS_SINCE.items():
                    assert all(v["spec"].pop(field) == default for v in got.values()), field
                for field, default in PLACEMENT_FIELDS_SINCE.items():
                    assert all(v["spec"]["placement"].pop(field) == default for v in got.values()), field
                for field, default in PORT_FIELDS_SINCE.items():
                    assert all(p.pop(field) == default for v in got.values() for p in v["spec"]["ports"]), field
            assert got == expected[collection], collection
        assert set(state.instances) == set(expected["instances"])
        for inst_id, old in expected["instances"].items():
            assert old_shape(to_wire(state.instances[inst_id]), old) == {k: v for k, v in old.items()
                                                                         if k != "address"}, inst_id
            assert old.get("address") is None, "the field left out was never set"
        assert {k: (v.value if isinstance(v.value, bytes) else v.value.encode()).hex() for k, v in state.kv.items()} \
            == {k: v["value"] for k, v in expected["kv"].items()}
        assert {k: (v.create_index, v.modify_index) for k, v in state.kv.items()} == {
            k: (v["create_index"], v["modify_index"]) for k, v in expected["kv"].items()}
        # every field an old event had is intact; of those added since, the environment is found, the actor unknown
        events = [json.loads(json.dumps(to_wire(e))) for e in state.events]
        assert [{k: e[k] for k in old} for e, old in zip(events, expected["events"], strict=True)] == expected["events"]
        assert all(e["actor"] is None for e in events)  # the old log says nothing of who
        assert state.keyring is not None and to_wire(state.keyring) == expected["keyring"]
        assert state.subnets.to_dict() == expected["subnets"]
    finally:
        await driver.stop()
        await transport.close()
        await storage.close()


async def test_the_reconciler_asks_docker_for_the_same_containers_as_before(tmp_path: Path) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    state, driver, storage, transport = await started_on_fixture(tmp_path)
    try:
        assert await driver.wait_applied(expected["applied_index"], timeout=10)
        assert set(expected["containers"]) == set(state.instances)
        for inst_id, config in expected["containers"].items():
            body = json.loads(json.dumps(container_config(state, state.instances[inst_id])))
            # issue 17: every container is now given the host's DNS server and the stack's search list;
            # they stay out of the fingerprint (the labels are equal), so no running container is replaced
            dns = {k: body["HostConfig"].pop(k) for k in ("Dns", "DnsSearch") if k in body["HostConfig"]}
            assert set(dns) == {"Dns", "DnsSearch"}, inst_id
            assert body == config, inst_id
    finally:
        await driver.stop()
        await transport.close()
        await storage.close()


async def test_a_v2_snapshot_round_trips_and_v1_state_is_upgraded_on_the_next_snapshot(tmp_path: Path) -> None:
    state, driver, storage, transport = await started_on_fixture(tmp_path)
    try:
        await driver.wait_applied(40, timeout=10)
        again = ClusterState()
        again.restore(state.snapshot())
        assert again.snapshot() == state.snapshot()
        assert {k: to_wire(v) for k, v in again.instances.items()} == {
            k: to_wire(v) for k, v in state.instances.items()}
    finally:
        await driver.stop()
        await transport.close()
        await storage.close()
