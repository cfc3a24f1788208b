"""``corral stack deploy -f FILE NAME``: the subset of a compose file Corral understands.

Per service: ``image``, ``command``, ``environment``, ``ports``, ``labels``, ``deploy.replicas``,
``deploy.placement.constraints`` (``node.labels.KEY == VALUE``, ``node.hostname == h1``),
``deploy.restart_policy.condition`` (``any`` → always, ``on-failure``, ``none`` → no), ``healthcheck``
(``test`` as ``CMD``/``CMD-SHELL``/a string → a command check; ``interval``, ``timeout``, ``retries``,
``start_period``, ``disable``). Anything else is refused with its path, rather than silently ignored.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

import yaml

from agent.model import spec as specs
from agent.model.errors import SpecError

SERVICE_KEYS = {"image", "command", "environment", "ports", "labels", "deploy", "healthcheck"}
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "disable"}
DEPLOY_KEYS = {"replicas", "placement", "restart_policy"}
RESTART = {"any": "always", "on-failure": "on-failure", "none": "no"}


class ComposeError(ValueError):
    pass


def load(text: str) -> dict[str, dict[str, object]]:
    """Service name → a spec for ``POST /v1/services`` (validated with the API's own rules)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ComposeError(f"not YAML: {exc}") from exc
    if not isinstance(doc, Mapping) or not isinstance(doc.get("services"), Mapping) or not doc["services"]:
        raise ComposeError("a compose file needs a 'services' map with at least one service")
    extra = sorted(set(doc) - {"version", "services"})
    if extra:
        raise ComposeError(f"top-level '{extra[0]}' is not supported")
    out: dict[str, dict[str, object]] = {}
    for name, svc in doc["services"].items():
        path = f"services.{name}"
        try:
            specs.name(name, path)
        except SpecError as exc:
            raise ComposeError(exc.message) from None
        if not isinstance(svc, Mapping):
            raise ComposeError(f"{path} must be a map")
        unknown = sorted(set(svc) - SERVICE_KEYS)
        if unknown:
            raise ComposeError(f"{path}.{unknown[0]} is not supported")
        deploy = svc.get("deploy") or {}
        if not isinstance(deploy, Mapping) or set(deploy) - DEPLOY_KEYS:
            raise ComposeError(f"{path}.deploy supports only {', '.join(sorted(DEPLOY_KEYS))}")
        raw: dict[str, object] = {k: svc[k] for k in ("image", "command", "environment", "ports", "labels") if k in svc}
        raw["scale"] = deploy.get("replicas", 1)
        placement = deploy.get("placement") or {}
        if placement:
            raw["placement"] = {"constraints": placement.get("constraints", [])}
        condition = (deploy.get("restart_policy") or {}).get("condition")
        if condition is not None:
            if condition not in RESTART:
                raise ComposeError(f"{path}.deploy.restart_policy.condition must be any, on-failure or none")
            raw["restart"] = RESTART[condition]
        if svc.get("healthcheck") is not None:
            check = _healthcheck(svc["healthcheck"], f"{path}.healthcheck")
            if check is not None:
                raw["health_check"] = check
        try:
            specs.parse(raw)
        except SpecError as exc:
            raise ComposeError(f"{path}.{exc.message}") from None
        out[str(name)] = raw
    return out


def _healthcheck(value: object, path: str) -> dict[str, object] | None:
    """Compose's ``healthcheck`` as a command check (run by Docker in the container), None if disabled."""
    if not isinstance(value, Mapping):
        raise ComposeError(f"{path} must be a map")
    unknown = sorted(set(value) - HEALTHCHECK_KEYS)
    if unknown:
        raise ComposeError(f"{path}.{unknown[0]} is not supported")
    test = value.get("test")
    if value.get("disable") is True or test == ["NONE"]:
        return None
    if isinstance(test, str):
        command = test
    elif isinstance(test, list) and len(test) >= 2 and all(isinstance(t, str) for t in test) \
            and test[0] in ("CMD", "CMD-SHELL"):
        command = test[1] if test[0] == "CMD-SHELL" and len(test) == 2 else shlex.join(test[1:])
    else:
        raise ComposeError(f"{path}.test must be a string, [CMD, …] or [CMD-SHELL, command]")
    check: dict[str, object] = {"type": "command", "command": command}
    check.update({k: value[k] for k in ("interval", "timeout", "retries", "start_period") if k in value})
    return check
