"""``GET /metrics``: this agent in Prometheus' text format (prometheus_client), for a scrape token.

Theory of operation. Each agent has its own :class:`~prometheus_client.CollectorRegistry` (several
agents share a process in the unit tests; the default registry is global), holding two things:

- the HTTP histogram, observed by :func:`http_middleware` for every request (by route template, never
  by path);
- :class:`AgentCollector`, which reads the figures the agent's parts already keep (Raft's core and
  driver, the gossip core, the reconciler, the overlay's data path, the DNS server, the replicated
  state) when Prometheus asks, so nothing has to be kept in sync. The histograms that did not exist
  (Raft commits, reconcile passes) are ``prometheus_client`` histograms those parts own, unregistered,
  collected from here.

HAProxy's figures need its admin socket (I/O): :func:`scrape` asks every balancer of this host first
(each within a short timeout) and hands the rows to the collector, which is synchronous.

Every label comes from a closed set (states, reasons, rcodes, action kinds) or from what the
cluster bounds (peer host names, services, environments, route templates): docs/MONITORING.md lists
every family.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import platform
import re
from collections.abc import Iterable, Iterator

import dns.rcode
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from agent import __version__
from agent.api.deps import DEPS, ApiDeps
from agent.api.errors import Handler
from agent.model.entities import Health, Status
from agent.node.lb import LoadBalancers, RuntimeRefused
from agent.node.lbconfig import summarize
from mesh.gossip.swim import MemberState

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
"""Seconds. Few on purpose: every route × method × code has them all, and a scrape writes each one
(bench/metrics.py: the HTTP histogram is most of a busy agent's series)."""
LB_STAT_TIMEOUT = 1.0
"""Seconds a scrape waits for one HAProxy's ``show stat`` (a stuck one must not hold the scrape)."""
GOSSIP_COUNTERS = {
    "probes": "Probes this member sent", "probe_failures": "Probes that got no ack in time",
    "indirect_probes": "Indirect probes asked of others", "suspicions": "Members this one suspected",
    "refutations": "Suspicions of itself this member refuted", "deaths_declared": "Members declared dead",
    "flaps": "Members seen alive again after being suspected or declared dead",
}
DNS_COUNTERS = {
    "queries": "Queries received", "cache_hits": "Queries answered from the answer cache",
    "forwarded": "Queries forwarded upstream", "forward_timeouts": "Forwarded queries the upstream never answered",
}
DNS_DROPS = ("rate_limited", "oversized", "malformed")
LB_STATES = ("up", "down", "maint", "drain", "nolb", "unchecked")
RESTART_REASONS = ("exited", "unhealthy")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _state_of(status: str) -> str:
    """HAProxy's server status (``UP``, ``DOWN 1/2``, ``MAINT(via)``, ``no check``…) in LB_STATES."""
    if status.startswith("no check"):
        return "unchecked"
    word = re.match(r"[a-z]*", status.lower())
    return word.group() if word is not None and word.group() in LB_STATES else "down"


def _int(row: dict[str, str], field: str) -> int:
    try:
        return int(row.get(field) or 0)
    except ValueError:
        return 0


@dataclasses.dataclass
class LbRows:
    """``show stat`` rows of this host's balancers, by the service each serves (``stack/service``)."""

    by_service: dict[str, list[dict[str, str]]] = dataclasses.field(default_factory=dict)


class AgentCollector(Collector):
    def __init__(self, deps: ApiDeps) -> None:
        self.deps = deps
        self.lb = LbRows()

    def collect(self) -> Iterable[Metric]:
        yield from self._build()
        yield from self._raft()
        yield from self._gossip()
        yield from self._reconciler()
        yield from self._scheduler()
        yield from self._containers()
        yield from self._overlay()
        yield from self._dns()
        yield from self._lb()

    def _build(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("corral_build_info", "The agent's version and Python (always 1)",
                                 labels=["version", "python"])
        info.add_metric([__version__, platform.python_version()], 1)
        yield info

    def _raft(self) -> Iterator[Metric]:
        driver = self.deps.replica.raft
        core = driver.core
        yield from driver.commit_seconds.collect()
        yield from driver.persist_seconds.collect()
        yield CounterMetricFamily("corral_raft_heartbeats_unheld", "Heartbeats and their answers sent while this "
                                  "member's disk was writing, not held back until the write was done",
                                  value=driver.heartbeats_unheld)
        yield CounterMetricFamily("corral_raft_leader_changes", "Times the leader this member knows changed",
                                  value=driver.leader_changes)
        yield CounterMetricFamily("corral_raft_loop_stalls", "Times this member's loop got to its due Raft timer "
                                  "two ticks late or more (its process had no CPU); such time is not counted as "
                                  "its peers' silence", value=driver.stalls)
        yield CounterMetricFamily("corral_raft_loop_stalled_seconds", "Seconds of those stalls in all",
                                  value=driver.stalled_seconds)
        leader = GaugeMetricFamily("corral_raft_is_leader", "1 on the leader, 0 elsewhere")
        leader.add_metric([], 1 if driver.is_leader else 0)
        yield leader
        for name, doc, value in (("term", "The current term", core.term),
                                 ("log_last_index", "The last index in this member's log", core.last_index),
                                 ("commit_index", "The highest index known committed", core.commit),
                                 ("applied_index", "The highest index applied to the state machine", driver.applied)):
            yield GaugeMetricFamily(f"corral_raft_{name}", doc, value=value)
        contact = GaugeMetricFamily("corral_raft_leader_last_contact_seconds",
                                    "Since this member last heard from the leader (0 on the leader; absent before "
                                    "the first message)")
        if driver.is_leader:
            contact.add_metric([], 0.0)
        elif driver.leader_contact is not None:
            contact.add_metric([], asyncio.get_running_loop().time() - driver.leader_contact)
        yield contact

    def _gossip(self) -> Iterator[Metric]:
        node = self.deps.gossip
        counts = dict.fromkeys((s.value for s in MemberState), 0)
        for m in node.members():
            counts[m.state.value] += 1
        members = GaugeMetricFamily("corral_gossip_members", "Members as this node sees them, by state",
                                    labels=["state"])
        for state, n in counts.items():
            members.add_metric([state], n)
        yield members
        yield GaugeMetricFamily("corral_gossip_health_score",
                                "Lifeguard's awareness score: 0 is healthy, higher when this node misses acks",
                                value=node.core.health_score)
        stats = node.core.stats
        for key, doc in GOSSIP_COUNTERS.items():
            yield CounterMetricFamily(f"corral_gossip_{key}", doc, value=stats.get(key, 0))
        drops = CounterMetricFamily("corral_gossip_drops", "Packets dropped, by reason", labels=["reason"])
        for reason, n in sorted(node.stats()["drops"].items()):
            drops.add_metric([reason], n)
        yield drops

    def _reconciler(self) -> Iterator[Metric]:
        rec = self.deps.reconciler
        if rec is None:
            return
        yield from rec.pass_seconds.collect()
        yield GaugeMetricFamily("corral_reconciler_drift_instances",
                                "Instances whose container differed from the desired state when the last pass began",
                                value=rec.drift)
        yield GaugeMetricFamily("corral_reconciler_desired_running_containers",
                                "Containers this host should run", value=rec.desired_running)
        yield GaugeMetricFamily("corral_reconciler_observed_running_containers",
                                "Of those, the ones running when the last pass began", value=rec.observed_running)
        actions = CounterMetricFamily("corral_reconciler_actions", "Engine actions, by kind and result",
                                      labels=["kind", "result"])
        for (kind, result), n in sorted(rec.actions.items()):
            actions.add_metric([kind, result], n)
        yield actions
        restarts = CounterMetricFamily("corral_container_restarts",
                                       "Containers of this host started again (exited) or replaced (unhealthy)",
                                       labels=["reason"])
        for why in RESTART_REASONS:
            restarts.add_metric([why], rec.restarts.get(why, 0))
        yield restarts

    def _scheduler(self) -> Iterator[Metric]:
        state = self.deps.replica.state
        unplaced = GaugeMetricFamily("corral_scheduler_unplaced_instances",
                                     "Instances the scheduler found no host for (the same on every node: use max)",
                                     labels=["environment"])
        counts = dict.fromkeys(state.environments, 0)
        for service in state.services.values():
            stack = state.stacks.get(service.stack)
            if service.unplaced and stack is not None:
                counts[stack.environment] = counts.get(stack.environment, 0) + len(service.unplaced)
        for env, n in sorted(counts.items()):
            unplaced.add_metric([env], n)
        yield unplaced

    def _containers(self) -> Iterator[Metric]:
        state = self.deps.replica.state
        by_status = dict.fromkeys((s.value for s in Status), 0)
        by_health = dict.fromkeys([*(h.value for h in Health), "none"], 0)
        for inst in state.instances_on(self.deps.node.name):
            by_status[inst.status.value] += 1
            by_health[inst.health.value if inst.health is not None else "none"] += 1
        status = GaugeMetricFamily("corral_containers", "This host's containers as last reported, by status",
                                   labels=["status"])
        for key, n in by_status.items():
            status.add_metric([key], n)
        yield status
        health = GaugeMetricFamily("corral_containers_health", "This host's containers by health (none: no check)",
                                   labels=["state"])
        for key, n in by_health.items():
            health.add_metric([key], n)
        yield health

    def _overlay(self) -> Iterator[Metric]:
        st = self.deps.overlay.status()
        peers = st.get("peers")
        if not isinstance(peers, dict):
            return  # the overlay is off or starting: no data path to read
        up = GaugeMetricFamily("corral_overlay_peer_up", "1 while the path to the peer answers probes",
                               labels=["peer"])
        traffic = CounterMetricFamily("corral_overlay_peer_bytes", "Inner bytes to and from the peer",
                                      labels=["peer", "direction"])
        packets = CounterMetricFamily("corral_overlay_peer_packets", "Inner packets to and from the peer",
                                      labels=["peer", "direction"])
        rtt = GaugeMetricFamily("corral_overlay_peer_rtt_seconds", "The last probe's round trip", labels=["peer"])
        shakes = CounterMetricFamily("corral_overlay_peer_handshakes", "Session handshakes completed",
                                     labels=["peer"])
        for name, p in sorted(peers.items()):
            up.add_metric([name], 1 if p.get("state") == "up" else 0)
            for direction in ("in", "out"):
                traffic.add_metric([name, direction], p.get(f"bytes_{direction}") or 0)
                packets.add_metric([name, direction], p.get(f"packets_{direction}") or 0)
            if p.get("rtt_ms") is not None:
                rtt.add_metric([name], p["rtt_ms"] / 1000)
            shakes.add_metric([name], p.get("handshakes") or 0)
        yield from (up, traffic, packets, rtt, shakes)
        drops = CounterMetricFamily("corral_overlay_drops", "Packets the data path dropped, by reason",
                                    labels=["reason"])
        raw = st.get("drops")
        for reason, n in sorted(raw.items() if isinstance(raw, dict) else ()):
            drops.add_metric([str(reason)], n)
        yield drops

    def _dns(self) -> Iterator[Metric]:
        server = self.deps.dns
        if server is None:
            return
        c = server.counters
        for key, doc in DNS_COUNTERS.items():
            yield CounterMetricFamily(f"corral_dns_{key}", doc, value=getattr(c, key))
        dropped = CounterMetricFamily("corral_dns_dropped_queries", "Queries dropped unanswered, by reason",
                                      labels=["reason"])
        for key in DNS_DROPS:
            dropped.add_metric([key], getattr(c, key))
        yield dropped
        answers = CounterMetricFamily("corral_dns_answers", "Answers sent, by rcode", labels=["rcode"])
        for code, n in sorted(server.rcodes.items()):
            answers.add_metric([dns.rcode.to_text(dns.rcode.Rcode(code)) if code in _RCODES else str(code)], n)
        yield answers

    def _lb(self) -> Iterator[Metric]:
        if self.deps.load_balancers is None:
            return
        backends = GaugeMetricFamily("corral_lb_backends", "Servers of this host's load balancers, by state",
                                     labels=["service", "state"])
        requests = CounterMetricFamily("corral_lb_requests", "HTTP requests (TCP: connections) the frontends took",
                                       labels=["service"])
        errors = CounterMetricFamily("corral_lb_errors", "Errors: bad requests, failed connections to servers, "
                                     "bad responses", labels=["service", "kind"])
        for service, rows in sorted(self.lb.by_service.items()):
            states = dict.fromkeys(LB_STATES, 0)
            for backend in summarize(rows)["backends"]:  # type: ignore[attr-defined]  # the API's reading of them
                for server in backend["servers"]:
                    states[_state_of(str(server["state"]))] += 1
            frontends = [r for r in rows if r.get("svname") == "FRONTEND" and r.get("pxname", "").startswith("f_")]
            backend_rows = [r for r in rows if r.get("svname") == "BACKEND" and r.get("pxname", "").startswith("b_")]
            for state, n in states.items():
                backends.add_metric([service, state], n)
            requests.add_metric([service], sum(_int(r, "req_tot") or _int(r, "stot") for r in frontends))
            errors.add_metric([service, "request"], sum(_int(r, "ereq") for r in frontends))
            errors.add_metric([service, "connection"], sum(_int(r, "econ") for r in backend_rows))
            errors.add_metric([service, "response"], sum(_int(r, "eresp") for r in backend_rows))
        yield from (backends, requests, errors)


_RCODES = frozenset(int(r) for r in dns.rcode.Rcode)


async def _lb_rows(deps: ApiDeps, balancers: LoadBalancers) -> LbRows:
    state = deps.replica.state
    rows = LbRows()
    for instance in list(balancers.balancers):
        inst = state.instances.get(instance)
        service = state.services.get(inst.service) if inst is not None else None
        stack = state.stacks.get(service.stack) if service is not None else None
        if service is None or stack is None:
            continue
        with contextlib.suppress(OSError, TimeoutError, RuntimeRefused):  # this scrape goes without it
            async with asyncio.timeout(LB_STAT_TIMEOUT):
                rows.by_service.setdefault(f"{stack.name}/{service.name}", []).extend(await balancers.stats(instance))
    return rows


class Metrics:
    """One agent's registry: the HTTP histogram and the collector."""

    def __init__(self, deps: ApiDeps) -> None:
        # No ``_created`` series beside every counter and histogram: they double a scrape's lines for a
        # figure Prometheus does not use (the process' start is in the agent's uptime). The switch is
        # prometheus_client's (process-wide; every agent wants the same).
        disable_created_metrics()  # type: ignore[no-untyped-call]  # (prometheus_client leaves it unannotated)
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = AgentCollector(deps)
        self.registry.register(self.collector)
        self.http = Histogram("corral_http_request_duration_seconds", "API requests, by route template, method "
                              "and status code", ["route", "method", "code"], buckets=HTTP_BUCKETS,
                              registry=self.registry)

    async def scrape(self, deps: ApiDeps) -> bytes:
        if deps.load_balancers is not None:
            self.collector.lb = await _lb_rows(deps, deps.load_balancers)
        return generate_latest(self.registry)


METRICS = web.AppKey("metrics", Metrics)


def route_of(request: web.Request) -> str:
    """The route template (``/v1/services/{id}``), never the path: a label set bounded by the route table."""
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def http_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    started = loop.time()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        method = request.method if request.method in METHODS else "other"
        request.app[METRICS].http.labels(route_of(request), method, str(status)).observe(
            loop.time() - started)


async def metrics(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    body = await request.app[METRICS].scrape(deps)
    # the text format generate_latest writes (0.0.4), which every Prometheus reads
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


__all__ = ["METRICS", "AgentCollector", "Metrics", "http_middleware", "metrics", "route_of"]
