"""``/v1/services/{id}/upgrade`` on the real app over an in-memory cluster: the record, its history,
pause/resume/rollback, and every bad input as a 4xx naming the field, with nothing proposed."""

from __future__ import annotations

from typing import Any

from agent.api.deps import DEPS
from agent.model.commands import PlacementsCommit
from tests.unit.test_api import Api, api, web

__all__ = ["api"]  # the fixture


async def upgrade(api: Api, sid: str, body: Any, status: int = 201) -> Any:
    return await api.ok("POST", f"/v1/services/{sid}/upgrade", body, status=status)


async def test_start_read_pause_resume_and_rollback(api: Api) -> None:
    _, service = await web(api, scale=2)
    sid = service["id"]
    empty = await api.ok("GET", f"/v1/services/{sid}/upgrade")
    assert empty == {"service": sid, "current": None, "history": []}
    made = await upgrade(api, sid, {"spec": {"image": "corral/base:v2", "environment": {"V": "2"}},
                                    "strategy": {"parallelism": 2, "interval": "5s", "order": "start-first",
                                                 "failure_action": "pause"}})
    assert made["state"] == "rolling" and made["image"] == ["corral/base", "corral/base:v2"]
    assert made["strategy"]["parallelism"] == 2 and made["strategy"]["interval"] == 5.0
    assert made["strategy"]["order"] == "start-first" and made["strategy"]["failure_action"] == "pause"
    assert made["rollback_strategy"]["parallelism"] == 2, "a rollback follows the upgrade's strategy unless told"
    assert set(made["changes"]) == {"image", "environment"} and made["by"] == "admin"
    service_now = await api.ok("GET", f"/v1/services/{sid}")
    assert service_now["spec"]["image"] == "corral/base:v2"
    assert service_now["upgrade"] == {"id": made["id"], "state": "rolling", "reason": None, "done": 0, "slots": 0}
    paused = await api.ok("POST", f"/v1/services/{sid}/upgrade/pause")
    assert paused["state"] == "paused" and paused["reason"] == "paused by admin"
    resumed = await api.ok("POST", f"/v1/services/{sid}/upgrade/resume")
    assert resumed["state"] == "rolling"
    back = await api.ok("POST", f"/v1/services/{sid}/upgrade/rollback")
    assert back["state"] == "rolling-back" and back["rolling_back"] and back["reason"] == "rolled back by admin"
    assert (await api.ok("GET", f"/v1/services/{sid}"))["spec"]["image"] == "corral/base"
    message = await api.error("POST", f"/v1/services/{sid}/upgrade/rollback", 409, "conflict", "action")
    assert "rolling back already" in message and "cannot be rolled back again" in message
    second = await upgrade(api, sid, {"spec": {"image": "corral/base:v3"}})
    assert second["id"] != made["id"] and second["image"] == ["corral/base", "corral/base:v3"]
    read = await api.ok("GET", f"/v1/services/{sid}/upgrade")
    assert read["current"]["id"] == second["id"] and [u["id"] for u in read["history"]] == [second["id"], made["id"]]
    events = (await api.ok("GET", "/v1/events?limit=1000"))["items"]
    kinds = [e["kind"] for e in events if e["kind"].startswith("upgrade.")]
    assert kinds.count("upgrade.started") == 2 and kinds.count("upgrade.state") >= 4
    refused = await api.error("PATCH", f"/v1/services/{sid}?now=1", 409, "conflict", "id",
                              body={"image": "corral/base:v4"})
    assert "being upgraded" in refused


async def test_bad_upgrades_are_4xx_naming_the_field_and_propose_nothing(api: Api) -> None:
    _, service = await web(api, scale=2)
    sid = service["id"]
    path = f"/v1/services/{sid}/upgrade"
    replica = api.h.app[DEPS].replica
    cases: list[tuple[str, Any, int, str, str]] = [
        ("/v1/services/sv404/upgrade", {"spec": {"image": "x"}}, 404, "not_found", "service"),
        (path, {"spec": {"image": "x"}, "strategy": {"parallelism": 0}}, 400, "bad_request", "strategy.parallelism"),
        (path, {"spec": {"image": "x"}, "strategy": {"parallelism": 3}}, 400, "bad_request", "strategy.parallelism"),
        (path, {"spec": {"image": "x"}, "strategy": {"interval": -1}}, 400, "bad_request", "strategy.interval"),
        (path, {"spec": {"image": "x"}, "strategy": {"interval": "soon"}}, 400, "bad_request", "strategy.interval"),
        (path, {"spec": {"image": "x"}, "rollback_strategy": {"order": "both"}}, 400, "bad_request",
         "rollback_strategy.order"),
        (path, {"spec": {}}, 400, "bad_request", "spec"),
        (path, {"spec": {"image": "corral/base"}}, 400, "bad_request", "spec"),
        (path, {"spec": {"scale": 5}}, 400, "bad_request", "spec.scale"),
        (path, {"spec": {"colour": "red"}}, 400, "bad_request", "spec.colour"),
        (path, {"spec": {"image": "UPPER CASE!"}}, 400, "bad_request", "spec.image"),
        (path, {"spec": {"ports": ["99999:80"]}}, 400, "bad_request", "spec.ports[0]"),
        (path, {"image": "x"}, 400, "bad_request", "image"),
        (f"{path}/rollback", None, 409, "conflict", "action"),
        (f"{path}/pause", None, 409, "conflict", "action"),
    ]
    for where, body, status, code, field in cases:
        index = replica.applied_index
        message = await api.error("POST", where, status, code, field, body=body)
        assert replica.applied_index == index, (where, body, "refused before anything was proposed")
        if where.endswith("/rollback"):
            assert "nothing to roll back to" in message
    assert replica.state.current_upgrade(sid) is None


async def test_an_upgrade_of_a_stopped_service_or_a_load_balancer_is_refused(api: Api) -> None:
    _, service = await web(api)
    await api.ok("POST", f"/v1/services/{service['id']}/stop")
    message = await api.error("POST", f"/v1/services/{service['id']}/upgrade", 409, "conflict", "service",
                              body={"spec": {"image": "corral/base:v2"}})
    assert "start it before upgrading" in message


async def test_a_patch_of_what_shapes_the_containers_is_an_upgrade_and_now_replaces_them_at_once(api: Api) -> None:
    _, service = await web(api, scale=2)
    sid = service["id"]
    await api.h.replica.write(PlacementsCommit(sid, ((1, "h1"), (2, "h1"))))
    replica = api.h.app[DEPS].replica
    await api.ok("PATCH", f"/v1/services/{sid}", {"update_config": {"parallelism": 2, "min_healthy": "1s"}})
    assert replica.state.current_upgrade(sid) is None, "a new update_config alone replaces nothing"
    before = {i.id: i.generation for i in replica.state.instances_of(sid)}
    changed = await api.ok("PATCH", f"/v1/services/{sid}", {"image": "corral/base:v2"})
    up = changed["started_upgrade"]
    assert up is not None and up["state"] == "rolling" and up["image"] == ["corral/base", "corral/base:v2"]
    assert up["strategy"]["parallelism"] == 2 and up["strategy"]["min_healthy"] == 1.0, "the service's update_config"
    assert changed["spec"]["image"] == "corral/base:v2" and changed["upgrade"]["id"] == up["id"] == \
        (await api.ok("GET", f"/v1/services/{sid}/upgrade"))["current"]["id"]
    assert {i.id: i.generation for i in replica.state.instances_of(sid)} == before, "nothing replaced yet"
    path = f"/v1/services/{sid}"
    scaled = await api.ok("PATCH", f"{path}?now=0", {"image": "corral/base:v3"})
    took_over = scaled["started_upgrade"]
    assert took_over["id"] != up["id"] and took_over["previous_version"] == up["next_version"], \
        "a PATCH takes over the upgrade under way, as a new upgrade does"
    await api.error("PATCH", f"{path}?now=1", 409, "conflict", "id", body={"image": "corral/base:v4"})
    other = await api.ok("POST", "/v1/services", {"stack": "web-server", "name": "other", "image": "corral/base",
                                                   "scale": 2}, status=201)
    await api.h.replica.write(PlacementsCommit(other["id"], ((1, "h1"), (2, "h1"))))
    now = await api.ok("PATCH", f"/v1/services/{other['id']}?now=1", {"image": "corral/base:v4"})
    assert now["started_upgrade"] is None and replica.state.current_upgrade(other["id"]) is None
    assert {replica.state.spec_of(i).image for i in replica.state.instances_of(other["id"])} == \
        {"corral/base:v4"}, "every container on the new spec at once"
    scale = await api.ok("PATCH", f"/v1/services/{other['id']}", {"scale": 1, "service_labels": {"team": "a"}})
    assert scale["started_upgrade"] is None and scale["scale"] == 1


async def test_bad_patches_are_4xx_naming_the_field_and_propose_nothing(api: Api) -> None:
    _, service = await web(api, scale=2)
    sid = service["id"]
    await api.h.replica.write(PlacementsCommit(sid, ((1, "h1"), (2, "h1"))))
    replica = api.h.app[DEPS].replica
    path = f"/v1/services/{sid}"
    cases: list[tuple[str, Any, int, str, str]] = [
        (f"{path}?now=maybe", {"image": "corral/base:v2"}, 400, "bad_request", "now"),
        ("/v1/services/sv404", {"image": "corral/base:v2"}, 404, "not_found", "service"),
        (path, {"image": "UPPER CASE!"}, 400, "bad_request", "image"),
        (path, {"update_config": {"parallelism": 0}, "image": "corral/base:v2"}, 400, "bad_request",
         "update_config.parallelism"),
        (path, {"update_config": {"interval": -1}}, 400, "bad_request", "update_config.interval"),
        (path, {}, 400, "bad_request", "body"),
    ]
    for where, body, status, code, field in cases:
        index = replica.applied_index
        await api.error("PATCH", where, status, code, field, body=body)
        assert replica.applied_index == index, (where, body, "refused before anything was proposed")
    assert replica.state.current_upgrade(sid) is None
