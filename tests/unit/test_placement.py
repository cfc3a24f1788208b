"""The leader's placement decisions over the real state machine."""

from __future__ import annotations

from collections import Counter

from agent.model.commands import PlacementsCommit
from agent.model.placement import decide
from tests.unit.test_model_state import Log, web_stack


def apply_all(log: Log, lost: frozenset[str] = frozenset()) -> list[PlacementsCommit]:
    commands = decide(log.state, lost)
    for cmd in commands:
        assert log.run(cmd)["ok"]
    return commands


def test_a_new_service_is_spread_over_the_hosts() -> None:
    log = Log()
    _, service = web_stack(log, scale=10)
    apply_all(log)
    per_host = Counter(i.host for i in log.state.instances_of(service))
    assert sum(per_host.values()) == 10 and max(per_host.values()) - min(per_host.values()) <= 1
    assert decide(log.state, set()) == [], "nothing more to do once every slot is placed"


def test_instances_on_a_lost_host_move_and_the_count_stays_exact() -> None:
    log = Log()
    _, service = web_stack(log, scale=6)
    apply_all(log)
    on_h2 = {i.slot for i in log.state.instances_of(service) if i.host == "h2"}
    apply_all(log, lost=frozenset({"h2"}))
    instances = log.state.instances_of(service)
    assert len(instances) == 6 and sorted(i.slot for i in instances) == [1, 2, 3, 4, 5, 6]
    assert all(i.host != "h2" for i in instances)
    assert {i.slot for i in instances if i.created > 6} == on_h2, "only the lost host's slots moved"


def test_unplaceable_instances_are_kept_with_the_reason_and_placed_when_a_host_appears() -> None:
    log = Log()
    stack = log("stack.create", name="db")["id"]
    service = log("service.create", stack=stack, name="pg",
                  spec={"image": "corral/base", "scale": 1, "placement": {"constraints": ["disk==ssd"]}})["id"]
    log("host.register", name="h1", address="a", labels={"disk": "hdd"})
    apply_all(log)
    assert log.state.services[service].unplaced == ((1, "no host fits: h1 does not match disk==ssd"),)
    assert any(e.kind == "service.unplaced" for e in log.state.events)
    log("host.register", name="h2", address="b", labels={"disk": "ssd"})
    apply_all(log)
    assert [i.host for i in log.state.instances_of(service)] == ["h2"]
    assert log.state.services[service].unplaced is None
