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


def test_an_environments_containers_land_only_on_its_hosts() -> None:
    log = Log()
    _, web = web_stack(log, scale=4)  # default: h1, h2, h3
    assert log("env.create", name="prod")["ok"]
    assert log("join_token.create", id="a" * 16, secret_hash="b" * 64, expires=1e12, environment="prod")["ok"]
    assert log("join_token.use", id="a" * 16, secret_hash="b" * 64, host="h4", at=1.0)["ok"]
    assert log("host.register", name="h4", address="10.77.0.14", cpus=2, memory=2**30)["ok"]
    assert log.state.hosts["h4"].environment == "prod", "a host joins the environment of its token"
    prod = log("stack.create", name="shop", environment="prod")["id"]
    db = log("service.create", stack=prod, name="db", spec={"image": "corral/base", "scale": 3})["id"]
    apply_all(log)
    assert {i.host for i in log.state.instances_of(db)} == {"h4"}
    assert {i.host for i in log.state.instances_of(web)} <= {"h1", "h2", "h3"}
    lonely = log("env.create", name="empty")["ok"] and log("stack.create", name="x", environment="empty")["id"]
    idle = log("service.create", stack=lonely, name="idle", spec={"image": "corral/base", "scale": 1})["id"]
    apply_all(log)
    assert log.state.services[idle].unplaced and not log.state.instances_of(idle), "no host of its own: unplaced"


def test_a_host_moving_to_another_environment_is_drained_first() -> None:
    log = Log()
    _, web = web_stack(log, scale=6)
    apply_all(log)
    on_h3 = {i.slot for i in log.state.instances_of(web) if i.host == "h3"}
    assert on_h3
    assert log("env.create", name="prod")["ok"]
    prod = log("stack.create", name="shop", environment="prod")["id"]
    db = log("service.create", stack=prod, name="db", spec={"image": "corral/base", "scale": 1})["id"]
    moved = log("host.move", name="h3", environment="prod")
    assert moved["ok"] and log.state.hosts["h3"].environment == "prod"
    assert log.state.foreign_on("h3") == len(on_h3)
    commands = decide(log.state, set())
    assert {c.service for c in commands if c.placements} == {web}, "prod waits until h3 is drained"
    assert all(host != "h3" for c in commands for _slot, host in c.placements)
    for cmd in commands:
        assert log.run(cmd)["ok"]
    assert log.state.foreign_on("h3") == 0 and all(i.host != "h3" for i in log.state.instances_of(web))
    assert len(log.state.instances_of(web)) == 6, "every slot still placed, on default's other hosts"
    apply_all(log)
    assert [i.host for i in log.state.instances_of(db)] == ["h3"], "drained, h3 takes prod's containers"
    assert any(e.kind == "host.moved" for e in log.state.events)
    assert not log("host.move", name="h3", environment="nosuch")["ok"]
    assert not log("host.move", name="h9", environment="prod")["ok"]


def test_a_moved_host_is_drained_even_when_no_host_can_take_its_containers() -> None:
    log = Log()
    _, web = web_stack(log, scale=3)
    assert log("service.update", id=web, spec={"placement": {"one_per_host": True}})["ok"]
    apply_all(log)
    assert {i.host for i in log.state.instances_of(web)} == {"h1", "h2", "h3"}
    assert log("env.create", name="prod")["ok"] and log("host.move", name="h3", environment="prod")["ok"]
    apply_all(log)
    assert {i.host for i in log.state.instances_of(web)} == {"h1", "h2"}, "h3's went, with nowhere to go"
    assert log.state.services[web].unplaced and log.state.foreign_on("h3") == 0


def test_a_managers_role_reaches_the_scheduler_and_node_role_constraints_hold_on_it() -> None:
    from agent.model.placement import host_facts
    from tests.unit.test_model_state import Log

    log = Log()
    assert log("host.register", name="m1", address="10.77.0.11", cpus=2, memory=2**30, manager=True)["ok"]
    assert log("host.register", name="w1", address="10.77.0.12", cpus=2, memory=2**30)["ok"]
    assert log.state.hosts["m1"].manager and not log.state.hosts["w1"].manager
    assert {h.name: h.manager for h in host_facts(log.state, set())} == {"m1": True, "w1": False}
    stack = log("stack.create", name="s")["id"]
    made = log("service.create", stack=stack, name="proxy",
               spec={"image": "x", "scale": 2, "placement": {"constraints": ["node.role==manager"]}})
    assert made["ok"]
    from agent.model.placement import decide
    (cmd,) = decide(log.state, set())
    assert [host for _, host in cmd.placements] == ["m1", "m1"], "never on the worker"
