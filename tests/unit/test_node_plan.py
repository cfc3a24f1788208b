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


# ---------------------------------------------------------------------------- fields since issue 16

# What the code before issue 16 computed for these specs (run at commit 9b6da17): an upgraded agent must
# compute the very same, or it would replace every container an older one made.
FINGERPRINTS_BEFORE = [
    ({"image": "corral/base"}, "8e1d85e5812c757b-4"),
    ({"image": "corral/base", "command": "httpd -f", "ports": ["8080:80", "53/udp"], "environment": {"A": "1"},
      "labels": {"tier": "web"}}, "e73cb1943c261211-4"),
    ({"image": "redis:7", "restart": "on-failure", "cpus": 0.5, "memory": "256m",
      "health_check": {"type": "command", "command": "redis-cli ping", "interval": "10s", "timeout": "2s",
                       "retries": 5}}, "72c60bfb5e415aed-4"),
    ({"image": "corral/base", "ports": [{"target": 80, "published": 8081, "protocol": "tcp"}], "restart": "no",
      "command": ["a", "b"]}, "fcb841157399f131-4"),
]


def config_of(spec: dict[str, Any]) -> dict[str, Any]:
    from agent.node.plan import container_config
    from tests.unit.test_model_state import Log

    log = Log()
    assert log("host.register", name="h1", address="10.77.0.11", cpus=2, memory=2**30)["ok"]
    stack = log("stack.create", name="s")["id"]
    made = log("service.create", stack=stack, name="svc", spec=spec)
    assert made["ok"], made
    assert log("placements.commit", service=made["id"], placements=[[1, "h1"]])["ok"]
    return container_config(log.state, next(iter(log.state.instances.values())))


def test_a_spec_without_the_new_fields_has_the_fingerprint_it_had() -> None:
    for spec, fingerprint in FINGERPRINTS_BEFORE:
        assert config_of(spec)["Labels"][SPEC] == fingerprint, spec


def test_every_new_field_reaches_dockers_create_body_and_the_fingerprint() -> None:
    base = config_of({"image": "corral/base"})
    fields = {
        "entrypoint": (["tini", "--"], lambda c: c["Entrypoint"] == ["tini", "--"]),
        "user": ("1000:1000", lambda c: c["User"] == "1000:1000"),
        "working_dir": ("/app", lambda c: c["WorkingDir"] == "/app"),
        "hostname": ("web.local", lambda c: c["Hostname"] == "web.local"),
        "cap_add": (["NET_ADMIN"], lambda c: c["HostConfig"]["CapAdd"] == ["NET_ADMIN"]),
        "cap_drop": (["ALL"], lambda c: c["HostConfig"]["CapDrop"] == ["ALL"]),
        "read_only": (True, lambda c: c["HostConfig"]["ReadonlyRootfs"] is True),
        "init": (True, lambda c: c["HostConfig"]["Init"] is True),
        "sysctls": ({"net.core.somaxconn": "1024"}, lambda c: c["HostConfig"]["Sysctls"] == {
            "net.core.somaxconn": "1024"}),
        "ulimits": ({"nofile": {"soft": 1024, "hard": 2048}}, lambda c: c["HostConfig"]["Ulimits"] == [
            {"Name": "nofile", "Soft": 1024, "Hard": 2048}]),
        "extra_hosts": (["db=10.0.0.5"], lambda c: c["HostConfig"]["ExtraHosts"] == ["db:10.0.0.5"]),
        "dns": (["1.1.1.1"], lambda c: c["HostConfig"]["Dns"] == ["1.1.1.1"]),
        "stop_signal": ("QUIT", lambda c: c["StopSignal"] == "SIGQUIT"),
        "stop_grace_period": ("1m30s", lambda c: c["StopTimeout"] == 90),
        "shm_size": ("256m", lambda c: c["HostConfig"]["ShmSize"] == 256 * 2**20),
        "expose": ([9000, "53/udp"], lambda c: {"9000/tcp", "53/udp"} <= set(c["ExposedPorts"])),
        "privileged": (True, lambda c: c["HostConfig"]["Privileged"] is True),
        "tty": (True, lambda c: c["Tty"] is True),
        "stdin_open": (True, lambda c: c["OpenStdin"] is True),
        "cpu_limit": (1.5, lambda c: c["HostConfig"]["NanoCpus"] == 1_500_000_000),
        "memory_limit": ("1g", lambda c: c["HostConfig"]["Memory"] == 2**30),
        "no_new_privileges": (True, lambda c: c["HostConfig"]["SecurityOpt"] == ["no-new-privileges"]),
        "ports": (["127.0.0.1:8080:80"], lambda c: c["HostConfig"]["PortBindings"] == {
            "80/tcp": [{"HostPort": "8080", "HostIp": "127.0.0.1"}]}),
    }
    for field, (value, check) in fields.items():
        config = config_of({"image": "corral/base", field: value})
        assert check(config), (field, config)
        assert config["Labels"][SPEC] != base["Labels"][SPEC], f"{field} is in the fingerprint"
    limited = config_of({"image": "corral/base", "restart": "on-failure", "restart_max_attempts": 3})
    assert limited["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert config_of({"image": "corral/base", "restart": "unless-stopped"})["HostConfig"]["RestartPolicy"] == {
        "Name": "unless-stopped"}
    for field, value in (("depends_on", {"db": "healthy"}), ("service_labels", {"a": "b"}), ("aliases", ["www"]),
                         ("restart_delay", "5s"), ("restart_window", "2m")):
        assert config_of({"image": "corral/base", field: value})["Labels"][SPEC] == base["Labels"][SPEC], \
            f"{field} does not shape the container"


def test_unless_stopped_restarts_as_always_and_a_retry_limit_is_left_to_docker() -> None:
    exited = [seen("c1", "i1", "exited", exit_code=1)]
    assert kinds(plan({"i1": want("i1", restart="unless-stopped")}, exited)) == [("start", "i1", "c1")]
    limited = Desired("i1", "web-i1", True, RestartPolicy.ON_FAILURE, {"Labels": {SPEC: "f1"}},
                      restart_max_attempts=3)
    assert plan({"i1": limited}, exited) == [], "Docker counts the retries; the reconciler does not add its own"
    assert kinds(plan({"i1": limited}, [seen("c1", "i1", "created")])) == [("start", "i1", "c1")]


def test_containers_get_the_hosts_dns_server_and_search_list_without_a_new_fingerprint() -> None:
    import dataclasses

    from agent.node.plan import container_config
    from tests.unit.test_model_state import Log, web_stack

    log = Log()
    _, service = web_stack(log, scale=1)
    assert log("placements.commit", service=service, placements=[[1, "h1"]])["ok"]
    inst = next(iter(log.state.instances.values()))
    gateway = log.state.hosts["h1"].subnet.rsplit(".", 1)[0] + ".1"
    config = container_config(log.state, inst)
    host_config = config["HostConfig"]
    assert isinstance(host_config, dict)
    assert host_config["Dns"] == [gateway]
    assert host_config["DnsSearch"] == ["web-server.default.corral.internal", "default.corral.internal"]
    # the same spec on a host whose lease is unknown (as an older agent made it): the same fingerprint,
    # so an upgrade does not replace running containers to give them the cluster's DNS
    leased = log.state.hosts["h1"]
    log.state.hosts["h1"] = dataclasses.replace(leased, subnet="")
    older = container_config(log.state, inst)
    assert "Dns" not in older["HostConfig"]  # type: ignore[operator]
    assert older["Labels"][SPEC] == config["Labels"][SPEC]  # type: ignore[index]
    assert log("service.update", id=service, spec={"dns": ["192.0.2.53"]})["ok"]
    own = container_config(log.state, log.state.instances[inst.id])
    assert own["HostConfig"]["Dns"] == ["192.0.2.53"] and "DnsSearch" not in own["HostConfig"]  # type: ignore[index,operator]
    # compose links: the service's own domain (where its links' names live) is searched first, and a
    # container made before the link is replaced (its search list lacks that domain)
    log.state.hosts["h1"] = leased
    assert log("service.update", id=service, spec={"dns": [], "links": {"database": "nginx-cluster"}})["ok"]
    linked = container_config(log.state, log.state.instances[inst.id])
    assert linked["HostConfig"]["DnsSearch"] == [  # type: ignore[index]
        "nginx-cluster.web-server.default.corral.internal", "web-server.default.corral.internal",
        "default.corral.internal"]
    assert linked["Labels"][SPEC] != config["Labels"][SPEC]  # type: ignore[index]
