"""``GET /metrics``: the text parses as Prometheus', every family is there with its type and labels,
the scrape token's rules, and label sets that do not grow with what clients send."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import dns.message
import dns.rcode
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from agent.api.deps import DEPS
from agent.api.metrics import METRICS, LbRows
from agent.api.routes import ROUTES
from agent.node.lb import parse_stat
from tests.unit.fakes import ADMIN_PASSWORD, Harness, running_api

FAMILIES: dict[str, tuple[str, frozenset[str]]] = {
    "corral_build_info": ("gauge", frozenset({"version", "python"})),
    "corral_raft_commit_seconds": ("histogram", frozenset()),
    "corral_raft_persist_seconds": ("histogram", frozenset()),
    "corral_raft_heartbeats_unheld": ("counter", frozenset()),
    "corral_raft_leader_changes": ("counter", frozenset()),
    "corral_raft_loop_stalls": ("counter", frozenset()),
    "corral_raft_loop_stalled_seconds": ("counter", frozenset()),
    "corral_raft_is_leader": ("gauge", frozenset()),
    "corral_raft_term": ("gauge", frozenset()),
    "corral_raft_log_last_index": ("gauge", frozenset()),
    "corral_raft_commit_index": ("gauge", frozenset()),
    "corral_raft_applied_index": ("gauge", frozenset()),
    "corral_raft_leader_last_contact_seconds": ("gauge", frozenset()),
    "corral_gossip_members": ("gauge", frozenset({"state"})),
    "corral_gossip_health_score": ("gauge", frozenset()),
    "corral_gossip_probes": ("counter", frozenset()),
    "corral_gossip_probe_failures": ("counter", frozenset()),
    "corral_gossip_suspicions": ("counter", frozenset()),
    "corral_gossip_flaps": ("counter", frozenset()),
    "corral_gossip_drops": ("counter", frozenset({"reason"})),
    "corral_reconciler_pass_seconds": ("histogram", frozenset()),
    "corral_reconciler_drift_instances": ("gauge", frozenset()),
    "corral_reconciler_desired_running_containers": ("gauge", frozenset()),
    "corral_reconciler_observed_running_containers": ("gauge", frozenset()),
    "corral_reconciler_actions": ("counter", frozenset({"kind", "result"})),
    "corral_container_restarts": ("counter", frozenset({"reason"})),
    "corral_containers": ("gauge", frozenset({"status"})),
    "corral_containers_health": ("gauge", frozenset({"state"})),
    "corral_scheduler_unplaced_instances": ("gauge", frozenset({"environment"})),
    "corral_dns_queries": ("counter", frozenset()),
    "corral_dns_answers": ("counter", frozenset({"rcode"})),
    "corral_dns_dropped_queries": ("counter", frozenset({"reason"})),
    "corral_lb_backends": ("gauge", frozenset({"service", "state"})),
    "corral_lb_requests": ("counter", frozenset({"service"})),
    "corral_lb_errors": ("counter", frozenset({"service", "kind"})),
    "corral_http_request_duration_seconds": ("histogram", frozenset({"route", "method", "code"})),
}
HISTOGRAM_LABELS = {"le"}


@pytest.fixture
async def api() -> AsyncIterator[tuple[Harness, aiohttp.ClientSession]]:
    async with running_api(parts=True) as h, aiohttp.ClientSession() as session:
        yield h, session


async def call(session: aiohttp.ClientSession, h: Harness, method: str, path: str, token: str | None = None,
               body: Any = None) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with session.request(method, h.url + path, json=body, headers=headers) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def scrape(session: aiohttp.ClientSession, h: Harness, token: str) -> dict[str, Any]:
    status, kind, text = await call(session, h, "GET", "/metrics", token)
    assert status == 200, text
    assert kind.startswith("text/plain") and "version=0.0.4" in kind
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families: dict[str, Any], name: str, **labels: str) -> float:
    """The one sample called ``name`` (``…_total``, ``…_count``: a sample's name, not its family's)."""
    found = [s.value for f in families.values() for s in f.samples if s.name == name and all(
        s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, families[name].samples)
    return float(found[0])


async def test_the_text_parses_and_every_family_has_its_type_and_labels(api: tuple[Harness, Any]) -> None:
    h, session = api
    await call(session, h, "GET", "/v1/services/nope", h.token)  # a 404, by its route's template
    families = await scrape(session, h, h.token)
    missing = set(FAMILIES) - set(families)
    assert not missing, missing
    for name, (kind, labels) in FAMILIES.items():
        family = families[name]
        assert family.type == kind, (name, family.type)
        for sample in family.samples:
            extra = HISTOGRAM_LABELS if kind == "histogram" and sample.name.endswith("_bucket") else set()
            assert set(sample.labels) == labels | extra, (name, sample)
    assert all(f.name.startswith("corral_") for f in families.values())
    assert value(families, "corral_raft_is_leader") == 1, "the harness's single voter leads"
    assert value(families, "corral_raft_applied_index") >= 1
    assert value(families, "corral_raft_commit_seconds_count") >= 1, "the bootstrap's writes were timed"
    assert value(families, "corral_raft_persist_seconds_count") >= 1, "the bootstrap's Readys were written and timed"
    assert value(families, "corral_gossip_members", state="alive") == 1
    assert value(families, "corral_gossip_members", state="dead") == 0, "every state, zero included"
    build = families["corral_build_info"].samples[0]
    assert build.value == 1 and build.labels["version"]
    http = [s for s in families["corral_http_request_duration_seconds"].samples if s.name.endswith("_count")]
    assert any(s.labels == {"route": "/v1/services/{id}", "method": "GET", "code": "404"} and s.value == 1
               for s in http), http


async def test_dns_answers_by_rcode_and_reconciler_actions(api: tuple[Harness, Any]) -> None:
    h, session = api
    deps = h.app[DEPS]
    assert deps.dns is not None and deps.reconciler is not None
    answers: list[bytes] = []
    query = dns.message.make_query("nothing.corral.internal", "A")
    assert deps.dns.handle(query.to_wire(), "10.42.0.2", answers.append)
    assert deps.dns.handle(b"\x00" * 5, "10.42.0.2", answers.append) is False, "malformed: dropped"
    assert len(answers) == 1 and dns.message.from_wire(answers[0]).rcode() == dns.rcode.NXDOMAIN
    deps.reconciler.actions["create", "ok"] += 2
    families = await scrape(session, h, h.token)
    assert value(families, "corral_dns_answers_total", rcode="NXDOMAIN") == 1
    assert value(families, "corral_dns_queries_total") == 2
    assert value(families, "corral_dns_dropped_queries_total", reason="malformed") == 1
    assert value(families, "corral_reconciler_actions_total", kind="create", result="ok") == 2


async def _user(session: aiohttp.ClientSession, h: Harness, name: str, admin: bool = False) -> str:
    assert (await call(session, h, "POST", "/v1/users", h.token, {"name": name, "password": ADMIN_PASSWORD}))[0] == 201
    if admin:
        assert (await call(session, h, "PATCH", f"/v1/users/{name}", h.token, {"admin": True}))[0] == 200
    status, _, text = await call(session, h, "POST", "/v1/apikeys", h.token, {"user": name})
    assert status == 201, text
    return str(json.loads(text)["token"])


async def test_the_scrape_token_can_scrape_and_nothing_else(api: tuple[Harness, Any]) -> None:
    h, session = api
    status, _, text = await call(session, h, "POST", "/v1/apikeys", h.token, {"metrics": True, "ttl": None,
                                                                            "description": "prometheus"})
    assert status == 201, text
    made = json.loads(text)
    scraper = made["token"]
    assert made["metrics"] is True and made["environment"] is None and made["role"] is None
    assert "corral_raft_term" in await scrape(session, h, scraper)
    for method, path, body in (("GET", "/v1/auth/whoami", None), ("GET", "/v1/openapi.json", None),
                               ("GET", "/v1/stacks", None), ("GET", "/v1/members", None),
                               ("POST", "/v1/apikeys", {"description": "more"}),
                               ("POST", "/v1/auth/logout", None), ("GET", "/v1/users", None)):
        status, _, text = await call(session, h, method, path, scraper, body)
        assert status == 403, (method, path, status, text)
        assert json.loads(text)["error"] == "forbidden" and "metrics key" in json.loads(text)["message"]
    assert (await call(session, h, "GET", "/v1/health", scraper))[0] == 200, "public stays public"

    # without a credential, or with one that may not scrape: a JSON 401/403 and no figure
    for token, want in ((None, 401), ("crl_0123456789abcdef_" + "A" * 43, 401), ("nonsense", 401)):
        status, kind, text = await call(session, h, "GET", "/metrics", token)
        assert status == want and kind.startswith("application/json") and "corral_" not in text, (token, text)
        assert json.loads(text)["error"] == "unauthorized"
    member = await _user(session, h, "member")
    status, _, text = await call(session, h, "GET", "/metrics", member)
    assert status == 403 and "corral_" not in text and json.loads(text)["details"]["permission"] == "metrics", text

    # who may make one: an administrator, for an administrator, for the whole cluster
    for body, want in (({"metrics": True, "environment": "default"}, 400), ({"metrics": True, "role": "owner"}, 400),
                       ({"metrics": True, "user": "member"}, 400), ({"metrics": "yes"}, 400)):
        status, _, text = await call(session, h, "POST", "/v1/apikeys", h.token, body)
        assert status == want and json.loads(text)["details"]["field"] == "metrics", (body, text)
    status, _, text = await call(session, h, "POST", "/v1/apikeys", member, {"metrics": True})
    assert status == 403, text

    # a metrics key stops scraping when its owner is no administrator any more, and when revoked
    other = await _user(session, h, "ops", admin=True)
    status, _, text = await call(session, h, "POST", "/v1/apikeys", other, {"metrics": True})
    assert status == 201, text
    ops_scraper = json.loads(text)["token"]
    await scrape(session, h, ops_scraper)
    assert (await call(session, h, "PATCH", "/v1/users/ops", h.token, {"admin": False}))[0] == 200
    assert (await call(session, h, "GET", "/metrics", ops_scraper))[0] == 403
    assert (await call(session, h, "DELETE", f"/v1/apikeys/{made['id']}", h.token))[0] == 200
    assert (await call(session, h, "GET", "/metrics", scraper))[0] == 401


def _series(families: dict[str, Any]) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    out = set()
    for family in families.values():
        for s in family.samples:
            assert isinstance(s, Sample)
            out.add((s.name, tuple(sorted(s.labels.items()))))
    return out


async def test_label_sets_do_not_grow_with_what_clients_send(api: tuple[Harness, Any]) -> None:
    """Paths, ids and methods clients make up are not labels: a hundred new ones add no series."""
    h, session = api

    async def noise() -> None:
        for _ in range(25):
            junk = secrets.token_hex(6)
            await call(session, h, "GET", f"/v1/services/{junk}", h.token)
            await call(session, h, "GET", f"/{junk}/{junk}", h.token)
            await call(session, h, "DELETE", f"/v1/stacks/{junk}", h.token)
            await call(session, h, secrets.choice(("PROPFIND", "MKCOL", "LOCK", "PURGE")), "/v1/stacks", h.token)

    await scrape(session, h, h.token)  # a scrape is counted once it is answered: its own series first
    await noise()
    before = _series(await scrape(session, h, h.token))
    await noise()
    families = await scrape(session, h, h.token)
    after = _series(families)
    assert after == before, after ^ before
    templates = {r.path for r in ROUTES} | {"unmatched"}
    routes = {s.labels["route"] for s in families["corral_http_request_duration_seconds"].samples}
    assert routes <= templates, routes - templates
    assert {s.labels["method"] for s in families["corral_http_request_duration_seconds"].samples} <= {
        "GET", "POST", "DELETE", "other"}


SHOW_STAT = """# pxname,svname,status,scur,stot,req_tot,ereq,econ,eresp,mode
f_80,FRONTEND,OPEN,2,40,120,3,,,http
b_80_web,web-1-10.42.1.2,UP,1,60,,,1,0,http
b_80_web,web-2-10.42.2.2,DOWN,0,50,,,4,2,http
b_80_web,web-3-10.42.3.2,MAINT(via),0,10,,,0,0,http
b_80_web,BACKEND,UP,1,120,,,5,2,http
stats,FRONTEND,OPEN,0,9,9,0,,,http
"""


async def test_load_balancer_figures_from_haproxys_show_stat(api: tuple[Harness, Any]) -> None:
    """The rows the scrape read from a balancer's admin socket: servers by state, the frontends'
    requests, errors by kind, labelled by the service (no server name, no address)."""
    h, _ = api
    metrics = h.app[METRICS]
    metrics.collector.lb = LbRows({"web-server/edge": parse_stat(SHOW_STAT)})
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    assert value(families, "corral_lb_backends", service="web-server/edge", state="up") == 1
    assert value(families, "corral_lb_backends", service="web-server/edge", state="down") == 1
    assert value(families, "corral_lb_backends", service="web-server/edge", state="maint") == 1
    requests = value(families, "corral_lb_requests_total", service="web-server/edge")
    assert requests == 120, "Corral's frontends (f_), nothing else"
    assert value(families, "corral_lb_errors_total", service="web-server/edge", kind="request") == 3
    assert value(families, "corral_lb_errors_total", service="web-server/edge", kind="connection") == 5
    assert value(families, "corral_lb_errors_total", service="web-server/edge", kind="response") == 2
