"""The DNS answer builder (pure): names and answers from the replicated state, kept one change at a time."""

from __future__ import annotations

from typing import Any

import pytest

from agent.model.dns import DnsIndex, Rcode
from tests.unit.test_model_state import Log

ZONE = "default.corral.internal"


def cluster(health: bool = False, **spec: Any) -> tuple[Log, DnsIndex, str, list[str]]:
    """Stack ``shop`` with service ``db`` (2 containers, on h1 and h2) and ``web``; the index follows."""
    log = Log()
    index = DnsIndex()
    for name in ("h1", "h2"):
        assert log("host.register", name=name, address=f"10.77.0.1{name[1]}", cpus=2, memory=2**30)["ok"]
    stack = log("stack.create", name="shop")["id"]
    body: dict[str, Any] = {"image": "corral/base", "scale": 2, "ports": ["5432"], **spec}
    if health:
        body["health_check"] = {"type": "tcp", "port": 5432}
    db = log("service.create", stack=stack, name="db", spec=body)["id"]
    log("service.create", stack=stack, name="web", spec={"image": "corral/base"})
    assert log("placements.commit", service=db, placements=[[1, "h1"], [2, "h2"]])["ok"]
    index.apply(log.state, log.state.take_changes())
    return log, index, db, [i.id for i in log.state.instances_of(db)]


def report(log: Log, index: DnsIndex, inst: str, status: str = "running", ip: str | None = None,
           health: str | None = None) -> set[str]:
    host = log.state.instances[inst].host
    assert log("instance.status", id=inst, host=host, status=status, ip=ip, health=health)["ok"]
    return index.apply(log.state, log.state.take_changes())


def values(index: DnsIndex, name: str, qtype: str = "A", turn: int = 0) -> list[str]:
    return [r.value for r in index.answer(name, qtype, turn).records]


@pytest.mark.parametrize(("name", "qtype", "rcode", "answers"), [
    ("db.shop." + ZONE, "A", Rcode.NOERROR, ["10.42.1.2", "10.42.2.2"]),
    ("DB.Shop.Default.Corral.Internal.", "A", Rcode.NOERROR, ["10.42.1.2", "10.42.2.2"]),
    ("database.shop." + ZONE, "A", Rcode.NOERROR, ["10.42.1.2", "10.42.2.2"]),  # an alias
    ("shop-db-1.shop." + ZONE, "A", Rcode.NOERROR, ["10.42.1.2"]),  # a container's own name
    ("_5432._tcp.db.shop." + ZONE, "SRV", Rcode.NOERROR,
     ["0 0 5432 shop-db-1.shop." + ZONE, "0 0 5432 shop-db-2.shop." + ZONE]),
    ("2.1.42.10.in-addr.arpa", "PTR", Rcode.NOERROR, ["shop-db-1.shop." + ZONE]),
    ("web.shop." + ZONE, "A", Rcode.NOERROR, []),  # exists, no container running: no data, not NXDOMAIN
    ("db.shop." + ZONE, "AAAA", Rcode.NOERROR, []),
    ("shop." + ZONE, "A", Rcode.NOERROR, []),  # a domain with names under it
    (ZONE, "A", Rcode.NOERROR, []),
    ("nope.shop." + ZONE, "A", Rcode.NXDOMAIN, []),
    ("db.other." + ZONE, "A", Rcode.NXDOMAIN, []),
    ("9.9.42.10.in-addr.arpa", "PTR", Rcode.NXDOMAIN, []),
    ("example.com", "A", Rcode.OUTSIDE, []),
    ("corral.internal.example.com", "A", Rcode.OUTSIDE, []),
])
def test_names_and_answers(name: str, qtype: str, rcode: Rcode, answers: list[str]) -> None:
    log, index, _, (one, two) = cluster(aliases=["database"])
    report(log, index, one, ip="10.42.1.2")
    report(log, index, two, ip="10.42.2.2")
    answer = index.answer(name, qtype)
    assert answer.rcode is rcode
    assert sorted(r.value for r in answer.records) == answers
    assert (answer.zone is not None) == (rcode is not Rcode.OUTSIDE and not answers)


def test_a_container_name_exists_from_its_placement_and_gets_its_address_with_its_report() -> None:
    log, index, _, (one, _two) = cluster()
    placed = index.answer("shop-db-1.shop." + ZONE, "A")
    assert placed.rcode is Rcode.NOERROR and placed.records == ()
    touched = report(log, index, one, status="created", ip="10.42.1.2")
    assert "shop-db-1.shop." + ZONE in touched
    assert values(index, "shop-db-1.shop." + ZONE) == ["10.42.1.2"]
    assert values(index, "db.shop." + ZONE) == []  # created, not running: not in the service's answer


def test_only_running_containers_answer_and_a_stopped_one_leaves() -> None:
    log, index, _, (one, two) = cluster()
    report(log, index, one, ip="10.42.1.2")
    report(log, index, two, status="exited", ip=None)
    assert values(index, "db.shop." + ZONE) == ["10.42.1.2"]
    touched = report(log, index, one, status="exited", ip=None)
    assert "db.shop." + ZONE in touched and values(index, "db.shop." + ZONE) == []
    assert index.answer("2.1.42.10.in-addr.arpa", "PTR").rcode is Rcode.NXDOMAIN


def test_with_a_health_check_only_healthy_containers_answer() -> None:
    log, index, _, (one, two) = cluster(health=True)
    report(log, index, one, ip="10.42.1.2", health="starting")
    report(log, index, two, ip="10.42.2.2", health="healthy")
    assert values(index, "db.shop." + ZONE) == ["10.42.2.2"]
    report(log, index, two, ip="10.42.2.2", health="unhealthy")
    assert values(index, "db.shop." + ZONE) == []  # none healthy: an empty answer (documented)
    assert values(index, "shop-db-2.shop." + ZONE) == ["10.42.2.2"]  # its own name still answers
    report(log, index, one, ip="10.42.1.2", health="healthy")
    assert values(index, "db.shop." + ZONE) == ["10.42.1.2"]


def test_a_health_check_added_later_gates_the_running_ones() -> None:
    log, index, db, (one, _two) = cluster()
    report(log, index, one, ip="10.42.1.2")
    assert values(index, "db.shop." + ZONE) == ["10.42.1.2"]
    assert log("service.update", id=db, spec={"health_check": {"type": "tcp", "port": 5432}})["ok"]
    index.apply(log.state, log.state.take_changes())
    assert values(index, "db.shop." + ZONE) == []


def test_answers_rotate_per_turn() -> None:
    log, index, _, (one, two) = cluster()
    report(log, index, one, ip="10.42.1.2")
    report(log, index, two, ip="10.42.2.2")
    firsts = {values(index, "db.shop." + ZONE, turn=t)[0] for t in range(4)}
    assert firsts == {"10.42.1.2", "10.42.2.2"}


def test_aliases_follow_a_spec_change_and_removal_clears_every_name() -> None:
    log, index, db, (one, _two) = cluster(aliases=["database"])
    report(log, index, one, ip="10.42.1.2")
    assert log("service.update", id=db, spec={"aliases": ["pg"]})["ok"]
    touched = index.apply(log.state, log.state.take_changes())
    assert {"database.shop." + ZONE, "pg.shop." + ZONE} <= touched
    assert index.answer("database.shop." + ZONE, "A").rcode is Rcode.NXDOMAIN
    assert values(index, "pg.shop." + ZONE) == ["10.42.1.2"]
    stack = log.state.services[db].stack
    assert log("stack.remove", id=stack)["ok"]
    index.apply(log.state, log.state.take_changes())
    assert index.names == 0
    assert index.answer("shop." + ZONE, "A").rcode is Rcode.NXDOMAIN


def test_a_rebuild_gives_what_the_changes_gave() -> None:
    log, index, _, (one, two) = cluster(aliases=["database"])
    report(log, index, one, ip="10.42.1.2")
    report(log, index, two, ip="10.42.2.2")
    fresh = DnsIndex()
    fresh.rebuild(log.state)
    for name, qtype in (("db.shop." + ZONE, "A"), ("database.shop." + ZONE, "A"), ("_5432._tcp.db.shop." + ZONE, "SRV"),
                        ("2.2.42.10.in-addr.arpa", "PTR"), ("shop-db-2.shop." + ZONE, "A")):
        assert fresh.answer(name, qtype) == index.answer(name, qtype)


def test_the_work_per_change_does_not_grow_with_the_state() -> None:
    counts = []
    for services in (10, 100):
        log = Log()
        index = DnsIndex()
        assert log("host.register", name="h1", address="10.77.0.11", cpus=64, memory=2**40)["ok"]
        stack = log("stack.create", name="big")["id"]
        for n in range(services):
            sid = log("service.create", stack=stack, name=f"s{n}", spec={"image": "corral/base"})["id"]
            assert log("placements.commit", service=sid, placements=[[1, "h1"]])["ok"]
        index.apply(log.state, log.state.take_changes())
        inst = next(iter(log.state.instances))
        before = index.updates
        report(log, index, inst, ip="10.42.1.9")
        counts.append(index.updates - before)
    assert counts[0] == counts[1] == 1


def test_an_external_service_answers_its_addresses_or_a_cname_and_runs_nothing() -> None:
    log, index, _, _ = cluster()
    stack = next(iter(log.state.stacks))
    ips = log("service.create", stack=stack, name="legacy", spec={
        "kind": "external", "external": {"addresses": ["192.0.2.10", "192.0.2.11"]}, "aliases": ["old"]})
    cname = log("service.create", stack=stack, name="mail", spec={
        "kind": "external", "external": {"hostname": "smtp.example.net"}})
    assert ips["ok"] and cname["ok"], (ips, cname)
    touched = index.apply(log.state, log.state.take_changes())
    assert {"legacy.shop." + ZONE, "old.shop." + ZONE, "mail.shop." + ZONE} <= touched
    assert values(index, "legacy.shop." + ZONE) == ["192.0.2.10", "192.0.2.11"]
    assert values(index, "old.shop." + ZONE) == ["192.0.2.10", "192.0.2.11"]
    assert values(index, "legacy.shop." + ZONE, turn=1) == ["192.0.2.11", "192.0.2.10"]
    assert values(index, "legacy.shop." + ZONE, "AAAA") == []
    for qtype in ("A", "AAAA", "CNAME", "MX"):  # a CNAME is its owner's only record, whatever was asked
        answer = index.answer("mail.shop." + ZONE, qtype)
        assert [(r.type, r.value) for r in answer.records] == [("CNAME", "smtp.example.net")], qtype
    assert log.state.services[ips["id"]].spec.scale == 0
    assert log.state.instances_of(ips["id"]) == [] and log.state.instances_of(cname["id"]) == []
    # becomes a service of containers: the addresses leave with the spec change
    assert log("service.update", id=ips["id"], spec={"kind": "container", "image": "corral/base", "external": None,
                                                      "scale": 0})["ok"]
    touched = index.apply(log.state, log.state.take_changes())
    assert "legacy.shop." + ZONE in touched and values(index, "legacy.shop." + ZONE) == []


def test_a_link_answers_as_its_service_in_the_linking_services_domain_only() -> None:
    log, index, _, (one, two) = cluster()
    stack = next(iter(log.state.stacks))
    web = next(s.id for s in log.state.services.values() if s.name == "web")
    report(log, index, one, ip="10.42.1.2")
    assert log("service.update", id=web, spec={"links": {"database": "db", "cache": "redis"}})["ok"]
    touched = index.apply(log.state, log.state.take_changes())
    link = "database.web.shop." + ZONE
    assert link in touched and values(index, link) == ["10.42.1.2"]
    assert index.answer("database.shop." + ZONE, "A").rcode is Rcode.NXDOMAIN, "not a name of the stack"
    later = "cache.web.shop." + ZONE
    assert index.answer(later, "A").rcode is Rcode.NOERROR and values(index, later) == [], "redis not there yet"
    # the linked service's containers change: the link's answer changes with them (the cache drops it)
    touched = report(log, index, two, ip="10.42.2.2")
    assert link in touched and sorted(values(index, link)) == ["10.42.1.2", "10.42.2.2"]
    # the service a link names is made later, and removed: the link follows
    redis = log("service.create", stack=stack, name="redis", spec={
        "kind": "external", "external": {"addresses": ["192.0.2.7"]}})["id"]
    touched = index.apply(log.state, log.state.take_changes())
    assert later in touched and values(index, later) == ["192.0.2.7"]
    assert log("service.remove", id=redis)["ok"]
    touched = index.apply(log.state, log.state.take_changes())
    assert later in touched and values(index, later) == []
    # the link removed from the spec: its name goes
    assert log("service.update", id=web, spec={"links": {}})["ok"]
    touched = index.apply(log.state, log.state.take_changes())
    assert link in touched and index.answer(link, "A").rcode is Rcode.NXDOMAIN


def test_a_disconnected_hosts_containers_leave_the_answers_with_its_state_and_come_back() -> None:
    log, index, _, (one, two) = cluster()
    report(log, index, one, ip="10.42.1.2")
    report(log, index, two, ip="10.42.2.2")
    assert log("host.state", name="h2", state="reconnecting")["ok"]  # suspected: kept (no flapping)
    index.apply(log.state, log.state.take_changes())
    assert sorted(values(index, "db.shop." + ZONE)) == ["10.42.1.2", "10.42.2.2"]
    assert log("host.state", name="h2", state="disconnected")["ok"]
    touched = index.apply(log.state, log.state.take_changes())
    assert "db.shop." + ZONE in touched and values(index, "db.shop." + ZONE) == ["10.42.1.2"]
    assert values(index, "shop-db-2.shop." + ZONE) == ["10.42.2.2"], "its own name still says its address"
    assert log("host.state", name="h2", state="active")["ok"]
    index.apply(log.state, log.state.take_changes())
    assert sorted(values(index, "db.shop." + ZONE)) == ["10.42.1.2", "10.42.2.2"]
    fresh = DnsIndex()
    fresh.rebuild(log.state)
    assert sorted(values(fresh, "db.shop." + ZONE)) == ["10.42.1.2", "10.42.2.2"]
