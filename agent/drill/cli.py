"""``corral drill [NAME…] [--hosts N] [--json FILE] [--seed S]``: run drills on the lab and report."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from agent.api.drills import MAX_DRILLS, MAX_LINES, MAX_TEXT
from agent.cli.client import ApiError, Client
from agent.drill.drills import ALL, SERVICE, STACK, Drills, Result
from agent.drill.probe import BusinessProbe
from agent.lab import Lab, LabError
from agent.model import compose

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160, soft_wrap=True)
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "web-server.yml"


def _fail(message: str) -> NoReturn:
    click.echo(f"corral drill: {message}", err=True)
    sys.exit(2)


def ensure_workload(url: str) -> tuple[str, int]:
    """The reference workload (stack web-server: nginx-cluster × 10, published port 80), converged."""
    client = Client(url)
    spec = compose.load(EXAMPLE.read_text())["nginx-cluster"]
    stacks = {s["name"]: s for s in client.items("/v1/stacks")}
    if STACK not in stacks:
        stacks[STACK] = client.post("/v1/stacks", {"name": STACK})
    services = {s["name"]: s for s in client.items("/v1/services", stack=stacks[STACK]["id"])}
    service = services.get(SERVICE) or client.post("/v1/services", {"stack": STACK, "name": SERVICE, **spec})
    deadline = time.monotonic() + 120
    while True:
        svc = client.get(f"/v1/services/{service['id']}")
        if svc["running"] == svc["scale"] == spec["scale"]:
            return str(service["id"]), int(svc["scale"])
        if time.monotonic() > deadline:
            raise LabError(f"the reference workload did not converge: {svc['running']}/{svc['scale']} running")
        time.sleep(0.5)


def fit_report(report: dict[str, Any]) -> dict[str, Any]:
    """The report within what the cluster keeps (:mod:`agent.api.drills`): texts cut, lines and drills counted."""
    def cut(text: object) -> object:
        return text[:MAX_TEXT - 1] + "…" if isinstance(text, str) and len(text) > MAX_TEXT else text

    drills = []
    for d in report["drills"][:MAX_DRILLS]:
        happened = [cut(line) for line in d.get("happened", [])]
        if len(happened) > MAX_LINES:
            happened = [*happened[:MAX_LINES - 1], f"… and {len(happened) - MAX_LINES + 1} more lines"]
        drills.append({**d, "reason": cut(d.get("reason")), "action": cut(d.get("action", "")),
                       "expect": cut(d.get("expect", "")), "happened": happened})
    return {**report, "drills": drills}


def store_report(lab: Lab, report: dict[str, Any]) -> None:
    """Keep the report in the cluster (``PUT /v1/drills/report``), so that every node's UI shows the last
    one; through any host that answers (a drill may have left one down). Not fatal: the report was printed."""
    fitted = fit_report(report)
    for host in lab.hosts():
        try:
            Client(host.api_url, timeout=10).put("/v1/drills/report", fitted)
        except ApiError as exc:
            if exc.status not in (0, 503):  # refused for what it is (too large, malformed): another host won't take it
                console.print(f"[yellow]the report was not stored in the cluster: {exc.message}[/yellow]")
                return
            continue
        console.print(f"report stored in the cluster (GET /v1/drills/report, via {host.name})")
        return
    console.print("[yellow]the report was not stored in the cluster: no host took it[/yellow]")


def _report(r: Result) -> None:
    colour = "green" if r.verdict == "PASS" else "red"
    console.print(f"\n[bold]{r.name}[/bold]  [{colour}]{r.verdict}[/{colour}]" + (f"  {r.reason}" if r.reason else ""))
    console.print(f"  action:   {r.action}")
    console.print(f"  expected: {' '.join(r.expect.split())}")
    for line in r.happened:
        console.print(f"  happened: {line}")
    figures = {k: v for k, v in r.figures.items() if k not in ("business_errors", "sent")}
    console.print("  figures:  " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    console.print(f"  business: {r.figures.get('business_failed', '?')} failed / {r.figures.get('business_sent', '?')} "
                  "sent" + (f"  ({r.figures['business_errors']})" if r.figures.get("business_errors") else ""))


@click.command("drill")
@click.argument("names", nargs=-1)
@click.option("--hosts", "count", type=click.IntRange(3, 16), default=4, show_default=True,
              help="lab hosts (3 managers + workers); reused when a lab of that size is up")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write every figure to this file")
@click.option("--seed", type=int, default=None, help="seed for the drills' random choices")
@click.option("--lossy-seconds", type=click.FloatRange(4, 600), default=60.0, show_default=True,
              help="how long the lossy-network drill keeps the loss on")
@click.option("--fresh", is_flag=True, help="take down any lab and build a new one")
@click.option("--overlay-probe/--no-overlay-probe", default=True, show_default=True,
              help="also fetch every container's page over the overlay from a container on h1")
def drill(names: tuple[str, ...], count: int, json_path: Path | None, seed: int | None, lossy_seconds: float,
          fresh: bool, overlay_probe: bool) -> None:
    """Run failure drills on the lab (every drill when no NAME is given) and report what the cluster did."""
    unknown = [n for n in names if n not in ALL]
    if unknown:
        _fail(f"unknown drill {unknown[0]!r}; drills: {', '.join(ALL)}")
    chosen = list(names) or ALL
    seed = seed if seed is not None else random.randrange(2**31)
    lab = Lab(progress=lambda who, what: console.print(f"  {who:>4}  {what}"))
    try:
        current = lab.read_state()
        if fresh or current is None or current.get("status") != "up" or len(current.get("hosts", [])) != count:
            if lab.leftovers():
                lab.down()
            console.print(f"bringing up a {count}-host lab")
            lab.up(count)
        url = lab.host("h1").api_url
        os.environ["CORRAL_TOKEN"] = lab.admin_token()  # the drills act as the lab's administrator
        os.environ["CORRAL_CACERT"] = str(lab.ca_file)
        service_id, scale = ensure_workload(url)
    except (LabError, ApiError) as exc:
        _fail(str(exc))
    console.print(f"reference workload {STACK}/{SERVICE}: {scale} containers running; drills {', '.join(chosen)}; "
                  f"seed {seed}")
    def docker_on_h1(args: list[str]) -> subprocess.CompletedProcess[str]:
        argv, env = lab.exec_argv("h1", ["docker", *args])
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    probe = BusinessProbe(lambda: [h.api_url for h in lab.hosts()], service_id,
                          lambda name: lab.host(name).address, overlay_host="h1" if overlay_probe else None,
                          docker=docker_on_h1)
    try:
        probe.start_overlay_probe()
    except RuntimeError as exc:
        _fail(str(exc))
    probe.start()
    drills = Drills(lab, probe, service_id, random.Random(seed), lossy_seconds=lossy_seconds,
                    say=lambda m: console.print(f"  [dim]{time.strftime('%H:%M:%S')} {m}[/dim]"))
    drills.scale = scale
    started = time.time()
    results = []
    try:
        for name in chosen:
            console.print(f"\n── {name} ──")
            result = drills.run(name)
            results.append(result)
            _report(result)
    finally:
        probe.stop()
        probe.remove_overlay_probe()
    table = Table(title=f"drills (seed {seed})")
    for col in ("drill", "verdict", "key figures", "business failed/sent", "reason"):
        table.add_column(col)
    for r in results:
        keys = [k for k in r.figures if k.endswith("_s") and k != "duration_s"][:3]
        table.add_row(r.name, r.verdict, ", ".join(f"{k}={r.figures[k]}" for k in keys),
                      f"{r.figures.get('business_failed')}/{r.figures.get('business_sent')}", r.reason or "")
    console.print()
    console.print(table)
    report = {"seed": seed, "hosts": count, "started": started, "finished": time.time(),
              "drills": [r.to_json() for r in results]}
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2))
        console.print(f"figures written to {json_path}")
    store_report(lab, report)
    sys.exit(0 if all(r.verdict == "PASS" for r in results) else 1)
