"""Load balancer specs: the rules' validation (each refusal names its field), the checks against the
environment, and where the scheduler puts a load balancer."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from agent.model import lb
from agent.model import spec as specs
from agent.model.errors import SpecError
from agent.model.placement import decide
from tests.unit.test_model_state import Log, web_stack

RULE = {"port": 80, "target": "nginx-cluster", "target_port": 80}


def lb_spec(**lb_fields: Any) -> dict[str, Any]:
    return {"kind": "load-balancer", "mode": "global", "lb": {"rules": [RULE], **lb_fields}}


def test_a_load_balancer_spec_round_trips_and_needs_no_image() -> None:
    spec = specs.parse(lb_spec(default={"target": "web/api", "port": 8080}, stickiness=True, drain_timeout=2))
    assert spec.kind is lb.ServiceKind.LOAD_BALANCER and spec.image == specs.LB_IMAGE
    assert spec.lb is not None and spec.lb.default == lb.Target("api", 8080, "web") and spec.lb.drain_timeout == 2.0
    assert specs.parse(spec.to_request()) == spec
    plain = specs.parse({"image": "corral/base"})
    assert plain.kind is lb.ServiceKind.CONTAINER and plain.lb is None


@pytest.mark.parametrize(("rule", "field"), [
    ({**RULE, "port": 0}, "lb.rules[0].port"),
    ({**RULE, "target_port": "80"}, "lb.rules[0].target_port"),
    ({**RULE, "target": "Not_A/Name"}, "lb.rules[0].target"),
    ({**RULE, "target": "a/b/c"}, "lb.rules[0].target"),
    ({**RULE, "protocol": "udp"}, "lb.rules[0].protocol"),
    ({**RULE, "hostname": "*.*"}, "lb.rules[0].hostname"),
    ({**RULE, "hostname": "*.example.*"}, "lb.rules[0].hostname"),
    ({**RULE, "hostname": "ex ample.com"}, "lb.rules[0].hostname"),
    ({**RULE, "hostname": "a.*.com"}, "lb.rules[0].hostname"),
    ({**RULE, "hostname": ""}, "lb.rules[0].hostname"),
    ({**RULE, "path": "api"}, "lb.rules[0].path"),
    ({**RULE, "path": "/a b"}, "lb.rules[0].path"),
    ({**RULE, "protocol": "tcp", "hostname": "a.com"}, "lb.rules[0].hostname"),
    ({**RULE, "priority": -1}, "lb.rules[0].priority"),
    ({**RULE, "weight": 1}, "lb.rules[0].weight"),
])
def test_a_bad_rule_is_refused_naming_its_field(rule: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        specs.parse({"kind": "load-balancer", "lb": {"rules": [rule]}})
    assert err.value.field == field


@pytest.mark.parametrize(("raw", "field"), [
    ({"kind": "load-balancer"}, "lb"),
    ({"kind": "load-balancer", "lb": {"rules": []}}, "lb.rules"),
    ({"kind": "load-balancer", "lb": {"rules": [RULE, RULE]}}, "lb.rules[1]"),
    ({"kind": "load-balancer", "lb": {"rules": [RULE, {**RULE, "path": "/x", "protocol": "tcp"}]}},
     "lb.rules[1].path"),
    ({"kind": "load-balancer", "lb": {"rules": [RULE, {**RULE, "port": 81}, {**RULE, "port": 81, "protocol": "tcp"}]}},
     "lb.rules[2].protocol"),
    ({"kind": "load-balancer", "lb": {"rules": [RULE], "drain_timeout": -1}}, "lb.drain_timeout"),
    ({"kind": "load-balancer", "lb": {"rules": [RULE], "default": {"target": "x"}}}, "lb.default.port"),
    ({"kind": "load-balancer", "lb": {"rules": [RULE], "stickiness": "yes"}}, "lb.stickiness"),
    ({"kind": "load-balancer", "lb": {"rules": [RULE], "extra": 1}}, "lb.extra"),
    ({"kind": "balancer", "lb": {"rules": [RULE]}}, "kind"),
    ({"image": "corral/base", "lb": {"rules": [RULE]}}, "lb"),
])
def test_a_bad_load_balancer_is_refused_naming_its_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        specs.parse(raw)
    assert err.value.field == field


@pytest.mark.parametrize(("pattern", "normal"), [
    ("www.example.com", "www.example.com"), ("*.Example.com", "*.example.com"), ("example.*", "example.*"),
    ("localhost", "localhost")])
def test_hostname_patterns(pattern: str, normal: str) -> None:
    assert lb.host_pattern(pattern, "h") == normal


@pytest.mark.parametrize(("text", "rule"), [
    ("80=web:8080", {"port": 80, "target": "web", "target_port": 8080}),
    ("5432/tcp=db/pg:5432", {"port": 5432, "protocol": "tcp", "target": "db/pg", "target_port": 5432}),
    ("80=api:80,hostname=*.example.com,path=/api,priority=5",
     {"port": 80, "target": "api", "target_port": 80, "hostname": "*.example.com", "path": "/api", "priority": 5}),
])
def test_the_cli_rule_form(text: str, rule: dict[str, object]) -> None:
    assert lb.rule_from_text(text) == rule
    lb.rule(rule, "r")  # and the model takes it


@pytest.mark.parametrize("text", ["80", "80=web", "x=web:80", "80=web:80,weight=2", "80=web:80,priority=high"])
def test_a_bad_cli_rule_is_refused(text: str) -> None:
    with pytest.raises(SpecError):
        lb.rule_from_text(text)


def test_targets_must_exist_and_be_containers() -> None:
    log = Log()
    stack, _ = web_stack(log)
    missing = log("service.create", stack=stack, name="lb",
                  spec={**lb_spec(), "lb": {"rules": [{**RULE, "target": "nope"}]}})
    assert not missing["ok"] and missing["field"] == "lb.rules[0].target"
    other_stack = log("service.create", stack=stack, name="lb",
                      spec={**lb_spec(), "lb": {"rules": [{**RULE, "target": "web-server/nginx-cluster"}]}})
    assert other_stack["ok"], other_stack
    second = log("service.create", stack=stack, name="lb2",
                 spec={**lb_spec(), "lb": {"rules": [{**RULE, "port": 81, "target": "lb"}]}})
    assert not second["ok"] and second["field"] == "lb.rules[0].target" and "load balancer" in second["message"]
    bad_default = log("service.create", stack=stack, name="lb3",
                      spec={**lb_spec(), "lb": {"rules": [{**RULE, "port": 82}],
                                                "default": {"target": "x", "port": 1}}})
    assert not bad_default["ok"] and bad_default["field"] == "lb.default.target"
    assert log("service.create", stack=stack, name="legacy",
               spec={"kind": "external", "external": {"addresses": ["192.0.2.10"]}})["ok"]
    outside = log("service.create", stack=stack, name="lb4",
                  spec={**lb_spec(), "lb": {"rules": [{**RULE, "port": 83, "target": "legacy"}]}})
    assert not outside["ok"] and outside["field"] == "lb.rules[0].target" and "external service" in outside["message"]


def test_a_listen_port_bound_by_another_service_is_refused_both_ways() -> None:
    log = Log()
    stack, _ = web_stack(log)  # nginx-cluster publishes 8080
    taken = log("service.create", stack=stack, name="lb",
                spec={**lb_spec(), "lb": {"rules": [RULE, {**RULE, "port": 8080}]}})
    assert not taken["ok"] and taken["field"] == "lb.rules[1].port" and "nginx-cluster" in taken["message"]
    assert log("service.create", stack=stack, name="lb", spec=lb_spec())["ok"]
    other = log("stack.create", name="other")["id"]
    clash = log("service.create", stack=other, name="web", spec={"image": "corral/base", "ports": ["80:80"]})
    assert not clash["ok"] and clash["field"] == "ports[0]" and "web-server/lb" in clash["message"]
    again = log("service.create", stack=other, name="lb",
                spec={**lb_spec(), "lb": {"rules": [{**RULE, "target": "web-server/nginx-cluster"}]}})
    assert not again["ok"] and again["field"] == "lb.rules[0].port"
    lb_id = next(s.id for s in log.state.services.values() if s.name == "lb")
    assert log("service.update", id=lb_id, spec={"lb": {"rules": [RULE], "drain_timeout": 1}})["ok"], \
        "a load balancer does not clash with itself"


def test_a_deploy_checks_its_load_balancer_against_its_own_services() -> None:
    log = Log()
    for name in ("h1", "h2"):
        assert log("host.register", name=name, address=f"10.77.0.1{name[1]}", cpus=2, memory=2**30)["ok"]
    ok = log("stack.deploy", name="shop", environment="default", services={
        "web": {"image": "corral/base", "scale": 2}, "front": lb_spec(
            rules=[{"port": 80, "target": "web", "target_port": 80}])})
    assert ok["ok"], ok
    bad = log("stack.deploy", name="shop2", environment="default", services={
        "web": {"image": "corral/base"}, "front": lb_spec(rules=[{"port": 90, "target": "nope", "target_port": 80}])})
    assert not bad["ok"] and bad["field"] == "services.front.lb.rules[0].target"


def test_a_load_balancer_goes_only_to_hosts_with_haproxy() -> None:
    log = Log()
    for name, has in (("h1", "yes"), ("h2", "missing"), ("h3", "yes")):
        assert log("host.register", name=name, address=f"10.77.0.1{name[1]}", cpus=2, memory=2**30,
                   labels={lb.HAPROXY_LABEL: has})["ok"]
    stack = log("stack.create", name="web-server")["id"]
    assert log("service.create", stack=stack, name="nginx-cluster", spec={"image": "corral/base", "scale": 3})["ok"]
    front = log("service.create", stack=stack, name="lb", spec=lb_spec())["id"]
    two = log("service.create", stack=stack, name="lb2",
              spec={**lb_spec(), "mode": "replicated", "scale": 3, "placement": {"one_per_host": True},
                    "lb": {"rules": [{**RULE, "port": 81}]}})["id"]
    for cmd in decide(log.state, frozenset()):
        assert log.run(cmd)["ok"]
    assert sorted(i.host for i in log.state.instances_of(front)) == ["h1", "h3"]
    assert Counter(i.host for i in log.state.instances_of(two)) == Counter({"h1": 1, "h3": 1})
    why = log.state.services[two].unplaced
    assert why is not None and "corral.haproxy==yes" in why[0][1], why



def test_a_load_balancer_never_runs_twice_on_one_host_even_when_it_did_not_ask() -> None:
    """Two of its HAProxies on one host would bind the same ports (SO_REUSEPORT lets both): the slot that
    has no host of its own left waits, and says why (a host loss left one so in the lb-continuity drill)."""
    log = Log()
    for name in ("h1", "h2", "h3"):
        assert log("host.register", name=name, address=f"10.77.0.1{name[1]}", cpus=2, memory=2**30,
                   labels={lb.HAPROXY_LABEL: "yes"})["ok"]
    stack = log("stack.create", name="web-server")["id"]
    assert log("service.create", stack=stack, name="nginx-cluster", spec={"image": "corral/base", "scale": 3})["ok"]
    front = log("service.create", stack=stack, name="lb", spec={
        **lb_spec(), "mode": "replicated", "scale": 2, "placement": {"constraints": ["node.hostname!=h3"]}})["id"]
    for cmd in decide(log.state, frozenset()):
        assert log.run(cmd)["ok"]
    assert sorted(i.host for i in log.state.instances_of(front)) == ["h1", "h2"]
    for cmd in decide(log.state, frozenset({"h2"})):  # h2 lost: its slot may go only to h1, which has one
        assert log.run(cmd)["ok"]
    assert [i.host for i in log.state.instances_of(front) if i.host != "h2"] == ["h1"]
    why = log.state.services[front].unplaced
    assert why is not None, "the slot that cannot be placed says so"

def test_lb_ls_shows_a_rule_as_the_spec_holds_it_in_the_rule_option_form() -> None:
    from agent.cli.lb import _rule_text

    spec = {"port": 8088, "hostname": "api.*", "path": None, "priority": 5, "protocol": "http",
            "target": {"service": "api", "port": 80, "stack": None}}
    assert _rule_text(spec) == "8088/http=api:80,hostname=api.*,priority=5"
    other = {**spec, "hostname": None, "path": "/x", "priority": 0,
             "target": {"service": "db", "port": 5432, "stack": "data"}}
    assert _rule_text(other) == "8088/http=data/db:5432,path=/x"
