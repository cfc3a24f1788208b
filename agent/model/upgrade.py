"""An upgrade: a service going from one spec to another, batch by batch, as a replicated record.

Theory of operation. ``upgrade.start`` (a user's) makes the record: the service's previous spec and
version, the next ones, the strategy (and the rollback's), one :class:`SlotProgress` per slot, and
the state ``rolling``. The service's spec becomes the next one at once (so new slots, and slots placed
again after a host loss, get it), but every instance keeps the spec version it was made with
(``Instance.spec_version``), so nothing is replaced until the leader's planner
(:mod:`agent.model.rollout`) says so. The planner proposes ``upgrade.advance`` commands: begin a
slot (a new instance of the next version, beside the old one for start-first, instead of it for
stop-first), record that a new container is healthy, finish a slot (its old instance goes: DNS stops
answering it and the load balancers drain it before its host stops it), fail one, and move the state.
Each advance names the record's revision it was planned on; one planned on an older record (a pause
came in between, a deposed leader) is refused whole, so two leaders never begin a slot twice.

States and what moves them (the table is :data:`CONTROL`, for the users' commands; the planner's are
``done``/``rolled-back`` when every slot is, ``paused`` on a pull error, ``rolling-back``/``paused``/
``failed`` on failures past ``max_failure_ratio``)::

    rolling ──pause──► paused ──resume──► rolling            (or rolling-back: a pause keeps the direction)
    rolling ──rollback / failures──► rolling-back ──all back──► rolled-back
    rolling ──all slots done──► done ──rollback──► rolling-back
    rolling-back ──a slot fails──► failed ──resume──► rolling-back (its failed slots tried again)

A new upgrade is accepted in every state: it takes over (an unproven new container of a start-first
slot in flight goes, its old one stays) and its previous spec is the service's spec as it stands.
"""

from __future__ import annotations

import dataclasses
import enum

from agent.model.errors import CommandError, ErrorCode, conflict
from agent.model.spec import ServiceSpec
from agent.model.strategy import Order, UpdateStrategy

MAX_HISTORY = 10
"""Upgrades kept per service (the newest is the current one)."""
MAX_NOTES = 50


class UpgradeState(enum.StrEnum):
    ROLLING = "rolling"
    PAUSED = "paused"
    ROLLING_BACK = "rolling-back"
    DONE = "done"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"


MOVING = frozenset({UpgradeState.ROLLING, UpgradeState.ROLLING_BACK})
FINISHED = frozenset({UpgradeState.DONE, UpgradeState.ROLLED_BACK, UpgradeState.FAILED})


class Phase(enum.StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    """Its new container is asked for: not yet running (healthy) for ``min_healthy``."""
    DONE = "done"
    FAILED = "failed"


class Control(enum.StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    ROLLBACK = "rollback"


@dataclasses.dataclass(frozen=True)
class SlotProgress:
    slot: int
    phase: Phase = Phase.PENDING
    new: str | None = None
    """The instance of the version being rolled to (made by the upgrade)."""
    old: str | None = None
    """The instance it replaces, kept beside it until it is healthy (start-first); None for stop-first."""
    host: str | None = None
    order: Order | None = None
    batch: int = 0
    started: float = 0.0
    """When its new instance was asked for (the leader's clock), for the healthy deadline."""
    healthy_since: float | None = None
    reason: str | None = None
    """Why it failed, or how it was done when not as the strategy says (a fixed host port)."""


@dataclasses.dataclass(frozen=True)
class Upgrade:
    id: str
    service: str
    state: UpgradeState
    previous: ServiceSpec
    previous_version: int
    next: ServiceSpec
    next_version: int
    strategy: UpdateStrategy
    rollback_strategy: UpdateStrategy
    slots: tuple[SlotProgress, ...]
    created: int
    updated: int
    """The log index of the last change to this record: an advance names it (its revision)."""
    started_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    reason: str | None = None
    rolling_back: bool = False
    """The direction: back to ``previous`` (kept while paused or failed)."""
    batch: int = 0
    next_batch_at: float = 0.0
    failures: int = 0
    notes: tuple[str, ...] = ()
    older: tuple[tuple[int, ServiceSpec], ...] = ()
    """Specs of versions that instances made before this upgrade still run (an upgrade taken over)."""
    by: str | None = None

    @property
    def target_version(self) -> int:
        return self.previous_version if self.rolling_back else self.next_version

    @property
    def target(self) -> ServiceSpec:
        return self.previous if self.rolling_back else self.next

    @property
    def active_strategy(self) -> UpdateStrategy:
        return self.rollback_strategy if self.rolling_back else self.strategy

    def spec_of(self, version: int) -> ServiceSpec | None:
        if version == self.next_version:
            return self.next
        if version == self.previous_version:
            return self.previous
        return next((s for v, s in self.older if v == version), None)

    def progress(self, slot: int) -> SlotProgress | None:
        return next((p for p in self.slots if p.slot == slot), None)

    def in_flight(self) -> list[SlotProgress]:
        return [p for p in self.slots if p.phase is Phase.STARTING]


def moving_state(rolling_back: bool) -> UpgradeState:
    return UpgradeState.ROLLING_BACK if rolling_back else UpgradeState.ROLLING


def control(up: Upgrade, action: Control) -> tuple[UpgradeState, bool]:
    """The state (and direction) a user's pause, resume or rollback takes ``up`` to; a CommandError (409)
    that says why when it makes no sense — never a hang. Every state accepts at least one of them,
    and a new upgrade."""
    state, back = up.state, up.rolling_back
    if action is Control.PAUSE:
        if state in MOVING or state is UpgradeState.PAUSED:
            return UpgradeState.PAUSED, back
        raise conflict(f"upgrade {up.id} is {state}: there is nothing to pause"
                       + ("; resume retries its failed slots, a new upgrade replaces it" if state is UpgradeState.FAILED
                          else ""), "action")
    if action is Control.RESUME:
        if state in MOVING or state in (UpgradeState.PAUSED, UpgradeState.FAILED):
            return moving_state(back), back
        raise conflict(f"upgrade {up.id} is {state}: there is nothing to resume", "action")
    if back:
        if state is UpgradeState.ROLLED_BACK:
            raise CommandError(ErrorCode.CONFLICT, f"upgrade {up.id} is rolled back already: there is nothing to "
                               "roll back to", "action")
        raise conflict(f"upgrade {up.id} is rolling back already ({state}): it cannot be rolled back again; "
                       + ("resume it, or start a new upgrade" if state is not UpgradeState.ROLLING_BACK
                          else "pause it, or start a new upgrade"), "action")
    return UpgradeState.ROLLING_BACK, True


__all__ = ["FINISHED", "MAX_HISTORY", "MAX_NOTES", "MOVING", "Control", "Phase", "SlotProgress", "Upgrade",
           "UpgradeState", "control", "moving_state"]
