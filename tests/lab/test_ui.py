"""The web UI in a real browser (Debian's chromium, headless, driven by Playwright) against a real
3-host lab with the README's example stack: log in, see the three hosts and the example stack, scale
it to 12 and watch the running count change without a reload, see an upgrade's progress, and see the
banner when the agent the page talks to is killed, and go once it is back, the page live again.

Locators are by role and label; every wait is Playwright's auto-waiting on what a person would wait
for (STYLE.md 27), never a sleep. Screenshots of each step are saved in ``CORRAL_UI_ARTIFACTS`` (default
``/tmp/corral-ui-artifacts[-LAB_ID]``), printed at the start.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from agent.lab import Lab
from tests.cli import corral
from tests.lab.conftest import example_lab

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SLOW = 120_000
"""Milliseconds for what the cluster does (containers started on three dockerds, an upgrade's batches)."""


def artifacts() -> Path:
    lab_id = os.environ.get("CORRAL_LAB_ID")
    default = "/tmp/corral-ui-artifacts" + (f"-{lab_id}" if lab_id else "")
    out = Path(os.environ.get("CORRAL_UI_ARTIFACTS", default))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from example_lab()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    print(f"\nscreenshots: {artifacts()}")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(lab: Lab, browser: Browser) -> Iterator[Page]:
    """One tab, logged in as the lab's administrator on h1, kept across the module's steps."""
    context = browser.new_context(ignore_https_errors=True, base_url=lab.host("h1").api_url)  # the lab's own CA
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    yield tab
    context.close()
    assert not errors, f"the page's scripts failed or broke its CSP: {errors}"


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(artifacts() / f"{name}.png"), full_page=True)


def test_log_in_and_see_the_three_hosts_and_the_example_stack(lab: Lab, page: Page) -> None:
    page.goto("/hosts")
    expect(page).to_have_url(re.compile(r"/login\?next=/hosts$"))  # no session: the login page first
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(lab.admin_password())
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Hosts")).to_be_visible()
    hosts = page.get_by_role("table", name="Hosts")
    for name in ("h1", "h2", "h3"):
        row = hosts.get_by_role("row").filter(has=page.get_by_role("rowheader", name=re.compile(f"^{name}")))
        expect(row.get_by_text("active", exact=True)).to_be_visible(timeout=SLOW)  # a false suspicion passes
        expect(row.get_by_role("meter", name=f"CPU reserved on {name}")).to_be_attached()
        expect(row.get_by_text(re.compile(r"^\d+(\.\d+)? %$"))).to_be_visible(timeout=SLOW)  # measured, by Docker
    shot(page, "1-hosts")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Stacks").click()
    page.get_by_role("link", name="web-server").click()
    services = page.get_by_role("table", name="Services of web-server")
    expect(services.get_by_role("link", name="nginx-cluster")).to_be_visible()
    expect(services.get_by_role("link", name="lb")).to_be_visible()
    shot(page, "2-stack")


def test_scale_to_12_and_watch_the_count_change_without_a_reload(page: Page) -> None:
    page.get_by_role("table", name="Services of web-server").get_by_role("link", name="nginx-cluster").click()
    running = page.get_by_label("Running containers")
    expect(running).to_have_text("10", timeout=SLOW)
    page.evaluate("window.corralNotReloaded = true")
    page.get_by_label("Scale", exact=True).fill("12")
    page.get_by_role("button", name="Set scale").click()
    expect(page.get_by_role("status")).to_contain_text("scale set to 12")
    expect(running).to_have_text("12", timeout=SLOW)  # as the two new containers report running
    containers = page.get_by_role("table", name="Containers of nginx-cluster")
    expect(containers.get_by_role("rowheader", name="web-server-nginx-cluster-12")).to_be_visible()
    assert page.evaluate("window.corralNotReloaded") is True, "the count changed by a reload, not live"
    shot(page, "3-scaled-to-12")


def test_an_upgrade_shows_its_progress(page: Page) -> None:
    page.get_by_label("New image").fill("corral/base:latest")
    page.get_by_label("Batch size").fill("3")
    page.get_by_label("Interval (s)").fill("2")
    page.get_by_role("button", name="Upgrade", exact=True).click()
    upgrade = page.get_by_role("region", name="Upgrade")
    expect(upgrade.get_by_role("progressbar", name="Upgrade progress")).to_be_visible()
    expect(upgrade.get_by_text(re.compile(r"^([1-9]|1[01]) of 12 slots done$"))).to_be_visible(timeout=SLOW)
    shot(page, "4-upgrade-in-progress")
    expect(upgrade.get_by_text("12 of 12 slots done")).to_be_visible(timeout=SLOW)
    expect(upgrade.get_by_role("heading")).to_contain_text("done")
    expect(page.get_by_label("Running containers")).to_have_text("12", timeout=SLOW)
    shot(page, "5-upgrade-done")


def test_the_banner_shows_when_the_agent_the_page_talks_to_is_killed(lab: Lab, page: Page) -> None:
    banner = page.get_by_role("alert").filter(has_text="Live updates stopped")
    expect(banner).to_be_hidden()
    lab.kill_agent("h1")
    try:
        expect(banner).to_be_visible(timeout=30_000)
        shot(page, "6-agent-killed")
    finally:  # in a thread of its own: the lab's verbs run asyncio.run, and Playwright's loop runs in this one
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(lab.start_agent, "h1").result()
    expect(banner).to_be_hidden(timeout=SLOW)  # back by itself once h1 answers again
    # and live again: a change made elsewhere (through h2) shows on this page, still never reloaded
    scaled = corral("service", "scale", "web-server/nginx-cluster", "11", env={"CORRAL_URL": lab.host("h2").api_url})
    assert scaled.returncode == 0, scaled.stdout + scaled.stderr
    expect(page.get_by_label("Running containers")).to_have_text("11", timeout=SLOW)
    assert page.evaluate("window.corralNotReloaded") is True, "the page was reloaded"
    shot(page, "7-agent-back-and-live")


# ---------------------------------------------------------------------- a container's shell and logs (ui-pages)


def _goto(page: Page, path: str) -> None:
    """``page.goto``, again when chromium aborted it for a network change (other labs on this machine
    add and remove interfaces in the root namespace: ERR_NETWORK_CHANGED), as a person would reload."""
    for attempt in range(3):
        try:
            page.goto(path)
            return
        except PlaywrightError as exc:
            if "ERR_NETWORK_CHANGED" not in str(exc) or attempt == 2:
                raise


def _a_container_on(lab: Lab, page: Page, host: str) -> str:
    """The name of a running nginx-cluster container on ``host``, from the containers page's filters
    (logged in first when these tests run alone)."""
    _goto(page, f"/containers?service=nginx-cluster&host={host}&state=running")
    if "/login" in page.url:
        page.get_by_label("User name").fill("admin")
        page.get_by_label("Password").fill(lab.admin_password())
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(f"/containers\\?service=nginx-cluster&host={host}&state=running$"))
    rows = page.get_by_role("table", name=re.compile("Containers")).get_by_role("rowheader")
    expect(rows.first).to_be_visible(timeout=SLOW)
    return rows.first.inner_text().strip()


def test_a_containers_shell_runs_a_command_from_another_host(lab: Lab, page: Page) -> None:
    """The page talks to h1; the container runs on h2: the exec is relayed, and audited."""
    name = _a_container_on(lab, page, "h2")
    page.get_by_role("link", name=f"Logs of {name}", exact=True).click()
    page.get_by_role("link", name="Shell", exact=True).click()
    terminal = page.get_by_role("application", name=f"Terminal of {name}", exact=True)
    expect(terminal).to_have_attribute("data-state", "open", timeout=30_000)
    marker = f"hello-{os.getpid()}"
    terminal.click()
    page.keyboard.type(f"echo {marker}-$((40+2))\n")  # the output differs from what was typed
    expect(terminal.locator(".xterm-rows")).to_contain_text(f"{marker}-42", timeout=30_000)
    shot(page, "8-shell")
    _goto(page, "/events?kind=container.exec&audit=1")
    events = page.get_by_role("table", name="Events")  # the shell opened is recorded (what is typed in it is not)
    expect(events.get_by_role("row").filter(has_text=f"admin ran sh in container {name}").first).to_be_visible()


def test_a_containers_logs_show_a_line_as_it_is_written(lab: Lab, page: Page) -> None:
    name = _a_container_on(lab, page, "h3")
    page.get_by_role("link", name=f"Logs of {name}", exact=True).click()
    log = page.get_by_label(f"Log of {name}", exact=True)
    expect(page.get_by_role("status").filter(has_text="following")).to_be_visible(timeout=30_000)
    marker = f"log-line-{os.getpid()}"
    written = corral("exec", name, "--", "sh", "-c", f"echo {marker} > /proc/1/fd/1",
                     env={"CORRAL_URL": lab.host("h1").api_url}, timeout=60)
    assert written.returncode == 0, written.stdout + written.stderr
    expect(log).to_contain_text(marker, timeout=30_000)  # followed: it came without a reload
    shot(page, "9-logs")


def test_the_overlay_matrix_and_the_stacks_topology(lab: Lab, page: Page) -> None:
    """Every host asked for its overlay (the page talks to h1); the example's load balancer drawn in front of
    the service it sends to, with their containers' hosts."""
    _a_container_on(lab, page, "h1")  # logged in
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Overlay").click()
    matrix = page.get_by_role("table", name="Overlay peer matrix")
    for host in ("h1", "h2", "h3"):
        row = matrix.locator(f'tr[data-host="{host}"]')
        expect(row.locator('td[data-state="up"]')).to_have_count(2, timeout=SLOW)  # both its tunnels, as it sees them
        expect(row.get_by_text(re.compile(r"\d ms"))).to_have_count(2)
    shot(page, "10-overlay")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Stacks").click()
    page.get_by_role("link", name="web-server").click()
    page.get_by_role("link", name="Topology").click()
    drawing = page.get_by_role("img", name="topology of stack web-server")
    expect(drawing.locator('[data-key="web-server/lb"]')).to_be_visible()
    expect(drawing.locator('[data-key="web-server/nginx-cluster"]')).to_contain_text("running")
    expect(drawing.locator(".topo-edge-lb")).to_contain_text(":80 → :80")
    for host in ("h1", "h2", "h3"):
        badges = drawing.locator('[data-key="web-server/nginx-cluster"] .topo-badge text')
        expect(badges.filter(has_text=re.compile(f"^{host} [1-9]\\d*/\\d+$")).first).to_be_visible()
    shot(page, "11-topology")
