"""How a service's containers are replaced by those of a new spec: an upgrade's (or a rollback's) strategy.

A strategy is given per service (the spec's ``update_config`` and ``rollback_config``, compose's keys of
the same names) and per call (``corral service upgrade --parallelism 2 …``: the call's fields win). It
is pure data; :mod:`agent.model.rollout` is what follows it.

    parallelism        slots replaced together in one batch (at least 1, at most the scale)
    interval           seconds between the end of a batch and the start of the next (compose: delay)
    order              start-first: the new container runs (and is healthy) before the old one is
                       drained and stopped; stop-first: the old one goes first. None: start-first for a
                       service a load balancer sends to, stop-first otherwise (decided when it starts)
    min_healthy        seconds a new container must stay running (healthy, with a check) to count
                       (compose: monitor)
    healthy_deadline   seconds a new container has to get there, else it failed
    failure_action     rollback (the default) | pause | continue, once failures exceed max_failure_ratio
    max_failure_ratio  the share of slots that may fail before the failure action is taken (0: the first)
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from agent.model.errors import SpecError

MAX_INTERVAL = 3600.0
MAX_MIN_HEALTHY = 3600.0
DEADLINE = (1.0, 86400.0)
STRATEGY_KEYS = ("parallelism", "interval", "order", "min_healthy", "healthy_deadline", "failure_action",
                 "max_failure_ratio")


class Order(enum.StrEnum):
    START_FIRST = "start-first"
    STOP_FIRST = "stop-first"


class FailureAction(enum.StrEnum):
    ROLLBACK = "rollback"
    PAUSE = "pause"
    CONTINUE = "continue"


@dataclasses.dataclass(frozen=True)
class UpdateStrategy:
    parallelism: int = 1
    interval: float = 0.0
    order: Order | None = None
    min_healthy: float = 2.0
    healthy_deadline: float = 60.0
    failure_action: FailureAction = FailureAction.ROLLBACK
    max_failure_ratio: float = 0.0

    def to_request(self) -> dict[str, object]:
        return {"parallelism": self.parallelism, "interval": self.interval,
                "order": self.order.value if self.order is not None else None, "min_healthy": self.min_healthy,
                "healthy_deadline": self.healthy_deadline, "failure_action": self.failure_action.value,
                "max_failure_ratio": self.max_failure_ratio}


def _seconds(value: object, field: str, low: float, high: float) -> float:
    from agent.model.spec import seconds  # spec imports this module for its fields

    return seconds(value, field, low, high)


def parse(value: object, field: str = "update_config", base: UpdateStrategy | None = None) -> UpdateStrategy | None:
    """A strategy from its request form (every key optional, over ``base`` or the defaults); None for none.
    SpecError naming the field otherwise (``update_config.parallelism``)."""
    if value is None:
        return base
    if not isinstance(value, Mapping):
        raise SpecError(field, "must be a map of " + ", ".join(STRATEGY_KEYS))
    unknown = sorted(str(k) for k in value if k not in STRATEGY_KEYS)
    if unknown:
        raise SpecError(f"{field}.{unknown[0]}", "is not a field of an upgrade strategy")
    out = base or UpdateStrategy()
    changes: dict[str, object] = {}
    if value.get("parallelism") is not None:
        p = value["parallelism"]
        if not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= 1000:
            raise SpecError(f"{field}.parallelism", "must be a whole number from 1 to 1000")
        changes["parallelism"] = p
    if value.get("interval") is not None:
        changes["interval"] = _seconds(value["interval"], f"{field}.interval", 0.0, MAX_INTERVAL)
    if "order" in value:
        order = value["order"]
        if order is not None and order not in tuple(o.value for o in Order):
            raise SpecError(f"{field}.order", "must be start-first or stop-first")
        changes["order"] = Order(order) if order is not None else None
    if value.get("min_healthy") is not None:
        changes["min_healthy"] = _seconds(value["min_healthy"], f"{field}.min_healthy", 0.0, MAX_MIN_HEALTHY)
    if value.get("healthy_deadline") is not None:
        changes["healthy_deadline"] = _seconds(value["healthy_deadline"], f"{field}.healthy_deadline", *DEADLINE)
    if value.get("failure_action") is not None:
        action = value["failure_action"]
        if action not in tuple(a.value for a in FailureAction):
            raise SpecError(f"{field}.failure_action", "must be rollback, pause or continue")
        changes["failure_action"] = FailureAction(action)
    if value.get("max_failure_ratio") is not None:
        ratio = value["max_failure_ratio"]
        if not isinstance(ratio, int | float) or isinstance(ratio, bool) or not 0 <= ratio <= 1:
            raise SpecError(f"{field}.max_failure_ratio", "must be a number from 0 to 1")
        changes["max_failure_ratio"] = float(ratio)
    out = dataclasses.replace(out, **changes)  # type: ignore[arg-type]
    if out.min_healthy >= out.healthy_deadline:
        raise SpecError(f"{field}.healthy_deadline", f"must be longer than min_healthy ({out.min_healthy:g} s)")
    return out


__all__ = ["STRATEGY_KEYS", "FailureAction", "Order", "UpdateStrategy", "parse"]
