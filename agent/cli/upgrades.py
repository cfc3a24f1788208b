"""``corral service upgrade|update|rollback|pause|resume``: start or steer a service's upgrade, and wait for it
(``update`` PATCHes the spec: a change of what shapes the containers is an upgrade too).

Waiting shows one line per batch as it begins and a bar of the slots done; the command's exit status
is the upgrade's end: 0 when it is ``done``, 1 when it was ``rolled-back`` or ``failed`` (with the
reason), 3 when it stopped ``paused`` (a pull error, failures with ``failure_action: pause``): never a
0 for an upgrade that did not happen (docker/cli #6752)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click
from rich.markup import escape

from agent.cli.client import ApiError, Client
from agent.cli.output import console, fail, url_option

EXIT_BACK, EXIT_PAUSED = 1, 3
ENDED = {"done", "rolled-back", "failed"}


def strategy_body(parallelism: int | None, interval: str | None, order: str | None, failure_action: str | None,
                  min_healthy: str | None, healthy_deadline: str | None, max_failure_ratio: float | None
                  ) -> dict[str, Any] | None:
    fields = {"parallelism": parallelism, "interval": interval, "order": order, "failure_action": failure_action,
              "min_healthy": min_healthy, "healthy_deadline": healthy_deadline,
              "max_failure_ratio": max_failure_ratio}
    out = {k: v for k, v in fields.items() if v is not None}
    return out or None


def spec_changes(client: Client, sid: str, image: str | None, env: tuple[str, ...], command_: str | None
                 ) -> dict[str, Any]:
    """The spec fields the options change (``--env`` sets variables, the others stay)."""
    spec: dict[str, Any] = {}
    if image is not None:
        spec["image"] = image
    if command_ is not None:
        spec["command"] = command_
    if env:
        current_env = dict(client.get(f"/v1/services/{sid}")["spec"]["environment"])
        for item in env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--env")
            current_env[key] = value
        spec["environment"] = current_env
    return spec


def started(ref: str, up: dict[str, Any], how: str = "") -> None:
    s = up["strategy"]
    click.echo(f"{ref}: upgrade {up['id']} started{how}: {len(up['slots'])} slot(s), {s['parallelism']} at a "
               f"time, {s['order']}, min healthy {s['min_healthy']:g} s, on failure {s['failure_action']}")


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / total) if total else width
    return escape("[" + "#" * filled + "." * (width - filled) + "]")  # not rich markup


def watch(client: Client, sid: str, upgrade_id: str, label: str, timeout: float = 3600.0) -> int:
    """Follow upgrade ``upgrade_id`` of service ``sid`` until it ends or pauses; its exit status."""
    deadline = time.monotonic() + timeout
    batches_seen: set[tuple[bool, int]] = set()
    direction = False
    with console.status(f"{label}: upgrading") as status:
        while True:
            body = client.get(f"/v1/services/{sid}/upgrade")
            up = body.get("current")
            if up is None or up["id"] != upgrade_id:
                newer = up["id"] if up else "none"
                console.print(f"{label}: upgrade {upgrade_id} was replaced by upgrade {newer}")
                return EXIT_BACK
            if up["rolling_back"] and not direction:
                direction = True
                console.print(f"{label}: rolling back: {up['reason']}")
            for p in up["slots"]:
                key = (up["rolling_back"], p["batch"])
                if p["batch"] and p["phase"] == "starting" and key not in batches_seen:
                    batches_seen.add(key)
                    slots = [q for q in up["slots"] if q["batch"] == p["batch"] and q["phase"] == "starting"]
                    where = ", ".join(f"{q['slot']} on {q['host']}" + (f" ({q['order']})" if q["order"] !=
                                                                          up["strategy"]["order"] else "")
                                      for q in slots)
                    console.print(f"{label}: {'rollback ' if up['rolling_back'] else ''}batch {p['batch']}: "
                                  f"slot {where}")
                    for q in slots:
                        if q.get("reason"):
                            console.print(f"  slot {q['slot']}: {q['reason']}")
            total, done = len(up["slots"]), up["counts"]["done"]
            status.update(f"{label}: {up['state']} {_bar(done, total)} {done}/{total} slot(s), "
                          f"{up['counts']['starting']} in flight, {up['failures']} failed")
            if up["state"] in ENDED or up["state"] == "paused":
                break
            if time.monotonic() > deadline:
                raise fail(f"{label}: upgrade {upgrade_id} is still {up['state']} after {timeout:g} s "
                           "(it goes on; `corral service upgrade --status` follows it)")
            time.sleep(0.5)
    reason = f": {up['reason']}" if up.get("reason") else ""
    console.print(f"{label}: upgrade {upgrade_id} {up['state']} {_bar(up['counts']['done'], len(up['slots']))} "
                  f"{up['counts']['done']}/{len(up['slots'])}{reason}")
    if up["state"] == "done":
        return 0
    if up["state"] == "paused":
        console.print(f"{label}: paused: `corral service resume {label}` goes on, "
                      f"`corral service rollback {label}` goes back")
        return EXIT_PAUSED
    return EXIT_BACK


RETRY_FOR = 15.0


def _steer(client: Client, sid: str, verb: str) -> Any:
    """POST a pause, resume or rollback; a write that met a leader change (503) is sent again for a while:
    it did not commit, and if it did after all, a pause or resume again is a no-op and a rollback again is
    refused as rolling back already, which is what was asked."""
    deadline = time.monotonic() + RETRY_FOR
    retried = False
    while True:
        try:
            return client.post(f"/v1/services/{sid}/upgrade/{verb}")
        except ApiError as exc:
            if exc.status == 409 and retried and verb == "rollback":
                current = client.get(f"/v1/services/{sid}/upgrade")["current"]
                if current and current["rolling_back"]:
                    return current
            if exc.status != 503 or time.monotonic() > deadline:
                raise
            retried = True
            time.sleep(0.5)


def spec_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options that change the spec, shared by ``upgrade`` and ``update`` (see :func:`spec_changes`)."""
    for option in reversed((
            click.option("--image", default=None, help="the new image"),
            click.option("-e", "--env", multiple=True, help="KEY=VALUE to set (repeatable; the other variables stay)"),
            click.option("--command", "command_", default=None, help="a new shell command line"))):
        command = option(command)
    return command


def register(service: click.Group, service_id: Any) -> None:
    """Add the upgrade commands to ``corral service``."""

    @service.command("upgrade")
    @click.argument("ref")
    @spec_options
    @click.option("--parallelism", type=int, default=None, help="slots replaced together (default 1)")
    @click.option("--interval", default=None, help="between batches, e.g. 5s (default 0)")
    @click.option("--order", type=click.Choice(["start-first", "stop-first"]), default=None,
                  help="default: start-first behind a load balancer, else stop-first")
    @click.option("--failure-action", type=click.Choice(["rollback", "pause", "continue"]), default=None,
                  help="default rollback")
    @click.option("--min-healthy", default=None, help="how long a new container must stay healthy (default 2s)")
    @click.option("--healthy-deadline", default=None, help="how long it has to get there (default 60s)")
    @click.option("--max-failure-ratio", type=float, default=None, help="share of slots that may fail (default 0)")
    @click.option("--detach", is_flag=True, help="return at once (the upgrade goes on)")
    @click.option("--status", "status_only", is_flag=True, help="follow the current upgrade; start none")
    @click.option("--timeout", type=float, default=3600.0, show_default=True, help="seconds to wait at most")
    @url_option
    def upgrade(ref: str, image: str | None, env: tuple[str, ...], command_: str | None, parallelism: int | None,
                interval: str | None, order: str | None, failure_action: str | None, min_healthy: str | None,
                healthy_deadline: str | None, max_failure_ratio: float | None, detach: bool, status_only: bool,
                timeout: float, url: str) -> None:
        """Upgrade service REF batch by batch: each new container must run (and pass its health check)
        for min-healthy before the next batch; a failure rolls back (or pauses, or goes on). Waits and
        shows each batch; exits 1 if it ended rolled back or failed, 3 if it paused."""
        client = Client(url)
        sid = service_id(client, ref)
        if status_only:
            current = client.get(f"/v1/services/{sid}/upgrade").get("current")
            if current is None:
                raise fail(f"{ref} has no upgrade")
            raise SystemExit(watch(client, sid, current["id"], ref, timeout))
        spec = spec_changes(client, sid, image, env, command_)
        if not spec:
            raise click.UsageError("name what changes: --image, --env or --command")
        body: dict[str, Any] = {"spec": spec}
        strategy = strategy_body(parallelism, interval, order, failure_action, min_healthy, healthy_deadline,
                                 max_failure_ratio)
        if strategy is not None:
            body["strategy"] = strategy
        made = client.post(f"/v1/services/{sid}/upgrade", body)
        started(ref, made)
        if detach:
            return
        raise SystemExit(watch(client, sid, made["id"], ref, timeout))

    @service.command("update")
    @click.argument("ref")
    @spec_options
    @click.option("--scale", type=int, default=None, help="the number of containers (applied at once)")
    @click.option("--update-parallelism", type=int, default=None, help="the service's update_config: slots "
                  "replaced together from now on")
    @click.option("--update-interval", default=None, help="update_config: between batches, e.g. 5s")
    @click.option("--update-order", type=click.Choice(["start-first", "stop-first"]), default=None,
                  help="update_config: the order")
    @click.option("--update-failure-action", type=click.Choice(["rollback", "pause", "continue"]), default=None,
                  help="update_config: what a failed batch does")
    @click.option("--update-min-healthy", default=None, help="update_config: how long a new container must stay "
                  "healthy")
    @click.option("--update-healthy-deadline", default=None, help="update_config: how long it has to get there")
    @click.option("--update-max-failure-ratio", type=float, default=None,
                  help="update_config: share of slots that may fail")
    @click.option("--now", is_flag=True, help="replace every container at once (no upgrade: not health-gated, "
                  "not drained from load balancers)")
    @click.option("--detach", is_flag=True, help="return at once (an upgrade goes on)")
    @click.option("--timeout", type=float, default=3600.0, show_default=True, help="seconds to wait at most")
    @url_option
    def update(ref: str, image: str | None, env: tuple[str, ...], command_: str | None, scale: int | None,
               update_parallelism: int | None, update_interval: str | None, update_order: str | None,
               update_failure_action: str | None, update_min_healthy: str | None,
               update_healthy_deadline: str | None, update_max_failure_ratio: float | None, now: bool,
               detach: bool, timeout: float, url: str) -> None:
        """Change service REF's spec, as `docker service update` does: a new image, command or
        environment is an upgrade with the service's update_config (batch by batch, health-gated,
        rolled back on failure; the --update-* options change that config first), waited for as
        `service upgrade` is: exits 1 if it ended rolled back or failed, 3 if it paused. A new scale
        alone changes at once. --now replaces every container at once instead."""
        client = Client(url)
        sid = service_id(client, ref)
        spec = spec_changes(client, sid, image, env, command_)
        if scale is not None:
            spec["scale"] = scale
        strategy = strategy_body(update_parallelism, update_interval, update_order, update_failure_action,
                                 update_min_healthy, update_healthy_deadline, update_max_failure_ratio)
        if strategy is not None:
            current = client.get(f"/v1/services/{sid}")["spec"].get("update_config") or {}
            spec["update_config"] = {**{k: v for k, v in current.items() if v is not None}, **strategy}
        if not spec:
            raise click.UsageError("name what changes: --image, --env, --command, --scale or --update-*")
        answer = client.request("PATCH", f"/v1/services/{sid}", spec, query={"now": "true"} if now else None)
        up = answer.get("started_upgrade")
        if up is None:
            click.echo(f"{ref}: updated" + (", every container replaced at once" if now else
                                            " at once (no running container to replace batch by batch)"))
            if not detach and answer["state"] == "active":
                from agent.cli.stacks import converge  # stacks imports this module (watch)

                converge(client, sid, min(timeout, 600.0))
            return
        started(ref, up, " (the service's update_config)")
        if detach:
            return
        raise SystemExit(watch(client, sid, up["id"], ref, timeout))

    def _control(verb: str, doc: str) -> None:
        @service.command(verb, help=doc)
        @click.argument("ref")
        @click.option("--detach", is_flag=True, help="return at once")
        @click.option("--timeout", type=float, default=3600.0, show_default=True)
        @url_option
        def cmd(ref: str, detach: bool, timeout: float, url: str) -> None:
            client = Client(url)
            sid = service_id(client, ref)
            up = _steer(client, sid, verb)
            click.echo(f"{ref}: upgrade {up['id']} is {up['state']}" + (f" ({up['reason']})" if up["reason"] else ""))
            if detach or verb == "pause":
                return
            code = watch(client, sid, up["id"], ref, timeout)
            if verb == "rollback":  # the rollback succeeded when it ended rolled back
                final = client.get(f"/v1/services/{sid}/upgrade")["current"]
                code = 0 if final and final["state"] == "rolled-back" else code or EXIT_BACK
            raise SystemExit(code)

    _control("rollback", "Roll the current upgrade of service REF back to its previous spec, at once and with the "
             "same gating; waits (exit 0 once rolled back).")
    _control("pause", "Pause the current upgrade of service REF (no new batch).")
    _control("resume", "Resume the paused (or failed) upgrade of service REF; waits as upgrade does.")


__all__ = ["EXIT_BACK", "EXIT_PAUSED", "register", "spec_changes", "started", "strategy_body", "watch"]
