"""What this host's engine should hold, and what to do so that it does (pure).

:func:`container_config` is the engine's create request for an instance; every container carries
``corral.instance``, ``corral.generation`` and ``corral.spec`` (a fingerprint of what shapes the
container, and the generation). :func:`plan` compares the desired containers with the observed ones
and returns the actions: remove what is no longer assigned here, duplicates and stale generations;
create what is missing; start what should run; stop what should not; replace an unhealthy one when
its service says so. :func:`observed_status` is what the host reports of a container.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import ipaddress
import json
import math
from collections.abc import Mapping, Sequence
from typing import cast

from agent.errors import CorralError
from agent.model import spec as spec_rules
from agent.model.codec import to_wire
from agent.model.dns import SUFFIX as DNS_SUFFIX
from agent.model.entities import Health, Instance, Status
from agent.model.mounts import DEFAULT_FILE_MODE, MountType, volume_key
from agent.model.spec import HealthCheck, HealthType, OnUnhealthy, PullPolicy, RestartPolicy, ServiceSpec
from agent.model.state import MAX_ERROR, ClusterState
from agent.node.docker import BRIDGE, LABEL_PREFIX, NETWORK, EngineContainer

# Only what shapes the container: a new scale or placement rule must not restart the ones that stay.
CONTAINER_FIELDS = ("image", "command", "environment", "ports", "labels", "restart", "cpus", "memory", "health_check")
# Fields added since: in the fingerprint only when they differ from their default, so that a new
# agent does not replace every container an older one made.
LATER_CONTAINER_FIELDS = ("mounts", "entrypoint", "user", "working_dir", "hostname", "cap_add", "cap_drop",
                          "read_only", "init", "sysctls", "ulimits", "extra_hosts", "dns", "stop_signal",
                          "stop_grace_period", "shm_size", "expose", "privileged", "tty", "stdin_open", "cpu_limit",
                          "memory_limit", "restart_max_attempts", "no_new_privileges", "links")
# Sub-fields added since to records inside CONTAINER_FIELDS: left out of the fingerprint when unset.
LATER_PORT_FIELDS = ("host_ip",)
INSTANCE_LABEL = LABEL_PREFIX + "instance"
SPEC_LABEL = LABEL_PREFIX + "spec"

__all__ = ["BRIDGE", "NETWORK", "Action", "ActionKind", "Desired", "Why", "container_config", "desired_here",
           "observed_status", "plan"]


class ActionKind(enum.StrEnum):
    CREATE = "create"
    START = "start"
    STOP = "stop"
    REMOVE = "remove"


class Why(enum.StrEnum):
    NOT_ASSIGNED = "not assigned to this host"
    DUPLICATE = "duplicate"
    CHANGED = "spec or generation changed"
    REPLACE = "replace"
    UNHEALTHY = "unhealthy"
    REPLACE_UNHEALTHY = "replace the unhealthy one"
    NOT_RUNNING = "it is not running"
    SERVICE_STOPPED = "service stopped"
    MISSING = "missing"


@dataclasses.dataclass(frozen=True)
class HostPaths:
    """Where this host writes the files of configs and secrets it mounts into containers."""

    configs: str = "/var/lib/corral/configs"
    secrets: str = "/run/corral/secrets"
    """On a memory file system (``/run``): a secret's clear bytes never reach a disk."""


@dataclasses.dataclass(frozen=True)
class FileSet:
    """A config's files as this host writes them: into ``directory`` (named after the config's digest
    and the files' mode), ``content`` for a single file, else the tree under ``tree/``."""

    directory: str
    config: str
    """The config's key (``ENVIRONMENT/NAME``), to find its bytes in the state."""
    digest: str
    mode: int
    secret: bool
    single: bool

    @property
    def source(self) -> str:
        return f"{self.directory}/content" if self.single else f"{self.directory}/tree"


@dataclasses.dataclass(frozen=True)
class Desired:
    instance: str
    name: str
    running: bool
    restart: RestartPolicy
    config: Mapping[str, object]
    health_check: HealthCheck | None = None
    pull: PullPolicy = PullPolicy.IF_NOT_PRESENT
    restart_max_attempts: int = 0
    restart_delay: float = 0.0
    """Seconds between an exit and the restart (Docker then restarts nothing itself: the agent does)."""
    volumes: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    """The Docker volumes it mounts, with the labels each is made with."""
    files: tuple[FileSet, ...] = ()
    """The config and secret files it mounts, written before it is created."""

    @property
    def image(self) -> str:
        return str(self.config["Image"])

    @property
    def fingerprint(self) -> str:
        labels = self.config["Labels"]
        assert isinstance(labels, Mapping)
        return str(labels[SPEC_LABEL])


@dataclasses.dataclass(frozen=True)
class Action:
    kind: ActionKind
    instance: str
    reason: Why
    container: str | None = None
    desired: Desired | None = None


def storage_of(state: ClusterState, instance: Instance, paths: HostPaths = HostPaths()
               ) -> tuple[list[dict[str, object]], Desired]:
    """The ``HostConfig.Mounts`` of an instance's container, and the volumes and files they need (as a
    Desired carrying only those): volumes by their name on this host (``agent/model/mounts.py``),
    configs and secrets by the directory this host writes their files into."""
    service = state.services[instance.service]
    stack = state.stacks[service.stack]
    out: list[dict[str, object]] = []
    volumes: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    files: list[FileSet] = []
    for m in state.spec_of(instance).mounts:
        if m.type == MountType.VOLUME:
            name = volume_key(stack.name, m, instance.slot)
            labels = ((LABEL_PREFIX + "volume", f"{stack.environment}/{name}"), (LABEL_PREFIX + "stack", stack.name))
            volumes.append((name, labels))
            out.append({"Type": "volume", "Source": name, "Target": m.target, "ReadOnly": m.read_only})
        elif m.type == MountType.BIND:
            out.append({"Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": m.read_only})
        elif m.type == MountType.TMPFS:
            tmpfs: dict[str, object] = {"Type": "tmpfs", "Target": m.target}
            if m.size is not None:
                tmpfs["TmpfsOptions"] = {"SizeBytes": m.size}
            out.append(tmpfs)
        else:
            assert m.source is not None
            config = state.storage.config_for(stack.environment, stack.name, m.source)
            if config is None:  # removed meanwhile (the state refuses that while it is mounted)
                raise MissingConfig(f"{m.type} {m.source} does not exist")
            mode = m.mode if m.mode is not None else DEFAULT_FILE_MODE
            root = paths.secrets if config.secret else paths.configs
            single = len(config.files) == 1 and config.files[0][0] == ""
            fileset = FileSet(f"{root}/{config.digest[:32]}-{mode:o}", config.key, config.digest, mode, config.secret,
                              single)
            files.append(fileset)
            out.append({"Type": "bind", "Source": fileset.source, "Target": m.target, "ReadOnly": True})
    return out, dataclasses.replace(_NO_STORAGE, volumes=tuple(volumes), files=tuple(files))


class MissingConfig(CorralError):
    """A container mounts a config the state no longer has."""


def container_config(state: ClusterState, instance: Instance, paths: HostPaths = HostPaths()) -> dict[str, object]:
    """The engine's create request for an instance: image, command, env, ports, labels, health check, mounts."""
    service = state.services[instance.service]
    stack = state.stacks[service.stack]
    spec = state.spec_of(instance)  # during an upgrade, the version this instance was made with
    name = state.container_name(instance)
    exposed: dict[str, object] = {f"{p.target}/{p.protocol}": {} for p in spec.ports}
    exposed.update({port: {} for port in spec.expose})
    # "80" publishes on an ephemeral host port (as compose does); "8080:80" on 8080; a host_ip only there.
    bindings: dict[str, list[dict[str, str]]] = {}
    for p in spec.ports:
        binding = {"HostPort": str(p.published or "")}
        if p.host_ip is not None:
            binding["HostIp"] = p.host_ip
        bindings.setdefault(f"{p.target}/{p.protocol}", []).append(binding)
    mounts, needs = storage_of(state, instance, paths) if spec.mounts else ([], _NO_STORAGE)
    fingerprint = _fingerprint(spec, [f.digest for f in needs.files])
    labels = {
        **spec.labels,
        INSTANCE_LABEL: instance.id,
        LABEL_PREFIX + "service": service.id,
        LABEL_PREFIX + "stack": stack.name,
        LABEL_PREFIX + "slot": str(instance.slot),
        LABEL_PREFIX + "generation": str(instance.generation),
        SPEC_LABEL: f"{fingerprint}-{instance.generation}",
    }
    config: dict[str, object] = {
        "Image": spec.image,
        "Hostname": spec.hostname or name,
        "Env": [f"{k}={v}" for k, v in sorted(spec.environment.items())]
        + [f"CORRAL_CONTAINER={name}", f"CORRAL_SERVICE={service.name}", f"CORRAL_STACK={stack.name}"],
        "Labels": labels,
        "ExposedPorts": exposed,
        "HostConfig": {
            "NetworkMode": NETWORK,
            "PortBindings": bindings,
            "RestartPolicy": {"Name": spec.restart.value},
            "MemoryReservation": spec.memory,
        },
    }
    if mounts:
        host_config = config["HostConfig"]
        assert isinstance(host_config, dict)
        host_config["Mounts"] = mounts
    if spec.command:
        config["Cmd"] = list(spec.command)
    _later_fields(spec, config)
    _cluster_dns(state, instance, config)
    check = spec.health_check
    if check and check.type == HealthType.COMMAND:  # Docker runs it in the container; http/tcp: node/health.py
        config["Healthcheck"] = {"Test": ["CMD-SHELL", check.command], "Interval": _ns(check.interval),
                                 "Timeout": _ns(check.timeout), "Retries": check.retries,
                                 "StartPeriod": _ns(check.start_period)}
    return config


_NO_STORAGE = Desired("", "", False, RestartPolicy.NO, {})
_DEFAULT_WIRE = cast(dict[str, object], to_wire(spec_rules.parse({"image": "x"})))


def _fingerprint(spec: ServiceSpec, config_digests: list[str] | None = None) -> str:
    """A hash of what shapes the container; a field added since enters it only when set, so an upgrade
    does not replace the containers an older agent made. New content in a config it mounts
    (``config_digests``) is a new container."""
    wire = to_wire(spec)
    assert isinstance(wire, dict)
    shape = {k: wire[k] for k in CONTAINER_FIELDS}
    ports = shape["ports"]
    assert isinstance(ports, list)
    shape["ports"] = [{k: v for k, v in p.items() if k not in LATER_PORT_FIELDS or v is not None} for p in ports]
    shape.update({k: wire[k] for k in LATER_CONTAINER_FIELDS if wire.get(k) != _DEFAULT_WIRE.get(k)})
    if config_digests:
        shape["config_digests"] = config_digests
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def _later_fields(spec: ServiceSpec, config: dict[str, object]) -> None:
    """The fields added since issue 16, into Docker's create body only when set (the old body is unchanged)."""
    host = config["HostConfig"]
    assert isinstance(host, dict)
    if spec.entrypoint is not None:
        config["Entrypoint"] = list(spec.entrypoint)
    if spec.user is not None:
        config["User"] = spec.user
    if spec.working_dir is not None:
        config["WorkingDir"] = spec.working_dir
    if spec.stop_signal is not None:
        config["StopSignal"] = spec.stop_signal if spec.stop_signal.isdigit() or spec.stop_signal.startswith("SIG") \
            else "SIG" + spec.stop_signal
    if spec.stop_grace_period is not None:
        config["StopTimeout"] = math.ceil(spec.stop_grace_period)
    if spec.tty:
        config["Tty"] = True
    if spec.stdin_open:
        config["OpenStdin"] = True
    if spec.restart == RestartPolicy.ON_FAILURE and spec.restart_max_attempts:
        host["RestartPolicy"] = {"Name": spec.restart.value, "MaximumRetryCount": spec.restart_max_attempts}
    if spec.restart_delay and spec.restart != RestartPolicy.NO:
        host["RestartPolicy"] = {"Name": "no"}  # the agent restarts it, once the delay is over
    for key, value in (("CapAdd", list(spec.cap_add)), ("CapDrop", list(spec.cap_drop)),
                       ("ExtraHosts", list(spec.extra_hosts)), ("Dns", list(spec.dns)),
                       ("Sysctls", dict(spec.sysctls)), ("ReadonlyRootfs", spec.read_only),
                       ("Privileged", spec.privileged), ("ShmSize", spec.shm_size),
                       ("NanoCpus", round(spec.cpu_limit * 1e9)), ("Memory", spec.memory_limit)):
        if value:
            host[key] = value
    if spec.init is not None:
        host["Init"] = spec.init
    if spec.no_new_privileges:
        host["SecurityOpt"] = ["no-new-privileges"]
    if spec.ulimits:
        host["Ulimits"] = [{"Name": k, "Soft": u.soft, "Hard": u.hard} for k, u in sorted(spec.ulimits.items())]


def _cluster_dns(state: ClusterState, instance: Instance, config: dict[str, object]) -> None:
    """The host's DNS server (its bridge gateway) and the stack's search domains, unless the service
    names its own ``dns``. Not in the fingerprint: an upgrade does not replace running containers for it
    (they get it when they are next made); ``Dns`` only sets the upstream of Docker's embedded resolver."""
    host = state.hosts.get(instance.host)
    if state.spec_of(instance).dns or host is None or not host.subnet:
        return
    stack = state.stacks[state.services[instance.service].stack]
    host_config = config["HostConfig"]
    assert isinstance(host_config, dict)
    host_config["Dns"] = [str(next(ipaddress.IPv4Network(host.subnet).hosts()))]
    service = state.services[instance.service]
    stack_domain = f"{stack.name}.{stack.environment}.{DNS_SUFFIX}"
    # a service with compose links looks in its own domain first, where its links' names are (docs/DNS.md)
    own = [f"{service.name}.{stack_domain}"] if state.spec_of(instance).links else []
    host_config["DnsSearch"] = [*own, stack_domain, f"{stack.environment}.{DNS_SUFFIX}"]


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def desired_one(state: ClusterState, inst: Instance, paths: HostPaths = HostPaths()) -> Desired:
    spec = state.spec_of(inst)
    needs = storage_of(state, inst, paths)[1] if spec.mounts else _NO_STORAGE
    return Desired(inst.id, state.container_name(inst), inst.desired == "running", spec.restart,
                   container_config(state, inst, paths), spec.health_check, spec.pull, spec.restart_max_attempts,
                   spec.restart_delay, needs.volumes, needs.files)


def desired_here(state: ClusterState, host: str, paths: HostPaths = HostPaths()) -> dict[str, Desired]:
    """Every instance assigned to ``host``, as the container it should be."""
    return {inst.id: desired_one(state, inst, paths) for inst in state.instances_on(host)
            if inst.service in state.services}


def plan(desired: Mapping[str, Desired], observed: Sequence[EngineContainer]) -> list[Action]:
    """What to do so that the engine holds exactly the desired containers, in the desired states."""
    actions: list[Action] = []
    by_instance: dict[str, list[EngineContainer]] = {}
    for container in observed:
        by_instance.setdefault(container.instance, []).append(container)
    for instance, containers in sorted(by_instance.items()):
        want = desired.get(instance)
        if want is None:
            actions += [Action(ActionKind.REMOVE, instance, Why.NOT_ASSIGNED, c.id) for c in containers]
            continue
        # Keep the one that matches (running first); remove duplicates and stale generations.
        fingerprint = want.fingerprint
        containers = sorted(containers, key=lambda c: (c.labels.get(SPEC_LABEL) != fingerprint,
                                                       c.state != "running", c.id))
        keep, extra = containers[0], containers[1:]
        actions += [Action(ActionKind.REMOVE, instance, Why.DUPLICATE, c.id) for c in extra]
        if keep.labels.get(SPEC_LABEL) != fingerprint:
            actions.append(Action(ActionKind.REMOVE, instance, Why.CHANGED, keep.id))
            actions.append(Action(ActionKind.CREATE, instance, Why.REPLACE, desired=want))
        elif (want.running and keep.state == "running" and keep.health == Health.UNHEALTHY
              and want.health_check and want.health_check.on_unhealthy == OnUnhealthy.RECREATE):
            actions.append(Action(ActionKind.REMOVE, instance, Why.UNHEALTHY, keep.id))
            actions.append(Action(ActionKind.CREATE, instance, Why.REPLACE_UNHEALTHY, desired=want))
        elif want.running and keep.state in ("created", "exited", "dead"):
            # unless-stopped is always for Corral: a service Corral stopped is not desired running; an
            # on-failure with a retry limit is left to Docker, which counts the retries (RestartCount),
            # unless a delay is asked for: then the agent restarts, and counts (the reconciler holds back).
            if want.restart in (RestartPolicy.ALWAYS, RestartPolicy.UNLESS_STOPPED) or keep.state == "created" or (
                    want.restart == RestartPolicy.ON_FAILURE and keep.exit_code not in (0, None)
                    and (not want.restart_max_attempts or want.restart_delay)):
                actions.append(Action(ActionKind.START, instance, Why.NOT_RUNNING, keep.id))
        elif not want.running and keep.state in ("running", "restarting"):
            actions.append(Action(ActionKind.STOP, instance, Why.SERVICE_STOPPED, keep.id))
    for instance, want in sorted(desired.items()):
        if instance not in by_instance:
            actions.append(Action(ActionKind.CREATE, instance, Why.MISSING, desired=want))
    return actions


@dataclasses.dataclass(frozen=True)
class Observed:
    """What a host reports of an instance's container (the fields of ``InstanceStatus``)."""

    status: Status
    exit_code: int | None = None
    container_id: str | None = None
    ip: str | None = None
    ports: tuple[str, ...] = ()
    health: Health | None = None
    health_detail: str | None = None
    error: str | None = None


ENGINE_STATES = {"running": Status.RUNNING, "restarting": Status.RESTARTING, "paused": Status.PAUSED,
                 "created": Status.CREATED}


def observed_status(container: EngineContainer | None, inspect: Mapping[str, object] | None = None,
                    error: str | None = None) -> Observed:
    if container is None:
        return Observed(Status.MISSING, error=error)
    state = inspect.get("State") if inspect else None
    oom = isinstance(state, Mapping) and bool(state.get("OOMKilled"))
    status = Status.OOM if oom else ENGINE_STATES.get(container.state, Status.EXITED)
    return Observed(status, container.exit_code, container.id, container.ip, container.ports,
                    Health(container.health) if container.health else None,
                    container.health_detail or _check_output(inspect), error)


def _check_output(inspect: Mapping[str, object] | None) -> str | None:
    """What Docker's last run of a failing command check said: ``the check exited 1: …``."""
    state = (inspect or {}).get("State")
    health = state.get("Health") if isinstance(state, Mapping) else None
    runs = health.get("Log") if isinstance(health, Mapping) else None
    if not isinstance(runs, list) or not runs or not isinstance(runs[-1], Mapping) or runs[-1].get("ExitCode") == 0:
        return None
    out = str(runs[-1].get("Output") or "").strip()
    return f"the check exited {runs[-1].get('ExitCode')}" + (f": {out[:200]}" if out else "")


def reason(exc: BaseException) -> str:
    """A failed action's reason as a user reads it (a Corral error's message, else the exception)."""
    text = exc.message if isinstance(exc, CorralError) else f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR]
