"""A stack's topology (:mod:`agent.model.topology`) drawn as SVG, on the server (pure; no script).

A layered drawing: one column per layer (load balancers, then services as deep as their links go,
then external services), nodes stacked in each; an edge is a curve from the right side of its source
to the left of its target, with an arrow and its label (the rule, the link's alias, the dependency).
Each node shows its name, its kind and what it is (image, ports, addresses), ``running/scale``, and a
badge per host its containers are on (``h2 1/2``: one of its two there runs). Colours and line styles
are CSS classes (``topo-*``, in ``agent/ui/static/topology.css``): the CSP forbids inline styles. A
node of a service is a link to its page when ``href`` gives one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from html import escape

from agent.model.topology import Node, NodeKind, Topology

NODE_W, COL_GAP, ROW_GAP, PAD = 230, 120, 28, 24
HEAD_H, BADGE_H, BADGE_W, BADGES_PER_ROW = 62, 20, 70, 3
KIND_TEXT = {NodeKind.LOAD_BALANCER: "load balancer", NodeKind.SERVICE: "service",
             NodeKind.EXTERNAL: "external", NodeKind.MISSING: "missing"}


@dataclasses.dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int


def node_height(node: Node) -> int:
    rows = -(-len(node.placements) // BADGES_PER_ROW)
    return HEAD_H + rows * (BADGE_H + 4) + (6 if rows else 0)


def layout(graph: Topology) -> tuple[dict[str, Box], int, int]:
    """Where each node goes (by key), and the drawing's width and height."""
    boxes: dict[str, Box] = {}
    height = 0
    layers = graph.layers()
    for col, nodes in enumerate(layers):
        y = PAD
        for node in nodes:
            h = node_height(node)
            boxes[node.key] = Box(PAD + col * (NODE_W + COL_GAP), y, NODE_W, h)
            y += h + ROW_GAP
        height = max(height, y - ROW_GAP + PAD)
    width = PAD * 2 + len(layers) * NODE_W + max(0, len(layers) - 1) * COL_GAP
    return boxes, max(width, 2 * PAD), max(height, 2 * PAD)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _node(node: Node, box: Box, href: str | None, own_stack: str) -> str:
    classes = f"topo-node topo-{node.kind.value}" + ("" if node.healthy else " topo-degraded") + \
        (" topo-stopped" if node.state == "stopped" else "")
    title = f"{node.key} ({KIND_TEXT[node.kind]}): {node.detail}"
    counts = "" if node.kind in (NodeKind.EXTERNAL, NodeKind.MISSING) else f"{node.running}/{node.scale} running"
    label = node.name if node.stack == own_stack else node.key  # another stack's service says whose it is
    parts = [f'<g class="{classes}" data-key="{escape(node.key)}">',
             f"<title>{escape(title)}</title>",
             f'<rect class="topo-box" x="{box.x}" y="{box.y}" width="{box.w}" height="{box.h}" rx="6"/>',
             f'<text class="topo-name" x="{box.x + 10}" y="{box.y + 20}">{escape(_short(label, 30))}</text>',
             f'<text class="topo-kind" x="{box.x + 10}" y="{box.y + 37}">{escape(KIND_TEXT[node.kind])} · '
             f"{escape(_short(node.detail, 26))}</text>"]
    if counts:
        parts.append(f'<text class="topo-count" x="{box.x + 10}" y="{box.y + 54}">{escape(counts)}</text>')
    for i, p in enumerate(node.placements):
        bx = box.x + 10 + (i % BADGES_PER_ROW) * (BADGE_W + 4)
        by = box.y + HEAD_H + (i // BADGES_PER_ROW) * (BADGE_H + 4)
        state = "topo-badge-ok" if p.running == p.total else "topo-badge-down"
        parts.append(f'<g class="topo-badge {state}"><title>{escape(p.host)}: {p.running} of {p.total} running'
                     f'</title><rect x="{bx}" y="{by}" width="{BADGE_W}" height="{BADGE_H}" rx="9"/>'
                     f'<text x="{bx + BADGE_W // 2}" y="{by + 14}" text-anchor="middle">'
                     f"{escape(_short(p.host, 6))} {p.running}/{p.total}</text></g>")
    parts.append("</g>")
    body = "".join(parts)
    return f'<a href="{escape(href)}">{body}</a>' if href else body


def render(graph: Topology, href: Callable[[Node], str | None] = lambda n: None) -> str:
    """The SVG document (an ``<svg>`` element to put in a page) of the topology."""
    boxes, width, height = layout(graph)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="topology" role="img" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" aria-label="topology of stack {escape(graph.stack)}">',
           f"<title>Topology of stack {escape(graph.stack)}</title>",
           '<defs><marker id="topo-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
           'orient="auto-start-reverse"><path class="topo-arrowhead" d="M0,0 L10,5 L0,10 z"/></marker></defs>']
    if not graph.nodes:
        out.append(f'<text class="topo-empty" x="{PAD}" y="{PAD + 14}">This stack has no services.</text>')
    fan: dict[str, int] = {}
    for edge in graph.edges:
        a, b = boxes[edge.source], boxes[edge.target]
        n = fan[edge.source] = fan.get(edge.source, 0) + 1
        x1, y1 = a.x + a.w, a.y + min(a.h - 8, 14 + 10 * n)
        x2, y2 = b.x, b.y + b.h // 2
        if x2 <= x1:  # same column (a cycle) or backwards: loop around below
            x2, y2 = b.x + b.w // 2, b.y + b.h
            x1, y1 = a.x + a.w // 2, a.y + a.h
            mid = max(y1, y2) + ROW_GAP
            path = f"M{x1},{y1} C{x1},{mid} {x2},{mid} {x2},{y2}"
            lx, ly = (x1 + x2) // 2, mid - 4
        else:
            dx = (x2 - x1) // 2
            path = f"M{x1},{y1} C{x1 + dx},{y1} {x2 - dx},{y2} {x2},{y2}"
            lx, ly = (x1 + x2) // 2, (y1 + y2) // 2 - 4
        out.append(f'<g class="topo-edge topo-edge-{edge.kind.value}"><title>{escape(edge.source)} → '
                   f'{escape(edge.target)}: {escape(edge.label)}</title>'
                   f'<path d="{path}" marker-end="url(#topo-arrow)"/>'
                   f'<text x="{lx}" y="{ly}" text-anchor="middle">{escape(_short(edge.label, 34))}</text></g>')
    for node in graph.nodes:
        out.append(_node(node, boxes[node.key], href(node), graph.stack))
    out.append("</svg>")
    return "\n".join(out)


__all__ = ["Box", "layout", "node_height", "render"]
