"""A load balancer's rules as HAProxy sees them: the config (golden files, checked by ``haproxy -c``
when HAProxy is installed), the runtime commands, and drain ordering on both sides.

``CORRAL_REWRITE_GOLDEN=1`` writes the golden files anew (read the diff before committing it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.model import lb
from agent.model.lb import LbProtocol
from agent.node.lbconfig import (
    Draining,
    Server,
    backend_list,
    backends,
    delete_commands,
    drain_timeout_of,
    drained,
    hold_for_drain,
    render,
    runtime_commands,
)
from tests.unit.test_model_state import Log

GOLDEN = Path(__file__).parent / "lb_golden"


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("CORRAL_REWRITE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed (CORRAL_REWRITE_GOLDEN=1 rewrites it)"


def cluster(**lb_fields: Any) -> tuple[Log, str, str]:
    """Stack shop: web (3, running), api (2 with a health check: one healthy), db; a load balancer ``front``."""
    log = Log()
    assert log("host.register", name="h1", address="10.77.0.11", cpus=2, memory=2**30)["ok"]
    stack = log("stack.create", name="shop")["id"]
    ids = {}
    for name, scale, extra in (("web", 3, {}), ("api", 2, {"health_check": {"type": "tcp", "port": 8000}}),
                               ("db", 1, {})):
        ids[name] = log("service.create", stack=stack, name=name,
                        spec={"image": "corral/base", "scale": scale, **extra})["id"]
        placed = log("placements.commit", service=ids[name], placements=[[s, "h1"] for s in range(1, scale + 1)])
        for n, inst in enumerate(placed["placed"]):
            health = ("healthy" if n == 0 else "starting") if name == "api" else None
            assert log("instance.status", id=inst, host="h1", status="running", ip=f"10.42.1.{len(ids) * 10 + n}",
                       health=health)["ok"]
    front = log("service.create", stack=stack, name="front", spec={"kind": "load-balancer", "lb": {"rules": [
        {"port": 80, "target": "web", "target_port": 80},
        {"port": 80, "target": "api", "target_port": 8000, "path": "/api"},
        {"port": 80, "target": "api", "target_port": 8000, "hostname": "api.example.com"},
        {"port": 80, "target": "web", "target_port": 80, "hostname": "*.static.example.com", "priority": 10},
        {"port": 80, "target": "web", "target_port": 80, "hostname": "shop.*", "path": "/old"},
        {"port": 5432, "protocol": "tcp", "target": "db", "target_port": 5432},
    ], **lb_fields}})
    assert front["ok"], front
    return log, stack, front["id"]


def rendered(log: Log, front: str) -> str:
    service = log.state.services[front]
    assert service.spec.lb is not None
    items = backend_list(service.spec.lb, "shop", log.state, "default")
    return render(service.spec.lb, "shop", items, backends(log.state, items).values(),
                  "/var/lib/corral/lb/i/admin.sock", "/var/lib/corral/lb/i/haproxy.pid", front)


@pytest.mark.parametrize(("name", "fields"), [
    ("basic.cfg", {}),
    ("sticky-proxy.cfg", {"stickiness": True, "proxy_protocol": True, "forwarded_for": False,
                          "default": {"target": "api", "port": 8000}}),
])
def test_rules_become_this_haproxy_config(name: str, fields: dict[str, Any], tmp_path: Path) -> None:
    log, _, front = cluster(**fields)
    text = rendered(log, front)
    golden(name, text)
    binary = shutil.which("haproxy")
    if binary is not None:  # HAProxy itself takes it
        (tmp_path / "h.cfg").write_text(text)
        check = subprocess.run([binary, "-c", "-f", str(tmp_path / "h.cfg")], capture_output=True, text=True,
                               check=False)
        assert check.returncode == 0, check.stdout + check.stderr


def test_backends_are_running_containers_and_healthy_ones_when_checked() -> None:
    log, _, front = cluster()
    service = log.state.services[front]
    assert service.spec.lb is not None
    servers = backends(log.state, backend_list(service.spec.lb, "shop", log.state, "default"))
    per_backend: dict[str, int] = {}
    for s in servers.values():
        per_backend[s.backend] = per_backend.get(s.backend, 0) + 1
    assert per_backend == {"b_shop_web_80_http": 3, "b_shop_api_8000_http": 1, "b_shop_db_5432_tcp": 1}
    web = next(s.id for s in log.state.services.values() if s.name == "web")
    inst = log.state.instances_of(web)[0]
    assert log("instance.status", id=inst.id, host="h1", status="exited", exit_code=1)["ok"]
    servers = backends(log.state, backend_list(service.spec.lb, "shop", log.state, "default"))
    assert sum(s.backend == "b_shop_web_80_http" for s in servers.values()) == 2, "an exited one is no backend"


def test_a_target_removed_leaves_an_empty_backend() -> None:
    log, _, front = cluster()
    db = next(s.id for s in log.state.services.values() if s.name == "db")
    assert log("service.remove", id=db)["ok"]
    service = log.state.services[front]
    assert service.spec.lb is not None
    items = backend_list(service.spec.lb, "shop", log.state, "default")
    assert [b.service for b in items if b.name == "b_shop_db_5432_tcp"] == [None]
    assert not any(s.backend == "b_shop_db_5432_tcp" for s in backends(log.state, items).values())


def S(name: str, backend: str = "b_web", address: str = "10.42.1.2") -> Server:
    return Server(backend, name, address, 80)


def test_runtime_commands_add_drain_and_revive_servers() -> None:
    spec = lb.parse({"rules": [{"port": 80, "target": "web", "target_port": 80}], "stickiness": True})
    have = {"b_web/a": S("a"), "b_web/b": S("b")}
    draining = {"b_web/c": Draining(S("c"), 1.0)}
    want = {"b_web/a": S("a"), "b_web/c": S("c"), "b_web/d": S("d", address="10.42.1.9")}
    commands, added, drain = runtime_commands(have, draining, want, {"b_web": LbProtocol.HTTP}, spec)
    text = "\n".join(commands) + "\n--\n" + "\n".join(delete_commands("b_web/b")) + "\n"
    golden("runtime.txt", text)
    assert added == ["b_web/c", "b_web/d"] and drain == ["b_web/b"]
    assert runtime_commands(want, {}, want, {"b_web": LbProtocol.HTTP}, spec) == ([], [], []), "nothing to do"


@pytest.mark.parametrize(("sessions", "now", "gone"), [
    ({"b/x": 0, "b/y": 3}, 1.0, ["b/x"]),          # no sessions left: at once
    ({"b/x": 2, "b/y": 3}, 1.0, []),               # in flight: they finish first
    ({"b/x": 2, "b/y": 3}, 10.0, ["b/x"]),         # x's timeout (since 0 + 10) passed, y's (5 + 10) not
    ({"b/y": 3}, 15.0, ["b/x", "b/y"]),            # sessions unknown for x: its timeout decides
    ({}, 9.9, []),
])
def test_drain_ordering_on_the_load_balancer(sessions: dict[str, int], now: float, gone: list[str]) -> None:
    draining = {"b/x": Draining(S("x"), 0.0), "b/y": Draining(S("y"), 5.0)}
    assert drained(draining, sessions, now, timeout=10.0) == gone


def test_drain_ordering_on_the_targets_host() -> None:
    first: dict[str, float] = {}
    held, wake = hold_for_drain({"c1": 5.0, "c2": None}, first, now=100.0)
    assert held == {"c1"} and wake == 105.0, "c2: no load balancer sends to it, it goes at once"
    held, wake = hold_for_drain({"c1": 5.0, "c3": 2.0}, first, now=103.0)
    assert held == {"c1", "c3"} and wake == 105.0
    held, wake = hold_for_drain({"c1": 5.0, "c3": 2.0}, first, now=104.0)
    assert held == {"c1", "c3"} and wake == 105.0, "each counted from when it was first seen leaving"
    held, wake = hold_for_drain({"c1": 5.0, "c3": 2.0}, first, now=105.0)
    assert held == set() and wake is None
    held, wake = hold_for_drain({}, first, now=106.0)
    assert held == set() and wake is None and first == {}, "what no longer leaves is forgotten"


def test_the_drain_timeout_a_service_gets_is_its_load_balancers() -> None:
    log, _, front = cluster(drain_timeout=3)
    ids = {s.name: s.id for s in log.state.services.values()}
    assert drain_timeout_of(log.state, ids["web"]) == 3.0
    assert drain_timeout_of(log.state, ids["db"]) == 3.0
    assert drain_timeout_of(log.state, front) is None
    assert drain_timeout_of(log.state, "nope") is None
    other = log("stack.create", name="other")["id"]
    lonely = log("service.create", stack=other, name="web", spec={"image": "corral/base"})["id"]
    assert drain_timeout_of(log.state, lonely) is None, "same name, another stack: no load balancer sends to it"
