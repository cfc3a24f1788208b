"""Volumes, configs and stack deploys in the state machine, and the scheduler's volume rules."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.model.commands import ConfigFiles, StackDeploy, VolumeCreate
from agent.model.placement import decide
from tests.unit.test_model_state import Log
from tests.unit.test_placement import apply_all

HOSTS = ("h1", "h2", "h3")


def cluster(log: Log) -> None:
    for name in HOSTS:
        assert log("host.register", name=name, address=f"10.77.0.1{name[1]}", cpus=2, memory=2**30)["ok"]


def db(scale: int = 1, scope: str = "stack", **extra: Any) -> dict[str, Any]:
    return {"image": "corral/base", "scale": scale,
            "mounts": [{"type": "volume", "source": "data", "target": "/data", "scope": scope}], **extra}


def deploy(log: Log, services: dict[str, dict[str, Any]], configs: tuple[ConfigFiles, ...] = (),
           name: str = "app", prune: bool = False) -> dict[str, Any]:
    return log.run(StackDeploy(name, "default", services, configs, prune))


def instances(log: Log, service: str = "db") -> dict[int, str]:
    sid = next(s.id for s in log.state.services.values() if s.name == service)
    return {i.slot: i.host for i in log.state.instances_of(sid)}


def test_a_stack_volume_is_made_where_its_first_instance_goes_and_keeps_it_there() -> None:
    log = Log()
    cluster(log)
    assert deploy(log, {"db": db()})["ok"]
    apply_all(log)
    host = instances(log)[1]
    volume = log.state.storage.volume("default", "app_data")
    assert volume is not None and volume.host == host and volume.scope == "stack"
    # the host is lost: the slot is not placed elsewhere, and the service says why
    apply_all(log, lost=frozenset({host}))
    assert instances(log) == {1: host}
    service = next(s for s in log.state.services.values() if s.name == "db")
    assert service.unplaced is not None
    assert f"volume app_data lives on {host}, which is disconnected" in service.unplaced[0][1]
    # it comes back: the instance is still there, on its volume
    apply_all(log)
    assert instances(log) == {1: host} and decide(log.state, frozenset()) == []


def test_replicas_sharing_a_stack_volume_all_go_to_its_host() -> None:
    log = Log()
    cluster(log)
    assert deploy(log, {"db": db(scale=3)})["ok"]
    apply_all(log)
    hosts = set(instances(log).values())
    assert len(hosts) == 1 and log.state.storage.volume("default", "app_data").host in hosts


def test_instance_volumes_are_one_per_slot_and_spread() -> None:
    log = Log()
    cluster(log)
    assert deploy(log, {"db": db(scale=3, scope="instance")})["ok"]
    apply_all(log)
    placed = instances(log)
    assert len(set(placed.values())) == 3
    for slot, host in placed.items():
        assert log.state.storage.volume("default", f"app_data-{slot}").host == host


def test_recreate_empty_moves_the_volume_to_the_new_host() -> None:
    log = Log()
    cluster(log)
    assert deploy(log, {"db": db(on_host_loss="recreate-empty")})["ok"]
    apply_all(log)
    old = instances(log)[1]
    apply_all(log, lost=frozenset({old}))
    new = instances(log)[1]
    assert new != old and log.state.storage.volume("default", "app_data").host == new
    assert any(e.kind == "volume.moved" for e in log.state.events)


def test_a_placement_decided_on_an_older_state_cannot_move_an_instance_off_its_volume() -> None:
    log = Log()
    cluster(log)
    assert deploy(log, {"db": db()})["ok"]
    apply_all(log)
    host = instances(log)[1]
    other = next(h for h in HOSTS if h != host)
    sid = next(s.id for s in log.state.services.values() if s.name == "db")
    assert log("placements.commit", service=sid, placements=[[1, other]])["ok"]
    assert instances(log) == {1: host}, "the state machine re-checks the volume's host"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["lose", "heal", "scale"]), st.sampled_from(HOSTS),
                          st.integers(1, 4)), max_size=12),
       st.sampled_from(["stack", "instance"]))
def test_an_instance_with_a_volume_is_only_ever_placed_on_its_volumes_host(
        steps: list[tuple[str, str, int]], scope: str) -> None:
    log = Log()
    cluster(log)
    assert deploy(log, {"db": db(scale=2, scope=scope)})["ok"]
    lost: set[str] = set()
    sid = next(s.id for s in log.state.services.values() if s.name == "db")
    for what, host, n in [("heal", "h1", 1), *steps]:
        if what == "lose":
            lost.add(host)
        elif what == "heal":
            lost.discard(host)
        else:
            assert log("service.scale", id=sid, scale=n)["ok"]
        apply_all(log, lost=frozenset(lost))
        for inst in log.state.instances_of(sid):
            name = "app_data" if scope == "stack" else f"app_data-{inst.slot}"
            volume = log.state.storage.volume("default", name)
            assert volume is not None and volume.host == inst.host, (inst, volume)


def test_an_external_volume_must_exist_and_names_do_not_clash() -> None:
    log = Log()
    cluster(log)
    ext = {"image": "corral/base", "mounts": [{"type": "volume", "source": "shared", "target": "/s",
                                                "scope": "external"}]}
    refused = deploy(log, {"web": ext})
    assert not refused["ok"] and refused["error"] == "not_found" and "shared" in refused["message"]
    assert not log.state.stacks, "nothing half-made"
    assert log.run(VolumeCreate("shared", host="h2"))["ok"]
    assert deploy(log, {"web": ext})["ok"]
    apply_all(log)
    assert instances(log, "web") == {1: "h2"}
    again = log.run(VolumeCreate("shared"))
    assert not again["ok"] and again["error"] == "conflict"
    # a stack volume whose name is an external one's
    assert log.run(VolumeCreate("other_data"))["ok"]
    clash = deploy(log, {"db": db()}, name="other")
    assert not clash["ok"] and "exists already as an external volume" in clash["message"]


def test_volume_rm_refuses_while_mounted_and_stack_rm_keeps_volumes_unless_asked() -> None:
    log = Log()
    cluster(log)
    assert deploy(log, {"db": db()})["ok"]
    apply_all(log)
    busy = log("volume.remove", name="app_data")
    assert not busy["ok"] and "mounted by app/db" in busy["message"]
    stack = next(iter(log.state.stacks))
    assert log("stack.remove", id=stack)["ok"]
    kept = log.state.storage.volume("default", "app_data")
    assert kept is not None and not kept.removing, "a stack's volumes outlive it unless asked"
    # deployed again: the same volume, on the same host
    assert deploy(log, {"db": db()})["ok"]
    apply_all(log)
    assert instances(log) == {1: kept.host}
    stack = next(iter(log.state.stacks))
    assert log("stack.remove", id=stack, volumes=True)["ok"]
    removing = log.state.storage.volume("default", "app_data")
    assert removing is not None and removing.removing
    wrong = log("volume.gone", name="app_data", environment="default", host="not-its-host")
    assert wrong["ok"] and log.state.storage.volume("default", "app_data") is not None
    assert log("volume.gone", name="app_data", environment="default", host=kept.host)["ok"]
    assert log.state.storage.volume("default", "app_data") is None


def test_a_stack_deploy_is_whole_or_nothing_and_reports_what_it_did() -> None:
    log = Log()
    cluster(log)
    conf = ConfigFiles("nginx.conf", (("", b"server {}"),))
    web = {"image": "corral/base", "mounts": [{"type": "config", "source": "nginx.conf", "target": "/etc/n.conf"}]}
    bad = deploy(log, {"web": web, "db": {"image": "corral/base", "scale": -1}}, (conf,))
    assert not bad["ok"] and bad["message"].startswith("services.db: scale")
    assert not log.state.stacks and not log.state.storage.configs, "nothing half-made"
    plan = log.state.check_deploy(StackDeploy("app", "default", {"web": web, "db": db()}, (conf,)))
    assert (plan.created, plan.configs_created, plan.volumes_new) == (["db", "web"], ["nginx.conf"], ["app_data"])
    assert not log.state.stacks, "a dry run changes nothing"
    assert deploy(log, {"web": web, "db": db()}, (conf,))["ok"]
    config = log.state.storage.configs["default/app_nginx.conf"]
    assert config.files == (("", b"server {}"),)
    again = log.state.check_deploy(StackDeploy("app", "default", {"web": web, "db": db(scale=2)}, (conf,)))
    assert (again.changed, again.unchanged, again.configs_unchanged) == (["db"], ["web"], ["nginx.conf"])
    pruned = log.state.check_deploy(StackDeploy("app", "default", {"web": web}, (conf,), prune=True))
    assert pruned.removed == ["db"]
    missing = deploy(log, {"web2": {**web, "mounts": [{"type": "config", "source": "nope", "target": "/x"}]}})
    assert not missing["ok"] and missing["error"] == "not_found"


def test_configs_are_bounded_and_their_users_hold_them() -> None:
    log = Log()
    big = ConfigFiles("big", (("", b"x" * (512 * 1024 + 1)),))
    refused = deploy(log, {"web": {"image": "corral/base"}}, (big,))
    assert not refused["ok"] and "at most 512 KiB" in refused["message"]
    evil = ConfigFiles("evil", (("../etc/passwd", b"x"),))
    assert "not a relative path" in deploy(log, {"web": {"image": "corral/base"}}, (evil,))["message"]
    secret = ConfigFiles("pw", (("", b"sealed"),), secret=True)
    as_config = {"image": "corral/base", "mounts": [{"type": "config", "source": "pw", "target": "/pw"}]}
    wrong = deploy(log, {"web": as_config}, (secret,))
    assert not wrong["ok"] and "is a secret" in wrong["message"]
    ok = deploy(log, {"web": {"image": "corral/base", "mounts": [{"type": "secret", "source": "pw"}]}}, (secret,))
    assert ok["ok"]
    web = log.state.services[next(iter(log.state.services))]
    assert web.spec.mounts[0].target == "/run/secrets/pw"
    busy = log("config.remove", name="app_pw")
    assert not busy["ok"] and "mounted by app/web" in busy["message"]


def test_bind_mounts_only_under_the_allowed_paths() -> None:
    log = Log()
    bind = {"image": "corral/base", "mounts": [{"type": "bind", "source": "/srv/www", "target": "/www"}]}
    refused = deploy(log, {"web": bind})
    assert not refused["ok"] and "/srv/www is not allowed (allowed: none" in refused["message"]
    assert log("bind_paths.set", paths=["/srv"])["ok"]
    assert deploy(log, {"web": bind})["ok"]
    assert not deploy(log, {"web": {**bind, "mounts": [{"type": "bind", "source": "/srvx", "target": "/w"}]}})["ok"]
    assert not log("bind_paths.set", paths=["relative"])["ok"]


def test_a_global_service_runs_one_instance_on_every_host_that_fits() -> None:
    log = Log()
    cluster(log)
    assert log("host.register", name="h4", address="10.77.0.14", labels={"role": "edge"}, cpus=2,
               memory=2**30)["ok"]
    assert deploy(log, {"agent": {"image": "corral/base", "mode": "global"},
                        "edge": {"image": "corral/base", "mode": "global",
                                 "placement": {"constraints": ["role==edge"]}}})["ok"]
    apply_all(log)
    assert sorted(instances(log, "agent").values()) == ["h1", "h2", "h3", "h4"]
    assert list(instances(log, "edge").values()) == ["h4"]
    # a lost host keeps its instance (it is no other host's); a new host gets one
    apply_all(log, lost=frozenset({"h2"}))
    assert sorted(instances(log, "agent").values()) == ["h1", "h2", "h3", "h4"]
    assert log("host.register", name="h5", address="10.77.0.15", cpus=2, memory=2**30)["ok"]
    apply_all(log)
    assert sorted(instances(log, "agent").values()) == ["h1", "h2", "h3", "h4", "h5"]
    # a host that loses the label loses the instance
    assert log("host.register", name="h4", address="10.77.0.14", labels={}, cpus=2, memory=2**30)["ok"]
    apply_all(log)
    assert instances(log, "edge") == {}
    assert decide(log.state, frozenset()) == []


def test_depends_on_names_services_of_the_stack_and_orders_their_start() -> None:
    from agent.model.commands import InstanceStatus
    from agent.model.entities import Health, Status
    from agent.model.order import waiting_for

    log = Log()
    cluster(log)
    bad = deploy(log, {"web": {"image": "corral/base", "depends_on": {"db": "started"}}})
    assert not bad["ok"] and "db is not a service of stack app" in bad["message"]
    db_spec = {"image": "corral/base", "health_check": {"type": "command", "command": "true"}}
    services = {"db": db_spec, "migrate": {"image": "corral/base", "restart": "no"},
                "web": {"image": "corral/base", "depends_on": {"db": "healthy", "migrate": "completed"}}}
    assert deploy(log, services)["ok"]
    apply_all(log)
    by_name = {s.name: s for s in log.state.services.values()}
    web = by_name["web"]
    assert waiting_for(log.state, web) == "waiting for db to be healthy"
    (db,) = log.state.instances_of(by_name["db"].id)
    (migrate,) = log.state.instances_of(by_name["migrate"].id)
    assert log.run(InstanceStatus(db.id, db.host, Status.RUNNING))["ok"]
    assert waiting_for(log.state, web) == "waiting for db to be healthy", "running is not healthy"
    assert log.run(InstanceStatus(db.id, db.host, Status.RUNNING, health=Health.HEALTHY))["ok"]
    assert waiting_for(log.state, web) == "waiting for migrate to complete successfully"
    assert log.run(InstanceStatus(migrate.id, migrate.host, Status.EXITED, exit_code=1))["ok"]
    assert waiting_for(log.state, web) == "waiting for migrate to complete successfully", "exit 1 is no success"
    assert log.run(InstanceStatus(migrate.id, migrate.host, Status.EXITED, exit_code=0))["ok"]
    assert waiting_for(log.state, web) is None
