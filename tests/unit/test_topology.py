"""A stack's topology: the graph from the replicated state, and its drawing."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

from agent.model import topology
from agent.model.topology import Edge, EdgeKind, NodeKind, Placement
from agent.ui.diagram import layout, render
from tests.unit.test_model_state import Log

SVG = "{http://www.w3.org/2000/svg}"


def shop() -> tuple[Log, str, dict[str, str]]:
    """Stack ``shop``: load balancer ``edge`` → ``web`` (2 containers) which links ``db`` as ``database``
    and depends on ``cache``; ``db`` an external service; ``edge`` also sends /api to ``api/backend``."""
    log = Log()
    for name in ("h1", "h2", "h3"):
        assert log("host.register", name=name, address=f"10.77.0.1{name[1]}", cpus=2, memory=2**30,
                   labels={"corral.haproxy": "yes"})["ok"]
    shop_id = log("stack.create", name="shop")["id"]
    api_id = log("stack.create", name="api")["id"]
    ids: dict[str, str] = {}

    def service(stack: str, name: str, **spec: Any) -> None:
        made = log("service.create", stack=stack, name=name, spec=spec)
        assert made["ok"], made
        ids[name] = made["id"]

    service(api_id, "backend", image="corral/base", scale=1, ports=["9000"])
    service(shop_id, "db", kind="external", external={"addresses": ["192.0.2.10"]})
    service(shop_id, "cache", image="redis", scale=1)
    service(shop_id, "web", image="corral/base", scale=2, links={"database": "db"},
            depends_on={"cache": "started"})
    service(shop_id, "edge", kind="load-balancer", mode="global", lb={"rules": [
        {"port": 80, "target": "web", "target_port": 8080},
        {"port": 80, "hostname": "shop.example.com", "path": "/api", "target": "api/backend", "target_port": 9000}]})
    for name, hosts in (("web", ["h1", "h2"]), ("cache", ["h2"]), ("edge", ["h3", "h1"]), ("backend", ["h1"])):
        assert log("placements.commit", service=ids[name],
                   placements=[[i + 1, h] for i, h in enumerate(hosts)])["ok"]
    web = log.state.instances_of(ids["web"])
    assert log("instance.status", id=web[0].id, host=web[0].host, status="running")["ok"]
    return log, shop_id, ids


def test_the_graph_of_a_stack() -> None:
    log, shop_id, ids = shop()
    graph = topology.build(log.state, shop_id)
    assert graph.stack == "shop" and graph.environment == "default"
    kinds = {n.key: (n.kind, n.layer) for n in graph.nodes}
    assert kinds == {
        "shop/edge": (NodeKind.LOAD_BALANCER, 0),
        "shop/web": (NodeKind.SERVICE, 1), "api/backend": (NodeKind.SERVICE, 1),
        "shop/cache": (NodeKind.SERVICE, 2),
        "shop/db": (NodeKind.EXTERNAL, 3),
    }
    assert set(graph.edges) == {
        Edge("shop/edge", "shop/web", EdgeKind.LB, ":80 → :8080"),
        Edge("shop/edge", "api/backend", EdgeKind.LB, ":80 shop.example.com/api → :9000"),
        Edge("shop/web", "shop/db", EdgeKind.LINK, "database → db"),
        Edge("shop/web", "shop/cache", EdgeKind.DEPENDS, "after started"),
    }
    web = graph.node("shop/web")
    assert (web.scale, web.running, web.service_id, web.detail) == (2, 1, ids["web"], "corral/base")
    assert web.placements == (Placement("h1", 1, 1), Placement("h2", 0, 1)) or \
        web.placements == (Placement("h1", 0, 1), Placement("h2", 1, 1))
    assert not web.healthy, "1 of 2 running"
    edge = graph.node("shop/edge")
    assert edge.detail == "ports 80" and (edge.scale, edge.running) == (2, 0), "global: one per host placed"
    assert graph.node("shop/db").detail == "192.0.2.10" and graph.node("shop/db").healthy
    assert graph.node("shop/db").placements == () and graph.node("shop/db").scale == 0
    assert graph.hosts == ("h1", "h2", "h3")
    assert graph.node("shop/cache").scale == 1
    assert [[n.key for n in layer] for layer in graph.layers()] == [
        ["shop/edge"], ["shop/web", "api/backend"], ["shop/cache"], ["shop/db"]]


def test_a_link_to_a_service_not_deployed_is_a_missing_node() -> None:
    log = Log()
    stack = log("stack.create", name="solo")["id"]
    assert log("service.create", stack=stack, name="app", spec={"image": "x", "links": {"redis": "redis"}})["ok"]
    graph = topology.build(log.state, stack)
    missing = graph.node("solo/redis")
    assert missing.kind is NodeKind.MISSING and missing.service_id is None and not missing.healthy
    assert graph.edges == (Edge("solo/app", "solo/redis", EdgeKind.LINK, "redis"),)
    assert [n.layer for n in graph.nodes] == [0, 1], "no empty column for the absent load balancers"


def test_a_cycle_of_links_is_drawn_not_looped_forever() -> None:
    log = Log()
    stack = log("stack.create", name="loop")["id"]
    for name, other in (("a", "b"), ("b", "a")):
        assert log("service.create", stack=stack, name=name, spec={"image": "x", "links": {other: other}})["ok"]
    graph = topology.build(log.state, stack)
    assert len(graph.nodes) == 2 and len(graph.edges) == 2
    assert all(0 <= n.layer <= 2 for n in graph.nodes)


def test_an_empty_stack() -> None:
    log = Log()
    stack = log("stack.create", name="empty")["id"]
    graph = topology.build(log.state, stack)
    assert graph.nodes == () and graph.edges == () and graph.layers() == []


def test_the_drawing_has_every_node_edge_and_host_badge_and_no_inline_style() -> None:
    log, shop_id, ids = shop()
    graph = topology.build(log.state, shop_id)
    svg = render(graph, href=lambda n: f"/ui/services/{n.service_id}" if n.service_id else None)
    root = ElementTree.fromstring(svg)  # well-formed XML
    nodes = root.findall(f".//{SVG}g[@data-key]")
    assert sorted(g.get("data-key") or "" for g in nodes) == sorted(n.key for n in graph.nodes)
    edges = [g for g in root.iter(f"{SVG}g") if "topo-edge" in (g.get("class") or "")]
    assert len(edges) == len(graph.edges) == 4
    assert {g.get("class") for g in edges} >= {"topo-edge topo-edge-lb", "topo-edge topo-edge-link",
                                               "topo-edge topo-edge-depends"}
    web = next(g for g in nodes if g.get("data-key") == "shop/web")
    assert "topo-degraded" in (web.get("class") or "")
    badges = [t.text for t in web.iter(f"{SVG}text") if t.text and t.text.startswith("h")]
    assert sorted(badges) in (["h1 0/1", "h2 1/1"], ["h1 1/1", "h2 0/1"])
    links = {a.get("href") for a in root.iter(f"{SVG}a")}
    assert f"/ui/services/{ids['web']}" in links and f"/ui/services/{ids['backend']}" in links
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert "api/backend" in labels, "a service of another stack is named with its stack"
    assert "style=" not in svg and "<script" not in svg


def test_the_layout_puts_layers_in_columns_without_overlap() -> None:
    log, shop_id, _ = shop()
    graph = topology.build(log.state, shop_id)
    boxes, width, height = layout(graph)
    for node in graph.nodes:
        box = boxes[node.key]
        assert box.x == 24 + node.layer * (box.w + 120) and box.x + box.w <= width and box.y + box.h <= height
    web, backend = boxes["shop/web"], boxes["api/backend"]
    assert web.x == backend.x and (web.y + web.h <= backend.y or backend.y + backend.h <= web.y)


def test_names_are_escaped_in_the_drawing() -> None:
    log = Log()
    stack = log("stack.create", name="esc")["id"]
    assert log("service.create", stack=stack, name="app", spec={"image": "img<&>\"x", "links": {"r": "r"}})["ok"]
    svg = render(topology.build(log.state, stack))
    ElementTree.fromstring(svg)
    assert "img&lt;&amp;&gt;" in svg and "img<" not in svg


def test_an_empty_stack_says_so() -> None:
    log = Log()
    stack = log("stack.create", name="empty")["id"]
    svg = render(topology.build(log.state, stack))
    assert "no services" in svg
    ElementTree.fromstring(svg)
