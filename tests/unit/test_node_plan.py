"""The reconciler's plan (pure): desired containers against observed ones."""

from __future__ import annotations

from typing import Any

from agent.model.spec import RestartPolicy
from agent.node.docker import EngineContainer
from agent.node.plan import Desired, plan

SPEC = "corral.spec"


def want(instance: str, fingerprint: str = "f1", running: bool = True, restart: str = "always") -> Desired:
    return Desired(instance, f"web-{instance}", running, RestartPolicy(restart), {"Labels": {SPEC: fingerprint}})


def seen(cid: str, instance: str, state: str = "running", fingerprint: str = "f1",
         exit_code: int | None = None) -> EngineContainer:
    return EngineContainer(cid, f"web-{instance}", "corral/base", {"corral.instance": instance, SPEC: fingerprint},
                           state, exit_code)


def kinds(actions: list[Any]) -> list[tuple[str, str, str | None]]:
    return [(a.kind, a.instance, a.container) for a in actions]


def test_missing_containers_are_created_and_matching_ones_left_alone() -> None:
    assert kinds(plan({"i1": want("i1"), "i2": want("i2")}, [seen("c1", "i1")])) == [("create", "i2", None)]


def test_unassigned_labelled_containers_are_removed() -> None:
    actions = plan({}, [seen("c9", "gone")])
    assert kinds(actions) == [("remove", "gone", "c9")] and actions[0].reason == "not assigned to this host"


def test_duplicates_keep_the_running_one() -> None:
    actions = plan({"i1": want("i1")}, [seen("c1", "i1", "exited"), seen("c2", "i1", "running")])
    assert kinds(actions) == [("remove", "i1", "c1")]


def test_a_new_generation_replaces_the_container() -> None:
    assert kinds(plan({"i1": want("i1", "f2")}, [seen("c1", "i1", fingerprint="f1")])) == [
        ("remove", "i1", "c1"), ("create", "i1", None)]


def test_exited_containers_restart_as_their_policy_says() -> None:
    assert kinds(plan({"i1": want("i1")}, [seen("c1", "i1", "exited", exit_code=0)])) == [("start", "i1", "c1")]
    on_failure = {"i1": want("i1", restart="on-failure")}
    assert plan(on_failure, [seen("c1", "i1", "exited", exit_code=0)]) == []
    assert kinds(plan(on_failure, [seen("c1", "i1", "exited", exit_code=2)])) == [("start", "i1", "c1")]
    assert plan({"i1": want("i1", restart="no")}, [seen("c1", "i1", "exited", exit_code=1)]) == []


def test_stopped_services_stop_their_containers() -> None:
    assert kinds(plan({"i1": want("i1", running=False)}, [seen("c1", "i1")])) == [("stop", "i1", "c1")]
    assert plan({"i1": want("i1", running=False)}, [seen("c1", "i1", "exited")]) == []


def test_scaling_or_new_placement_rules_do_not_change_the_containers_that_stay() -> None:
    from agent.node.plan import container_config
    from tests.unit.test_model_state import Log, web_stack

    log = Log()
    _, service = web_stack(log, scale=3)
    assert log("placements.commit", service=service, placements=[[1, "h1"]])["ok"]
    inst = next(iter(log.state.instances.values()))

    def fingerprint(i: Any) -> object:
        labels = container_config(log.state, i)["Labels"]
        assert isinstance(labels, dict)
        return labels[SPEC]

    before = fingerprint(inst)
    assert log("service.scale", id=service, scale=50)["ok"]
    assert log("service.update", id=service, spec={"placement": {"strategy": "pack"}})["ok"]
    assert fingerprint(inst) == before
    assert log("service.update", id=service, spec={"environment": {"MODE": "new"}})["ok"]
    changed = log.state.instances.get(inst.id, inst)
    assert fingerprint(changed) != before
