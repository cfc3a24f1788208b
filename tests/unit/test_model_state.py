"""The cluster state machine: deterministic, errors change nothing, snapshots round-trip.

Commands are fed as raw msgpack maps ``{"op": …, field: …}``, the form every agent has written into
its Raft log, so these tests also hold the typed codec to that wire format.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.model.codec import to_wire
from agent.model.commands import Command, Outcome, encode
from agent.model.errors import CommandError
from agent.model.state import ClusterState


def command(op: str, **fields: Any) -> bytes:
    return bytes(msgpack.packb({"op": op, **fields}, use_bin_type=True))


def as_dict(result: Outcome | CommandError) -> dict[str, Any]:
    """A result as ``{"ok": True, …outcome}`` or ``{"ok": False, "error": code, "message", "field"}``."""
    if isinstance(result, CommandError):
        return {"ok": False, "error": result.code.value, "message": result.message, "field": result.field}
    wire = to_wire(result)
    assert isinstance(wire, dict)
    return {"ok": True, **{k: list(v) if isinstance(v, list) else v for k, v in wire.items()}}


@dataclasses.dataclass(frozen=True)
class Entry:
    index: int
    data: bytes


class Log:
    """Feeds commands to a state machine with increasing indexes, as Raft would."""

    def __init__(self, state: ClusterState | None = None) -> None:
        self.state = state or ClusterState()
        self.index = 0

    def __call__(self, op: str, **fields: Any) -> dict[str, Any]:
        self.index += 1
        return as_dict(self.state.apply(Entry(self.index, command(op, **fields))))

    def run(self, cmd: Command) -> dict[str, Any]:
        """A typed command, through the codec, as the agent proposes it."""
        self.index += 1
        return as_dict(self.state.apply(Entry(self.index, encode(cmd))))


def web_stack(log: Log, scale: int = 3) -> tuple[str, str]:
    for name in ("h1", "h2", "h3"):
        assert log("host.register", name=name, address=f"10.77.0.1{name[1]}", cpus=2, memory=2**30)["ok"]
    stack = log("stack.create", name="web-server")["id"]
    service = log("service.create", stack=stack, name="nginx-cluster",
                  spec={"image": "corral/base", "command": "httpd -f", "scale": scale, "ports": ["8080:80"]})
    assert service["ok"], service
    return stack, service["id"]


def test_create_place_scale_and_remove() -> None:
    log = Log()
    stack, service = web_stack(log)
    placed = log("placements.commit", service=service, placements=[[1, "h1"], [2, "h2"], [3, "h3"]])
    assert len(placed["placed"]) == 3
    names = sorted(log.state.container_name(i) for i in log.state.instances.values())
    assert names == ["web-server-nginx-cluster-1", "web-server-nginx-cluster-2", "web-server-nginx-cluster-3"]
    scaled = log("service.scale", id=service, scale=1)
    assert scaled["ok"] and len(scaled["removed"]) == 2
    assert [i.slot for i in log.state.instances_of(service)] == [1]
    assert log("stack.remove", id=stack)["ok"]
    assert not log.state.services and not log.state.instances and not log.state.stacks


def test_placements_are_rechecked_when_applied() -> None:
    log = Log()
    _, service = web_stack(log, scale=2)
    result = log("placements.commit", service=service,
                 placements=[[1, "h1"], [2, "nohost"], [3, "h2"]], unplaced=[[2, "no host fits: h9 is down"]])
    assert len(result["placed"]) == 1, "an unknown host and a slot above scale are dropped"
    assert log.state.services[service].unplaced == ((2, "no host fits: h9 is down"),)
    again = log("placements.commit", service=service, placements=[[1, "h1"]])
    assert again["placed"] == [], "placing a slot where it already is changes nothing"
    moved = log("placements.commit", service=service, placements=[[1, "h3"]])
    assert [i.host for i in log.state.instances_of(service)] == ["h3"] and moved["placed"]


@pytest.mark.parametrize(
    "op, fields, field",
    [
        ("stack.create", {"name": "Bad Name"}, "name"),
        ("stack.create", {"name": "web-server"}, "name"),
        ("service.create", {"stack": "nope", "name": "x", "spec": {"image": "i"}}, "stack"),
        ("service.create", {"stack": "STACK", "name": "x", "spec": {"scale": 2}}, "image"),
        ("service.create", {"stack": "STACK", "name": "x", "spec": {"image": "i", "scale": -1}}, "scale"),
        ("service.create", {"stack": "STACK", "name": "x", "spec": {"image": "i", "scale": 10**6}}, "scale"),
        ("service.create", {"stack": "STACK", "name": "nginx-cluster", "spec": {"image": "i"}}, "name"),
        ("service.create", {"stack": "STACK", "name": "x", "spec": {"image": "i", "ports": ["99999:1"]}},
         "ports[0]"),
        ("service.create", {"stack": "STACK", "name": "x", "spec": {"image": "i", "bogus": 1}}, "bogus"),
        ("service.scale", {"id": "SERVICE", "scale": "ten"}, "scale"),
        ("service.scale", {"id": "nope", "scale": 1}, "service"),
        ("host.state", {"name": "h1", "state": "gone"}, "state"),
        ("nonsense.op", {}, "op"),
    ],
)
def test_bad_commands_change_nothing_and_name_the_field(op: str, fields: dict[str, Any], field: str) -> None:
    log = Log()
    stack, service = web_stack(log)
    fields = {k: (stack if v == "STACK" else service if v == "SERVICE" else v) for k, v in fields.items()}
    before = log.state.snapshot()
    result = log(op, **fields)
    assert result["ok"] is False and result["field"] == field, result
    after = ClusterState()
    after.restore(log.state.snapshot())
    before_state = ClusterState()
    before_state.restore(before)
    for attr in ("hosts", "stacks", "services", "instances", "kv", "events"):
        assert getattr(after, attr) == getattr(before_state, attr)


def test_malformed_entries_do_not_raise() -> None:
    state = ClusterState()
    for data in (b"\xc1", b"\x93\x01\x02\x03", command("service.create", stack=[1], name={"x": 1})):
        assert isinstance(state.apply(Entry(1, data)), CommandError)


def test_kv_cas() -> None:
    log = Log()
    first = log("kv.put", key="a", value="1", cas=0)
    assert first["ok"]
    assert log("kv.put", key="a", value="2", cas=0)["error"] == "cas_failed"
    assert log("kv.put", key="a", value="2", cas=first["index"])["ok"]
    assert log.state.kv["a"].value == "2" and log.state.kv["a"].create_index == first["index"]
    assert log("kv.delete", key="a", cas=first["index"])["error"] == "cas_failed"
    assert log("kv.delete", key="a")["deleted"] is True


ops = st.sampled_from([
    ("stack.create", {"name": "s1"}),
    ("stack.create", {"name": "s2"}),
    ("service.create", {"stack": "st4", "name": "a", "spec": {"image": "i", "scale": 3}}),
    ("service.scale", {"id": "sv5", "scale": 1}),
    ("service.scale", {"id": "sv5", "scale": 4}),
    ("placements.commit", {"service": "sv5", "placements": [[1, "h1"], [2, "h2"], [3, "h3"], [4, "h1"]]}),
    ("host.state", {"name": "h2", "state": "disconnected"}),
    ("service.set_state", {"id": "sv5", "state": "stopped"}),
    ("kv.put", {"key": "k", "value": "v"}),
    ("stack.remove", {"id": "st4"}),
])


@settings(max_examples=100, deadline=None)
@given(st.lists(ops, max_size=25))
def test_replicas_applying_the_same_log_hold_the_same_state(commands: list[tuple[str, dict[str, Any]]]) -> None:
    a, b = Log(), Log()
    for log in (a, b):
        for name in ("h1", "h2", "h3"):
            log("host.register", name=name, address="x")
    for op, fields in commands:
        assert a(op, **fields) == b(op, **fields)
    assert a.state.snapshot() == b.state.snapshot()
    restored = ClusterState()
    restored.restore(a.state.snapshot())
    assert restored.snapshot() == a.state.snapshot()


def test_hosts_lease_an_overlay_subnet_kept_across_restarts_and_freed_on_remove() -> None:
    log = Log()
    key = bytes(range(32)).hex()
    assert log("host.register", name="h1", address="10.77.0.11", overlay_key=key)["ok"]
    assert log("host.register", name="h2", address="10.77.0.12")["ok"]
    s1, s2 = log.state.hosts["h1"].subnet, log.state.hosts["h2"].subnet
    assert s1 != s2 and s1.startswith("10.42.") and s1.endswith(".0/24")
    assert s1 != "10.42.0.0/24"  # reserved
    assert log("host.register", name="h1", address="10.77.0.99")["ok"]  # a restart re-registers
    assert log.state.hosts["h1"].subnet == s1
    assert log.state.hosts["h1"].overlay_key == key  # kept when not re-sent

    restored = ClusterState()
    restored.restore(log.state.snapshot())
    assert restored.subnets == log.state.subnets

    refused = log("host.remove", name="h1")
    assert refused["error"] == "conflict" and "disconnected" in refused["message"]
    assert log("host.state", name="h1", state="disconnected")["ok"]
    assert log("host.remove", name="h1")["ok"]
    assert "h1" not in log.state.hosts
    assert log("host.register", name="h3", address="10.77.0.13")["ok"]
    assert log.state.hosts["h3"].subnet not in (s2,)
    assert log("host.remove", name="nope")["error"] == "not_found"
    assert log("host.register", name="h4", address="10.77.0.14", overlay_key="abc")["field"] == "overlay_key"


def test_removing_a_host_frees_its_slots_for_placement() -> None:
    log = Log()
    _, service = web_stack(log)
    assert log("placements.commit", service=service, placements=[[1, "h1"], [2, "h1"], [3, "h2"]])["ok"]
    assert len(log.state.instances) == 3
    assert log("host.state", name="h1", state="disconnected")["ok"]
    assert log("host.remove", name="h1")["ok"]
    assert [i.host for i in log.state.instances.values()] == ["h2"]
    assert any(e.kind == "host.removed" and "2 containers" in e.message for e in log.state.events)


def test_an_instance_error_is_kept_with_its_status_announced_once_and_cleared() -> None:
    log = Log()
    _, service = web_stack(log, scale=1)
    (inst,) = log("placements.commit", service=service, placements=[[1, "h2"]])["placed"]
    assert log.state.instances[inst].error is None
    reason = "create failed: the name web-server-nginx-cluster-1 is taken"
    for _ in range(2):  # the reconciler reports the same failure every pass: one event, not one per pass
        assert log("instance.status", id=inst, host="h2", status="missing", error=reason)["ok"]
    assert log.state.instances[inst].error == reason
    failed = [e for e in log.state.events if e.kind == "instance.failed"]
    assert len(failed) == 1 and reason in failed[0].message and "h2" in failed[0].message
    assert log("instance.status", id=inst, host="h2", status="running", error=None)["ok"]
    assert log.state.instances[inst].error is None and log.state.instances[inst].status == "running"
    log("instance.status", id=inst, host="h2", status="missing", error="x" * 10_000)
    assert log.state.instances[inst].error == "x" * 500, "bounded: a report cannot bloat the replicated state"
    refused = log("instance.status", id=inst, host="h2", status="missing", error={"not": "a string"})
    assert refused["field"] == "error", "a malformed report is refused whole"
    assert log.state.instances[inst].error == "x" * 500


def test_the_agents_events_about_a_service_carry_its_environment() -> None:
    """A placement or a failure is the agents' command (no user, no environment of its own): its event
    is about the service's environment, so only that environment's members see it (``/v1/events``)."""
    log = Log()
    _stack, service = web_stack(log, scale=1)
    assert log("placements.commit", service=service, placements=[[1, "h1"]])["ok"]
    placed = [e for e in log.state.events if e.kind.value == "instance.placed"]
    assert placed and all(e.environment == "default" for e in placed)
    host_events = [e for e in log.state.events if "service" not in e.refs]
    assert all(e.environment is None for e in host_events if e.kind.value.startswith("host."))
