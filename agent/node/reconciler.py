"""Make this host's Docker Engine match what the cluster assigned to it.

Theory of operation. The desired side is the replicated state: every instance whose ``host`` is
this host. The observed side is the engine's containers that carry Corral's labels.
:func:`agent.node.plan.plan` (pure) compares them and says what to do; :class:`Reconciler` does it,
then reports each instance's status (running, exited with code, OOM, health) back to the leader when
it changed.

A pass runs when something that decides this host's containers changed (an instance assigned here
appeared, went, or changed its desired state or generation; the spec of a service with instances
here changed in what shapes its containers; this host's record: the change feed), when Docker
reports an event on one of Corral's containers (die, destroy, oom, start…: a ``docker rm -f`` by
hand is seen at once), when a health check changes its verdict, soon again after a pass that failed,
and every ``SAFETY_PERIOD`` seconds regardless. Never per Raft heartbeat, and never for a status
report (its own included). An idle pass lists the engine's containers once; a pass that acted lists
them again to report what it did.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import asynccontextmanager

from prometheus_client import Histogram

from agent.cluster.feed import Feed, Subscription
from agent.errors import Conflict, EngineUnreachable
from agent.model.changes import Change, Topic
from agent.model.entities import Instance, Service, Stack, Status
from agent.model.lb import ServiceKind
from agent.model.mounts import MountType
from agent.model.order import waiting_for
from agent.model.spec import HealthType, PullPolicy
from agent.model.state import ClusterState
from agent.node.docker import LABEL_PREFIX, NETWORK, Engine, EngineContainer, NameInUse
from agent.node.health import HEALTHY, UNHEALTHY, HealthProber, ReplaceBackoff
from agent.node.images import ImageManager, Wait
from agent.node.lbconfig import drain_timeout_of, hold_for_drain
from agent.node.plan import (
    CONTAINER_FIELDS,
    LATER_CONTAINER_FIELDS,
    Action,
    ActionKind,
    Desired,
    HostPaths,
    Observed,
    Why,
    desired_one,
    observed_status,
    plan,
    reason,
)
from agent.node.storage import HostStorage
from mesh.aio import supervised, wait_event

log = logging.getLogger("corral.reconciler")

SAFETY_PERIOD = 30.0
CONCURRENCY = 8  # engine calls in flight per reconcile pass
RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # after a failed pass or report: again after 1 s, doubling up to 30 s
ENGINE_EVENTS = frozenset({"create", "start", "restart", "die", "destroy", "oom", "stop", "kill", "pause",
                           "unpause", "rename", "update"})
FAILURES_BEFORE_DEGRADED = 3
PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: an idle pass lists the engine once (ms); one that creates containers waits for Docker."""
RESTARTS = {Why.NOT_RUNNING: "exited", Why.REPLACE_UNHEALTHY: "unhealthy"}
"""The actions that restart a container (``corral_container_restarts_total``'s reasons)."""
# Docker sends ``die`` before its container list shows the container stopped (the list reads a copy of
# the state written after the event): a pass that still sees a died container running looks again
# this many times, DIE_RECHECK seconds apart, instead of leaving it to the safety pass 30 s later.
DIE_RECHECKS, DIE_RECHECK = 20, 0.1
ANNOUNCE_WAIT = 2.0  # seconds a new container waits for its address to be in this host's replica

Reporter = Callable[[str, Observed], Awaitable[None]]


class Reconciler:
    def __init__(self, host: str, state: ClusterState, engine: Engine, report: Reporter,
                 images: ImageManager | None = None, storage: HostStorage | None = None,
                 paths: HostPaths | None = None) -> None:
        self.host = host
        self.images = images
        self.storage = storage
        self.paths = paths or HostPaths()
        self.waiting: dict[str, Wait] = {}
        self.ordered: dict[str, Wait] = {}
        self._leaving: dict[str, float] = {}  # container → when first seen leaving while an LB sends to it
        self._restarts: dict[str, int] = {}  # instance → restarts made after a delay, in a row
        """Instances whose container waits for a service it depends on (``depends_on``) this pass."""
        """Instances whose container waits for its image this pass (and why: how far the fetch is)."""
        self.state = state
        self.engine = engine
        self._report = report
        self._kick = asyncio.Event()
        self._reported: dict[str, Observed] = {}
        self._inspected: dict[str, tuple[tuple[str, str | None], Mapping[str, object]]] = {}
        self._died: dict[str, int] = {}  # container id → passes that still saw it running after its ``die``
        self._network: str | None = None
        self._seen: Sequence[EngineContainer] = ()  # the engine's containers, as the last list showed them
        self._claimed: set[str] = set()  # addresses given to containers created this pass
        self._fresh: set[str] = set()  # containers started this pass: their first health probe is at once
        self._desired: dict[str, tuple[tuple[object, ...], Service, Stack, Desired]] = {}
        self._known: dict[str, tuple[str, int, int]] = {}  # instance → (desired, generation, spec version) seen
        self._shapes: dict[str, tuple[object, ...]] = {}  # service → what of its spec shapes containers
        #: Why the last pass could not act on an instance (a create Docker refused…): reported with its
        #: status, so ``corral ps`` says why a container is missing instead of only that it is.
        self.errors: dict[str, str] = {}
        self.health = HealthProber(self.kick)
        self.backoff = ReplaceBackoff()
        self._retry: asyncio.TimerHandle | None = None
        self._retry_delay = RETRY_FIRST
        self._tasks: list[asyncio.Task[None]] = []
        self.passes = 0
        self.failed_passes = 0  # in a row
        self.last_error: str | None = None
        # what /metrics reads (agent/api/metrics.py), kept here since nothing else counts them
        self.pass_seconds = Histogram("corral_reconciler_pass_seconds", "One reconcile pass, failed ones included",
                                      buckets=PASS_BUCKETS, registry=None)
        self.actions: Counter[tuple[str, str]] = Counter()
        """(action kind, ``ok`` | ``failed``) → how many."""
        self.restarts: Counter[str] = Counter()
        """``exited`` (started again) | ``unhealthy`` (replaced) → how many containers."""
        self.drift = 0
        """Instances whose container differed from what is desired when the last pass began."""
        self.desired_running = 0
        self.observed_running = 0

    def kick(self) -> None:
        self._kick.set()

    # ------------------------------------------------------------------ life cycle

    @asynccontextmanager
    async def running(self, feed: Feed) -> AsyncIterator[Reconciler]:
        """Reconcile for as long as the context is open."""
        changes = feed.subscribe(self.concerns, name="reconciler", notify=self.kick)
        try:
            async with supervised(self._loop(changes), "reconciler") as loop, \
                    supervised(self._watch_events(), "docker-events") as events:
                self._tasks = [loop, events]
                self.kick()
                yield self
        finally:
            changes.close()
            if self._retry is not None:
                self._retry.cancel()
            await self.health.close()

    def problem(self) -> str | None:
        """Why this host's containers are not being kept in line now, or None."""
        if any(t.done() for t in self._tasks):
            return "the reconciler stopped"
        if self.failed_passes >= FAILURES_BEFORE_DEGRADED:
            return f"{self.failed_passes} reconcile passes in a row failed: {self.last_error}"
        return None

    def concerns(self, change: Change) -> bool:
        """Whether an applied change decides what this host's engine should hold (the feed's filter)."""
        if change.topic is Topic.INSTANCE:
            if self.ordered and change.key not in self.ordered:  # maybe what one of them waits for
                return True
            if change.host != self.host:
                return False
            inst = self.state.instances.get(change.key)
            if inst is None:
                return change.key in self._known
            return self._known.get(inst.id) != (inst.desired.value, inst.generation, inst.spec_version)
        if change.topic is Topic.SERVICE:
            service = self.state.services.get(change.key)
            return change.key in self._shapes and (service is None or shape(service) != self._shapes[change.key])
        if change.topic is Topic.HOST:
            return change.key == self.host
        if change.topic is Topic.VOLUME:  # one of this host's volumes to remove
            volume = self.state.storage.volumes.get(change.key)
            return volume is not None and volume.host == self.host and volume.removing
        if change.topic is Topic.CONFIG:  # new content for a config a container here mounts
            return any(f.config == change.key for entry in self._desired.values() for f in entry[3].files)
        return change.topic is Topic.ALL

    async def _loop(self, changes: Subscription) -> None:
        while True:
            await wait_event(self._kick, SAFETY_PERIOD)
            self._kick.clear()
            changes.take()  # what changed does not matter: a pass compares everything of this host
            try:
                with self.pass_seconds.time():
                    await self.reconcile_once()
                self.failed_passes, self.last_error = 0, None
            except Exception as exc:
                self.failed_passes += 1
                self.last_error = exc.message if isinstance(exc, EngineUnreachable) else repr(exc)
                if isinstance(exc, EngineUnreachable):
                    log.warning("reconcile pass failed: %s", exc.message)
                else:
                    log.exception("reconcile pass failed")
                self._retry_soon()

    def _retry_soon(self) -> None:
        """Another pass after a short back-off, so a failure is retried without waiting for the safety pass."""
        if self._retry is not None:
            self._retry.cancel()
        self._retry = asyncio.get_running_loop().call_later(self._retry_delay, self.kick)
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)

    async def _watch_events(self) -> None:
        while True:
            try:
                async for event in self.engine.containers.events():
                    action = str(event.get("Action", ""))
                    self._note_event(action, event)
                    if action in ENGINE_EVENTS or action.startswith("health_status"):
                        self.kick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the engine restarted: subscribe again, and look at everything
                log.warning("docker event stream ended (%s); resubscribing", exc)
            self.kick()
            await asyncio.sleep(1.0)

    def _note_event(self, action: str, event: Mapping[str, object]) -> None:
        actor = event.get("Actor")
        container = event.get("id") or (actor.get("ID") if isinstance(actor, Mapping) else None)
        if not isinstance(container, str):
            return
        if action in ("start", "restart", "die"):  # another run: its exit (FinishedAt, code) is news
            self._inspected.pop(container, None)
        if action == "die":
            self._died[container] = 0
        elif action in ("start", "restart", "destroy"):
            self._died.pop(container, None)

    def _recheck_died(self, seen: Sequence[EngineContainer]) -> None:
        """A container that died but is still listed running: another pass shortly (see DIE_RECHECKS)."""
        listed = {c.id: c for c in seen}
        for container, passes in list(self._died.items()):
            c = listed.get(container)
            if c is None or c.state not in ("running", "restarting") or passes >= DIE_RECHECKS:
                del self._died[container]
            else:
                self._died[container] = passes + 1
        if self._died:  # one look again for all of them
            asyncio.get_running_loop().call_later(DIE_RECHECK, self.kick)

    # ------------------------------------------------------------------ one pass

    def desired(self) -> dict[str, Desired]:
        """What the engine should hold: every instance assigned here, as its container.

        A container's config is computed once per (instance, service, stack) record: records are
        frozen and replaced when they change, so an unchanged one is the same object next pass.
        """
        out: dict[str, Desired] = {}
        cache: dict[str, tuple[tuple[object, ...], Service, Stack, Desired]] = {}
        for inst in self.state.instances_on(self.host):
            service = self.state.services.get(inst.service)
            if service is None or service.spec.kind is ServiceKind.LOAD_BALANCER:
                continue  # a load balancer is an HAProxy process, run by agent/node/lb.py
            stack = self.state.stacks[service.stack]
            # all of an instance that shapes its container (with the content of the configs it mounts)
            key = (inst.generation, inst.desired.value, inst.spec_version, *self._config_digests(inst, stack))
            hit = self._desired.get(inst.id)
            if hit is not None and hit[0] == key and hit[1] is service and hit[2] is stack:
                want = hit[3]
            else:
                want = desired_one(self.state, inst, self.paths)
            cache[inst.id] = (key, service, stack, want)
            out[inst.id] = want
        self._desired = cache
        self._known = {i: (str(entry[0][1]), int(str(entry[0][0])), int(str(entry[0][2])))
                       for i, entry in cache.items()}
        self._shapes = {entry[1].id: shape(entry[1]) for entry in cache.values()}
        return out

    def _config_digests(self, inst: Instance, stack: Stack) -> list[str | None]:
        out = []
        for m in self.state.spec_of(inst).mounts:
            if m.source is not None and m.type in (MountType.CONFIG, MountType.SECRET):
                config = self.state.storage.config_for(stack.environment, stack.name, m.source)
                out.append(config.digest if config else None)
        return out

    async def reconcile_once(self) -> list[Action]:
        me = self.state.hosts.get(self.host)
        if me is None:
            return []  # not registered yet: nothing can be assigned here either
        if me.subnet != self._network:
            if await self.engine.ensure_network(me.subnet):
                log.info("docker network corral on %s", me.subnet)
            self._network = me.subnet
        desired = self.desired()
        seen = self._with_health(desired, await self.engine.containers.list())
        self._seen, self._claimed = seen, set()  # addresses claimed last pass are in this list or the state now
        planned = plan(desired, seen)
        self._measure(desired, seen, planned)
        actions = self._hold_back(planned, seen, desired)
        actions = await self._gate_images(self._gate_order(await self._delay_restarts(actions, seen, desired)))
        doomed = {a.instance: desired[a.instance] for a in actions if a.reason is Why.UNHEALTHY}
        if doomed:  # say so before the replacement hides it: the state keeps why, and an event
            if not await self._report_statuses(doomed, seen):
                self._retry_soon()
            now = asyncio.get_running_loop().time()
            for instance in doomed:
                self.backoff.replaced(instance, now)
        failures = await self._act(actions, desired)
        self.passes += 1
        if actions:  # what the pass did: look again before reporting it
            seen = self._with_health(desired, await self.engine.containers.list())
        self._probe(desired, seen)
        self._recheck_died(seen)
        if self.storage is not None:
            self.storage.sweep(desired.values())
            await self.storage.remove_volumes()
        reported = await self._report_statuses(desired, seen)
        if failures:  # what did succeed is reported above; the next pass retries the rest
            raise failures[0]
        if reported:
            self._retry_delay = RETRY_FIRST
        else:
            self._retry_soon()
        return actions

    def _measure(self, desired: Mapping[str, Desired], seen: Sequence[EngineContainer], planned: list[Action]) -> None:
        self.drift = len({a.instance for a in planned})
        self.desired_running = sum(1 for d in desired.values() if d.running)
        self.observed_running = sum(1 for c in seen if c.state == "running" and c.instance in desired)

    async def _delay_restarts(self, actions: list[Action], seen: Sequence[EngineContainer],
                              desired: Mapping[str, Desired]) -> list[Action]:
        """A service with a restart delay (compose's ``restart_policy.delay``): an exited container is
        started again only ``delay`` seconds after it exited (a pass is due then), and, with
        ``max_attempts``, only that many times in a row (counted here; a new container starts over)."""
        by_id = {c.id: c for c in seen}
        out = []
        now = time.time()
        for action in actions:
            want = desired.get(action.instance)
            if action.kind is ActionKind.CREATE:
                self._restarts.pop(action.instance, None)
            container = by_id.get(action.container or "")
            if (action.kind is not ActionKind.START or want is None or not want.restart_delay or container is None
                    or container.state != "exited"):
                out.append(action)
                continue
            done = self._restarts.get(action.instance, 0)
            if want.restart_max_attempts and done >= want.restart_max_attempts:
                continue  # given up, as Docker would: its exit code says why
            inspect = await self._inspect(container)
            finished = _finished_at(inspect)
            due = (finished or now) + want.restart_delay - now
            if finished is not None and due > 0:
                asyncio.get_running_loop().call_later(due + 0.05, self.kick)
                continue
            self._restarts[action.instance] = done + 1
            out.append(action)
        self._restarts = {i: n for i, n in self._restarts.items() if i in desired}
        return out

    def _gate_order(self, actions: list[Action]) -> list[Action]:
        """Leave out the creation of a missing container whose service waits for another
        (``depends_on``); it says ``waiting`` and why, and a change of any instance wakes a pass."""
        self.ordered = {}
        for action in actions:
            if action.kind is ActionKind.CREATE and action.reason is Why.MISSING:
                inst = self.state.instances.get(action.instance)
                service = self.state.services.get(inst.service) if inst else None
                why = waiting_for(self.state, service) if service else None
                if why is not None:
                    self.ordered[action.instance] = Wait(Status.WAITING, why)
        return [a for a in actions if a.instance not in self.ordered]

    async def _gate_images(self, actions: list[Action]) -> list[Action]:
        """Leave out what an instance would do whose new container's image is not here yet (its old
        container, if any, keeps running meanwhile): the image manager fetches it in the background
        and kicks a pass when it is here; the instance says ``pulling`` (or why it failed) until then."""
        self.waiting = dict(self.ordered)
        if self.images is None:
            return actions
        verdicts: dict[tuple[str, PullPolicy], Wait | None] = {}
        for action in actions:
            if action.kind is ActionKind.CREATE and action.desired is not None:
                key = (action.desired.image, action.desired.pull)
                if key not in verdicts:
                    verdicts[key] = await self.images.check(*key)
                wait = verdicts[key]
                if wait is not None:
                    self.waiting[action.instance] = wait
        return [a for a in actions if a.instance not in self.waiting]

    async def _act(self, actions: list[Action], desired: Mapping[str, Desired]) -> list[BaseException]:
        """Run the actions; those of different instances together (bounded), one instance's in order,
        so 30 new containers take about as long as a few, not thirty create+start round trips in a row."""
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
                        errors[action.instance] = f"{action.kind} failed: {reason(exc)}"
                        self.actions[action.kind.value, "failed"] += 1
                        raise
                    self.actions[action.kind.value, "ok"] += 1
                    if action.reason in RESTARTS:
                        self.restarts[RESTARTS[action.reason]] += 1

        results = await asyncio.gather(*(run(steps) for steps in by_instance.values()), return_exceptions=True)
        self.errors = errors  # an instance this pass did not fail on has no error (any more)
        return [r for r in results if isinstance(r, BaseException)]

    async def _do(self, action: Action, desired: Mapping[str, Desired]) -> None:
        containers = self.engine.containers
        name = desired[action.instance].name if action.instance in desired else action.instance
        log.info("%s %s: %s", action.kind, name, action.reason)
        if action.kind is ActionKind.REMOVE and action.container:
            await containers.remove(action.container)
        elif action.kind is ActionKind.STOP and action.container:
            await containers.stop(action.container)
        elif action.kind is ActionKind.START and action.container:
            self._inspected.pop(action.container, None)
            try:
                await containers.start(action.container)
            except EngineUnreachable:
                address = next((c.address for c in self._seen if c.id == action.container), None)
                if address and address in await self._network_addresses():
                    # made with an address another container took since: made again, with a free one
                    log.warning("%s's address %s is taken by another container: it is made again", name, address)
                    await containers.remove(action.container)
                raise
        elif action.kind is ActionKind.CREATE and action.desired is not None:
            await self._create(action.desired)

    async def _network_addresses(self) -> set[str]:
        """Every address on the ``corral`` network now; empty when the engine cannot say (a start that
        collides then fails and is redone, so a guess costs one retry, never a wrong address)."""
        try:
            return await self.engine.network_addresses()
        except EngineUnreachable as exc:
            log.warning("the corral network's addresses: %s", exc)
            return set()

    def _claim_address(self, taken: AbstractSet[str] = frozenset()) -> str | None:
        """A free address of this host's /24 for a new container (None: let Docker choose): not the
        gateway, not one a container here has or was given, not one the state records here, not one
        any container on the network holds (``taken``: the drill's probe, a user's ``docker run
        --network corral``, none of them Corral's)."""
        subnet = self._subnet_here()
        if subnet is None:
            return None
        used = set(self._claimed) | taken
        for c in self._seen:
            used.update(a for a in (c.ip, c.address) if a)
        used.update(i.ip for i in self.state.instances_on(self.host) if i.ip)
        hosts = ipaddress.IPv4Network(subnet).hosts()
        next(hosts, None)  # the gateway: the bridge's own address, where the DNS server listens
        for address in hosts:
            if str(address) not in used:
                self._claimed.add(str(address))
                return str(address)
        return None

    async def _announce(self, instance: str, address: str) -> None:
        """Report the new container's address before it starts, and wait (briefly) until this host's
        replica has it: its DNS name answers before its entrypoint runs (Rancher #3987). Never raises:
        the container starts anyway, and its name answers once its running status is reported."""
        try:
            await self._report(instance, Observed(Status.CREATED, ip=address))
        except Exception as exc:
            log.warning("announcing %s's address failed: %s", instance, getattr(exc, "message", exc))
            return
        deadline = asyncio.get_running_loop().time() + ANNOUNCE_WAIT
        while asyncio.get_running_loop().time() < deadline:
            recorded = self.state.instances.get(instance)
            if recorded is None or recorded.ip == address:
                return
            await asyncio.sleep(0.005)

    async def _create(self, want: Desired) -> None:
        if self.storage is not None:
            await self.storage.prepare(want)
        if self._subnet_here() is None:
            await self._create_at(want, None)
            return
        taken = await self._network_addresses()
        address = self._claim_address(taken)
        try:
            await self._create_at(want, address)
        except EngineUnreachable:
            if address is None:
                raise
            if await self._runs(want.name):  # the engine answered late (loaded host), yet it did start it
                log.warning("%s: the engine did not answer its start in time, but it started", want.name)
                return
            if address not in await self._network_addresses():
                raise
            # another container took the address between the look and the start: once more, with another
            log.warning("%s: address %s was taken meanwhile; made again with another", want.name, address)
            await self.engine.containers.remove(want.name)
            await self._create_at(want, self._claim_address(taken | {address}))

    async def _runs(self, name: str) -> bool:
        """Whether the container ``name`` runs: a start that timed out may have happened anyway, and the
        address it holds is then its own (it used to be taken for another's, and the container made
        again: seconds lost in every such start on a loaded host)."""
        try:
            state = (await self.engine.containers.inspect(name)).get("State")
        except EngineUnreachable:
            return False
        return isinstance(state, Mapping) and state.get("Running") is True

    def _subnet_here(self) -> str | None:
        me = self.state.hosts.get(self.host)
        return me.subnet if me is not None and me.subnet else None

    async def _create_at(self, want: Desired, address: str | None) -> None:
        containers = self.engine.containers
        body = want.config
        if address is not None:  # the address is Corral's choice, so it is known (and in DNS) before start
            body = {**body, "NetworkingConfig": {"EndpointsConfig": {NETWORK: {"IPAMConfig": {
                "IPv4Address": address}}}}}
        loop = asyncio.get_running_loop()
        began = loop.time()
        # the address goes through Raft while the engine makes the container, not after it: that write is
        # no longer in series with the create (the container's id comes with its running status)
        announcing = asyncio.ensure_future(self._announce(want.instance, address)) \
            if want.running and address is not None else None
        try:
            container_id = await self._make(want.name, body)
        finally:
            if announcing is not None:
                await announcing  # it never raises; a failed create still waits for it, then raises
        if want.running:
            ready = loop.time()
            await containers.start(container_id)
            self._fresh.add(container_id)
            log.info("started %s: made and its address in the state in %.2f s, started in %.2f s", want.name,
                     ready - began, loop.time() - ready)

    async def _make(self, name: str, body: Mapping[str, object]) -> str:
        """Create the container (a name left by a removed instance of ours is taken back)."""
        containers = self.engine.containers
        try:
            return await containers.create(name, body)
        except NameInUse:
            holder = await containers.inspect(name)
            config = holder.get("Config")
            labels = config.get("Labels") if isinstance(config, Mapping) else None
            if not isinstance(labels, Mapping) or LABEL_PREFIX + "instance" not in labels:
                raise Conflict(f"the name {name} is taken by container {str(holder.get('Id', ''))[:12]}, "
                               "which Corral does not manage: rename or remove it") from None
            await containers.remove(str(holder["Id"]))
            return await containers.create(name, body)

    def _hold_back(self, actions: list[Action], seen: Sequence[EngineContainer],
                   desired: Mapping[str, Desired]) -> list[Action]:
        """Drop the replacement of an unhealthy container whose instance is still backing off
        (``ReplaceBackoff``) and wake up when it may go; an instance seen healthy starts over."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        actions = self._hold_for_drain(actions, seen, now)
        for c in seen:
            if c.health == HEALTHY:
                self.backoff.healthy(c.instance)
        self.backoff.forget_except(set(desired))
        held = {a.instance: wait for a in actions if a.reason is Why.UNHEALTHY
                and (wait := self.backoff.wait(a.instance, now)) > 0}
        if not held:
            return actions
        log.info("holding back the replacement of %d unhealthy container(s) for up to %.0f s", len(held),
                 max(held.values()))
        if self._retry is not None:
            self._retry.cancel()
        self._retry = loop.call_later(min(held.values()) + 0.05, self.kick)
        return [a for a in actions if a.instance not in held or a.reason not in (Why.UNHEALTHY, Why.REPLACE_UNHEALTHY)]

    def _hold_for_drain(self, actions: list[Action], seen: Sequence[EngineContainer], now: float) -> list[Action]:
        """Keep a container that a load balancer sends to for its drain timeout after it was scaled away
        or its service stopped, so the balancers drain it (no new requests, in-flight ones finish)
        before it stops."""
        services = {c.id: c.labels.get(LABEL_PREFIX + "service", "") for c in seen}
        leaving = {a.container: drain_timeout_of(self.state, services.get(a.container, ""))
                   for a in actions if a.container and a.kind in (ActionKind.STOP, ActionKind.REMOVE)
                   and a.reason in (Why.NOT_ASSIGNED, Why.SERVICE_STOPPED)}
        held, wake = hold_for_drain(leaving, self._leaving, now)
        if not held:
            return actions
        log.info("keeping %d container(s) while load balancers drain them", len(held))
        assert wake is not None
        asyncio.get_running_loop().call_later(max(0.0, wake - now) + 0.05, self.kick)
        return [a for a in actions if a.container not in held]

    def _with_health(self, desired: Mapping[str, Desired],
                     observed: Sequence[EngineContainer]) -> list[EngineContainer]:
        """The containers with ``health``: Docker's for command checks, the prober's for http/tcp."""
        out = []
        for c in observed:
            want = desired.get(c.instance)
            check = want.health_check if want is not None else None
            health = None
            if check and c.state == "running":
                health = c.docker_health if check.type == HealthType.COMMAND else self.health.health(c.id)
            detail = self.health.detail(c.id) if health else None
            streak = self.backoff.streak(want.instance) if want is not None and health == UNHEALTHY else 0
            if streak:
                detail = f"{detail or 'unhealthy'}; replaced {streak}× in a row without turning healthy (backing off)"
            out.append(dataclasses.replace(c, health=health, health_detail=detail))
        return out

    def _probe(self, desired: Mapping[str, Desired], observed: Sequence[EngineContainer]) -> None:
        """Probe the running containers whose service has an http or tcp check (and only those)."""
        wanted = {}
        for c in observed:
            want = desired.get(c.instance)
            check = want.health_check if want is not None else None
            if check and check.type != HealthType.COMMAND and c.state == "running" and c.ip:
                wanted[c.id] = (check, c.ip)
        self.health.sync(wanted, self._fresh)
        self._fresh.clear()  # started this pass: listed (and probed at once) by now, or gone

    async def _inspect(self, container: EngineContainer) -> Mapping[str, object] | None:
        """The engine's inspect of a container whose status needs it (exit reason, a command check's
        output), once per state it is seen in: an exited container is not inspected every pass."""
        if not (container.state == "exited" or (container.health == UNHEALTHY and container.docker_health)):
            return None
        key = (container.state, container.docker_health)
        cached = self._inspected.get(container.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        inspect = await self.engine.containers.inspect(container.id)
        self._inspected[container.id] = (key, inspect)
        return inspect

    async def _report_statuses(self, desired: Mapping[str, Desired], observed: Sequence[EngineContainer]) -> bool:
        """Report every instance whose status changed; False if a report failed (retried soon)."""
        by_instance = {c.instance: c for c in observed}
        live = {c.id for c in observed}
        for cid in [c for c in self._inspected if c not in live]:
            del self._inspected[cid]
        for gone in [i for i in self._reported if i not in self.state.instances]:
            del self._reported[gone]
        changed: list[tuple[str, Observed]] = []
        for instance in desired:
            container = by_instance.get(instance)
            wait = self.waiting.get(instance)
            if container is None and wait is not None:
                status = Observed(wait.status, error=wait.detail)
            else:
                status = observed_status(container, await self._inspect(container) if container else None,
                                         self.errors.get(instance))
            recorded = self.state.instances.get(instance)
            if self._reported.get(instance) == status and recorded is not None and recorded.status == status.status:
                continue
            changed.append((instance, status))
        # together, not one round trip after another: the replica sends the writes waiting in one batch,
        # so the last of a batch of new containers is reported as soon as the first
        results = await asyncio.gather(*(self._report(i, status) for i, status in changed), return_exceptions=True)
        failed = False
        for (instance, status), result in zip(changed, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, Exception):
                failed = True
                log.warning("status report for %s failed: %s", instance, getattr(result, "message", result))
            else:
                self._reported[instance] = status
        return not failed


def _finished_at(inspect: Mapping[str, object] | None) -> float | None:
    """When an exited container exited (``State.FinishedAt``, RFC 3339 with nanoseconds), as a Unix time."""
    state = (inspect or {}).get("State")
    raw = state.get("FinishedAt") if isinstance(state, Mapping) else None
    if not isinstance(raw, str) or raw.startswith("0001-"):
        return None
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", raw)
    if match is None:
        return None
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    whole = datetime.datetime.fromisoformat(match.group(1) + zone).timestamp()
    return whole + float("0" + (match.group(2) or ""))


def shape(service: Service) -> tuple[object, ...]:
    """What of a service decides its containers (a new scale or placement rule does not)."""
    return (service.name, *(getattr(service.spec, f) for f in (*CONTAINER_FIELDS, *LATER_CONTAINER_FIELDS)))


__all__ = ["CONCURRENCY", "SAFETY_PERIOD", "Reconciler"]
