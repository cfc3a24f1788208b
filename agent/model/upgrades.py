"""Applying the upgrade commands to the state (``upgrade.start``, ``upgrade.control``, ``upgrade.advance``).

The record and its states are :mod:`agent.model.upgrade`'s; what to do next is the planner's
(:mod:`agent.model.rollout`). Here every command is checked whole before anything changes (a
CommandError naming the field otherwise), then applied: instances made and dropped, the service's spec
switched, the record replaced, events written. Deterministic: times come from the commands.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from agent.model import spec as specs
from agent.model import strategy as strategies
from agent.model.changes import Topic
from agent.model.commands import Actor, Outcome, StepKind, UpgradeAdvance, UpgradeControl, UpgradeStart, UpgradeStep
from agent.model.entities import Desired, EventKind, Instance, Service, ServiceState, Status
from agent.model.errors import SpecError, bad_request, conflict
from agent.model.lb import ServiceKind
from agent.model.mounts import MountType, volume_key
from agent.model.strategy import Order, UpdateStrategy
from agent.model.upgrade import (
    FINISHED,
    MAX_HISTORY,
    MAX_NOTES,
    MOVING,
    Control,
    Phase,
    SlotProgress,
    Upgrade,
    UpgradeState,
    control,
)

if TYPE_CHECKING:
    from agent.model.state import ClusterState

UPGRADE_FIELDS_REFUSED = {"scale": "change the scale with `service scale`, not in an upgrade",
                          "kind": "a service's kind cannot change", "mode": "a service's mode cannot change"}


def behind_load_balancer(state: ClusterState, service: Service) -> bool:
    """Whether a load balancer of the service's environment sends to it (start-first is then the default)."""
    stack = state.stacks.get(service.stack)
    if stack is None:
        return False
    for lb in state.services.values():
        lb_stack = state.stacks.get(lb.stack)
        if lb.spec.lb is None or lb_stack is None or lb_stack.environment != stack.environment:
            continue
        if any((t.stack or lb_stack.name, t.service) == (stack.name, service.name) for t in lb.spec.lb.targets()):
            return True
    return False


REPLACES_NOTHING = ("scale", "placement", "update_config", "rollback_config", "service_labels", "depends_on",
                    "aliases", "on_host_loss")
"""Spec fields whose change replaces no container (a stack deploy changes them in place)."""


def needs_upgrade(state: ClusterState, service: Service, spec: specs.ServiceSpec) -> bool:
    """Whether a new spec for ``service`` replaces containers that stay (within the new scale): then a
    stack deploy, or a PATCH, upgrades it."""
    has_instances = any(spec.mode == specs.ServiceMode.GLOBAL or i.slot <= spec.scale
                        for i in state.instances_of(service.id))
    if not has_instances or service.spec.kind is ServiceKind.LOAD_BALANCER or spec.kind != service.spec.kind \
            or spec.mode != service.spec.mode or service.state != ServiceState.ACTIVE:
        return False
    same = {k: getattr(service.spec, k) for k in REPLACES_NOTHING}
    return dataclasses.replace(spec, **same) != service.spec


def version_of(service: Service, inst: Instance) -> int:
    """The spec version an instance runs (0 stands for the service's current one)."""
    return inst.spec_version or service.version


def strategies_for(state: ClusterState, service: Service, spec: specs.ServiceSpec, cmd: UpgradeStart,
                   clamp: bool = False) -> tuple[UpdateStrategy, UpdateStrategy]:
    """The upgrade's strategy and its rollback's: the call's fields over the spec's, the order decided.
    A parallelism above the service's size is refused (``clamp``: cut to it, for a compose file's)."""
    strategy = strategies.parse(cmd.strategy, "strategy", spec.update_config or UpdateStrategy())
    assert strategy is not None
    rollback = strategies.parse(cmd.rollback_strategy, "rollback_strategy", spec.rollback_config or strategy)
    assert rollback is not None
    size = len(state.instances_of(service.id)) if spec.mode == specs.ServiceMode.GLOBAL else spec.scale
    if clamp:
        strategy = dataclasses.replace(strategy, parallelism=min(strategy.parallelism, max(size, 1)))
        rollback = dataclasses.replace(rollback, parallelism=min(rollback.parallelism, max(size, 1)))
    for field, s in (("strategy", strategy), ("rollback_strategy", rollback)):
        if s.parallelism > max(size, 1):
            raise bad_request(f"{field}.parallelism: {s.parallelism} is above the service's {size} containers",
                              f"{field}.parallelism")
    order = Order.START_FIRST if behind_load_balancer(state, service) else Order.STOP_FIRST
    if strategy.order is None:
        strategy = dataclasses.replace(strategy, order=order)
    if rollback.order is None:
        rollback = dataclasses.replace(rollback, order=strategy.order)
    return strategy, rollback


def check_start(state: ClusterState, cmd: UpgradeStart) -> tuple[Service, specs.ServiceSpec]:
    """The service and the next spec, every rule checked (CommandError naming the field otherwise)."""
    service = state.service(cmd.service)
    if not cmd.spec:
        raise bad_request("an upgrade names at least one field of the spec to change", "spec")
    for key, why in UPGRADE_FIELDS_REFUSED.items():
        if key in cmd.spec:
            raise bad_request(why, f"spec.{key}")
    if service.spec.kind is ServiceKind.LOAD_BALANCER:
        raise bad_request("a load balancer's rules change in place (a hitless reload): PATCH the service",
                          "service")
    if service.state != ServiceState.ACTIVE:
        raise conflict(f"service {service.name} is stopped: start it before upgrading it", "service")
    try:
        spec = service.spec.changed(cmd.spec)
    except SpecError as exc:
        raise SpecError(f"spec.{exc.field}" if exc.field else "spec", exc.message.split(": ", 1)[-1]) from None
    if spec == service.spec:
        raise bad_request("the upgrade changes nothing in the spec", "spec")
    stack = state.stacks[service.stack]
    state.storage.check_spec(stack.environment, stack.name, spec)
    state.check_ports_and_targets(stack.environment, stack.name, service.name, spec)
    return service, spec


def start(state: ClusterState, cmd: UpgradeStart, index: int, actor: Actor | None) -> Outcome:
    service, spec = check_start(state, cmd)
    strategy, rollback_strategy = strategies_for(state, service, spec, cmd)
    at = cmd.at or (actor.at if actor else 0.0)
    up = begin(state, service, spec, strategy, rollback_strategy, index, at, actor.user if actor else None)
    changed = ", ".join(sorted(cmd.spec)) or "spec"
    state.event(index, EventKind.UPGRADE_STARTED,
                f"upgrade {up.id} of {_name(state, service)} started ({changed}): {len(up.slots)} slot(s), "
                f"{strategy.parallelism} at a time, {strategy.order}, failure action {strategy.failure_action}",
                service=service.id, upgrade=up.id)
    return Outcome(index, id=up.id)


def begin(state: ClusterState, service: Service, spec: specs.ServiceSpec, strategy: UpdateStrategy,
          rollback_strategy: UpdateStrategy, index: int, at: float, by: str | None) -> Upgrade:
    """Make the upgrade record (taking over the service's unfinished one) and switch the service's spec;
    nothing is replaced yet: the instances keep the version they run until the planner begins them."""
    old = state.current_upgrade(service.id)
    older: dict[int, specs.ServiceSpec] = {}
    if old is not None and old.state not in FINISHED:
        for p in old.in_flight():  # an unproven new container goes; the old one it was to replace stays
            if p.old is not None and p.old in state.instances and p.new in state.instances:
                state.drop_instance(state.instances[p.new], index)
        state.event(index, EventKind.UPGRADE_STATE, f"upgrade {old.id} of {_name(state, service)} is replaced by "
                    f"upgrade u{index} ({old.state} until now)", service=service.id, upgrade=old.id)
    versions = {version_of(service, i) for i in state.instances_of(service.id)}
    if old is not None:
        for v in versions - {service.version}:
            found = old.spec_of(v)
            if found is not None:
                older[v] = found
    for inst in state.instances_of(service.id):
        if inst.spec_version == 0:
            state.put_instance(dataclasses.replace(inst, spec_version=service.version), index)
    slots = sorted({i.slot for i in state.instances_of(service.id)})
    up = Upgrade(
        id=f"u{index}", service=service.id, state=UpgradeState.ROLLING, previous=service.spec,
        previous_version=service.version, next=spec, next_version=index, strategy=strategy,
        rollback_strategy=rollback_strategy, slots=tuple(SlotProgress(s) for s in slots), created=index,
        updated=index, started_at=at, updated_at=at, next_batch_at=at, older=tuple(sorted(older.items())), by=by)
    state.put_service(dataclasses.replace(service, spec=spec, version=index, updated=index), index)
    _put(state, up, index)
    return up


def begin_change(state: ClusterState, service: Service, spec: specs.ServiceSpec, index: int, at: float,
                 by: str | None, how: str) -> Upgrade:
    """A new spec that replaces containers (``needs_upgrade``), from a stack deploy or a PATCH, made an
    upgrade with the new spec's ``update_config`` and ``rollback_config``: a new scale applies at once
    (slots above it go now, new ones are placed with the new spec), the rest batch by batch. A
    parallelism above the service's size is cut to it (compose's ``0``, all at once, is 1 already)."""
    for inst in state.instances_of(service.id):
        if spec.mode == specs.ServiceMode.REPLICATED and inst.slot > spec.scale:
            state.drop_instance(inst, index)
    scaled = dataclasses.replace(service, spec=dataclasses.replace(service.spec, scale=spec.scale))
    state.put_service(scaled, index)
    strategy, back = strategies_for(state, scaled, spec, UpgradeStart(service.id, {}), clamp=True)
    up = begin(state, scaled, spec, strategy, back, index, at, by)
    state.event(index, EventKind.UPGRADE_STARTED, f"upgrade {up.id} of {_name(state, service)} started by {how}: "
                f"{len(up.slots)} slot(s), {strategy.parallelism} at a time, {strategy.order}, failure action "
                f"{strategy.failure_action}", service=service.id, upgrade=up.id)
    return up


def control_upgrade(state: ClusterState, cmd: UpgradeControl, index: int, actor: Actor | None) -> Outcome:
    service = state.service(cmd.service)
    up = state.current_upgrade(service.id)
    if up is None:
        raise conflict(f"service {service.name} has no upgrade to {cmd.action}"
                       + (": there is nothing to roll back to" if cmd.action is Control.ROLLBACK else ""), "action")
    new_state, _ = control(up, cmd.action)
    at = cmd.at or (actor.at if actor else 0.0)
    who = f" by {actor.user}" if actor else ""
    if cmd.action is Control.ROLLBACK:
        up = rollback(state, up, index, f"rolled back{who}", at)
    elif cmd.action is Control.PAUSE:
        up = dataclasses.replace(up, state=new_state, reason=f"paused{who}")
    else:
        slots = tuple(dataclasses.replace(p, started=at, healthy_since=None) if p.phase is Phase.STARTING
                      else dataclasses.replace(p, phase=Phase.PENDING, reason=None) if p.phase is Phase.FAILED
                      else p for p in up.slots)
        up = dataclasses.replace(up, state=new_state, slots=slots, reason=None, next_batch_at=at,
                                 failures=0 if up.state is UpgradeState.FAILED else up.failures, finished_at=None)
    up = dataclasses.replace(up, updated=index, updated_at=at)
    _put(state, up, index)
    state.event(index, EventKind.UPGRADE_STATE, f"upgrade {up.id} of {_name(state, service)}: {cmd.action}{who} "
                f"→ {up.state}", service=service.id, upgrade=up.id)
    return Outcome(index, id=up.id)


def rollback(state: ClusterState, up: Upgrade, index: int, reason: str, at: float) -> Upgrade:
    """Turn ``up`` back to its previous spec, at once (no interval, no canary): a start-first slot in
    flight keeps its old container and drops the new one; every other slot not on the previous version
    is pending again, to be replaced with the same gating."""
    service = state.services[up.service]
    for inst in state.instances_of(service.id):
        if inst.spec_version == 0:
            state.put_instance(dataclasses.replace(inst, spec_version=service.version), index)
    state.put_service(dataclasses.replace(service, spec=up.previous, version=up.previous_version, updated=index),
                      index)
    slots = []
    for p in up.slots:
        if p.phase is Phase.STARTING and p.old is not None and p.old in state.instances \
                and p.new in state.instances:
            state.drop_instance(state.instances[p.new], index)
        back = all(i.spec_version == up.previous_version for i in _slot(state, service.id, p.slot))
        slots.append(SlotProgress(p.slot, Phase.DONE if back else Phase.PENDING,
                                  reason="kept its old container" if back and p.phase is not Phase.PENDING else None))
    return dataclasses.replace(up, state=UpgradeState.ROLLING_BACK, rolling_back=True, reason=reason,
                               slots=tuple(slots), failures=0, next_batch_at=at, finished_at=None)


def _check_step(state: ClusterState, up: Upgrade, step: UpgradeStep, seen: set[int]) -> None:
    field = f"steps[{step.slot}]"
    if step.slot in seen:
        raise bad_request(f"slot {step.slot} is named twice", field)
    seen.add(step.slot)
    p = up.progress(step.slot)
    if step.kind is StepKind.BEGIN:
        if p is not None and p.phase in (Phase.STARTING, Phase.DONE):
            raise conflict(f"slot {step.slot} is {p.phase} already", field)
        if step.host is None or step.host not in state.hosts:
            raise bad_request(f"slot {step.slot}: no host {step.host!r}", field)
        service = state.services[up.service]
        if service.spec.mode == specs.ServiceMode.REPLICATED and step.slot > service.spec.scale:
            raise conflict(f"slot {step.slot} is above the scale ({service.spec.scale}) now", field)
        if not any(version_of(service, i) != up.target_version for i in _slot(state, service.id, step.slot)):
            raise conflict(f"slot {step.slot} has no container left to replace (placed again meanwhile)", field)
        stack = state.stacks[state.services[up.service].stack]
        recreate = up.target.on_host_loss == specs.HostLoss.RECREATE_EMPTY
        for m in up.target.mounts:
            if m.type == MountType.VOLUME and not state.storage.may_pin(
                    stack.environment, volume_key(stack.name, m, step.slot), step.host, recreate):
                raise conflict(f"slot {step.slot}: its volume lives on another host than {step.host}", field)
    elif p is None or p.phase is not Phase.STARTING:
        raise conflict(f"slot {step.slot} is not being upgraded", field)


def advance(state: ClusterState, cmd: UpgradeAdvance, index: int) -> Outcome:
    service = state.service(cmd.service)
    up = state.current_upgrade(service.id)
    if up is None or up.id != cmd.upgrade:
        raise conflict(f"upgrade {cmd.upgrade} is not the current upgrade of {service.name}", "upgrade")
    if up.updated != cmd.revision:
        raise conflict(f"upgrade {up.id} changed since it was planned (at {cmd.revision}, now {up.updated})",
                       "revision")
    if up.state not in MOVING:
        raise conflict(f"upgrade {up.id} is {up.state}", "state")
    seen: set[int] = set()
    for step in cmd.steps:
        _check_step(state, up, step, seen)
    if cmd.state is not None and cmd.state not in (UpgradeState.PAUSED, UpgradeState.ROLLING_BACK,
                                                   *FINISHED):
        raise bad_request(f"an advance does not move an upgrade to {cmd.state}", "state")
    if cmd.state is UpgradeState.ROLLING_BACK and up.rolling_back:
        raise conflict(f"upgrade {up.id} is rolling back already", "state")
    progress = {p.slot: p for p in up.slots}
    batch = up.batch + (1 if any(s.kind is StepKind.BEGIN for s in cmd.steps) else 0)
    strategy = up.active_strategy
    name = _name(state, service)
    begun: list[str] = []
    failures = up.failures
    for step in cmd.steps:
        p = progress.get(step.slot) or SlotProgress(step.slot)
        if step.kind is StepKind.BEGIN:
            progress[step.slot] = _begin(state, up, service, step, p, batch, index, cmd.at)
            order = progress[step.slot].order
            begun.append(f"{name}-{step.slot} on {step.host}" + (f" ({order})" if order != strategy.order else ""))
        elif step.kind is StepKind.HEALTHY:
            progress[step.slot] = dataclasses.replace(p, healthy_since=cmd.at)
        elif step.kind is StepKind.FINISH:
            for inst in _slot(state, service.id, step.slot):
                if inst.id != p.new and version_of(service, inst) != up.target_version:
                    state.drop_instance(inst, index)
            progress[step.slot] = dataclasses.replace(p, phase=Phase.DONE, old=None)
            state.event(index, EventKind.UPGRADE_SLOT, f"upgrade {up.id}: {name}-{step.slot} is "
                        f"{'back on the previous spec' if up.rolling_back else 'upgraded'} ({p.new})",
                        service=service.id, upgrade=up.id, instance=p.new or "")
        else:
            failures += 1
            if p.old is not None and p.old in state.instances and p.new in state.instances:
                state.drop_instance(state.instances[p.new], index)  # start-first: the old one stays
            progress[step.slot] = dataclasses.replace(p, phase=Phase.FAILED, reason=step.reason)
            state.event(index, EventKind.UPGRADE_SLOT, f"upgrade {up.id}: {name}-{step.slot} failed: {step.reason}",
                        service=service.id, upgrade=up.id, instance=p.new or "")
    notes = up.notes + tuple(f"{name}-{s.slot}: {s.reason}" for s in cmd.steps
                             if s.kind is StepKind.BEGIN and s.reason)
    flying = any(p.phase is Phase.STARTING for p in progress.values())
    next_at = up.next_batch_at
    if not flying and any(s.kind in (StepKind.FINISH, StepKind.FAIL) for s in cmd.steps):
        next_at = cmd.at + strategy.interval
    up = dataclasses.replace(up, slots=tuple(progress[s] for s in sorted(progress)), batch=batch,
                             failures=failures, notes=notes[-MAX_NOTES:], next_batch_at=next_at, updated=index,
                             updated_at=cmd.at)
    if begun:
        state.event(index, EventKind.UPGRADE_BATCH, f"upgrade {up.id}: batch {batch} "
                    f"({'rollback, ' if up.rolling_back else ''}{strategy.order}): " + ", ".join(begun),
                    service=service.id, upgrade=up.id)
    if cmd.state in (UpgradeState.DONE, UpgradeState.ROLLED_BACK):  # slots placed again meanwhile, on the target
        up = dataclasses.replace(up, slots=tuple(
            dataclasses.replace(p, phase=Phase.DONE, reason="placed again with the target spec (its host was lost, "
                                "or its container removed)") if p.phase is Phase.PENDING else p for p in up.slots))
    if cmd.state is UpgradeState.ROLLING_BACK:
        up = rollback(state, up, index, cmd.reason or "rolled back", cmd.at)
    elif cmd.state is not None:
        up = dataclasses.replace(up, state=cmd.state, reason=cmd.reason or up.reason,
                                 finished_at=cmd.at if cmd.state in FINISHED else None)
    _put(state, up, index)
    if cmd.state is not None:
        state.event(index, EventKind.UPGRADE_STATE, f"upgrade {up.id} of {name} is {up.state}"
                    + (f": {up.reason}" if up.reason else ""), service=service.id, upgrade=up.id)
    return Outcome(index, id=up.id)


def _begin(state: ClusterState, up: Upgrade, service: Service, step: UpgradeStep, p: SlotProgress, batch: int,
           index: int, at: float) -> SlotProgress:
    assert step.host is not None
    order = step.order or up.active_strategy.order or Order.STOP_FIRST
    olds = [i for i in _slot(state, service.id, step.slot) if version_of(service, i) != up.target_version]
    keep = olds[0] if olds and order is Order.START_FIRST else None
    for inst in olds:
        if inst is not keep:
            state.drop_instance(inst, index)
    stack = state.stacks[service.stack]
    recreate = up.target.on_host_loss == specs.HostLoss.RECREATE_EMPTY
    for m in up.target.mounts:
        if m.type == MountType.VOLUME:
            state.storage.pin(stack.environment, stack.name, m, volume_key(stack.name, m, step.slot), step.host,
                              index, state, recreate)
    revision = max((i.revision for i in olds), default=-1) + 1
    inst = Instance(id=f"c{index}-{step.slot}", service=service.id, slot=step.slot, host=step.host,
                    desired=Desired.RUNNING, status=Status.PENDING, exit_code=None, error=None, health=None,
                    generation=index, created=index, updated=index, spec_version=up.target_version,
                    revision=revision)
    state.put_instance(inst, index)
    return SlotProgress(step.slot, Phase.STARTING, new=inst.id, old=keep.id if keep else None, host=step.host,
                        order=order, batch=batch, started=at, reason=step.reason)


def _slot(state: ClusterState, service_id: str, slot: int) -> list[Instance]:
    return [i for i in state.instances_of(service_id) if i.slot == slot]


def _name(state: ClusterState, service: Service) -> str:
    stack = state.stacks.get(service.stack)
    return f"{stack.name}/{service.name}" if stack else service.name


def _put(state: ClusterState, up: Upgrade, index: int) -> None:
    history = [u for u in state.upgrades.get(up.service, ()) if u.id != up.id]
    state.upgrades[up.service] = (*history, up)[-MAX_HISTORY:]
    state.change(index, Topic.UPGRADE, up.service)


__all__ = [
    "REPLACES_NOTHING",
    "advance",
    "begin",
    "begin_change",
    "behind_load_balancer",
    "check_start",
    "control_upgrade",
    "needs_upgrade",
    "rollback",
    "start",
    "strategies_for",
    "version_of",
]
