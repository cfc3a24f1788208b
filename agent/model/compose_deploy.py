"""A compose service's ``deploy:`` → spec fields (docs/COMPOSE.md has the table).

``deploy`` is the swarm part of the compose specification, and the nearest to what Corral does:
replicas, placement, resources, restart policy, update and rollback configs (the upgrade strategies,
docs/UPGRADES.md). What a cluster of Corral does not do (a routing mesh; generic resources) is
ignored with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.model.compose_context import number, str_map, text, whole
from agent.model.compose_service import CONDITION, Service, seconds_of, size_field

DEPLOY_KEYS = ("mode", "replicas", "resources", "restart_policy", "labels", "placement", "update_config",
               "rollback_config", "endpoint_mode")


def read(s: Service, deploy: object) -> None:
    if deploy is None:
        return
    if not isinstance(deploy, Mapping):
        raise s.error("deploy", "must be a map")
    for key, value in deploy.items():
        where = f"deploy.{key}"
        if value is None:
            continue
        if key == "mode":
            if value not in ("replicated", "global"):
                raise s.error(where, f"{value}: only replicated and global are supported (jobs are not)")
            s.spec["mode"] = value
        elif key == "replicas":
            s.spec["scale"] = whole(s.ctx, value, s.at(where))
        elif key == "resources":
            _resources(s, value)
        elif key == "restart_policy":
            _restart_policy(s, value)
        elif key == "labels":
            s.spec["service_labels"] = str_map(s.ctx, value, s.at(where))
        elif key == "placement":
            _placement(s, value)
        elif key in ("update_config", "rollback_config"):
            _update_config(s, key, value)
        elif key == "endpoint_mode":
            s.warn(where, "ignored: a service's name resolves to its containers' addresses")
        elif not key.startswith("x-"):
            raise s.error(where, "is not a deploy key Corral knows")


UPDATE_KEYS = {"parallelism": "parallelism", "delay": "interval", "order": "order", "monitor": "min_healthy",
               "failure_action": "failure_action", "max_failure_ratio": "max_failure_ratio"}
"""compose's ``update_config`` keys → an upgrade strategy's (``agent/model/strategy.py``)."""


def _update_config(s: Service, key: str, value: object) -> None:
    """``deploy.update_config`` / ``rollback_config`` → the spec's ``update_config`` / ``rollback_config``:
    parallelism, delay (→ interval), order, monitor (→ min_healthy), failure_action, max_failure_ratio."""
    where = f"deploy.{key}"
    if not isinstance(value, Mapping):
        raise s.error(where, "must be a map (parallelism, delay, order, monitor, failure_action, max_failure_ratio)")
    out: dict[str, object] = {}
    for field, figure in value.items():
        at = f"{where}.{field}"
        if figure is None:
            continue
        if field not in UPDATE_KEYS:
            raise s.error(at, "is not an update key (" + ", ".join(UPDATE_KEYS) + ")")
        if field == "parallelism":
            out["parallelism"] = max(1, whole(s.ctx, figure, s.at(at)))  # compose's 0 means all at once
            if whole(s.ctx, figure, s.at(at)) == 0:
                s.warn(at, "0 (all at once): one at a time instead; set the service's replicas to replace all")
        elif field in ("delay", "monitor"):
            out[UPDATE_KEYS[field]] = seconds_of(s, at, figure)
        elif field == "max_failure_ratio":
            out["max_failure_ratio"] = number(s.ctx, figure, s.at(at))
        elif field == "failure_action" and key == "rollback_config" and figure == "rollback":
            raise s.error(at, "a rollback cannot roll back: pause or continue")
        else:
            out[UPDATE_KEYS[field]] = text(s.ctx, figure, s.at(at))
    s.spec[key] = out


def _resources(s: Service, value: object) -> None:
    if not isinstance(value, Mapping):
        raise s.error("deploy.resources", "must be a map (limits, reservations)")
    for part, figures in value.items():
        where = f"deploy.resources.{part}"
        if part not in ("limits", "reservations"):
            raise s.error(where, "is limits or reservations")
        if figures is None:
            continue
        if not isinstance(figures, Mapping):
            raise s.error(where, "must be a map (cpus, memory)")
        for key, figure in figures.items():
            at = f"{where}.{key}"
            if key == "cpus":
                s.spec["cpu_limit" if part == "limits" else "cpus"] = number(s.ctx, figure, s.at(at))
            elif key == "memory":
                size_field("memory_limit" if part == "limits" else "memory", at)(s, figure)
            elif key in ("pids", "devices", "generic_resources"):
                s.warn(at, "ignored: not applied by Corral yet")
            else:
                raise s.error(at, "is not a resource Corral knows (cpus, memory)")


def _restart_policy(s: Service, value: object) -> None:
    if not isinstance(value, Mapping):
        raise s.error("deploy.restart_policy", "must be a map (condition, delay, max_attempts, window)")
    if "restart" in s.body:
        s.warn("restart", "overridden by deploy.restart_policy")
    condition = value.get("condition", "any")
    if condition not in CONDITION:
        raise s.error("deploy.restart_policy.condition", "must be any, on-failure or none")
    s.spec["restart"] = CONDITION[str(condition)]
    s.spec.pop("restart_max_attempts", None)
    for key, figure in value.items():
        at = f"deploy.restart_policy.{key}"
        if key == "condition":
            continue
        if key == "max_attempts":
            attempts = whole(s.ctx, figure, s.at(at))
            if condition == "on-failure":
                s.spec["restart_max_attempts"] = attempts
            elif attempts:
                s.warn(at, f"ignored with condition {condition}: Docker limits retries only on failure")
        elif key == "delay":
            s.spec["restart_delay"] = seconds_of(s, at, figure)
        elif key == "window":
            s.spec["restart_window"] = seconds_of(s, at, figure)
            s.warn(at, "recorded, not enforced: every exit counts as a failed attempt")
        else:
            raise s.error(at, "is not a field of a restart policy (condition, delay, max_attempts, window)")


def _placement(s: Service, value: object) -> None:
    if not isinstance(value, Mapping):
        raise s.error("deploy.placement", "must be a map (constraints, preferences, max_replicas_per_node)")
    placement: dict[str, object] = {}
    for key, item in value.items():
        at = f"deploy.placement.{key}"
        if key == "constraints":
            rules = item if isinstance(item, list) else [item]
            kept = []
            for i, rule in enumerate(rules):
                raw = text(s.ctx, rule, s.at(f"{at}[{i}]"))
                key_of = raw.replace("!=", "==").partition("==")[0].strip()
                if key_of in ("node.platform.os", "node.platform.arch"):
                    s.warn(f"{at}[{i}]", f"{raw}: ignored: hosts are not told apart by platform (all run Linux)")
                elif key_of.startswith("engine.labels.") or key_of == "node.id":
                    raise s.error(f"{at}[{i}]", f"{raw}: only node.hostname, node.role and node.labels.KEY are known")
                else:
                    kept.append(raw)
            placement["constraints"] = kept
        elif key == "preferences":
            spread = []
            for i, pref in enumerate(item if isinstance(item, list) else [item]):
                if not isinstance(pref, Mapping) or set(pref) != {"spread"}:
                    raise s.error(f"{at}[{i}]", "must be {spread: node.labels.KEY}")
                label = text(s.ctx, pref["spread"], s.at(f"{at}[{i}].spread"))
                if not label.startswith("node.labels."):
                    raise s.error(f"{at}[{i}].spread", f"{label}: only node.labels.KEY can be spread over")
                spread.append(label.removeprefix("node.labels."))
            placement["spread"] = spread
        elif key == "max_replicas_per_node":
            most = whole(s.ctx, item, s.at(at))
            if most == 1:
                placement["one_per_host"] = True
            elif most:
                s.warn(at, f"{most}: ignored: only 1 (one per host) is enforced")
        else:
            raise s.error(at, "is not a placement key (constraints, preferences, max_replicas_per_node)")
    s.spec["placement"] = placement


__all__ = ["DEPLOY_KEYS", "read"]
