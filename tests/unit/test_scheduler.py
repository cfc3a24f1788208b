"""The scheduler: properties (never over-commits, honours every rule, spreads evenly, total and
deterministic) with hypothesis, and the reasons it gives in table tests."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.model.scheduler import (
    Constraint,
    HostFacts,
    Placement,
    Request,
    Rules,
    Running,
    schedule,
)

MiB = 2**20
ZONES = ("a", "b", "c")


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[HostFacts], list[Running], list[Request]]:
    n = draw(st.integers(1, 6))
    hosts = [
        HostFacts(
            name=f"h{i}",
            schedulable=draw(st.booleans()) or i == 0,
            labels={"zone": draw(st.sampled_from(ZONES))},
            cpus=draw(st.sampled_from([1.0, 2.0, 4.0])),
            memory=draw(st.sampled_from([256, 512, 1024])) * MiB,
        )
        for i in range(n)
    ]
    running = []
    for host in hosts:
        used_cpu, used_mem = 0.0, 0
        for _ in range(draw(st.integers(0, 3))):
            cpus, mem = 0.5, 128 * MiB
            if used_cpu + cpus <= host.cpus and used_mem + mem <= host.memory:
                running.append(Running("old", host.name, cpus, mem))
                used_cpu, used_mem = used_cpu + cpus, used_mem + mem
    requests = []
    for k in range(draw(st.integers(1, 3))):
        must = tuple(
            Constraint("zone", draw(st.sampled_from(["==", "!="])), draw(st.sampled_from(ZONES)))
            for _ in range(draw(st.integers(0, 1)))
        )
        rules = Rules(must=must, strategy=draw(st.sampled_from(["spread", "pack"])),
                      one_per_host=draw(st.booleans()))
        requests.append(Request(f"s{k}", tuple(range(1, draw(st.integers(1, 8)) + 1)),
                                cpus=draw(st.sampled_from([0.0, 0.25, 1.0])),
                                memory=draw(st.sampled_from([0, 64, 300])) * MiB, rules=rules))
    return hosts, running, requests


@settings(max_examples=300, deadline=None)
@given(clusters())
def test_placements_never_over_commit_and_honour_every_rule(cluster: tuple[list[HostFacts], list[Running],
                                                                           list[Request]]) -> None:
    hosts, running, requests = cluster
    decision = schedule(requests, hosts, running)
    by_name = {h.name: h for h in hosts}
    by_service = {r.service: r for r in requests}
    cpu = Counter({h.name: 0.0 for h in hosts})
    mem = Counter({h.name: 0 for h in hosts})
    count: Counter[tuple[str, str]] = Counter()
    for inst in running:
        cpu[inst.host] += inst.cpus
        mem[inst.host] += inst.memory
    for p in decision.placements:
        req, host = by_service[p.service], by_name[p.host]
        assert host.schedulable
        assert all(rule.holds(host) for rule in req.rules.must)
        cpu[p.host] += req.cpus
        mem[p.host] += req.memory
        count[(p.service, p.host)] += 1
        if req.rules.one_per_host:
            assert count[(p.service, p.host)] == 1
    for host in hosts:
        assert cpu[host.name] <= host.cpus + 1e-9
        assert mem[host.name] <= host.memory
    asked = sorted((r.service, s) for r in requests for s in r.slots)
    answered = sorted([(p.service, p.slot) for p in decision.placements] +
                      [(u.service, u.slot) for u in decision.unplaced])
    assert answered == asked, "every slot is placed or explained, exactly once"
    assert all(u.reason.startswith("no host fits: ") for u in decision.unplaced)


@settings(max_examples=200, deadline=None)
@given(clusters())
def test_decisions_do_not_depend_on_the_order_hosts_are_given_in(cluster: tuple[list[HostFacts], list[Running],
                                                                              list[Request]]) -> None:
    hosts, running, requests = cluster
    assert schedule(requests, hosts, running) == schedule(requests, list(reversed(hosts)), running)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.integers(0, 60))
def test_spread_is_even_on_equal_hosts(n_hosts: int, scale: int) -> None:
    hosts = [HostFacts(f"h{i}", True, cpus=4, memory=4096 * MiB) for i in range(n_hosts)]
    decision = schedule([Request("web", tuple(range(1, scale + 1)))], hosts, [])
    per_host = Counter(p.host for p in decision.placements)
    counts = [per_host.get(h.name, 0) for h in hosts]
    assert sum(counts) == scale and not decision.unplaced
    assert max(counts) - min(counts) <= 1


def test_spread_fills_the_emptiest_hosts_first() -> None:
    hosts = [HostFacts(f"h{i}", True) for i in (1, 2, 3)]
    running = [Running("web", "h1"), Running("web", "h1"), Running("web", "h2")]
    decision = schedule([Request("web", (4, 5, 6))], hosts, running)
    assert Counter(p.host for p in decision.placements) == Counter({"h3": 2, "h2": 1})


def test_pack_fills_one_host_before_the_next() -> None:
    hosts = [HostFacts(f"h{i}", True, cpus=2, memory=0) for i in (1, 2)]
    decision = schedule([Request("batch", (1, 2, 3), cpus=1, rules=Rules(strategy="pack"))], hosts, [])
    assert [p.host for p in decision.placements] == ["h1", "h1", "h2"]


def test_should_rules_are_preferences() -> None:
    hosts = [HostFacts("h1", True, {"ssd": "no"}), HostFacts("h2", True, {"ssd": "yes"})]
    rules = Rules(should=(Constraint.parse("ssd==yes"),))
    placed = schedule([Request("db", (1, 2), rules=rules)], hosts, []).placements
    assert placed == (Placement("db", 1, "h2"), Placement("db", 2, "h2"))
    hosts[1] = HostFacts("h2", False, {"ssd": "yes"}, state="disconnected")
    assert schedule([Request("db", (1,), rules=rules)], hosts, []).placements == (Placement("db", 1, "h1"),)


@pytest.mark.parametrize(
    "hosts, request_, reason",
    [
        ([], Request("s", (1,)), "no hosts in the cluster"),
        ([HostFacts("h1", False, state="disconnected")], Request("s", (1,)), "no host fits: h1 is disconnected"),
        ([HostFacts("h1", True, {"zone": "b"})],
         Request("s", (1,), rules=Rules(must=(Constraint.parse("node.labels.zone == a"),))),
         "no host fits: h1 does not match zone==a"),
        ([HostFacts("h1", True, cpus=1)], Request("s", (1,), cpus=2), "h1 has 1 CPUs free, needs 2"),
        ([HostFacts("h1", True, memory=256 * MiB)], Request("s", (1,), memory=512 * MiB),
         "h1 has 256 MiB free, needs 512 MiB"),
        ([HostFacts("h1", True)], Request("s", (1, 2), rules=Rules(one_per_host=True)),
         "h1 already runs one (one per host)"),
    ],
)
def test_unplaced_instances_say_why(hosts: list[HostFacts], request_: Request, reason: str) -> None:
    decision = schedule([request_], hosts, [])
    assert decision.unplaced and reason in decision.unplaced[-1].reason


def test_hostname_constraint_pins_a_host() -> None:
    hosts = [HostFacts(f"h{i}", True) for i in (1, 2, 3)]
    rules = Rules(must=(Constraint.parse("node.hostname==h2"),))
    assert {p.host for p in schedule([Request("s", (1, 2, 3), rules=rules)], hosts, []).placements} == {"h2"}


@pytest.mark.parametrize("text", ["zone", "==a", "zone==", "zone<a"])
def test_bad_constraints_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not KEY==VALUE"):
        Constraint.parse(text)


SPREAD_CASES = [
    # hosts (name, zone label or None), instances placed already (host), slots to place → hosts chosen
    ([("h1", "a"), ("h2", "a"), ("h3", "b")], [], 2, ["h1", "h3"]),
    ([("h1", "a"), ("h2", "a"), ("h3", "b")], [], 4, ["h1", "h3", "h2", "h3"]),
    ([("h1", "a"), ("h2", "b"), ("h3", None)], [], 3, ["h1", "h2", "h3"]),
    ([("h1", "a"), ("h2", "a"), ("h3", "b")], ["h3", "h3"], 2, ["h1", "h2"]),
    ([("h1", "a"), ("h2", "b"), ("h3", "b"), ("h4", "b")], [], 2, ["h1", "h2"]),
]


@pytest.mark.parametrize("hosts, placed, slots, chosen", SPREAD_CASES)
def test_spread_over_a_label_evens_the_instances_over_its_values(
        hosts: list[tuple[str, str | None]], placed: list[str], slots: int, chosen: list[str]) -> None:
    facts = [HostFacts(name, True, {"zone": zone} if zone else {}) for name, zone in hosts]
    running = [Running("s", host) for host in placed]
    req = Request("s", tuple(range(1, slots + 1)), rules=Rules(spread=("zone",)))
    assert [p.host for p in schedule([req], facts, running).placements] == chosen


def test_node_role_is_the_hosts_role_never_a_label() -> None:
    hosts = [HostFacts("h1", True, {"node.role": "manager"}), HostFacts("h2", True, manager=True)]
    manager = Request("s", (1,), rules=Rules(must=(Constraint.parse("node.role == manager"),)))
    worker = Request("w", (1,), rules=Rules(must=(Constraint.parse("node.role==worker"),)))
    decision = schedule([manager, worker], hosts, [])
    assert [(p.service, p.host) for p in decision.placements] == [("s", "h2"), ("w", "h1")]
