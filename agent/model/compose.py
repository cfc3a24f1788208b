"""``corral stack deploy -f FILE [NAME]``: a compose file as people write it, read into service specs.

Every key of the compose specification is *mapped* (to the spec fields docs/COMPOSE.md names),
*ignored with a warning* naming its path (``services.web.container_name: ignored: …``), or *refused*
with an error naming its path and line; a key Corral does not know is refused too, never silently
dropped. ``x-*`` keys are the file's own and ignored (``x-corral`` is Corral's: an instance volume's
scope, a service's ``on_host_loss``).

The file is read as compose reads it (:mod:`agent.model.compose_text`: YAML 1.2 scalars, ``${VAR}``
substitution from the environment then ``.env``, an unset variable without a default an error); each
service by :mod:`agent.model.compose_service` and its ``deploy:`` by :mod:`agent.model.compose_deploy`;
every spec is then validated by the API's own :func:`agent.model.spec.parse`.

Pure: the environment, the files beside the compose file (``read``) and the profiles asked for are
arguments; the CLI passes ``os.environ``, the file's folder and ``--env-file``/``--profile``.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Iterable, Mapping

from agent.model import compose_deploy, compose_service, compose_text
from agent.model import spec as specs
from agent.model.compose_context import ComposeError, ConfigSource, Context, Reader, VolumeDecl, flag
from agent.model.compose_context import text as as_text
from agent.model.compose_service import BUILT, Build
from agent.model.errors import SpecError
from agent.model.mounts import VOLUME_NAME_RE, VolumeScope

TOP_LEVEL = ("version", "name", "services", "networks", "volumes", "configs", "secrets", "include", "models")
NO_ENV: Mapping[str, str] = types.MappingProxyType({})


def _no_files(relative: str) -> str | None:
    return None


@dataclasses.dataclass(frozen=True)
class Compose:
    services: dict[str, dict[str, object]]
    """Corral service name → a spec for ``POST /v1/services``; a service to build names :data:`BUILT`."""
    builds: dict[str, Build]
    """Corral service name → what to build for it."""
    configs: dict[str, ConfigSource] = dataclasses.field(default_factory=dict)
    """Config (and secret) name → where its content comes from, for the CLI to ship."""
    warnings: list[str] = dataclasses.field(default_factory=list)
    """One line each, naming the key's path: what was ignored or changed, and why."""
    name: str | None = None
    """The file's top-level ``name:`` (the project name): the stack's name when none is given."""


def load(text: str, **kwargs: object) -> dict[str, dict[str, object]]:
    """Service name → a spec for ``POST /v1/services`` (validated with the API's own rules)."""
    return parse(text, **kwargs).services  # type: ignore[arg-type]


def parse(text: str, *, environ: Mapping[str, str] = NO_ENV, read: Reader = _no_files,
          profiles: Iterable[str] = (), env_file: str | None = None) -> Compose:
    """The services of a compose file, what of them is to be built, the configs to ship, and the warnings.

    ``environ`` is the environment variables are substituted from first; then the ``.env`` file beside
    the compose file, or ``env_file`` instead (a path ``read`` understands; then it must be there).
    ``read(path)`` gives a file's text by its path relative to the compose file's folder, None when absent.
    ``profiles``: a service with ``profiles:`` is deployed only when one of them is asked for (``*``: all).
    """
    dotenv_text = read(env_file or ".env")
    if dotenv_text is None and env_file is not None:
        raise ComposeError(f"--env-file {env_file}: no such file")
    try:
        dotenv = compose_text.dotenv(dotenv_text, compose_text.lookup_in(environ), env_file or ".env") \
            if dotenv_text is not None else {}
        lookup = compose_text.lookup_in(environ, dotenv)
        doc, lines = compose_text.load(text, lookup)
    except compose_text.TextError as exc:
        raise ComposeError(str(exc)) from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("services"), Mapping) or not doc["services"]:
        raise ComposeError("a compose file needs a 'services' map with at least one service")
    doc = {k: v if k.startswith("x-") else _without_extensions(v) for k, v in doc.items()}
    bodies = doc["services"]
    assert isinstance(bodies, Mapping)
    ctx = Context(lines, lookup, read)
    for key in doc:
        if key == "include":
            raise ctx.error(key, "is refused: not supported yet (merge the files into one)")
        if key == "models":
            raise ctx.error(key, "is refused: AI models are not supported")
        if key not in TOP_LEVEL and not key.startswith("x-"):
            raise ctx.error(key, "is not a top-level compose key Corral knows")
    if doc.get("version") is not None:
        ctx.warn("version", "ignored: obsolete (as docker compose says); the compose specification is read")
    name = doc.get("name")
    if name is not None:
        name = as_text(ctx, name, "name", "the project's name")
    _networks(ctx, doc.get("networks"))
    _volumes(ctx, doc.get("volumes"))
    _files(ctx, doc.get("configs"), secret=False)
    _files(ctx, doc.get("secrets"), secret=True)
    chosen = _chosen(ctx, bodies, set(profiles))
    read_services: dict[str, compose_service.Service] = {}
    for compose_name, body in chosen.items():
        path = f"services.{compose_name}"
        svc = compose_service.read(ctx, compose_name, path, body)
        compose_deploy.read(svc, body.get("deploy"))
        if svc.spec.get("kind") == "load-balancer" and "mode" not in svc.spec and "scale" not in svc.spec:
            svc.spec["mode"] = "global"  # a load balancer without replicas: one on every host
        svc.spec.setdefault("scale", 0 if svc.spec.get("kind") == "external" else 1)
        read_services[compose_name] = svc
    _depends(ctx, read_services)
    services: dict[str, dict[str, object]] = {}
    builds: dict[str, Build] = {}
    for compose_name, svc in read_services.items():
        try:
            specs.parse(svc.spec)
        except SpecError as exc:
            raise ctx.error(svc.path, exc.message) from None
        services[ctx.names[compose_name]] = svc.spec
        if svc.build is not None:
            builds[ctx.names[compose_name]] = svc.build
    return Compose(services, builds, ctx.configs, ctx.warnings, name)


CORRAL_KEYS = ("x-corral", "x-corral-lb", "x-corral-external")


def _without_extensions(value: object) -> object:
    """``value`` without its ``x-*`` keys at any depth (the file's own: the specification lets them be
    anywhere), but ``x-corral``, ``x-corral-lb`` and ``x-corral-external``, which are Corral's."""
    if isinstance(value, Mapping):
        return {k: _without_extensions(v) for k, v in value.items()
                if not (isinstance(k, str) and k.startswith("x-") and k not in CORRAL_KEYS)}
    if isinstance(value, list):
        return [_without_extensions(v) for v in value]
    return value


def _chosen(ctx: Context, services: Mapping[str, object], profiles: set[str]) -> dict[str, Mapping[str, object]]:
    """The services to deploy (their profiles asked for), each given its Corral name: ``my_db`` → ``my-db``."""
    chosen: dict[str, Mapping[str, object]] = {}
    taken: dict[str, str] = {}
    for compose_name, body in services.items():
        path = f"services.{compose_name}"
        if not isinstance(body, Mapping):
            raise ctx.error(path, "must be a map")
        wanted = [as_text(ctx, p, f"{path}.profiles[{i}]") for i, p in enumerate(body.get("profiles") or [])] \
            if isinstance(body.get("profiles"), list) else []
        if body.get("profiles") is not None and not isinstance(body.get("profiles"), list):
            raise ctx.error(f"{path}.profiles", "must be a list of profile names")
        corral_name = compose_name.lower().replace("_", "-").replace(".", "-")
        try:
            specs.name(corral_name, path)
        except SpecError:
            raise ctx.error(path, f"{compose_name!r} cannot be a service's name: 1-63 letters, digits, '-' or '_'"
                            ) from None
        if corral_name in taken:
            raise ctx.error(path, f"is named {corral_name} in the cluster, as {taken[corral_name]} is")
        taken[corral_name] = f"services.{compose_name}"
        if wanted and "*" not in profiles and not profiles.intersection(wanted):
            ctx.left_out[compose_name] = tuple(wanted)
            ctx.warn(path, f"left out: its profiles ({', '.join(wanted)}) were not asked for (--profile)")
            continue
        if corral_name != compose_name:
            ctx.warn(path, f"named {corral_name} in the cluster (a service's name is a DNS name: lowercase, '-')")
        ctx.names[compose_name] = corral_name
        chosen[compose_name] = body
    if not chosen:
        raise ComposeError("no service is left to deploy: every one has profiles not asked for (--profile)")
    return chosen


def _depends(ctx: Context, services: Mapping[str, compose_service.Service]) -> None:
    """Each ``depends_on`` by Corral name; an unknown service or a cycle is an error."""
    graph: dict[str, list[str]] = {}
    for compose_name, svc in services.items():
        out: dict[str, str] = {}
        for dep, condition in svc.depends.items():
            where = f"{svc.path}.depends_on"
            if dep in services:
                out[ctx.names[dep]] = condition
            elif dep in ctx.left_out:
                if dep in svc.optional:
                    ctx.warn(f"{where}.{dep}", "left out with that service (its profiles; required: false)")
                    continue
                raise ctx.error(where, f"{dep} is left out by its profiles ({', '.join(ctx.left_out[dep])}): "
                                       "ask for one with --profile")
            else:
                raise ctx.error(where, f"{dep} is not a service of this file")
        graph[compose_name] = [d for d in svc.depends if d in services]
        if out:
            svc.spec["depends_on"] = out
        if svc.links:
            svc.spec["links"] = {alias: ctx.names[dep] for alias, dep in svc.links.items() if dep in services}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    trail: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        trail.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt):], nxt]
                raise ctx.error(f"services.{node}.depends_on", "depends on itself: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt)
        trail.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)


def _entries(ctx: Context, value: object, what: str) -> dict[str, Mapping[str, object]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ctx.error(what, "must be a map")
    out: dict[str, Mapping[str, object]] = {}
    for key, body in value.items():
        if key.startswith("x-"):
            continue
        if body is not None and not isinstance(body, Mapping):
            raise ctx.error(f"{what}.{key}", "must be a map, or empty")
        out[key] = body or {}
    return out


def _networks(ctx: Context, value: object) -> None:
    for key, body in _entries(ctx, value, "networks").items():
        ctx.networks.add(key)
        for field in body:
            if not field.startswith("x-"):
                ctx.warn(f"networks.{key}.{field}", "ignored: a stack has one overlay network, made by Corral")


def _volumes(ctx: Context, value: object) -> None:
    for key, body in _entries(ctx, value, "volumes").items():
        path = f"volumes.{key}"
        if not VOLUME_NAME_RE.match(key):
            raise ctx.error(path, "a volume's name is 1-128 letters, digits, '_', '.' or '-'")
        external = body.get("external")
        if isinstance(external, Mapping):  # the old form: external: {name: x}
            body = {**body, "name": external.get("name", body.get("name"))}
            external = True
        is_external = external is not None and flag(ctx, external, f"{path}.external")
        scope = VolumeScope.EXTERNAL if is_external else VolumeScope.STACK
        docker_name = key
        for field, item in body.items():
            at = f"{path}.{field}"
            if field == "external":
                continue
            if field == "name":
                if is_external:
                    docker_name = as_text(ctx, item, at)
                    if not VOLUME_NAME_RE.match(docker_name):
                        raise ctx.error(at, "a volume's name is 1-128 letters, digits, '_', '.' or '-'")
                else:
                    ctx.warn(at, f"ignored: a stack volume is named STACK_{key} on its host")
            elif field == "driver":
                if item not in (None, "local"):
                    raise ctx.error(at, f"{item}: only the local driver is supported (a volume lives on one host)")
            elif field in ("driver_opts", "labels"):
                ctx.warn(at, "ignored: not applied by Corral yet")
            elif field == "x-corral":
                if not isinstance(item, Mapping) or set(item) - {"scope"} or item.get("scope") not in (
                        "stack", "instance"):
                    raise ctx.error(at, "is {scope: stack} or {scope: instance} (one volume per replica)")
                if is_external:
                    raise ctx.error(at, "does not apply to an external volume")
                scope = VolumeScope(item["scope"])
            elif not field.startswith("x-"):
                raise ctx.error(at, "is not a field of a volume (name, external, driver, driver_opts, labels)")
        ctx.volumes[key] = VolumeDecl(scope, docker_name)


def _files(ctx: Context, value: object, *, secret: bool) -> None:
    """Top-level ``configs:``/``secrets:``: each from a file, inline content, a variable, or external."""
    kind = "secrets" if secret else "configs"
    for key, body in _entries(ctx, value, kind).items():
        path = f"{kind}.{key}"
        if not VOLUME_NAME_RE.match(key):
            raise ctx.error(path, "a name is 1-128 letters, digits, '_', '.' or '-'")
        if key in ctx.configs:
            raise ctx.error(path, f"{key} is a config too: a config and a secret of a stack need different names")
        sources: dict[str, object] = {}
        for field, item in body.items():
            at = f"{path}.{field}"
            if field in ("file", "environment", "external") or (field == "content" and not secret):
                sources[field] = item
            elif field == "name":
                ctx.warn(at, f"ignored: the {kind[:-1]} is named {key} in the stack")
            elif field in ("labels", "template_driver", "driver_opts"):
                ctx.warn(at, "ignored: not applied by Corral")
            elif field == "driver":
                raise ctx.error(at, "is refused: secrets are kept by Corral (no secret drivers)")
            elif not field.startswith("x-"):
                raise ctx.error(at, f"is not a field of a {kind[:-1]} (file, {'' if secret else 'content, '}"
                                    "environment, external)")
        if len(sources) != 1:
            raise ctx.error(path, f"needs exactly one of file, {'' if secret else 'content, '}environment or external")
        (field, item), = sources.items()
        at = f"{path}.{field}"
        if field == "file":
            file = as_text(ctx, item, at, "a file's path")
            if file.startswith("~"):
                raise ctx.error(at, "a path in a home folder is not supported: give it relative to the compose file")
            ctx.configs[key] = ConfigSource(path=re.sub(r"/+$", "", file) or file, content=None, secret=secret)
        elif field == "content":
            ctx.configs[key] = ConfigSource(path=None, content=as_text(ctx, item, at), secret=secret)
        elif field == "environment":
            variable = as_text(ctx, item, at, "a variable's name")
            found = ctx.lookup(variable)
            if found is None:
                raise ctx.error(at, f"the variable {variable} is not set")
            ctx.configs[key] = ConfigSource(path=None, content=found, secret=secret)
        else:
            if not flag(ctx, item, at):
                raise ctx.error(at, "external: false needs a file, content or environment instead")
            ctx.configs[key] = ConfigSource(path=None, content=None, secret=secret, external=True)
        (ctx.secrets_declared if secret else ctx.configs_declared).add(key)


__all__ = ["BUILT", "Build", "Compose", "ComposeError", "ConfigSource", "load", "parse"]
