"""Make this host's Docker Engine match what the cluster assigned to it.

Theory of operation. The desired side is the replicated state: every instance whose ``host`` is
this host. The observed side is the engine's containers that carry Corral's labels. :func:`plan`
(pure) compares them and says what to do; :class:`Reconciler` does it, then reports each instance's
status (running, exited with code, OOM) back to the leader when it changed.

A pass runs when the applied state changes, when Docker reports an event on one of Corral's
containers (die, destroy, oom…: a ``docker rm -f`` by hand is seen at once), and every few seconds
regardless. Every container carries ``corral.instance``, ``corral.generation`` and
``corral.spec``: a container whose instance is no longer assigned here (say, left behind while this
host was cut off and its work moved) is removed; one whose generation or spec changed is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from agent.docker import LABEL_PREFIX, NETWORK, DockerEngine, NameInUse
from agent.errors import Conflict, CorralError, EngineUnreachable
from agent.health import HEALTHY, UNHEALTHY, HealthProber, ReplaceBackoff
from agent.state import MAX_ERROR, ClusterState
from mesh.aio import wait_event

log = logging.getLogger("corral.reconciler")

PERIOD = 5.0
CONCURRENCY = 8  # engine calls in flight per reconcile pass
CONTAINER_FIELDS = ("image", "command", "environment", "ports", "labels", "restart", "cpus", "memory", "health_check")
RESTART_POLICY = {"always": "always", "on-failure": "on-failure", "no": "no"}


@dataclasses.dataclass(frozen=True)
class Desired:
    instance: str
    name: str
    running: bool
    restart: str
    config: Mapping[str, Any]
    health_check: Mapping[str, Any] | None = None

    @property
    def fingerprint(self) -> str:
        return str(self.config["Labels"][LABEL_PREFIX + "spec"])


@dataclasses.dataclass(frozen=True)
class Action:
    kind: str  # create, start, stop, remove
    instance: str
    reason: str
    container: str | None = None
    desired: Desired | None = None


def container_config(state: ClusterState, instance: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's create request for an instance: image, command, env, ports and labels."""
    service = state.services[instance["service"]]
    stack = state.stacks[service["stack"]]
    spec = service["spec"]
    name = state.container_name(dict(instance))
    exposed: dict[str, dict[str, Any]] = {f"{p['target']}/{p['protocol']}": {} for p in spec["ports"]}
    # "80" publishes on an ephemeral host port (as compose does); "8080:80" on 8080.
    bindings = {f"{p['target']}/{p['protocol']}": [{"HostPort": str(p["published"] or "")}] for p in spec["ports"]}
    # Only what shapes the container: a new scale or placement rule must not restart the ones that stay.
    shape = {k: spec.get(k) for k in CONTAINER_FIELDS}
    fingerprint = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]
    labels = {
        **spec["labels"],
        LABEL_PREFIX + "instance": instance["id"],
        LABEL_PREFIX + "service": service["id"],
        LABEL_PREFIX + "stack": stack["name"],
        LABEL_PREFIX + "slot": str(instance["slot"]),
        LABEL_PREFIX + "generation": str(instance["generation"]),
        LABEL_PREFIX + "spec": f"{fingerprint}-{instance['generation']}",
    }
    config: dict[str, Any] = {
        "Image": spec["image"],
        "Hostname": name,
        "Env": [f"{k}={v}" for k, v in sorted(spec["environment"].items())]
        + [f"CORRAL_CONTAINER={name}", f"CORRAL_SERVICE={service['name']}", f"CORRAL_STACK={stack['name']}"],
        "Labels": labels,
        "ExposedPorts": exposed,
        "HostConfig": {
            "NetworkMode": NETWORK,
            "PortBindings": bindings,
            "RestartPolicy": {"Name": RESTART_POLICY[spec["restart"]]},
            "MemoryReservation": spec["memory"],
        },
    }
    if spec["command"]:
        config["Cmd"] = list(spec["command"])
    check = spec.get("health_check")
    if check and check["type"] == "command":  # Docker runs it in the container; http/tcp: agent/health.py
        config["Healthcheck"] = {"Test": ["CMD-SHELL", check["command"]], "Interval": _ns(check["interval"]),
                                 "Timeout": _ns(check["timeout"]), "Retries": check["retries"],
                                 "StartPeriod": _ns(check["start_period"])}
    return config


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def desired_here(state: ClusterState, host: str) -> dict[str, Desired]:
    out = {}
    for inst in state.instances.values():
        if inst["host"] != host or inst["service"] not in state.services:
            continue
        spec = state.services[inst["service"]]["spec"]
        out[inst["id"]] = Desired(inst["id"], state.container_name(inst), inst["desired"] == "running",
                                  spec["restart"], container_config(state, inst), spec.get("health_check"))
    return out


def plan(desired: Mapping[str, Desired], observed: Sequence[Mapping[str, Any]]) -> list[Action]:
    """What to do so that the engine holds exactly the desired containers, in the desired states."""
    actions: list[Action] = []
    by_instance: dict[str, list[Mapping[str, Any]]] = {}
    for container in observed:
        by_instance.setdefault(container["labels"].get(LABEL_PREFIX + "instance", ""), []).append(container)
    for instance, containers in sorted(by_instance.items()):
        want = desired.get(instance)
        if want is None:
            actions += [Action("remove", instance, "not assigned to this host", c["id"]) for c in containers]
            continue
        # Keep the one that matches (running first); remove duplicates and stale generations.
        fingerprint = want.fingerprint
        containers = sorted(containers, key=lambda c: (c["labels"].get(LABEL_PREFIX + "spec") != fingerprint,
                                                       c["state"] != "running", c["id"]))
        keep, extra = containers[0], containers[1:]
        actions += [Action("remove", instance, "duplicate", c["id"]) for c in extra]
        if keep["labels"].get(LABEL_PREFIX + "spec") != want.fingerprint:
            actions.append(Action("remove", instance, "spec or generation changed", keep["id"]))
            actions.append(Action("create", instance, "replace", desired=want))
        elif (want.running and keep["state"] == "running" and keep.get("health") == UNHEALTHY
              and want.health_check and want.health_check["on_unhealthy"] == "recreate"):
            actions.append(Action("remove", instance, "unhealthy", keep["id"]))
            actions.append(Action("create", instance, "replace the unhealthy one", desired=want))
        elif want.running and keep["state"] in ("created", "exited", "dead"):
            if want.restart == "always" or (want.restart == "on-failure" and keep["exit_code"] not in (0, None)) \
                    or keep["state"] == "created":
                actions.append(Action("start", instance, f"it is {keep['state']}", keep["id"]))
        elif not want.running and keep["state"] in ("running", "restarting"):
            actions.append(Action("stop", instance, "service stopped", keep["id"]))
    for instance, want in sorted(desired.items()):
        if instance not in by_instance:
            actions.append(Action("create", instance, "missing", desired=want))
    return actions


def observed_status(container: Mapping[str, Any] | None, inspect: Mapping[str, Any] | None = None) -> dict[str, Any]:
    if container is None:
        return {"status": "missing", "exit_code": None, "container_id": None, "health": None}
    state = container["state"]
    status = state if state in ("running", "restarting", "paused", "created") else "exited"
    oom = bool(inspect and inspect.get("State", {}).get("OOMKilled"))
    return {"status": "oom" if oom else status, "exit_code": container["exit_code"], "container_id": container["id"],
            "ip": container.get("ip"), "ports": list(container.get("ports") or []),
            "health": container.get("health"),
            "health_detail": container.get("health_detail") or _check_output(inspect)}


def _check_output(inspect: Mapping[str, Any] | None) -> str | None:
    """What Docker's last run of a failing command check said: ``exit 1: …``."""
    runs = ((inspect or {}).get("State", {}).get("Health") or {}).get("Log") or []
    if not runs or runs[-1].get("ExitCode") == 0:
        return None
    out = str(runs[-1].get("Output") or "").strip()
    return f"the check exited {runs[-1].get('ExitCode')}" + (f": {out[:200]}" if out else "")


def _reason(exc: BaseException) -> str:
    """A failed action's reason as a user reads it (a Corral error's message, else the exception)."""
    text = exc.message if isinstance(exc, CorralError) else f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR]


Reporter = Callable[[str, dict[str, Any]], Awaitable[None]]


class Reconciler:
    def __init__(self, host: str, state: ClusterState, engine: DockerEngine, report: Reporter) -> None:
        self.host = host
        self.state = state
        self.engine = engine
        self._report = report
        self._kick = asyncio.Event()
        self._reported: dict[str, dict[str, Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._network: str | None = None
        #: Why the last pass could not act on an instance (a create Docker refused…): reported with its
        #: status, so ``corral ps`` says why a container is missing instead of only that it is.
        self.errors: dict[str, str] = {}
        self.health = HealthProber(self.kick)
        self.backoff = ReplaceBackoff()
        self._retry_at: asyncio.TimerHandle | None = None
        self.passes = 0

    def kick(self) -> None:
        self._kick.set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._loop()), loop.create_task(self._watch_events())]
        self.kick()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.health.close()
        if self._retry_at is not None:
            self._retry_at.cancel()

    async def _loop(self) -> None:
        while True:
            await wait_event(self._kick, PERIOD)
            self._kick.clear()
            try:
                await self.reconcile_once()
            except EngineUnreachable as exc:
                log.warning("reconcile pass failed: %s", exc.message)
            except Exception:
                log.exception("reconcile pass failed")

    async def _watch_events(self) -> None:
        while True:
            try:
                async for event in self.engine.containers.events():
                    action = str(event.get("Action", ""))
                    if action in ("die", "destroy", "oom", "stop", "kill") or action.startswith("health_status"):
                        self.kick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the engine restarted: subscribe again
                log.warning("docker event stream ended (%s); resubscribing", exc)
            await asyncio.sleep(1.0)

    async def reconcile_once(self) -> list[Action]:
        containers = self.engine.containers
        subnet = self.state.hosts.get(self.host, {}).get("subnet")
        if subnet is None:
            return []  # not registered yet: nothing can be assigned here either
        if subnet != self._network:
            if await self.engine.ensure_network(subnet):
                log.info("docker network %s on %s", NETWORK, subnet)
            self._network = subnet
        desired = desired_here(self.state, self.host)
        seen = self._with_health(desired, await containers.list())
        actions = self._hold_back(plan(desired, seen), seen, desired)
        doomed = {a.instance: desired[a.instance] for a in actions if a.reason == "unhealthy"}
        if doomed:  # say so before the replacement hides it: the state keeps why, and an event
            await self._report_statuses(doomed, seen)
            now = asyncio.get_running_loop().time()
            for instance in doomed:
                self.backoff.replaced(instance, now)
        # Actions on different instances are independent: run them together (bounded), so 30 new
        # containers take about as long as a few, not thirty create+start round trips in a row.
        # The plan lists an instance's remove before its create; one instance's actions stay in order.
        by_instance: dict[str, list[Action]] = {}
        for action in actions:
            by_instance.setdefault(action.instance, []).append(action)
        gate = asyncio.Semaphore(CONCURRENCY)

        errors: dict[str, str] = {}

        async def run(steps: list[Action]) -> None:
            async with gate:
                for action in steps:
                    try:
                        await self._do(action, desired)
                    except Exception as exc:
                        errors[action.instance] = f"{action.kind} failed: {_reason(exc)}"
                        raise

        results = await asyncio.gather(*(run(steps) for steps in by_instance.values()), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        self.errors = errors  # an instance this pass did not fail on has no error (any more)
        self.passes += 1
        observed = await containers.list()
        self._probe(desired, observed)
        await self._report_statuses(desired, self._with_health(desired, observed))
        if failures:  # what did succeed is reported above; the next pass retries the rest
            raise failures[0]
        return actions

    async def _do(self, action: Action, desired: Mapping[str, Desired]) -> None:
        containers = self.engine.containers
        log.info("%s %s: %s", action.kind, desired[action.instance].name if action.instance in desired
                 else action.instance, action.reason)
        if action.kind == "remove" and action.container:
            await containers.remove(action.container)
        elif action.kind == "stop" and action.container:
            await containers.stop(action.container)
        elif action.kind == "start" and action.container:
            await containers.start(action.container)
        elif action.kind == "create" and action.desired is not None:
            await self._create(action.desired)

    async def _create(self, want: Desired) -> None:
        containers = self.engine.containers
        try:
            container_id = await containers.create(want.name, dict(want.config))
        except NameInUse:
            holder = await containers.inspect(want.name)
            labels = holder.get("Config", {}).get("Labels") or {}
            if LABEL_PREFIX + "instance" not in labels:
                raise Conflict(f"the name {want.name} is taken by container {str(holder.get('Id', ''))[:12]}, "
                               "which Corral does not manage: rename or remove it") from None
            await containers.remove(holder["Id"])  # a name left by a removed instance of ours
            container_id = await containers.create(want.name, dict(want.config))
        if want.running:
            await containers.start(container_id)

    def _hold_back(self, actions: list[Action], seen: Sequence[Mapping[str, Any]],
                   desired: Mapping[str, Desired]) -> list[Action]:
        """Drop the replacement of an unhealthy container whose instance is still backing off
        (``ReplaceBackoff``) and wake up when it may go; an instance seen healthy starts over."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for c in seen:
            if c.get("health") == HEALTHY:
                self.backoff.healthy(c["labels"].get(LABEL_PREFIX + "instance", ""))
        self.backoff.forget_except(set(desired))
        held = {a.instance: wait for a in actions if a.reason == "unhealthy"
                and (wait := self.backoff.wait(a.instance, now)) > 0}
        if not held:
            return actions
        log.info("holding back the replacement of %d unhealthy container(s) for up to %.0f s", len(held),
                 max(held.values()))
        if self._retry_at is not None:
            self._retry_at.cancel()
        self._retry_at = loop.call_later(min(held.values()) + 0.05, self.kick)
        replacing = ("unhealthy", "replace the unhealthy one")
        return [a for a in actions if a.instance not in held or a.reason not in replacing]

    def _with_health(self, desired: Mapping[str, Desired],
                     observed: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The containers with ``health``: Docker's for command checks, the prober's for http/tcp."""
        out = []
        for c in observed:
            want = desired.get(c["labels"].get(LABEL_PREFIX + "instance", ""))
            check = want.health_check if want is not None else None
            health = None
            if check and c["state"] == "running":
                health = c.get("docker_health") if check["type"] == "command" else self.health.health(c["id"])
            detail = self.health.detail(c["id"]) if health else None
            streak = self.backoff.streak(want.instance) if want is not None and health == UNHEALTHY else 0
            if streak:
                detail = f"{detail or 'unhealthy'}; replaced {streak}× in a row without turning healthy (backing off)"
            out.append({**c, "health": health, "health_detail": detail})
        return out

    def _probe(self, desired: Mapping[str, Desired], observed: Sequence[Mapping[str, Any]]) -> None:
        """Probe the running containers whose service has an http or tcp check (and only those)."""
        wanted: dict[str, tuple[Mapping[str, Any], str]] = {}
        for c in observed:
            want = desired.get(c["labels"].get(LABEL_PREFIX + "instance", ""))
            check = want.health_check if want is not None else None
            if check and check["type"] != "command" and c["state"] == "running" and c.get("ip"):
                wanted[c["id"]] = (check, c["ip"])
        self.health.sync(wanted)

    async def _report_statuses(self, desired: Mapping[str, Desired], observed: Sequence[Mapping[str, Any]]) -> None:
        by_instance = {c["labels"].get(LABEL_PREFIX + "instance"): c for c in observed}
        for instance in desired:
            container = by_instance.get(instance)
            inspect = None
            if container is not None and (container["state"] == "exited" or (
                    container.get("health") == "unhealthy" and container.get("docker_health"))):
                inspect = await self.engine.containers.inspect(container["id"])  # exit reason, check output
            status = observed_status(container, inspect)
            status["error"] = self.errors.get(instance)
            recorded = self.state.instances.get(instance, {})
            if self._reported.get(instance) == status and recorded.get("status") == status["status"]:
                continue
            try:
                await self._report(instance, status)
                self._reported[instance] = status
            except Exception as exc:
                log.debug("status report for %s failed: %s", instance, exc)
