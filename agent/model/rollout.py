"""The upgrade planner: from the replicated state and the time, what the leader proposes next.

Pure (the state, ``now`` and the lost hosts are arguments; it returns a command, never sends one), so
any leader resumes an upgrade from the state alone, and a table test walks every state.
:func:`next_batch` looks at one upgrade:

1. Each slot in flight (its new instance asked for): a pull error pauses the upgrade (a registry
   outage is not a bad release); an exit, a failed health check or a missed ``healthy_deadline`` fails
   the slot; running (and healthy, with a check) is recorded, and once it has lasted ``min_healthy``
   the slot is finished (its old instance goes).
2. Failures past ``max_failure_ratio`` of the slots take the failure action: ``rollback``, ``pause``
   or ``continue``; a failure while rolling back fails the upgrade (``failed``, resumable).
3. With nothing in flight and the interval over: the next batch, up to ``parallelism`` pending slots.
   Start-first keeps the old container until the new one is healthy (capacity never below the scale);
   a new one that must publish a fixed host port its old one holds goes to another host with room, or
   is done stop-first (a volume keeps it on its host, or no host has room), and the upgrade says which.
4. Nothing pending and nothing in flight: ``done`` (``rolled-back``; ``failed`` when slots failed
   under ``continue``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Set

from agent.model.commands import StepKind, UpgradeAdvance, UpgradeStep
from agent.model.entities import Health, Instance, Service, Status
from agent.model.mounts import MountType
from agent.model.placement import _request, host_facts
from agent.model.scheduler import Running, schedule
from agent.model.spec import Port, ServiceMode, ServiceSpec
from agent.model.state import ClusterState
from agent.model.strategy import FailureAction, Order
from agent.model.upgrade import MOVING, Phase, SlotProgress, Upgrade, UpgradeState
from agent.model.upgrades import version_of


@dataclasses.dataclass(frozen=True)
class Plan:
    command: UpgradeAdvance | None
    """What to propose now (None: nothing to do yet)."""
    wake: float | None = None
    """When to look again at the latest, besides any change of the state (None: only on a change)."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    step: StepKind | None
    reason: str | None = None
    wake: float | None = None
    pull_error: bool = False


def next_batch(state: ClusterState, up: Upgrade, now: float, lost: Set[str] = frozenset()) -> Plan:
    """The next ``upgrade.advance`` for ``up`` (see the module's theory of operation)."""
    service = state.services.get(up.service)
    if up.state not in MOVING or service is None:
        return Plan(None)
    strategy = up.active_strategy
    spec = up.target
    slots: dict[int, list[Instance]] = {}
    for inst in state.instances_of(service.id):
        slots.setdefault(inst.slot, []).append(inst)
    steps: list[UpgradeStep] = []
    wakes: list[float] = []
    failed: list[str] = []
    pull: str | None = None
    flying = 0
    for p in up.in_flight():
        verdict = _verdict(service, up, p, slots.get(p.slot, []), spec, now)
        if verdict.pull_error:
            pull = pull or verdict.reason
        if verdict.wake is not None:
            wakes.append(verdict.wake)
        if verdict.step is None:
            flying += 1
            continue
        steps.append(UpgradeStep(verdict.step, p.slot, reason=verdict.reason))
        if verdict.step is StepKind.FAIL:
            failed.append(f"{service.name}-{p.slot}: {verdict.reason}")
        elif verdict.step is StepKind.HEALTHY:
            flying += 1
    if pull is not None:
        return _advance(up, now, steps, UpgradeState.PAUSED, f"pull error, paused (not a bad release): {pull}")
    if failed:
        total = max(1, len(up.slots))
        if (up.failures + len(failed)) / total > strategy.max_failure_ratio + 1e-9:
            why = "; ".join(failed)
            if up.rolling_back:
                return _advance(up, now, steps, UpgradeState.FAILED, f"the rollback failed: {why}")
            if strategy.failure_action is FailureAction.ROLLBACK:
                return _advance(up, now, steps, UpgradeState.ROLLING_BACK, f"{why}: rolling back")
            if strategy.failure_action is FailureAction.PAUSE:
                return _advance(up, now, steps, UpgradeState.PAUSED, f"{why}: paused")
    if flying:
        return _advance(up, now, steps, wake=min(wakes) if wakes else None)
    ended = any(s.kind in (StepKind.FINISH, StepKind.FAIL) for s in steps)
    start_at = now + strategy.interval if ended else up.next_batch_at
    done_now = {s.slot for s in steps if s.kind is StepKind.FINISH}
    failed_now = {s.slot for s in steps if s.kind is StepKind.FAIL}
    pending = [s for s in sorted(slots) if _pending(service, up, s, slots[s], done_now | failed_now)]
    if not pending:
        failures = [p for p in up.slots if p.phase is Phase.FAILED and p.slot not in done_now] + \
            [p for p in up.slots if p.slot in failed_now]
        if up.rolling_back:
            return _advance(up, now, steps, UpgradeState.ROLLED_BACK, up.reason)
        if failures:
            which = f"{len(failures)} of {len(up.slots)} slot(s) failed (" + ", ".join(
                str(p.slot) for p in failures) + ")"
            if len(failures) / max(1, len(up.slots)) > strategy.max_failure_ratio + 1e-9:
                return _advance(up, now, steps, UpgradeState.FAILED, f"{which}, failure action continue")
            return _advance(up, now, steps, UpgradeState.DONE, f"{which}, within max_failure_ratio "
                            f"{strategy.max_failure_ratio:g}: they kept their old container")
        return _advance(up, now, steps, UpgradeState.DONE, None)
    if now < start_at:
        return _advance(up, now, steps, wake=start_at)
    running = [Running(i.service, i.host, state.services[i.service].spec.cpus, state.services[i.service].spec.memory)
               for i in state.instances.values() if i.service in state.services and i.host not in lost]
    for slot in pending[:strategy.parallelism]:
        old = next(i for i in slots[slot] if version_of(service, i) != up.target_version)
        host, order, note = _where(state, service, spec, old, strategy.order or Order.STOP_FIRST, lost, running)
        if order is Order.START_FIRST:
            running.append(Running(service.id, host, spec.cpus, spec.memory))
        steps.append(UpgradeStep(StepKind.BEGIN, slot, host=host, order=order, reason=note))
    return _advance(up, now, steps, wake=now + strategy.healthy_deadline)


def _advance(up: Upgrade, now: float, steps: list[UpgradeStep], state: UpgradeState | None = None,
             reason: str | None = None, wake: float | None = None) -> Plan:
    if not steps and state is None:
        return Plan(None, wake)
    return Plan(UpgradeAdvance(up.service, up.id, up.updated, tuple(steps), state, reason, now), wake)


def _pending(service: Service, up: Upgrade, slot: int, insts: list[Instance], settled: Set[int]) -> bool:
    """A slot still to do: an instance of it is not on the target version, it is not in flight, and it did
    not fail already (a failed slot is tried again only on resume)."""
    if slot in settled or (service.spec.mode == ServiceMode.REPLICATED and slot > service.spec.scale):
        return False
    p = up.progress(slot)
    if p is not None and p.phase in (Phase.STARTING, Phase.FAILED):
        return False
    return any(version_of(service, i) != up.target_version for i in insts)


def _verdict(service: Service, up: Upgrade, p: SlotProgress, insts: list[Instance], spec: ServiceSpec,
             now: float) -> Verdict:
    """What the slot's new container says: fail, record healthy, finish, or wait (until when)."""
    strategy = up.active_strategy
    new = next((i for i in insts if i.id == p.new), None) or next(
        (i for i in insts if version_of(service, i) == up.target_version), None)
    if new is None:
        return Verdict(StepKind.FAIL, "its new container is gone")
    checked = spec.health_check is not None
    where = f"on {new.host}"
    if new.status is Status.PULL_FAILED:
        return Verdict(None, f"{service.name}-{p.slot} {where}: {new.error or 'the image could not be pulled'}",
                       pull_error=True)
    if new.status in (Status.EXITED, Status.OOM, Status.RESTARTING):
        what = "was killed (out of memory)" if new.status is Status.OOM else (
            f"exited with code {new.exit_code}" if new.exit_code is not None else f"is {new.status}")
        return Verdict(StepKind.FAIL, f"its new container {where} {what}")
    if new.health is Health.UNHEALTHY:
        detail = f": {new.health_detail}" if new.health_detail else ""
        return Verdict(StepKind.FAIL, f"its new container {where} failed its health check{detail}")
    ok = new.status is Status.RUNNING and (not checked or new.health is Health.HEALTHY)
    if ok:
        if p.healthy_since is None:
            if strategy.min_healthy <= 0:
                return Verdict(StepKind.FINISH)
            return Verdict(StepKind.HEALTHY, wake=now + strategy.min_healthy)
        if now >= p.healthy_since + strategy.min_healthy - 1e-9:
            return Verdict(StepKind.FINISH)
        return Verdict(None, wake=p.healthy_since + strategy.min_healthy)
    if new.status is Status.PULLING:
        return Verdict(None)  # its host reports progress, or pull-failed; the deadline starts once it is here
    deadline = p.started + strategy.healthy_deadline
    if now >= deadline:
        what = "healthy" if checked else "running"
        error = f" ({new.error})" if new.error else ""
        return Verdict(StepKind.FAIL, f"its new container {where} was not {what} within "
                       f"{strategy.healthy_deadline:g} s{error}")
    return Verdict(None, wake=deadline)


def _fixed(ports: tuple[Port, ...]) -> set[tuple[int, str]]:
    return {(p.published, p.protocol.value) for p in ports if p.published is not None}


def _where(state: ClusterState, service: Service, spec: ServiceSpec, old: Instance, order: Order, lost: Set[str],
           running: list[Running]) -> tuple[str, Order, str | None]:
    """The host and the order for a slot's new instance, and a note when not as asked: a start-first
    instance whose fixed host port its old container holds goes to another host with room, or is done
    stop-first (its volume keeps it there, a global service has one per host, or no host has room)."""
    if order is Order.STOP_FIRST:
        return old.host, order, None
    held = _fixed(spec.ports) & _fixed(state.spec_of(old).ports)
    if not held:
        return old.host, order, None
    ports = ", ".join(f"{p}/{proto}" for p, proto in sorted(held))
    why = f"port {ports} is held by its old container on {old.host}"
    if any(m.type == MountType.VOLUME for m in spec.mounts):
        return old.host, Order.STOP_FIRST, f"{why} and its volume lives there: done stop-first"
    if spec.mode == ServiceMode.GLOBAL:
        return old.host, Order.STOP_FIRST, f"{why} (a global service runs one per host): done stop-first"
    environment = state.environment_of_service(service.id)
    busy = {i.host for i in state.instances.values() if i.service in state.services
            and _fixed(state.spec_of(i).ports) & held}
    facts = [h for h in host_facts(state, lost, environment) if h.name != old.host and h.name not in busy]
    request = dataclasses.replace(_request(dataclasses.replace(service, spec=spec), ()), slots=(old.slot,))
    decision = schedule([request], facts, running)
    if decision.placements:
        host = decision.placements[0].host
        return host, order, f"{why}: started on {host}"
    return old.host, Order.STOP_FIRST, f"{why} and no other host has room: done stop-first"


def current_plans(state: ClusterState, now: float, lost: Set[str] = frozenset()) -> list[Plan]:
    """A plan for every upgrade under way."""
    out = []
    for history in state.upgrades.values():
        up = history[-1]
        if up.state in MOVING:
            out.append(next_batch(state, up, now, lost))
    return out


__all__ = ["Plan", "current_plans", "next_batch"]
