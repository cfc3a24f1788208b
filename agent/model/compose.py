"""``corral stack deploy -f FILE NAME``: the subset of a compose file Corral understands.

Per service: ``image``, ``command``, ``environment``, ``ports``, ``labels``, ``deploy.replicas``,
``deploy.placement.constraints`` (``node.labels.KEY == VALUE``, ``node.hostname == h1``),
``deploy.restart_policy.condition`` (``any`` → always, ``on-failure``, ``none`` → no), ``healthcheck``
(``test`` as ``CMD``/``CMD-SHELL``/a string → a command check; ``interval``, ``timeout``, ``retries``,
``start_period``, ``disable``), ``pull_policy`` (``always``; ``missing``/``if_not_present`` → the default),
and ``build`` (a folder, or ``context``, ``dockerfile``, ``args``: :func:`parse` names it; ``corral
stack deploy`` sends the folder to one host, which builds it, and the image reaches the others peer to
peer; ``image``, if given too, is ignored: the built image is tagged by its content). Anything else is
refused with its path, rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping

import yaml

from agent.model import spec as specs
from agent.model.errors import SpecError

SERVICE_KEYS = {"image", "command", "environment", "ports", "labels", "deploy", "healthcheck", "build", "pull_policy"}
BUILD_KEYS = {"context", "dockerfile", "args"}
PULL = {"always": "always", "missing": "if-not-present", "if_not_present": "if-not-present"}
BUILT = "corral-build/pending"
"""What a service to be built names as its image until its build is tagged (never sent as such)."""
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "disable"}
DEPLOY_KEYS = {"replicas", "placement", "restart_policy"}
RESTART = {"any": "always", "on-failure": "on-failure", "none": "no"}


class ComposeError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Build:
    """A service's ``build:``: its context folder (relative to the compose file), Dockerfile and args."""

    context: str
    dockerfile: str = "Dockerfile"
    args: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Compose:
    services: dict[str, dict[str, object]]
    """Service name → a spec for ``POST /v1/services``; a service to build names :data:`BUILT`."""
    builds: dict[str, Build]


def _build(value: object, path: str) -> Build:
    if isinstance(value, str) and value.strip():
        return Build(value.strip())
    if not isinstance(value, Mapping) or not isinstance(value.get("context", "."), str):
        raise ComposeError(f"{path} is a folder, or a map with context, dockerfile and args")
    unknown = sorted(set(value) - BUILD_KEYS)
    if unknown:
        raise ComposeError(f"{path}.{unknown[0]} is not supported (context, dockerfile and args are)")
    dockerfile = value.get("dockerfile", "Dockerfile")
    if not isinstance(dockerfile, str) or not dockerfile or dockerfile.startswith("/") or ".." in dockerfile.split("/"):
        raise ComposeError(f"{path}.dockerfile is a path inside the context")
    args = value.get("args") or {}
    if isinstance(args, list):
        args = dict(str(a).partition("=")[::2] for a in args)
    if not isinstance(args, Mapping):
        raise ComposeError(f"{path}.args is a map (or a list of NAME=VALUE)")
    return Build(str(value.get("context", ".")), dockerfile, {str(k): str(v) for k, v in args.items()})


def load(text: str) -> dict[str, dict[str, object]]:
    """Service name → a spec for ``POST /v1/services`` (validated with the API's own rules)."""
    return parse(text).services


def parse(text: str) -> Compose:
    """The services (as :func:`load`) and what of them is to be built."""
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
    builds: dict[str, Build] = {}
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
        if svc.get("build") is not None:
            builds[str(name)] = _build(svc["build"], f"{path}.build")
            raw["image"] = BUILT
        if svc.get("pull_policy") is not None:
            if svc["pull_policy"] not in PULL:
                raise ComposeError(f"{path}.pull_policy is always, missing or if_not_present")
            raw["pull"] = PULL[str(svc["pull_policy"])]
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
    return Compose(out, builds)


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
