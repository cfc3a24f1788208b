"""A stack's topology, the "schema diagram" of Rancher's UI, as a graph (pure).

From the replicated state: the stack's services as nodes, of three kinds — load balancers, services
of containers, external services (a name for something outside the cluster) — and services of other
stacks the stack's load balancers send to; edges for what connects them:

- ``lb``: a load balancer's rule (or its default) sends traffic to a service's port (the label
  says which listen port, hostname and path);
- ``link``: a compose ``links`` entry: the alias resolves, in the service's containers, to the target;
- ``depends``: compose ``depends_on``: the service's containers start after the target's.

Each node says on which hosts its containers (or a load balancer's HAProxies) are, with how many
running of how many there. A target that does not exist (a link to a service not deployed yet) is a
node of kind ``missing``, so the drawing shows the broken edge rather than hiding it.

Layers (for the drawing's columns): load balancers first; then services, each one column right of
the rightmost service that links to or depends on it (cycles are cut after as many steps as there are
services); external and missing services last.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import Counter
from collections.abc import Iterable

from agent.model.entities import Instance, Service, Status
from agent.model.lb import ServiceKind
from agent.model.spec import ServiceMode
from agent.model.state import ClusterState


class NodeKind(enum.StrEnum):
    LOAD_BALANCER = "load-balancer"
    SERVICE = "service"
    EXTERNAL = "external"
    MISSING = "missing"


class EdgeKind(enum.StrEnum):
    LB = "lb"
    LINK = "link"
    DEPENDS = "depends"


@dataclasses.dataclass(frozen=True)
class Placement:
    """A node's containers on one host."""

    host: str
    running: int
    total: int


@dataclasses.dataclass(frozen=True)
class Node:
    key: str
    """``STACK/SERVICE``: unique in the graph (a service of another stack is one too)."""
    kind: NodeKind
    name: str
    stack: str
    service_id: str | None
    """None for a missing service."""
    state: str
    detail: str
    """What the node is: its image, a load balancer's listen ports, an external service's answers."""
    scale: int = 0
    running: int = 0
    placements: tuple[Placement, ...] = ()
    layer: int = 0
    healthy: bool = True
    """False when fewer containers run than its scale asks for (or any is unhealthy)."""


@dataclasses.dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: EdgeKind
    label: str


@dataclasses.dataclass(frozen=True)
class Topology:
    stack: str
    environment: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host a node of the stack has a container on, by name."""
        return tuple(sorted({p.host for n in self.nodes for p in n.placements}))

    def node(self, key: str) -> Node:
        return next(n for n in self.nodes if n.key == key)

    def layers(self) -> list[list[Node]]:
        out: list[list[Node]] = [[] for _ in range(max((n.layer for n in self.nodes), default=-1) + 1)]
        for n in self.nodes:
            out[n.layer].append(n)
        return out


def _placements(instances: Iterable[Instance]) -> tuple[Placement, ...]:
    total: Counter[str] = Counter()
    running: Counter[str] = Counter()
    for inst in instances:
        total[inst.host] += 1
        if inst.status is Status.RUNNING:
            running[inst.host] += 1
    return tuple(Placement(h, running[h], total[h]) for h in sorted(total))


def _detail(service: Service) -> str:
    spec = service.spec
    if spec.kind is ServiceKind.LOAD_BALANCER and spec.lb is not None:
        return "ports " + ", ".join(str(p) for p in spec.lb.ports())
    if spec.kind is ServiceKind.EXTERNAL and spec.external is not None:
        return spec.external.hostname or ", ".join(spec.external.addresses)
    return spec.image


def _node(state: ClusterState, service: Service, stack_name: str) -> Node:
    kind = {ServiceKind.LOAD_BALANCER: NodeKind.LOAD_BALANCER, ServiceKind.EXTERNAL: NodeKind.EXTERNAL}.get(
        service.spec.kind, NodeKind.SERVICE)
    instances = [i for i in state.instances.values() if i.service == service.id]
    running = sum(1 for i in instances if i.status is Status.RUNNING)
    unhealthy = any(i.health is not None and i.health.value == "unhealthy" for i in instances)
    # a global service (a load balancer: one per host) asks for one where it is placed, as the API says
    scale = 0 if kind is NodeKind.EXTERNAL else len(instances) if service.spec.mode is ServiceMode.GLOBAL \
        else service.spec.scale
    return Node(key=f"{stack_name}/{service.name}", kind=kind, name=service.name, stack=stack_name,
                service_id=service.id, state=service.state.value, detail=_detail(service), scale=scale,
                running=running, placements=_placements(instances),
                healthy=kind is NodeKind.EXTERNAL or (running >= scale and not unhealthy))


def _rule_label(port: int, hostname: str | None, path: str | None, target_port: int) -> str:
    where = "".join(x for x in (hostname or "", path or "") if x)
    return f":{port}{' ' + where if where else ''} → :{target_port}"


def build(state: ClusterState, stack_id: str) -> Topology:
    """The topology of the stack ``stack_id`` (KeyError when there is no such stack)."""
    stack = state.stacks[stack_id]
    by_name: dict[tuple[str, str], Service] = {}
    stack_names = {s.id: s.name for s in state.stacks.values() if s.environment == stack.environment}
    for service in state.services.values():
        if service.stack in stack_names:
            by_name[(stack_names[service.stack], service.name)] = service
    own = sorted(state.services_of(stack_id), key=lambda s: s.name)
    nodes: dict[str, Node] = {f"{stack.name}/{s.name}": _node(state, s, stack.name) for s in own}
    edges: list[Edge] = []

    def reach(stack_name: str, name: str) -> str:
        key = f"{stack_name}/{name}"
        if key not in nodes:
            found = by_name.get((stack_name, name))
            nodes[key] = _node(state, found, stack_name) if found is not None else Node(
                key=key, kind=NodeKind.MISSING, name=name, stack=stack_name, service_id=None, state="missing",
                detail="no such service", healthy=False)
        return key

    for service in own:
        source, spec = f"{stack.name}/{service.name}", service.spec
        if spec.lb is not None:
            for rule in spec.lb.rules:
                edges.append(Edge(source, reach(rule.target.stack or stack.name, rule.target.service), EdgeKind.LB,
                                  _rule_label(rule.port, rule.hostname, rule.path, rule.target.port)))
            if spec.lb.default is not None:
                d = spec.lb.default
                edges.append(Edge(source, reach(d.stack or stack.name, d.service), EdgeKind.LB,
                                  f"default → :{d.port}"))
        for alias, target in sorted(spec.links.items()):
            edges.append(Edge(source, reach(stack.name, target), EdgeKind.LINK,
                              target if alias == target else f"{alias} → {target}"))
        for target, condition in sorted(spec.depends_on.items()):
            edges.append(Edge(source, reach(stack.name, target), EdgeKind.DEPENDS, f"after {condition.value}"))
    layered = _layers(list(nodes.values()), edges)
    order = {NodeKind.LOAD_BALANCER: 0, NodeKind.SERVICE: 1, NodeKind.EXTERNAL: 2, NodeKind.MISSING: 3}
    return Topology(stack.name, stack.environment,
                    tuple(sorted(layered, key=lambda n: (n.layer, order[n.kind], n.stack != stack.name, n.key))),
                    tuple(dict.fromkeys(edges)))


def _layers(nodes: list[Node], edges: list[Edge]) -> list[Node]:
    kinds = {n.key: n.kind for n in nodes}
    layer = {n.key: 0 if n.kind is NodeKind.LOAD_BALANCER else 1 for n in nodes}
    between = [e for e in edges if kinds[e.source] is NodeKind.SERVICE and kinds[e.target] is NodeKind.SERVICE
               and e.source != e.target]
    for _ in range(len(nodes)):  # longest path; a cycle stops growing after as many rounds as nodes
        changed = False
        for e in between:
            if layer[e.target] < layer[e.source] + 1:
                layer[e.target] = layer[e.source] + 1
                changed = True
        if not changed:
            break
    last = max((v for k, v in layer.items() if kinds[k] is not NodeKind.LOAD_BALANCER), default=0)
    for key, kind in kinds.items():
        if kind in (NodeKind.EXTERNAL, NodeKind.MISSING):
            layer[key] = last + 1 if any(k is NodeKind.SERVICE for k in kinds.values()) else 1
    used = sorted(set(layer.values()))  # no empty column (a stack without load balancers starts at 0)
    dense = {v: i for i, v in enumerate(used)}
    return [dataclasses.replace(n, layer=dense[layer[n.key]]) for n in nodes]


__all__ = ["Edge", "EdgeKind", "Node", "NodeKind", "Placement", "Topology", "build"]
