"""Upgrades over the real state machine: the record, the users' commands, and the planner's table.

Hosts are played by hand: :func:`report` is what a host's reconciler would say of an instance's
container. :func:`drive` runs the planner as the leader does (plan, propose, apply) with a clock the
test moves, and lets a fake fleet answer for every new container (healthy, exiting, failing its
check, or failing to pull), so each case walks a whole upgrade to its end state.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from agent.model.codec import to_wire
from agent.model.entities import Health, Instance, Status
from agent.model.rollout import next_batch
from agent.model.state import ClusterState
from agent.model.upgrade import Phase, UpgradeState
from agent.model.upgrades import version_of
from tests.unit.test_model_state import Log

T0 = 1000.0


def service(log: Log, scale: int = 4, ports: list[str] | None = None, health: bool = False,
            extra: dict[str, Any] | None = None, hosts: int = 3) -> str:
    for n in range(1, hosts + 1):
        assert log("host.register", name=f"h{n}", address=f"10.77.0.1{n}", cpus=8, memory=2**32)["ok"]
    stack = log("stack.create", name="web")["id"]
    spec: dict[str, Any] = {"image": "app:v1", "scale": scale, "ports": ports or ["80"]}
    if health:
        spec["health_check"] = {"type": "http", "port": 80, "path": "/"}
    spec.update(extra or {})
    made = log("service.create", stack=stack, name="app", spec=spec)
    assert made["ok"], made
    sid: str = made["id"]
    placed = log("placements.commit", service=sid,
                 placements=[[s, f"h{(s - 1) % hosts + 1}"] for s in range(1, scale + 1)])
    assert len(placed["placed"]) == scale
    for inst in log.state.instances_of(sid):
        report(log, inst, Status.RUNNING, Health.HEALTHY if health else None)
    return sid


def report(log: Log, inst: Instance, status: Status, health: Health | None = None, exit_code: int | None = None,
           error: str | None = None, detail: str | None = None) -> None:
    out = log("instance.status", id=inst.id, host=inst.host, status=status.value, exit_code=exit_code,
              health=health.value if health else None, error=error, health_detail=detail,
              ip=f"10.42.{inst.slot}.{len(inst.id) % 250}")
    assert out["ok"], out


def healthy(log: Log, inst: Instance) -> None:
    report(log, inst, Status.RUNNING, Health.HEALTHY if log.state.spec_of(inst).health_check else None)


Fleet = Callable[[Log, Instance], None]


def images(log: Log, sid: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for inst in log.state.instances_of(sid):
        out.setdefault(inst.slot, []).append(log.state.spec_of(inst).image)
    return out


def drive(log: Log, sid: str, fleet: Fleet, now: float = T0, until: float = T0 + 600,
          watch: Callable[[Log, float], None] | None = None, step: float = 0.5, partway: bool = False) -> float:
    """Run the planner (and the fleet's answers) until the upgrade is not moving; returns the clock."""
    answered: set[str] = set()
    while now < until:
        up = log.state.current_upgrade(sid)
        assert up is not None
        if up.state not in (UpgradeState.ROLLING, UpgradeState.ROLLING_BACK):
            return now
        plan = next_batch(log.state, up, now)
        if plan.command is not None:
            out = log.run(plan.command)
            assert out["ok"], out
        if watch is not None:  # before the new containers answer: the worst moment
            watch(log, now)
        for inst in log.state.instances_of(sid):
            if inst.status is Status.PENDING and inst.id not in answered:
                answered.add(inst.id)
                fleet(log, inst)
        if plan.command is None:
            now = min(plan.wake, now + step) if plan.wake is not None and plan.wake > now else now + step
    if partway:
        return now
    raise AssertionError(f"the upgrade did not end by {until}: {log.state.current_upgrade(sid)}")


def by_image(good: Fleet, bad: Fleet, bad_image: str = "app:bad") -> Fleet:
    return lambda log, inst: (bad if log.state.spec_of(inst).image == bad_image else good)(log, inst)


def exits(log: Log, inst: Instance) -> None:
    report(log, inst, Status.EXITED, exit_code=3)


def fails_check(log: Log, inst: Instance) -> None:
    report(log, inst, Status.RUNNING, Health.UNHEALTHY, detail="GET / answered 500")


def start(log: Log, sid: str, image: str = "app:v2", at: float = T0, **strategy: Any) -> dict[str, Any]:
    return log("upgrade.start", service=sid, spec={"image": image}, strategy=strategy or None, at=at)


def capacity(log: Log, sid: str) -> int:
    return sum(1 for i in log.state.instances_of(sid) if i.status is Status.RUNNING
               and (log.state.spec_of(i).health_check is None or i.health is Health.HEALTHY))


# ---------------------------------------------------------------------- the record


def test_an_upgrade_is_a_record_and_replaces_nothing_until_the_planner_begins() -> None:
    log = Log()
    sid = service(log)
    before = {i.id for i in log.state.instances_of(sid)}
    out = start(log, sid, parallelism=2)
    assert out["ok"], out
    up = log.state.current_upgrade(sid)
    assert up is not None and up.state is UpgradeState.ROLLING and up.id == out["id"]
    assert up.previous.image == "app:v1" and up.next.image == "app:v2" and up.strategy.parallelism == 2
    assert [p.phase for p in up.slots] == [Phase.PENDING] * 4
    assert log.state.services[sid].spec.image == "app:v2", "new slots get the next spec"
    assert {i.id for i in log.state.instances_of(sid)} == before
    assert all(log.state.spec_of(i).image == "app:v1" for i in log.state.instances_of(sid)), "nothing replaced"
    assert any(e.kind == "upgrade.started" for e in log.state.events)


def test_the_record_survives_a_snapshot_and_the_old_containers_keep_their_spec() -> None:
    log = Log()
    sid = service(log)
    start(log, sid, parallelism=2, order="start-first")
    assert log.run(next_batch(log.state, log.state.current_upgrade(sid), T0).command)["ok"]  # type: ignore
    again = ClusterState()
    again.restore(log.state.snapshot())
    assert again.snapshot() == log.state.snapshot()
    assert again.current_upgrade(sid) == log.state.current_upgrade(sid)
    assert sorted(again.spec_of(i).image for i in again.instances_of(sid)) == sorted(
        log.state.spec_of(i).image for i in log.state.instances_of(sid))
    assert sorted(log.state.spec_of(i).image for i in log.state.instances_of(sid)) == ["app:v1"] * 4 + ["app:v2"] * 2


@pytest.mark.parametrize(("change", "strategy", "field"), [
    ({"image": "app:v2"}, {"parallelism": 0}, "strategy.parallelism"),
    ({"image": "app:v2"}, {"parallelism": 5}, "strategy.parallelism"),
    ({"image": "app:v2"}, {"interval": -1}, "strategy.interval"),
    ({"image": "app:v2"}, {"order": "sideways"}, "strategy.order"),
    ({"image": "app:v2"}, {"failure_action": "panic"}, "strategy.failure_action"),
    ({"image": "app:v2"}, {"max_failure_ratio": 2}, "strategy.max_failure_ratio"),
    ({"image": "app:v2"}, {"min_healthy": 90, "healthy_deadline": 30}, "strategy.healthy_deadline"),
    ({"image": "app:v2"}, {"nope": 1}, "strategy.nope"),
    ({"image": ""}, None, "spec.image"),
    ({"scale": 9}, None, "spec.scale"),
    ({}, None, "spec"),
    ({"image": "app:v1"}, None, "spec"),
])
def test_bad_upgrades_name_the_field_and_change_nothing(change: dict[str, Any], strategy: dict[str, Any] | None,
                                                         field: str) -> None:
    log = Log()
    sid = service(log)
    before = (to_wire(log.state.services[sid]), [to_wire(i) for i in log.state.instances_of(sid)],
              len(log.state.events))
    out = log("upgrade.start", service=sid, spec=change, strategy=strategy, at=T0)
    assert not out["ok"] and out["field"] == field, out
    assert out["error"] == "bad_request"
    assert log.state.current_upgrade(sid) is None
    after = (to_wire(log.state.services[sid]), [to_wire(i) for i in log.state.instances_of(sid)],
             len(log.state.events))
    assert after == before, "nothing half-started"


def test_an_upgrade_of_a_service_that_does_not_exist_and_a_rollback_with_nothing_to_roll_back_to() -> None:
    log = Log()
    sid = service(log)
    missing = log("upgrade.start", service="sv999", spec={"image": "x"}, at=T0)
    assert not missing["ok"] and missing["error"] == "not_found"
    nothing = log("upgrade.control", service=sid, action="rollback")
    assert not nothing["ok"] and nothing["error"] == "conflict" and "nothing to roll back to" in nothing["message"]


def test_a_whole_spec_change_is_refused_while_an_upgrade_is_under_way() -> None:
    log = Log()
    sid = service(log)
    start(log, sid)
    out = log("service.update", id=sid, spec={"image": "app:v3"})
    assert not out["ok"] and out["error"] == "conflict" and "being upgraded" in out["message"]


def test_a_rolling_service_update_is_an_upgrade_with_the_services_update_config() -> None:
    log = Log()
    sid = service(log, scale=4, extra={"update_config": {"parallelism": 2, "order": "start-first"}})
    out = log("service.update", id=sid, spec={"image": "app:v2", "scale": 3}, rolling=True, at=T0)
    assert out["ok"], out
    up = log.state.current_upgrade(sid)
    assert up is not None and out["id"] == up.id, "the outcome names the upgrade"
    assert up.strategy.parallelism == 2 and up.strategy.order == "start-first" and up.started_at == T0
    assert images(log, sid) == {s: ["app:v1"] for s in (1, 2, 3)}, "the scale at once, the image batch by batch"
    assert [p.slot for p in up.slots] == [1, 2, 3]
    assert log.state.services[sid].spec.image == "app:v2"
    events = [e.message for e in log.state.events if e.kind.value == "upgrade.started"]
    assert events and "started by a change of its spec" in events[-1] and "2 at a time, start-first" in events[-1]
    lowest = [4]

    def watch(log: Log, now: float) -> None:
        lowest[0] = min(lowest[0], capacity(log, sid))

    drive(log, sid, healthy, watch=watch)
    end = log.state.current_upgrade(sid)
    assert end is not None and end.state is UpgradeState.DONE and end.batch == 2
    assert images(log, sid) == {s: ["app:v2"] for s in (1, 2, 3)} and lowest[0] >= 3


def test_a_rolling_update_of_what_replaces_nothing_applies_at_once() -> None:
    log = Log()
    sid = service(log, scale=3)
    before = {i.id for i in log.state.instances_of(sid)}
    for change in ({"scale": 2}, {"service_labels": {"team": "a"}}, {"placement": {"constraints": ["zone==a"]}}):
        out = log("service.update", id=sid, spec=change, rolling=True, at=T0)
        assert out["ok"] and out.get("id") is None, (change, out)
        assert log.state.current_upgrade(sid) is None, change
    assert {i.id for i in log.state.instances_of(sid)} <= before, "nothing replaced"
    assert log.state.services[sid].spec.service_labels == {"team": "a"}


def test_a_rolling_update_takes_over_an_upgrade_and_all_at_once_is_refused_meanwhile() -> None:
    log = Log()
    sid = service(log, scale=2)
    first = start(log, sid)
    out = log("service.update", id=sid, spec={"image": "app:v3"}, rolling=True, at=T0 + 1)
    assert out["ok"] and out["id"] != first["id"]
    up = log.state.current_upgrade(sid)
    assert up is not None and up.id == out["id"] and up.next.image == "app:v3" and up.previous.image == "app:v2"
    for change, rolling in (({"image": "app:v4"}, False), ({"scale": 1}, True)):
        refused = log("service.update", id=sid, spec=change, rolling=rolling)
        assert not refused["ok"] and refused["error"] == "conflict" and "being upgraded" in refused["message"]


def test_an_update_without_rolling_replaces_every_container_at_once_as_entries_before_upgrades_did() -> None:
    log = Log()
    sid = service(log, scale=2)
    out = log("service.update", id=sid, spec={"image": "app:v2"})
    assert out["ok"] and log.state.current_upgrade(sid) is None
    assert images(log, sid) == {1: ["app:v2"], 2: ["app:v2"]}


# ---------------------------------------------------------------------- the planner's table


@pytest.mark.parametrize(("scale", "parallelism", "batches"), [(4, 1, 4), (4, 2, 2), (5, 2, 3), (6, 6, 1)])
def test_batches_of_parallelism_slots_until_every_container_is_new(scale: int, parallelism: int,
                                                                     batches: int) -> None:
    log = Log()
    sid = service(log, scale=scale)
    start(log, sid, parallelism=parallelism, min_healthy=2, order="stop-first")
    seen_in_flight: list[int] = []

    def watch(log: Log, now: float) -> None:
        up = log.state.current_upgrade(sid)
        assert up is not None
        seen_in_flight.append(len(up.in_flight()))

    drive(log, sid, healthy, watch=watch)
    up = log.state.current_upgrade(sid)
    assert up is not None and up.state is UpgradeState.DONE and up.batch == batches
    assert max(seen_in_flight) <= parallelism
    assert images(log, sid) == {s: ["app:v2"] for s in range(1, scale + 1)}, "one container per slot, all new"
    assert all(p.phase is Phase.DONE for p in up.slots)
    assert [e.kind for e in log.state.events].count("upgrade.batch") == batches


def test_the_interval_is_kept_between_batches_and_min_healthy_is_waited_for() -> None:
    log = Log()
    sid = service(log, scale=3)
    start(log, sid, parallelism=1, interval=10, min_healthy=5, order="stop-first")
    begun: list[float] = []
    finished: list[float] = []

    def watch(log: Log, now: float) -> None:
        up = log.state.current_upgrade(sid)
        assert up is not None
        for p in up.slots:
            if p.phase is Phase.STARTING and p.started not in begun:
                begun.append(p.started)
            if p.phase is Phase.DONE and p.slot not in finished:
                finished.append(p.slot)

    end = drive(log, sid, healthy, watch=watch, step=0.25)
    assert len(begun) == 3
    gaps = [b - a for a, b in itertools.pairwise(begun)]
    assert all(gap >= 5 + 10 for gap in gaps), gaps  # min_healthy, then the interval
    assert end - T0 >= 3 * 5 + 2 * 10


def test_start_first_keeps_capacity_at_the_scale_and_never_two_batches_at_once() -> None:
    log = Log()
    sid = service(log, scale=6, health=True)
    start(log, sid, parallelism=2, order="start-first", min_healthy=1)
    lowest: list[int] = []

    def watch(log: Log, now: float) -> None:
        lowest.append(capacity(log, sid))
        assert len(log.state.instances_of(sid)) <= 6 + 2

    drive(log, sid, healthy, watch=watch)
    assert min(lowest) >= 6, "start-first: the old container stays until its replacement is healthy"
    assert images(log, sid) == {s: ["app:v2"] for s in range(1, 7)}


def test_stop_first_keeps_capacity_at_scale_minus_parallelism() -> None:
    log = Log()
    sid = service(log, scale=6, health=True)
    start(log, sid, parallelism=2, order="stop-first", min_healthy=1)
    lowest: list[int] = []
    drive(log, sid, healthy, watch=lambda log, now: lowest.append(capacity(log, sid)))
    assert min(lowest) == 6 - 2


def test_a_bad_release_that_exits_rolls_back_and_the_service_ends_on_the_old_spec() -> None:
    log = Log()
    sid = service(log, scale=4, health=True)
    start(log, sid, image="app:bad", parallelism=2, order="start-first", min_healthy=1)
    lowest: list[int] = []
    drive(log, sid, by_image(healthy, exits), watch=lambda log, now: lowest.append(capacity(log, sid)))
    up = log.state.current_upgrade(sid)
    assert up is not None and up.state is UpgradeState.ROLLED_BACK
    assert up.reason is not None and "exited with code 3" in up.reason and "rolling back" in up.reason
    assert images(log, sid) == {s: ["app:v1"] for s in range(1, 5)}
    assert log.state.services[sid].spec.image == "app:v1"
    assert min(lowest) >= 4, "no healthy old container went before its replacement was healthy"
    kinds = [e.message for e in log.state.events if e.kind == "upgrade.state"]
    assert any("rolled-back" in m for m in kinds)


def test_a_release_that_fails_its_check_rolls_back_and_one_that_never_gets_healthy_misses_the_deadline() -> None:
    log = Log()
    sid = service(log, scale=2, health=True)
    start(log, sid, image="app:bad", order="start-first", min_healthy=1)
    drive(log, sid, by_image(healthy, fails_check))
    up = log.state.current_upgrade(sid)
    assert up is not None and up.state is UpgradeState.ROLLED_BACK and "failed its health check" in str(up.reason)
    log2 = Log()
    sid2 = service(log2, scale=2, health=True)
    start(log2, sid2, image="app:bad", order="start-first", min_healthy=1, healthy_deadline=20)
    end = drive(log2, sid2, by_image(healthy, lambda log, inst: report(log, inst, Status.RUNNING, Health.STARTING)))
    up2 = log2.state.current_upgrade(sid2)
    assert up2 is not None and up2.state is UpgradeState.ROLLED_BACK and "within 20 s" in str(up2.reason)
    assert end - T0 <= 20 + 5, "the rollback is done within healthy_deadline + 5 s"


@pytest.mark.parametrize(("action", "ratio", "end"), [
    ("pause", 0.0, UpgradeState.PAUSED),
    ("continue", 0.0, UpgradeState.FAILED),
    ("rollback", 0.5, UpgradeState.DONE),   # one slot of four may fail: the rest is upgraded
])
def test_failure_action_and_max_failure_ratio(action: str, ratio: float, end: UpgradeState) -> None:
    log = Log()
    sid = service(log, scale=4, health=True)
    start(log, sid, parallelism=1, order="start-first", failure_action=action, max_failure_ratio=ratio,
          min_healthy=1)
    bad_slot = {3}
    drive(log, sid, lambda log, inst: (fails_check if inst.slot in bad_slot else healthy)(log, inst))
    up = log.state.current_upgrade(sid)
    assert up is not None
    if action == "rollback":  # the ratio lets one failure through: failed slot kept its old container
        assert up.state is UpgradeState.DONE
        assert [p.phase for p in up.slots].count(Phase.FAILED) == 1
        assert images(log, sid)[3] == ["app:v1"]
    else:
        assert up.state is end, up
    if action == "pause":
        assert up.progress(4) is not None and up.progress(4).phase is Phase.PENDING  # type: ignore[union-attr]
        assert "paused" in str(up.reason)
    if action == "continue":
        assert images(log, sid)[4] == ["app:v2"] and "failed" in str(up.reason)


def test_a_pull_error_pauses_and_does_not_roll_back() -> None:
    log = Log()
    sid = service(log, scale=3)
    start(log, sid, image="app:missing", order="start-first")
    drive(log, sid, lambda log, inst: report(log, inst, Status.PULL_FAILED,
                                             error="pull app:missing: manifest unknown"))
    up = log.state.current_upgrade(sid)
    assert up is not None and up.state is UpgradeState.PAUSED
    assert "pull error" in str(up.reason) and "manifest unknown" in str(up.reason)
    assert [i for i in images(log, sid).values() if "app:v1" not in i] == [], "every old container still runs"


def test_a_fixed_host_port_goes_to_another_host_with_room_or_is_done_stop_first() -> None:
    log = Log()
    sid = service(log, scale=2, ports=["8080:80"], hosts=3)  # slot 1 on h1, slot 2 on h2, h3 is free
    start(log, sid, parallelism=1, order="start-first", min_healthy=1)
    plan = next_batch(log.state, log.state.current_upgrade(sid), T0)  # type: ignore[arg-type]
    assert plan.command is not None
    begin = plan.command.steps[0]
    assert begin.host == "h3" and begin.order == "start-first"
    assert begin.reason is not None and "8080/tcp is held by its old container on h1" in begin.reason
    drive(log, sid, healthy)
    up = log.state.current_upgrade(sid)
    assert up is not None and up.state is UpgradeState.DONE
    notes = " ".join(up.notes)
    assert "started on h3" in notes
    assert "no other host has room: done stop-first" in notes or "started on h1" in notes
    hosts = {i.host for i in log.state.instances_of(sid)}
    assert len(hosts) == 2, "never two containers publishing 8080 on one host"


def test_a_volume_keeps_its_instance_on_its_host_done_stop_first_when_its_port_is_fixed() -> None:
    log = Log()
    sid = service(log, scale=2, ports=["8080:80"], extra={"mounts": [
        {"type": "volume", "source": "data", "target": "/data", "scope": "instance"}]})
    hosts_before = {i.slot: i.host for i in log.state.instances_of(sid)}
    start(log, sid, order="start-first", min_healthy=1)
    drive(log, sid, healthy)
    up = log.state.current_upgrade(sid)
    assert up is not None and up.state is UpgradeState.DONE
    assert {i.slot: i.host for i in log.state.instances_of(sid)} == hosts_before
    assert all("its volume lives there: done stop-first" in n for n in up.notes) and len(up.notes) == 2


def test_start_first_without_a_fixed_port_stays_on_its_host_beside_the_old_one() -> None:
    log = Log()
    sid = service(log, scale=1)
    start(log, sid, order="start-first", min_healthy=1)
    up = log.state.current_upgrade(sid)
    assert log.run(next_batch(log.state, up, T0).command)["ok"]  # type: ignore[arg-type, union-attr]
    slot = log.state.instances_of(sid)
    assert len(slot) == 2 and len({i.host for i in slot}) == 1
    names = sorted(log.state.container_name(i) for i in slot)
    assert names == ["web-app-1", "web-app-1-r1"], "both can live on one engine"


# ---------------------------------------------------------------------- always escapable


def pause_resume_rollback(log: Log, sid: str, action: str) -> dict[str, Any]:
    return log("upgrade.control", service=sid, action=action, at=T0)


def test_pause_holds_every_batch_and_resume_goes_on() -> None:
    log = Log()
    sid = service(log, scale=4)
    start(log, sid, parallelism=1, min_healthy=1, order="stop-first")
    up = log.state.current_upgrade(sid)
    assert log.run(next_batch(log.state, up, T0).command)["ok"]  # type: ignore[arg-type, union-attr]
    for inst in log.state.instances_of(sid):
        if inst.status is Status.PENDING:
            healthy(log, inst)
    planned = next_batch(log.state, log.state.current_upgrade(sid), T0 + 1).command  # type: ignore[arg-type]
    assert planned is not None and [s.kind for s in planned.steps] == ["healthy"]
    assert pause_resume_rollback(log, sid, "pause")["ok"]
    up = log.state.current_upgrade(sid)
    assert up is not None and up.state is UpgradeState.PAUSED and up.reason == "paused"
    assert next_batch(log.state, up, T0 + 100).command is None, "paused: nothing moves"
    stale = log.run(planned)
    assert not stale["ok"] and stale["field"] == "revision", "a plan made before the pause is refused"
    assert pause_resume_rollback(log, sid, "resume")["ok"]
    drive(log, sid, healthy)
    assert log.state.current_upgrade(sid).state is UpgradeState.DONE  # type: ignore[union-attr]


def test_rollback_mid_way_starts_at_once_and_keeps_old_containers_of_slots_in_flight() -> None:
    log = Log()
    sid = service(log, scale=4, health=True)
    start(log, sid, parallelism=2, order="start-first", min_healthy=30, interval=60)
    up = log.state.current_upgrade(sid)
    assert log.run(next_batch(log.state, up, T0).command)["ok"]  # type: ignore[arg-type, union-attr]
    for inst in log.state.instances_of(sid):
        if inst.status is Status.PENDING:
            healthy(log, inst)
    out = pause_resume_rollback(log, sid, "rollback")
    assert out["ok"], out
    up = log.state.current_upgrade(sid)
    assert up is not None and up.state is UpgradeState.ROLLING_BACK
    assert images(log, sid) == {s: ["app:v1"] for s in range(1, 5)}, "the unproven new ones went, the old stayed"
    assert all(p.phase is Phase.DONE for p in up.slots)
    drive(log, sid, healthy)
    assert log.state.current_upgrade(sid).state is UpgradeState.ROLLED_BACK  # type: ignore[union-attr]


def test_rolling_back_a_rollback_is_a_clear_refusal_and_every_state_accepts_a_way_out() -> None:
    log = Log()
    sid = service(log, scale=2)
    start(log, sid, order="stop-first", min_healthy=1)
    assert pause_resume_rollback(log, sid, "rollback")["ok"]
    again = pause_resume_rollback(log, sid, "rollback")
    assert not again["ok"] and again["error"] == "conflict" and "rolling back already" in again["message"]
    assert pause_resume_rollback(log, sid, "pause")["ok"]
    refused = pause_resume_rollback(log, sid, "rollback")
    assert not refused["ok"] and "resume it" in refused["message"]
    assert pause_resume_rollback(log, sid, "resume")["ok"]
    drive(log, sid, healthy)
    assert log.state.current_upgrade(sid).state is UpgradeState.ROLLED_BACK  # type: ignore[union-attr]
    for action in ("pause", "resume", "rollback"):
        out = pause_resume_rollback(log, sid, action)
        assert not out["ok"] and out["error"] == "conflict", (action, out)
    assert start(log, sid, image="app:v3")["ok"], "a new upgrade is accepted after any end"


def test_a_new_upgrade_takes_over_one_under_way_and_its_rollback_returns_to_the_spec_as_it_stood() -> None:
    log = Log()
    sid = service(log, scale=4, health=True)
    start(log, sid, parallelism=1, order="start-first", min_healthy=1)
    up = log.state.current_upgrade(sid)
    drive(log, sid, healthy, until=T0 + 3, partway=True)  # some slots on v2
    flying = {p.new for p in log.state.current_upgrade(sid).in_flight()}  # type: ignore[union-attr]
    versions = sorted(log.state.spec_of(i).image for i in log.state.instances_of(sid) if i.id not in flying)
    assert "app:v2" in versions and "app:v1" in versions
    out = start(log, sid, image="app:v3", at=T0 + 5, parallelism=2)
    assert out["ok"], out
    up = log.state.current_upgrade(sid)
    assert up is not None and up.previous.image == "app:v2" and up.next.image == "app:v3"
    assert sorted(log.state.spec_of(i).image for i in log.state.instances_of(sid)) == sorted(
        v for v in versions), "only an unproven new container went in the takeover"
    drive(log, sid, healthy, now=T0 + 5)
    assert images(log, sid) == {s: ["app:v3"] for s in range(1, 5)}


def test_a_failed_rollback_is_failed_and_resume_tries_again() -> None:
    log = Log()
    sid = service(log, scale=2, health=True)
    start(log, sid, image="app:bad", order="stop-first", min_healthy=1)
    broken = {"v1": True}

    def fleet(log: Log, inst: Instance) -> None:
        if log.state.spec_of(inst).image == "app:bad" or broken["v1"]:
            fails_check(log, inst)
        else:
            healthy(log, inst)

    drive(log, sid, fleet)
    up = log.state.current_upgrade(sid)
    assert up is not None and up.state is UpgradeState.FAILED and "the rollback failed" in str(up.reason)
    broken["v1"] = False
    assert pause_resume_rollback(log, sid, "resume")["ok"]
    drive(log, sid, fleet, now=T0 + 100, until=T0 + 800)
    up = log.state.current_upgrade(sid)
    assert up is not None and up.state is UpgradeState.ROLLED_BACK
    assert images(log, sid) == {1: ["app:v1"], 2: ["app:v1"]}


def test_a_leader_change_resumes_the_same_upgrade_and_no_slot_is_begun_twice() -> None:
    log = Log()
    sid = service(log, scale=4)
    start(log, sid, parallelism=2, order="stop-first", min_healthy=1)
    up = log.state.current_upgrade(sid)
    first = next_batch(log.state, up, T0).command  # type: ignore[arg-type]
    assert first is not None and log.run(first)["ok"]
    again = log.run(first)  # a deposed leader proposes the same plan again
    assert not again["ok"] and again["field"] == "revision"
    follower = ClusterState()
    follower.restore(log.state.snapshot())  # a new leader has nothing but the state
    plan = next_batch(follower, follower.current_upgrade(sid), T0 + 1)  # type: ignore[arg-type]
    assert plan.command is None or all(s.kind != "begin" for s in plan.command.steps), "the batch is in flight"
    begun: dict[int, int] = {}

    def count(log: Log, now: float) -> None:
        u = log.state.current_upgrade(sid)
        assert u is not None
        for p in u.slots:
            if p.new is not None:
                begun.setdefault(p.slot, 0)

    drive(log, sid, healthy, watch=count)
    upgraded = [e.message for e in log.state.events if e.kind == "upgrade.slot"]
    assert len(upgraded) == 4 and len({m.split(": ")[1].split(" ")[0] for m in upgraded}) == 4


def test_slots_placed_during_an_upgrade_get_the_new_spec_and_count_as_done() -> None:
    log = Log()
    sid = service(log, scale=2)
    start(log, sid, parallelism=1, order="stop-first", min_healthy=1)
    assert log("service.scale", id=sid, scale=3)["ok"]
    assert log("placements.commit", service=sid, placements=[[3, "h3"]])["ok"]
    inst3 = next(i for i in log.state.instances_of(sid) if i.slot == 3)
    assert log.state.spec_of(inst3).image == "app:v2" and version_of(log.state.services[sid], inst3) == \
        log.state.current_upgrade(sid).next_version  # type: ignore[union-attr]
    healthy(log, inst3)
    drive(log, sid, healthy)
    assert log.state.current_upgrade(sid).batch == 2  # type: ignore[union-attr]
    assert images(log, sid) == {1: ["app:v2"], 2: ["app:v2"], 3: ["app:v2"]}


def test_a_stack_deploy_of_a_changed_file_upgrades_with_its_update_config() -> None:
    log = Log()
    for n in (1, 2):
        assert log("host.register", name=f"h{n}", address=f"10.77.0.1{n}", cpus=8, memory=2**32)["ok"]
    spec = {"image": "app:v1", "scale": 2, "update_config": {"parallelism": 2, "order": "start-first"}}
    assert log("stack.deploy", name="web", environment="default", services={"app": spec})["ok"]
    sid = next(iter(log.state.services))
    assert log("placements.commit", service=sid, placements=[[1, "h1"], [2, "h2"]])["ok"]
    out = log("stack.deploy", name="web", environment="default", services={"app": {**spec, "image": "app:v2"}},
              at=T0)
    assert out["ok"], out
    up = log.state.current_upgrade(sid)
    assert up is not None and up.strategy.parallelism == 2 and up.strategy.order == "start-first"
    assert images(log, sid) == {1: ["app:v1"], 2: ["app:v1"]}, "replaced batch by batch, not at once"
    scaled = log("stack.deploy", name="web", environment="default",
                 services={"app": {**spec, "image": "app:v2", "scale": 1}}, at=T0)
    assert scaled["ok"] and log.state.current_upgrade(sid) == up, "a scale is not an upgrade"


def test_a_slot_whose_host_is_lost_mid_upgrade_is_placed_again_with_the_new_spec_and_counted_done() -> None:
    from agent.model.placement import decide

    log = Log()
    sid = service(log, scale=3)
    start(log, sid, parallelism=1, order="start-first", min_healthy=1)
    on_h3 = next(i for i in log.state.instances_of(sid) if i.host == "h3")
    for cmd in decide(log.state, {"h3"}):  # the leader places the lost host's slot again
        assert log.run(cmd)["ok"]
    moved = [i for i in log.state.instances_of(sid) if i.slot == on_h3.slot]
    assert len(moved) == 1 and moved[0].host != "h3" and log.state.spec_of(moved[0]).image == "app:v2"
    healthy(log, moved[0])
    drive(log, sid, healthy)
    up = log.state.current_upgrade(sid)
    assert up is not None and up.state is UpgradeState.DONE and up.batch == 2, "two batches: the third slot moved"
    p = up.progress(on_h3.slot)
    assert p is not None and p.phase is Phase.DONE and "placed again" in str(p.reason)
    assert images(log, sid) == {1: ["app:v2"], 2: ["app:v2"], 3: ["app:v2"]}


def test_dns_and_load_balancers_gate_each_container_on_its_own_versions_check() -> None:
    """An upgrade that adds a health check: the old containers (never checked) keep answering; a new one
    joins only once healthy."""
    from agent.model.dns import DnsIndex
    from agent.model.lb import LbProtocol, Target
    from agent.node.lbconfig import Backend, backends

    log = Log()
    sid = service(log, scale=2)
    index = DnsIndex()
    index.rebuild(log.state)
    name = "app.web.default.corral.internal"
    assert len(index.answer(name, "A").records) == 2
    log("upgrade.start", service=sid, spec={"health_check": {"type": "tcp", "port": 80}},
        strategy={"order": "start-first"}, at=T0)
    assert log.run(next_batch(log.state, log.state.current_upgrade(sid), T0).command)["ok"]  # type: ignore
    new = next(i for i in log.state.instances_of(sid) if i.status is Status.PENDING)
    report(log, new, Status.RUNNING, Health.STARTING)
    index.rebuild(log.state)
    target = Backend("b", LbProtocol.HTTP, Target("app", 80), sid)
    assert len(index.answer(name, "A").records) == 2, "the old ones answer; the new one is not healthy yet"
    assert len(backends(log.state, [target])) == 2
    report(log, new, Status.RUNNING, Health.HEALTHY)
    index.rebuild(log.state)
    assert len(index.answer(name, "A").records) == 3 and len(backends(log.state, [target])) == 3


def test_a_batch_planned_before_a_scale_down_or_a_new_placement_is_refused_whole() -> None:
    log = Log()
    sid = service(log, scale=3)
    start(log, sid, parallelism=3, order="stop-first")
    planned = next_batch(log.state, log.state.current_upgrade(sid), T0).command  # type: ignore[arg-type]
    assert planned is not None and [s.slot for s in planned.steps] == [1, 2, 3]
    assert log("service.scale", id=sid, scale=2)["ok"]  # the record's revision is unchanged by a scale
    before = sorted(i.id for i in log.state.instances_of(sid))
    out = log.run(planned)
    assert not out["ok"] and out["error"] == "conflict" and "above the scale" in out["message"]
    assert sorted(i.id for i in log.state.instances_of(sid)) == before, "nothing of it applied"
    third = next(i for i in log.state.instances_of(sid) if i.slot == 2)
    assert log("instance.remove", id=third.id)["ok"]
    assert log("placements.commit", service=sid, placements=[[2, "h3"]])["ok"]  # placed again: the new spec
    replan = next_batch(log.state, log.state.current_upgrade(sid), T0).command  # type: ignore[arg-type]
    assert replan is not None and [s.slot for s in replan.steps] == [1]
    stale = dataclasses.replace(replan, steps=(*replan.steps, dataclasses.replace(replan.steps[0], slot=2)))
    out = log.run(stale)
    assert not out["ok"] and "no container left to replace" in out["message"]
    assert log.run(replan)["ok"]
