"""The web UI's rules on the agent's real app (aiohttp's client, a real single-voter Raft): the session
cookie, redirects and 401s without one, the Origin and CSRF checks (403, nothing changed), the CSP and
the other headers, the page table against the app and docs/ACCESS.md, the vendored files' sums."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.api.deps import DEPS
from agent.node.history import History, Reading
from agent.node.stats import Stats
from agent.ui import guard
from agent.ui.pages import PAGES, Kind
from agent.ui.static import ROOT
from tests.unit.fakes import ADMIN_PASSWORD, Harness, running_api

DOCS = Path(__file__).resolve().parents[2] / "docs"


class Browser:
    """What a browser does that matters here: keep the session cookie, send Origin, never follow redirects."""

    def __init__(self, h: Harness, session: aiohttp.ClientSession) -> None:
        self.h, self.session = h, session
        self.cookies: dict[str, str] = {}

    @property
    def origin(self) -> str:
        return self.h.url

    async def request(self, method: str, path: str, data: Any = None, headers: dict[str, str] | None = None,
                      origin: str | None = "own") -> aiohttp.ClientResponse:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if origin is not None and method != "GET":
            sent["Origin"] = self.origin if origin == "own" else origin
        resp = await self.session.request(method, self.h.url + path, data=data, headers=sent, allow_redirects=False)
        await resp.read()
        for header in resp.headers.getall("Set-Cookie", []):
            for name, morsel in SimpleCookie(header).items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return resp

    async def login(self, user: str = "admin", password: str = ADMIN_PASSWORD) -> aiohttp.ClientResponse:
        return await self.request("POST", "/login", {"user": user, "password": password, "next": "/"})

    async def csrf(self) -> str:
        resp = await self.request("GET", "/")
        match = re.search(r'<meta name="csrf-token" content="([^"]+)">', await resp.text())
        assert match, "every page a session sees carries its CSRF token"
        return match.group(1)


@pytest.fixture
async def ui() -> AsyncIterator[Browser]:
    async with running_api() as h, aiohttp.ClientSession() as session:
        yield Browser(h, session)


async def test_login_sets_a_strict_session_cookie_and_logout_ends_the_session(ui: Browser) -> None:
    resp = await ui.login()
    assert resp.status == 303 and resp.headers["Location"] == "/"
    cookie = next(h for h in resp.headers.getall("Set-Cookie") if h.startswith(guard.SESSION_COOKIE))
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "secure", "path", "max-age", "samesite"} <= attributes
    assert "samesite=strict" in cookie.lower() and "path=/" in cookie.lower()
    token = ui.cookies[guard.SESSION_COOKIE]
    key_id = token.split("_")[1]
    key = ui.h.replica.state.access.keys[key_id]
    assert key.session and key.owner == "admin"  # the API's own session record
    page = await ui.request("GET", "/")
    assert page.status == 200 and "admin" in await page.text()
    resp = await ui.request("POST", "/logout", {"csrf_token": await ui.csrf()})
    assert resp.status == 303 and resp.headers["Location"] == "/login"
    assert key_id not in ui.h.replica.state.access.keys  # revoked everywhere
    ui.cookies[guard.SESSION_COOKIE] = token  # the old cookie, kept by someone: no longer a session
    assert (await ui.request("GET", "/")).status == 303


async def test_a_wrong_password_is_the_apis_401_and_the_same_limiter(ui: Browser) -> None:
    for _ in range(5):
        resp = await ui.login(password="not-the-password")
        assert resp.status == 401 and "wrong user name or password" in await resp.text()
    assert guard.SESSION_COOKIE not in ui.cookies
    resp = await ui.login()  # the right one, after five failures: the limiter the API's login uses
    assert resp.status == 429 and "Retry-After" in resp.headers
    async with ui.session.post(ui.h.url + "/v1/auth/login", json={"user": "admin", "password": ADMIN_PASSWORD}) as r:
        assert r.status == 429


async def test_without_a_session_a_page_redirects_to_login_and_a_fragment_is_401(ui: Browser) -> None:
    resp = await ui.request("GET", "/?env=default")
    assert resp.status == 303 and resp.headers["Location"] == "/login?next=/?env=default"
    for page in PAGES:
        if page.kind in (Kind.FRAGMENT, Kind.STREAM) and "{" not in page.path:
            resp = await ui.request("GET", page.path)
            assert resp.status == 401, page.path
            assert (await resp.json())["error"] == "unauthorized"
    resp = await ui.request("POST", "/logout", {"csrf_token": "x"})
    assert resp.status == 401
    ui.cookies[guard.SESSION_COOKIE] = "crl_0123456789abcdef_" + "A" * 43  # forged
    assert (await ui.request("GET", "/")).status == 303


async def test_a_next_that_leaves_the_ui_goes_home(ui: Browser) -> None:
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)"):
        resp = await ui.request("POST", "/login", {"user": "admin", "password": ADMIN_PASSWORD, "next": target})
        assert resp.status == 303 and resp.headers["Location"] == "/", target


@pytest.mark.parametrize("how", ["missing", "forged", "another session's"])
async def test_an_action_without_this_sessions_csrf_token_is_403_and_changes_nothing(ui: Browser, how: str) -> None:
    await ui.login()
    token = {"missing": None, "forged": "A" * 43, "another session's": guard.csrf_token("crl_x")}[how]
    form = {} if token is None else {"csrf_token": token}
    keys_before = set(ui.h.replica.state.access.keys)
    resp = await ui.request("POST", "/logout", form)
    assert resp.status == 403
    body = await resp.json()
    assert body["error"] == "forbidden" and body["details"]["check"] == "csrf"
    assert set(ui.h.replica.state.access.keys) == keys_before  # still logged in: nothing changed
    assert (await ui.request("GET", "/")).status == 200


async def test_the_csrf_token_is_taken_from_the_header_htmx_sends(ui: Browser) -> None:
    await ui.login()
    resp = await ui.request("POST", "/logout", headers={guard.CSRF_HEADER: await ui.csrf()})
    assert resp.status == 303


@pytest.mark.parametrize("origin", ["https://evil.example", "null", None])
async def test_an_action_from_another_origin_is_403_even_with_the_token(ui: Browser, origin: str | None) -> None:
    await ui.login()
    csrf = await ui.csrf()
    resp = await ui.request("POST", "/logout", {"csrf_token": csrf}, origin=origin)
    assert resp.status == 403
    assert (await resp.json())["details"]["check"] == "origin"
    assert (await ui.request("GET", "/")).status == 200
    # the login form too: a page elsewhere cannot log a visitor in as someone else
    resp = await ui.request("POST", "/login", {"user": "admin", "password": ADMIN_PASSWORD}, origin=origin)
    assert resp.status == 403


async def test_a_referer_of_this_origin_stands_in_for_a_missing_origin(ui: Browser) -> None:
    await ui.login()
    resp = await ui.request("POST", "/logout", {"csrf_token": await ui.csrf()}, origin=None,
                            headers={"Referer": ui.h.url + "/services/x"})
    assert resp.status == 303


async def test_every_ui_answer_carries_a_strict_csp_and_the_usual_headers(ui: Browser) -> None:
    await ui.login()
    for path in ("/", "/login", "/static/ui.js", "/no-such-page"):
        resp = await ui.request("GET", path)
        csp = resp.headers.get("Content-Security-Policy", "")
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'" and directives["frame-ancestors"] == "'none'", path
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'", path
        assert "unsafe" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
    page = await (await ui.request("GET", "/")).text()
    assert "<script>" not in page and " style=" not in page and " on" + "click=" not in page
    async with ui.session.get(ui.h.url + "/v1/health") as api:
        assert "Content-Security-Policy" not in api.headers  # the API's answers are JSON, their own


async def test_static_files_are_the_packages_and_nothing_else(ui: Browser) -> None:
    resp = await ui.request("GET", "/static/vendor/htmx.min.js")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/javascript")
    for path in ("/static/../guard.py", "/static/%2e%2e/guard.py", "/static/nothing.js"):
        assert (await ui.request("GET", path)).status == 404, path


def test_the_vendored_files_are_those_vendor_md_names() -> None:
    text = (ROOT / "vendor" / "VENDOR.md").read_text()
    rows = re.findall(r"`([\w.]+)` \(`dist/[\w.]+`\) \| `([0-9a-f]{64})`", text)
    assert len(rows) == 3
    for name, digest in rows:
        assert hashlib.sha256((ROOT / "vendor" / name).read_bytes()).hexdigest() == digest, name
    for licence in ("LICENSE.htmx", "LICENSE.uPlot"):
        assert (ROOT / "vendor" / licence).stat().st_size > 0


def test_every_ui_route_is_in_docs_access_md_with_its_permission() -> None:
    text = (DOCS / "ACCESS.md").read_text()
    documented = dict(re.findall(r"^\| `((?:GET|POST) /[^`]*)` \| UI [a-z]+ \| (\w+) \|", text, re.MULTILINE))
    assert documented == {f"{p.method} {p.path}": p.permission.value for p in PAGES}


# ---------------------------------------------------------------------- the pages, as three roles see them


async def api(ui: Browser, method: str, path: str, body: Any = None) -> Any:
    async with ui.session.request(method, ui.h.url + path, json=body, headers=ui.h.auth) as resp:
        payload = await resp.json()
        assert resp.status < 300, (method, path, resp.status, payload)
        return payload


async def example(ui: Browser, env: str = "default", scale: int = 3) -> dict[str, Any]:
    """A stack ``web-server`` with a service ``nginx-cluster`` of ``scale`` containers placed on h1."""
    stack = await api(ui, "POST", "/v1/stacks", {"name": "web-server", "environment": env})
    service = await api(ui, "POST", "/v1/services", {"stack": stack["id"], "name": "nginx-cluster",
                                                     "image": "corral/base", "scale": scale})
    from agent.model.commands import PlacementsCommit
    await ui.h.replica.write(PlacementsCommit(service["id"], tuple((slot, "h1") for slot in range(1, scale + 1))))
    return service


async def user(ui: Browser, name: str, role: str | None, env: str = "default") -> Browser:
    await api(ui, "POST", "/v1/users", {"name": name, "password": ADMIN_PASSWORD})
    if role is not None:
        await api(ui, "PUT", f"/v1/environments/{env}/members/user:{name}", {"role": role})
    other = Browser(ui.h, ui.session)
    assert (await other.login(name)).status == 303
    return other


async def text(ui: Browser, path: str, status: int = 200) -> str:
    resp = await ui.request("GET", path)
    assert resp.status == status, (path, resp.status, await resp.text())
    return await resp.text()


async def test_the_pages_show_hosts_stacks_services_and_containers(ui: Browser) -> None:
    service = await example(ui)
    await ui.login()
    hosts = await text(ui, "/hosts")
    assert 'data-host="h1"' in hosts and "zone=a" in hosts
    assert "CPU reserved (by limits)" in hosts and "CPU used (measured)" in hosts  # never confused (Nomad #8939)
    assert "/hosts/h1/stats.json" in hosts
    stacks = await text(ui, "/stacks")
    assert "web-server" in stacks and "nginx-cluster" in stacks
    stack = await text(ui, f"/stacks/{service['stack']}")
    assert 'data-service="nginx-cluster"' in stack
    page = await text(ui, f"/services/{service['id']}")
    assert 'data-count="scale">3<' in page and "Set scale" in page and "Upgrade" in page
    assert page.count('data-container="web-server-nginx-cluster-') == 3
    assert "web-server-nginx-cluster-1" in await text(ui, "/containers")
    for nav in ("Overview", "Hosts", "Stacks", "Containers"):
        assert f">{nav}</a>" in page


async def test_scaling_through_the_ui_is_the_apis_scale_audited_as_the_user(ui: Browser) -> None:
    service = await example(ui)
    await ui.login()
    csrf = await ui.csrf()
    resp = await ui.request("POST", f"/services/{service['id']}/scale", {"scale": "12", "csrf_token": csrf},
                            headers={"HX-Request": "true"})
    assert resp.status == 200, await resp.text()
    assert 'data-count="scale">12<' in await resp.text()
    assert json.loads(resp.headers["HX-Trigger"])["corral:done"].endswith("scale set to 12")
    assert ui.h.replica.state.services[service["id"]].spec.scale == 12
    event = [e for e in ui.h.replica.state.events if e.actor is not None][-1]
    assert event.actor == "admin" and "12" in event.message, event
    # a plain form (no JavaScript): the same, then back to the service's page
    resp = await ui.request("POST", f"/services/{service['id']}/scale", {"scale": "4", "csrf_token": csrf})
    assert resp.status == 303 and resp.headers["Location"] == f"/services/{service['id']}"
    assert ui.h.replica.state.services[service["id"]].spec.scale == 4


@pytest.mark.parametrize("bad", ["-1", "lots", "100001", ""])
async def test_a_bad_scale_is_a_400_naming_the_field_and_changes_nothing(ui: Browser, bad: str) -> None:
    service = await example(ui)
    await ui.login()
    resp = await ui.request("POST", f"/services/{service['id']}/scale", {"scale": bad, "csrf_token": await ui.csrf()},
                            headers={"HX-Request": "true"})
    assert resp.status == 400
    assert (await resp.json())["details"]["field"] == "scale"
    assert ui.h.replica.state.services[service["id"]].spec.scale == 3


async def test_a_read_only_user_sees_no_buttons_and_a_forged_scale_is_403(ui: Browser) -> None:
    service = await example(ui)
    reader = await user(ui, "reader", "read-only")
    page = await text(reader, f"/services/{service['id']}")
    assert 'data-count="scale">3<' in page
    assert "Set scale" not in page and ">Stop<" not in page and ">Upgrade<" not in page
    resp = await reader.request("POST", f"/services/{service['id']}/scale",
                                {"scale": "12", "csrf_token": await reader.csrf()})
    assert resp.status == 403 and "deploy" in (await resp.json())["message"]
    for action in ("stop", "upgrade", "upgrade/rollback"):
        resp = await reader.request("POST", f"/services/{service['id']}/{action}",
                                    {"image": "corral/base:2", "csrf_token": await reader.csrf()})
        assert resp.status == 403, action
    assert ui.h.replica.state.services[service["id"]].spec.scale == 3
    assert ui.h.replica.state.current_upgrade(service["id"]) is None


async def test_a_user_without_a_role_in_the_environment_finds_nothing(ui: Browser) -> None:
    await api(ui, "POST", "/v1/environments", {"name": "prod"})
    service = await example(ui, env="prod")
    stranger = await user(ui, "stranger", "member", env="default")
    assert "web-server" not in await text(stranger, "/stacks")
    assert "nginx-cluster" not in await text(stranger, "/containers")
    assert "no service" in (await text(stranger, f"/services/{service['id']}", 404)).lower()
    resp = await stranger.request("POST", f"/services/{service['id']}/scale",
                                  {"scale": "1", "csrf_token": await stranger.csrf()})
    assert resp.status == 404  # not a 403: the service's name does not leak
    assert ui.h.replica.state.services[service["id"]].spec.scale == 3


async def test_the_environment_switcher_narrows_every_page(ui: Browser) -> None:
    await api(ui, "POST", "/v1/environments", {"name": "prod"})
    await example(ui, env="prod")
    await ui.login()
    assert "web-server" in await text(ui, "/stacks")
    assert "web-server" not in await text(ui, "/stacks?env=default")
    assert "web-server" not in await text(ui, "/stacks")  # remembered
    page = await text(ui, "/stacks?env=prod")
    assert "web-server" in page and '<option value="prod" selected>' in page
    assert "no environment &#39;nowhere&#39;" in await text(ui, "/stacks?env=nowhere", 404)
    stranger = await user(ui, "stranger", "member")  # in default only: prod does not exist for them
    assert "no environment &#39;prod&#39;" in await text(stranger, "/containers?env=prod", 404)
    assert (await stranger.request("GET", "/containers/fragment?env=prod")).status == 404


async def test_containers_are_filtered_and_paginated_on_the_server(ui: Browser) -> None:
    await example(ui, scale=30)
    await ui.login()
    page = await text(ui, "/containers?limit=10&offset=10")
    assert page.count('data-container="') == 10
    assert "11–20 of 30" in page and 'rel="prev"' in page and 'rel="next"' in page
    page = await text(ui, "/containers?q=cluster-2")  # 2, 20-29
    assert page.count('data-container="') == 11
    page = await text(ui, "/containers?state=running")
    assert page.count('data-container="') == 0  # placed, not yet reported running by their host
    page = await text(ui, "/containers?state=pending&stack=web-server&host=h1")
    assert "1–30 of 30" in page
    fragment = await text(ui, "/containers/fragment?limit=5")
    assert fragment.count('data-container="') == 5 and "<html" not in fragment
    for bad in ("limit=0", "limit=501", "offset=-1", "state=sleeping", "limit=x"):
        resp = await ui.request("GET", f"/containers/fragment?{bad}")
        assert resp.status == 400, bad
        assert (await resp.json())["details"]["field"] == bad.split("=")[0]
        assert (await ui.request("GET", f"/containers?{bad}")).status == 400  # an error page, saying which


async def test_the_live_feed_names_what_changed_and_only_in_the_callers_environments(ui: Browser) -> None:
    service = await example(ui)
    await api(ui, "POST", "/v1/environments", {"name": "prod"})
    stranger = await user(ui, "stranger", "member", env="prod")
    headers = {"Cookie": f"{guard.SESSION_COOKIE}={stranger.cookies[guard.SESSION_COOKIE]}"}
    admin_headers = {"Cookie": f"{guard.SESSION_COOKIE}={(await ui.login()) and ui.cookies[guard.SESSION_COOKIE]}"}
    async with ui.session.get(ui.h.url + "/live", headers=admin_headers) as admin_live, \
            ui.session.get(ui.h.url + "/live", headers=headers) as stranger_live:
        assert admin_live.headers["Content-Type"] == "text/event-stream"
        assert (await admin_live.content.readuntil(b"\n\n")).startswith(b"retry: ")
        assert b"event: hello" in await stranger_live.content.readuntil(b"\n\n")
        await api(ui, "POST", f"/v1/services/{service['id']}/scale", {"scale": 5})
        event = await asyncio.wait_for(admin_live.content.readuntil(b"\n\n"), 10)
        assert event.startswith(b"event: ")
        names = {event.split(b"\n")[0]}
        while not {b"event: service", b"event: instance"} & names:
            names.add((await asyncio.wait_for(admin_live.content.readuntil(b"\n\n"), 10)).split(b"\n")[0])
        await api(ui, "POST", "/v1/stacks", {"name": "theirs", "environment": "prod"})
        seen = await asyncio.wait_for(stranger_live.content.readuntil(b"\n\n"), 10)
        assert seen.startswith(b"event: stack")  # its own environment's change, not default's scale


def test_a_stats_answer_without_history_is_one_sample_and_a_history_is_kept() -> None:
    from agent.ui.stats import samples

    current = {"host": "h1", "cpus": 2, "memory_total": 2048, "cpu_percent": 3.5, "memory": {"usage": 100},
               "network": {"rx_bytes": 1, "tx_bytes": 2}, "block_io": {"read_bytes": 0, "write_bytes": 0}}
    one = samples(current, 1000.0)
    assert one["interval_seconds"] is None
    assert one["samples"] == [{"t": 1000.0, "cpu_percent": 3.5, "memory": {"usage": 100, "limit": 2048},
                               "network": {"rx_bytes": 1, "tx_bytes": 2},
                               "block_io": {"read_bytes": 0, "write_bytes": 0}}]
    history = {"interval_seconds": 10, "samples": [{"t": 1, "cpu_percent": 1.0}, {"t": 11, "cpu_percent": 2.0}]}
    assert samples(history, 1000.0) == history
    assert samples({"error": "nothing"}, 1.0)["samples"] == []


async def test_the_stats_json_is_the_apis_answer_asked_as_the_user(ui: Browser) -> None:
    await ui.login()
    history = ui.h.app[DEPS].history
    assert history is not None
    now = time.time()
    history.record({History.HOST: Reading(now - 10, 0, Stats(0.0, 100, 2048, 1, 2, 0, 0))}, now - 10)
    history.record({History.HOST: Reading(now, 5 * 10**9, Stats(0.0, 200, 2048, 3, 4, 0, 0))}, now)
    resp = await ui.request("GET", "/hosts/h1/stats.json")
    assert resp.status == 200
    body = await resp.json()
    assert body["interval_seconds"] == 10 and len(body["samples"]) == 1, "the host's history, through the API"
    assert body["samples"][0]["memory"] == {"usage": 200, "limit": 2048} and body["samples"][0]["cpu_percent"] > 0
    assert (await ui.request("GET", "/hosts/nowhere/stats.json")).status == 404  # the API's 404, passed on
    reader = await user(ui, "reader", None)  # no role anywhere: h1 (default) is not theirs to see
    assert (await reader.request("GET", "/hosts/h1/stats.json")).status == 404


async def test_the_live_feed_ends_with_a_word_when_the_session_does(ui: Browser) -> None:
    await ui.login()
    token = ui.cookies[guard.SESSION_COOKIE]
    async with ui.session.get(ui.h.url + "/live", headers={"Cookie": f"{guard.SESSION_COOKIE}={token}"}) as live:
        assert b"event: hello" in await live.content.readuntil(b"\n\n")
        await api(ui, "DELETE", f"/v1/apikeys/{token.split('_')[1]}")  # revoked elsewhere (another tab, the CLI)
        await example(ui)  # the next change wakes the stream, which finds the session gone
        while True:
            event = await asyncio.wait_for(live.content.readuntil(b"\n\n"), 10)
            if event.startswith(b"event: session"):
                break
        assert b"not valid" in event
        assert await live.content.read() == b""  # and it ends


# ---------------------------------------------------------------------- found in review


async def test_an_api_key_in_the_cookie_is_no_session_a_metrics_key_least_of_all(ui: Browser) -> None:
    """The UI's cookie holds a login session; an API key pasted into it (a Prometheus' metrics key, which
    may only scrape) reads no page, fragment or stream."""
    await ui.login()
    made = await api(ui, "POST", "/v1/apikeys", {"metrics": True, "description": "prometheus"})
    plain = await api(ui, "POST", "/v1/apikeys", {"description": "a script"})
    for token in (made["token"], plain["token"]):
        other = Browser(ui.h, ui.session)
        other.cookies[guard.SESSION_COOKIE] = token
        page = await other.request("GET", "/events")
        assert page.status == 303 and page.headers["Location"].startswith("/login"), "a page: log in first"
        assert guard.SESSION_COOKIE not in other.cookies, "and the redirect clears the cookie"
        for path in ("/hosts/fragment", "/live", "/events/stream"):
            other.cookies[guard.SESSION_COOKIE] = token
            resp = await other.request("GET", path)
            assert resp.status == 401, (path, resp.status)
            assert "login session" in (await resp.json())["message"]
    assert (await ui.request("GET", "/events")).status == 200, "the administrator's own session still reads"


async def test_a_scale_in_other_digits_is_a_400_not_a_500(ui: Browser) -> None:
    service = await example(ui)
    await ui.login()
    csrf = await ui.csrf()
    for bad in ("²", "٣", "1.5"):
        resp = await ui.request("POST", f"/services/{service['id']}/scale", {"scale": bad, "csrf_token": csrf})
        assert resp.status == 400, (bad, resp.status)
        assert (await resp.json())["details"]["field"] == "scale"
    assert ui.h.replica.state.services[service["id"]].spec.scale == 3, "nothing changed"
    assert (await ui.request("GET", "/containers/fragment?limit=٥")).status == 400


async def test_one_session_holds_a_bounded_number_of_streams(ui: Browser) -> None:
    from agent.ui.streams import PER_SESSION

    await ui.login()
    headers = {"Cookie": f"{guard.SESSION_COOKIE}={ui.cookies[guard.SESSION_COOKIE]}"}
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(PER_SESSION):
            live = await stack.enter_async_context(ui.session.get(ui.h.url + "/live", headers=headers))
            assert live.status == 200
            await live.content.readuntil(b"\n\n")
        async with ui.session.get(ui.h.url + "/live", headers=headers) as one_more:
            assert one_more.status == 429 and "Retry-After" in one_more.headers
            assert (await one_more.json())["details"]["limit"] == PER_SESSION
        other = await user(ui, "other", "read-only")
        other_headers = {"Cookie": f"{guard.SESSION_COOKIE}={other.cookies[guard.SESSION_COOKIE]}"}
        async with ui.session.get(ui.h.url + "/live", headers=other_headers) as theirs:
            assert theirs.status == 200, "the bound is per session: another's streams are their own"
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # the closed streams give their slots back
        async with ui.session.get(ui.h.url + "/live", headers=headers) as again:
            if again.status == 200:
                break
        assert asyncio.get_running_loop().time() < deadline, "the slots never came back"
        await asyncio.sleep(0.1)
