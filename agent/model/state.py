"""The desired state of the cluster: the Raft state machine every agent applies the log to.

Theory of operation. Every change is a command (:mod:`agent.model.commands`) proposed to Raft. Once
committed it is applied here, on every node, in log order. Applying is deterministic: it reads
nothing but the command, the entry's index and the state (no clock, no randomness; ids come from the
log index), so every node that applied index N holds the same state. A command that is wrong
(unknown id, clashing name, bad spec) changes nothing: :meth:`ClusterState.execute` raises a
:class:`~agent.model.errors.CommandError` naming the field before it touches anything, and
:meth:`ClusterState.apply` (the Raft ``StateMachine`` protocol) hands that error back as the result.

Records are frozen (:mod:`agent.model.entities`) and replaced whole. Every insert, replacement and
removal goes through one of the ``_put_*`` / ``_drop_*`` helpers, which keep the secondary indexes
(instances by service and by host) and fill the change outbox (:meth:`take_changes`).

``placements.commit`` carries the leader's scheduler decision; it is re-checked when applied (the
state may have moved on since the decision was made) and the parts that no longer fit are dropped.

Snapshots are msgpack maps with a ``format``; format 1 (no ``format`` key) is what agents wrote before
the typed model, and is still read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex
from collections.abc import Iterable
from typing import Protocol

import msgpack

from agent.model import lb as lb_rules
from agent.model import spec as specs
from agent.model import upgrades
from agent.model.access import Access
from agent.model.changes import Change, Topic
from agent.model.codec import WireError, from_wire, to_wire
from agent.model.commands import (
    Actor,
    AdminBootstrap,
    BindPathsSet,
    CaRetire,
    CaRotate,
    CaSet,
    Command,
    ConfigRemove,
    ConfigSet,
    ContainerExec,
    EnvCreate,
    HostMove,
    HostRegister,
    HostRemove,
    HostSetState,
    ImageAdd,
    ImageHeld,
    ImageRemove,
    InstanceRemove,
    InstanceStatus,
    JoinTokenCreate,
    JoinTokenRevoke,
    JoinTokenUse,
    KeyCreate,
    KeyRevoke,
    KeysSet,
    KvDelete,
    KvPut,
    Outcome,
    PlacementsCommit,
    RegistryRemove,
    RegistrySet,
    Result,
    RoleSet,
    ServiceCreate,
    ServiceRemove,
    ServiceScale,
    ServiceSetState,
    ServiceUpdate,
    StackCreate,
    StackDeploy,
    StackRemove,
    TeamRemove,
    TeamSet,
    UpgradeAdvance,
    UpgradeControl,
    UpgradeStart,
    UserCreate,
    UserRemove,
    UserUpdate,
    VolumeCreate,
    VolumeGone,
    VolumeRemove,
    decode_entry,
    exec_command_problem,
)
from agent.model.entities import (
    Desired,
    Environment,
    Event,
    EventKind,
    Health,
    Host,
    HostState,
    Instance,
    Keyring,
    KvEntry,
    Service,
    ServiceState,
    Stack,
    Status,
)
from agent.model.errors import CommandError, ErrorCode, SpecError, bad_request, conflict, forbidden, not_found
from agent.model.images import Images
from agent.model.mounts import MountType, volume_key
from agent.model.policy import Grants, Permission, allowed
from agent.model.scheduler import Constraint, HostFacts
from agent.model.storage import MAX_CONFIGS_TOTAL, Storage, check_files, config_digest
from agent.model.upgrade import FINISHED, Upgrade
from overlay.ipam import PoolExhausted, SubnetLeases

SNAPSHOT_FORMAT = 2
MAX_EVENTS = 1000
MAX_ERROR = 500  # characters of an instance's error (or health detail) kept in the state
MAX_KEYS = 16
KV_ENVIRONMENT = "default"
"""The key-value store belongs to the default environment: its roles say who reads and writes it."""
HEX = frozenset("0123456789abcdef")


@dataclasses.dataclass
class DeployPlan:
    """What a stack deploy does (``--dry-run`` prints it): services made, changed, left as they are and
    removed (``prune``); configs made, changed, unchanged; volumes that will be made at first placement."""

    stack: str
    stack_id: str | None
    specs: dict[str, specs.ServiceSpec] = dataclasses.field(default_factory=dict)
    created: list[str] = dataclasses.field(default_factory=list)
    changed: list[str] = dataclasses.field(default_factory=list)
    unchanged: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    configs_created: list[str] = dataclasses.field(default_factory=list)
    configs_changed: list[str] = dataclasses.field(default_factory=list)
    configs_unchanged: list[str] = dataclasses.field(default_factory=list)
    volumes_new: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(v)} {k}" for k, v in (("created", self.created), ("changed", self.changed),
                                              ("unchanged", self.unchanged), ("removed", self.removed)) if v]
        return ", ".join(parts) or "nothing"

    def to_view(self) -> dict[str, object]:
        return {"stack": self.stack, "exists": self.stack_id is not None,
                "services": {"created": self.created, "changed": self.changed, "unchanged": self.unchanged,
                             "removed": self.removed},
                "configs": {"created": self.configs_created, "changed": self.configs_changed,
                            "unchanged": self.configs_unchanged},
                "volumes": {"created": self.volumes_new}}


class Entry(Protocol):
    """A committed Raft entry, as the state machine sees it."""

    @property
    def index(self) -> int: ...

    @property
    def data(self) -> bytes: ...


class ClusterState:
    """Implements the Raft ``StateMachine`` protocol: ``apply``, ``snapshot``, ``restore``."""

    def __init__(self) -> None:
        self.applied_index = 0
        self.environments: dict[str, Environment] = {"default": Environment("default", 0)}
        self.hosts: dict[str, Host] = {}
        self.stacks: dict[str, Stack] = {}
        self.services: dict[str, Service] = {}
        self.instances: dict[str, Instance] = {}
        self.kv: dict[str, KvEntry] = {}
        self.events: list[Event] = []
        self.subnets = SubnetLeases()
        self.keyring: Keyring | None = None  # None: only the key derived from the cluster secret
        self.access = Access()
        self.images = Images()
        self.storage = Storage()
        self.host_environments: dict[str, str] = {}
        """host → environment, from joins and moves (a host joins before the leader registers it)."""
        self.upgrades: dict[str, tuple[Upgrade, ...]] = {}
        """service → its last upgrades, oldest first (the last is the current one): ``agent/model/upgrades.py``."""
        self._actor: Actor | None = None  # who asked for the command being applied (for its events)
        self._environment: str | None = None  # and the environment it is about
        self._events_made = 0
        self._by_service: dict[str, set[str]] = {}
        self._by_host: dict[str, set[str]] = {}
        self._changes: list[Change] = []

    # -------------------------------------------------------------- the StateMachine protocol

    def apply(self, entry: Entry) -> Result:
        """Apply one committed entry; never raises: a refused command is returned as its error."""
        index = int(entry.index)
        self.applied_index = max(self.applied_index, index)
        if not entry.data:
            return Outcome(index)
        try:
            cmd, actor = decode_entry(entry.data)
            return self.execute(cmd, index, actor)
        except CommandError as exc:
            return exc

    def execute(self, cmd: Command, index: int, actor: Actor | None = None) -> Outcome:
        """Apply ``cmd`` as log entry ``index``; CommandError (and no change at all) if it is refused.

        A command a user asked for (``actor``) is authorized again here, against the state as it is now:
        a credential revoked or a role taken away since the node checked the request refuses it, and a
        forwarded or replayed command can never do more than its user may.
        """
        permission, environment = self.permission_of(cmd, actor)
        grants = None
        if actor is not None:
            user, key = self.access.credential(actor)
            grants = self.access.grants(user, key)
            if not allowed(grants, permission, environment):
                raise forbidden(f"{user.name} may not {type(cmd).__name__} "
                                f"({permission.value}{' in ' + environment if environment else ''})")
        self._actor, self._environment = actor, environment
        try:
            events = self._events_made
            outcome = self._execute(cmd, index, actor, grants)
            if actor is not None and self._events_made == events:
                self._event(index, EventKind.WRITE, f"{type(cmd).__name__} by {actor.user}", op=type(cmd).__name__)
            return outcome
        finally:
            self._actor = self._environment = None

    def permission_of(self, cmd: Command, actor: Actor | None) -> tuple[Permission, str | None]:
        """What ``cmd`` needs of the user who asks for it, and the environment it is about (None when
        it is about the cluster, or about something that does not exist: it will be refused anyway)."""
        match cmd:
            case StackCreate():
                return Permission.DEPLOY, cmd.environment
            case StackRemove():
                return Permission.DEPLOY, self._env_of_stack(cmd.id)
            case StackDeploy() | VolumeCreate() | VolumeRemove() | ConfigSet() | ConfigRemove():
                return Permission.DEPLOY, cmd.environment
            case VolumeGone():
                return Permission.SYSTEM, None
            case ServiceCreate():
                return Permission.DEPLOY, self._env_of_stack(cmd.stack)
            case ServiceUpdate() | ServiceScale() | ServiceSetState() | ServiceRemove():
                return Permission.DEPLOY, self.environment_of_service(cmd.id)
            case UpgradeStart() | UpgradeControl():
                return Permission.DEPLOY, self.environment_of_service(cmd.service)
            case UpgradeAdvance():
                return Permission.SYSTEM, self.environment_of_service(cmd.service)
            case InstanceRemove() | ContainerExec():
                inst = self.instances.get(cmd.id)
                return Permission.DEPLOY, self.environment_of_service(inst.service) if inst else None
            case InstanceStatus():
                inst = self.instances.get(cmd.id)
                return Permission.SYSTEM, self.environment_of_service(inst.service) if inst else None
            case KvPut() | KvDelete():
                return Permission.DEPLOY, KV_ENVIRONMENT
            case RoleSet():
                return Permission.MANAGE, cmd.environment
            case UserUpdate() if actor is not None and actor.user == cmd.name and cmd.admin is None:
                return Permission.AUTHENTICATED, None
            case KeyCreate() if actor is not None and actor.user == cmd.owner:
                return Permission.AUTHENTICATED, cmd.environment
            case KeyRevoke() if actor is not None and (key := self.access.keys.get(cmd.id)) and key.owner == actor.user:
                return Permission.AUTHENTICATED, None
            case HostRegister() | HostSetState() | PlacementsCommit() | AdminBootstrap() | CaSet() | JoinTokenUse() \
                    | ImageHeld():
                return Permission.SYSTEM, None
            case ImageAdd():  # anyone who may deploy somewhere may bring an image (removing one: admins)
                return Permission.DEPLOY, None
            case HostMove():
                return Permission.ADMIN, None
        return Permission.ADMIN, None

    def _env_of_stack(self, stack_id: str) -> str | None:
        stack = self.stacks.get(stack_id)
        return stack.environment if stack else None

    def environment_of_service(self, service_id: str) -> str | None:
        service = self.services.get(service_id)
        return self._env_of_stack(service.stack) if service else None

    def _execute(self, cmd: Command, index: int, actor: Actor | None, grants: Grants | None) -> Outcome:
        match cmd:
            case EnvCreate():
                return self._env_create(cmd, index)
            case HostRegister():
                return self._host_register(cmd, index)
            case HostSetState():
                return self._host_state(cmd, index)
            case HostRemove():
                return self._host_remove(cmd, index)
            case StackCreate():
                return self._stack_create(cmd, index)
            case StackRemove():
                return self._stack_remove(cmd, index)
            case ServiceCreate():
                return self._service_create(cmd, index)
            case ServiceUpdate():
                return self._service_update(cmd, index)
            case ServiceScale():
                return self._service_scale(cmd, index)
            case ServiceSetState():
                return self._service_set_state(cmd, index)
            case ServiceRemove():
                return self._service_remove(cmd.id, index)
            case PlacementsCommit():
                return self._placements_commit(cmd, index)
            case InstanceStatus():
                return self._instance_status(cmd, index)
            case InstanceRemove():
                return self._instance_remove(cmd, index)
            case ContainerExec():
                return self._container_exec(cmd, index, actor)
            case KeysSet():
                return self._keys_set(cmd, index)
            case KvPut():
                return self._kv_put(cmd, index)
            case KvDelete():
                return self._kv_delete(cmd, index)
            case AdminBootstrap():
                return self.access.bootstrap(cmd, index, self)
            case UserCreate():
                return self.access.user_create(cmd, index, self)
            case UserUpdate():
                return self.access.user_update(cmd, index, self)
            case UserRemove():
                return self.access.user_remove(cmd, index, self)
            case KeyCreate():
                return self.access.key_create(cmd, index, actor.at if actor else 0.0, grants, self, self.environments)
            case KeyRevoke():
                return self.access.key_revoke(cmd, index, self)
            case TeamSet():
                return self.access.team_set(cmd, index, self)
            case TeamRemove():
                return self.access.team_remove(cmd, index, self)
            case RoleSet():
                return self.access.role_set(cmd, index, self.environments, self)
            case CaSet():
                return self.access.ca_set(cmd, index, self)
            case CaRotate():
                return self.access.ca_rotate(cmd, index, self)
            case CaRetire():
                return self.access.ca_retire(cmd, index, self)
            case RegistrySet():
                return self.images.registry_set(cmd, index, self)
            case RegistryRemove():
                return self.images.registry_remove(cmd, index, self)
            case ImageAdd():
                return self.images.image_add(cmd, index, self.hosts, self)
            case ImageHeld():
                return self.images.image_held(cmd, index, self)
            case ImageRemove():
                return self.images.image_remove(cmd, index, self)
            case JoinTokenCreate():
                if cmd.environment not in self.environments:
                    raise not_found("environment", cmd.environment, "environment")
                return self.access.join_token_create(cmd, index, actor.at if actor else 0.0, self)
            case JoinTokenRevoke():
                return self.access.join_token_revoke(cmd, index, self)
            case JoinTokenUse():
                outcome, environment = self.access.join_token_use(cmd, index, self)
                self._assign(cmd.host, environment, index)
                return outcome
            case HostMove():
                return self._host_move(cmd, index)
            case StackDeploy():
                return self._stack_deploy(cmd, index)
            case VolumeCreate():
                return self.storage.volume_create(cmd, index, self.environments, self.hosts, self)
            case VolumeRemove():
                return self.storage.volume_remove(cmd, index, self.volume_users(cmd.environment, cmd.name), self)
            case VolumeGone():
                return self.storage.volume_gone(cmd, index, self)
            case ConfigSet():
                return self.storage.config_set(cmd, index, self.environments, self)
            case ConfigRemove():
                key = f"{cmd.environment}/{cmd.name}"
                return self.storage.config_remove(key, index, self.config_users(key), self)
            case BindPathsSet():
                return self.storage.bind_paths_set(cmd, index, self)
            case UpgradeStart():
                return upgrades.start(self, cmd, index, actor)
            case UpgradeControl():
                return upgrades.control_upgrade(self, cmd, index, actor)
            case UpgradeAdvance():
                return upgrades.advance(self, cmd, index)

    def snapshot(self) -> bytes:
        body = {
            "format": SNAPSHOT_FORMAT, "applied_index": self.applied_index,
            "environments": [to_wire(e) for e in self.environments.values()],
            "hosts": [to_wire(h) for h in self.hosts.values()],
            "stacks": [to_wire(s) for s in self.stacks.values()],
            "services": [to_wire(s) for s in self.services.values()],
            "instances": [to_wire(i) for i in self.instances.values()],
            "kv": {k: to_wire(v) for k, v in self.kv.items()},
            "events": [to_wire(e) for e in self.events],
            "subnets": self.subnets.to_dict(),
            "keyring": to_wire(self.keyring) if self.keyring else None,
            "access": self.access.to_wire(),
            "images": self.images.to_wire(),
            "storage": self.storage.to_wire(),
            "host_environments": dict(self.host_environments),
            "upgrades": [to_wire(u) for history in self.upgrades.values() for u in history],
        }
        return bytes(msgpack.packb(body, use_bin_type=True))

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's (format 1 or 2); ValueError if it cannot be read."""
        raw = msgpack.unpackb(data, raw=False)
        if not isinstance(raw, dict):
            raise ValueError("a snapshot is a map")
        body = raw if raw.get("format") == SNAPSHOT_FORMAT else _upgrade_v1(raw)
        if body.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot format {raw.get('format')!r} is newer than this agent reads")
        try:
            environments = [from_wire(Environment, e, "environments") for e in _rows(body, "environments")]
            hosts = [from_wire(Host, h, "hosts") for h in _rows(body, "hosts")]
            stacks = [from_wire(Stack, s, "stacks") for s in _rows(body, "stacks")]
            services = [from_wire(Service, s, "services") for s in _rows(body, "services")]
            instances = [from_wire(Instance, i, "instances") for i in _rows(body, "instances")]
            raw_kv = body.get("kv")
            if not isinstance(raw_kv, dict):
                raise WireError("kv", "must be a map")
            kv = {str(k): from_wire(KvEntry, v, f"kv.{k}") for k, v in raw_kv.items()}
            events = [from_wire(Event, e, "events") for e in _rows(body, "events")]
            keyring = from_wire(Keyring, body["keyring"], "keyring") if body.get("keyring") else None
            applied = body.get("applied_index")
            if not isinstance(applied, int):
                raise WireError("applied_index", "must be a whole number")
            subnets = body.get("subnets")
            leases = SubnetLeases.from_dict(subnets) if isinstance(subnets, dict) and subnets else SubnetLeases()
            access = Access.from_wire(body.get("access"))
            images = Images.from_wire(body.get("images"))
            storage = Storage.from_wire(body.get("storage"))
            host_envs = body.get("host_environments") or {}
            if not isinstance(host_envs, dict):
                raise WireError("host_environments", "must be a map")
            upgrade_rows = [from_wire(Upgrade, u, "upgrades") for u in _iter(body.get("upgrades"))]
        except (WireError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"snapshot cannot be read: {exc}") from exc
        self.applied_index = applied
        self.environments = {e.name: e for e in environments}
        self.hosts = {h.name: h for h in hosts}
        self.stacks = {s.id: s for s in stacks}
        self.services = {s.id: s for s in services}
        self.instances = {}
        self._by_service, self._by_host = {}, {}
        for inst in instances:
            self._index(inst)
        self.kv = kv
        self.events = events
        self.subnets = leases
        self.keyring = keyring
        self.access = access
        self.images = images
        self.storage = storage
        self.host_environments = {str(k): str(v) for k, v in host_envs.items()}
        self.upgrades = {}
        for up in upgrade_rows:  # written oldest first per service
            self.upgrades[up.service] = (*self.upgrades.get(up.service, ()), up)
        self._changes = [Change(self.applied_index, Topic.ALL)]

    # -------------------------------------------------------------- reading

    def take_changes(self) -> list[Change]:
        """What was changed since the last call (the outbox), oldest first."""
        changes, self._changes = self._changes, []
        return changes

    def instances_of(self, service_id: str) -> list[Instance]:
        """A service's instances, by slot."""
        return sorted((self.instances[i] for i in self._by_service.get(service_id, ())), key=lambda i: i.slot)

    def instances_on(self, host: str) -> list[Instance]:
        return sorted((self.instances[i] for i in self._by_host.get(host, ())), key=lambda i: (i.service, i.slot))

    def count_on(self, host: str) -> int:
        return len(self._by_host.get(host, ()))

    def services_of(self, stack_id: str) -> list[Service]:
        return [s for s in self.services.values() if s.stack == stack_id]

    def container_name(self, instance: Instance) -> str:
        """``stack-service-slot``, as Rancher named them; ``-rN`` after it for the Nth upgrade's (its old
        container may still be there, on the same host)."""
        service = self.services[instance.service]
        name = f"{self.stacks[service.stack].name}-{service.name}-{instance.slot}"
        return f"{name}-r{instance.revision}" if instance.revision else name

    def current_upgrade(self, service_id: str) -> Upgrade | None:
        """A service's last upgrade (finished or not), None when it never had one."""
        history = self.upgrades.get(service_id)
        return history[-1] if history else None

    def spec_of(self, instance: Instance) -> specs.ServiceSpec:
        """The spec an instance's container is made from: its service's, or during (and after) an
        upgrade the version it was made with (``Instance.spec_version``)."""
        service = self.services[instance.service]
        version = instance.spec_version
        if version and version != service.version:
            up = self.current_upgrade(service.id)
            found = up.spec_of(version) if up is not None else None
            if found is not None:
                return found
        return service.spec

    # the upgrades' part writes through these
    def put_instance(self, inst: Instance, index: int) -> None:
        self._put_instance(inst, index)

    def drop_instance(self, inst: Instance, index: int) -> None:
        self._drop_instance(inst, index)

    def put_service(self, service: Service, index: int) -> None:
        self._put_service(service, index)

    def stack(self, stack_id: str) -> Stack:
        if stack_id not in self.stacks:
            raise not_found("stack", stack_id)
        return self.stacks[stack_id]

    def service(self, service_id: str) -> Service:
        if service_id not in self.services:
            raise not_found("service", service_id)
        return self.services[service_id]

    # -------------------------------------------------------------- writing: the only mutators

    def _change(self, index: int, topic: Topic, key: str, removed: bool = False) -> None:
        self._changes.append(Change(index, topic, key, removed))

    def _event(self, index: int, kind: EventKind, message: str, **refs: str) -> None:
        actor = self._actor
        source = None
        if actor is not None and (actor.source or actor.node):
            source = " via ".join(x for x in (actor.source, actor.node) if x)
        environment = self._environment
        if environment is None and "service" in refs:  # a placement, a failure: the agents' commands name none
            environment = self.environment_of_service(refs["service"])
        self.events.append(Event(index, kind, message, refs, environment, actor.user if actor else None,
                                 actor.key if actor else None, source))
        del self.events[:-MAX_EVENTS]
        self._events_made += 1
        self._change(index, Topic.EVENT, str(index))

    # the access part records through these (agent.model.access.Sink)
    def event(self, index: int, kind: EventKind, message: str, **refs: str) -> None:
        self._event(index, kind, message, **refs)

    def change(self, index: int, topic: Topic, key: str, removed: bool = False) -> None:
        self._change(index, topic, key, removed)

    def _index(self, inst: Instance) -> None:
        self.instances[inst.id] = inst
        self._by_service.setdefault(inst.service, set()).add(inst.id)
        self._by_host.setdefault(inst.host, set()).add(inst.id)

    def _put_instance(self, inst: Instance, index: int) -> None:
        self._index(inst)
        self._changes.append(Change(index, Topic.INSTANCE, inst.id, host=inst.host, service=inst.service))

    def _drop_instance(self, inst: Instance, index: int) -> None:
        del self.instances[inst.id]
        self._by_service[inst.service].discard(inst.id)
        if not self._by_service[inst.service]:
            del self._by_service[inst.service]
        self._by_host[inst.host].discard(inst.id)
        if not self._by_host[inst.host]:
            del self._by_host[inst.host]
        self._changes.append(Change(index, Topic.INSTANCE, inst.id, removed=True, host=inst.host,
                                    service=inst.service))

    def _put_service(self, service: Service, index: int) -> None:
        self.services[service.id] = service
        self._change(index, Topic.SERVICE, service.id)

    def _put_host(self, host: Host, index: int) -> None:
        self.hosts[host.name] = host
        self._change(index, Topic.HOST, host.name)

    # -------------------------------------------------------------- environments and hosts

    def _env_create(self, cmd: EnvCreate, index: int) -> Outcome:
        name = specs.name(cmd.name)
        if name in self.environments:
            raise conflict(f"environment {name!r} exists", "name")
        self.environments[name] = Environment(name, index)
        self._change(index, Topic.ENVIRONMENT, name)
        return Outcome(index, id=name)

    def _host_register(self, cmd: HostRegister, index: int) -> Outcome:
        if not cmd.name or not cmd.address:
            raise bad_request("name and address are required", "name" if not cmd.name else "address")
        if cmd.overlay_key is not None and not (len(cmd.overlay_key) == 64 and set(cmd.overlay_key) <= HEX):
            raise bad_request("overlay_key must be 32 bytes in lowercase hex", "overlay_key")
        old = self.hosts.get(cmd.name)
        try:
            leases, subnet = self.subnets.lease(cmd.name)
        except PoolExhausted as exc:
            raise conflict(str(exc), "subnet") from None
        self.subnets = leases
        self._put_host(Host(
            name=cmd.name, address=cmd.address, labels=dict(cmd.labels), cpus=float(cmd.cpus), memory=cmd.memory,
            state=old.state if old else HostState.ACTIVE, registered=old.registered if old else index, updated=index,
            subnet=str(subnet), overlay_key=cmd.overlay_key if cmd.overlay_key is not None
            else (old.overlay_key if old else None),
            environment=self.host_environments.get(cmd.name, old.environment if old else "default"),
            manager=cmd.manager,
        ), index)
        if old is None:
            self._event(index, EventKind.HOST_REGISTERED, f"host {cmd.name} ({cmd.address}) joined", host=cmd.name)
        return Outcome(index, id=cmd.name)

    def _assign(self, host: str, environment: str, index: int) -> None:
        """The environment ``host`` belongs to (kept for a host not registered yet: a join comes first)."""
        self.host_environments[host] = environment
        old = self.hosts.get(host)
        if old is not None and old.environment != environment:
            self._put_host(dataclasses.replace(old, environment=environment, updated=index), index)

    def _host_move(self, cmd: HostMove, index: int) -> Outcome:
        host = self.hosts.get(cmd.name)
        if host is None:
            raise not_found("host", cmd.name, "name")
        if cmd.environment not in self.environments:
            raise not_found("environment", cmd.environment, "environment")
        if host.environment == cmd.environment:
            return Outcome(index, id=host.name)
        self._assign(host.name, cmd.environment, index)
        self._event(index, EventKind.HOST_MOVED, f"host {host.name} moves from {host.environment} to "
                    f"{cmd.environment}: its containers of {host.environment} go elsewhere first", host=host.name)
        return Outcome(index, id=host.name)

    def foreign_on(self, host: str) -> int:
        """Instances on ``host`` of services of another environment than the host's (a move not done yet)."""
        record = self.hosts.get(host)
        if record is None:
            return 0
        return sum(1 for i in self.instances_on(host) if self.environment_of_service(i.service) != record.environment)

    def _host_state(self, cmd: HostSetState, index: int) -> Outcome:
        host = self.hosts.get(cmd.name)
        if host is None:
            raise not_found("host", cmd.name, "name")
        if host.state != cmd.state:
            self._event(index, EventKind.HOST_STATE, f"host {host.name} is {cmd.state} (was {host.state})",
                        host=host.name)
            self._put_host(dataclasses.replace(host, state=cmd.state, updated=index), index)
        return Outcome(index)

    def _host_remove(self, cmd: HostRemove, index: int) -> Outcome:
        host = self.hosts.get(cmd.name)
        if host is None:
            raise not_found("host", cmd.name, "name")
        if host.state != HostState.DISCONNECTED:
            raise conflict(f"host {host.name} is {host.state}; only a disconnected host can be removed", "name")
        del self.hosts[host.name]
        self._change(index, Topic.HOST, host.name, removed=True)
        self.subnets = self.subnets.release(host.name)
        gone = self.instances_on(host.name)
        for inst in gone:  # the leader places their slots again
            self._drop_instance(inst, index)
        self._event(index, EventKind.HOST_REMOVED, f"host {host.name} removed ({len(gone)} containers to place "
                    "again); its subnet is free", host=host.name)
        return Outcome(index, removed=tuple(i.id for i in gone))

    # -------------------------------------------------------------- stacks and services

    def _stack_create(self, cmd: StackCreate, index: int) -> Outcome:
        if cmd.environment not in self.environments:
            raise not_found("environment", cmd.environment)
        name = specs.name(cmd.name)
        if any(s.name == name and s.environment == cmd.environment for s in self.stacks.values()):
            raise conflict(f"stack {name!r} exists in environment {cmd.environment!r}", "name")
        stack = Stack(f"st{index}", cmd.environment, name, index)
        self.stacks[stack.id] = stack
        self._change(index, Topic.STACK, stack.id)
        self._event(index, EventKind.STACK_CREATED, f"stack {name} created", stack=stack.id)
        return Outcome(index, id=stack.id)

    def _stack_remove(self, cmd: StackRemove, index: int) -> Outcome:
        stack = self.stack(cmd.id)
        removed: list[str] = []
        for service in self.services_of(stack.id):
            removed += self._service_remove(service.id, index).removed
        for key, config in sorted(self.storage.configs.items()):
            if config.environment == stack.environment and config.stack == stack.name:
                self.storage.config_remove(key, index, [], self)
        kept = []
        for volume in sorted(self.storage.volumes.values(), key=lambda v: v.name):
            if volume.environment == stack.environment and volume.stack == stack.name:
                if cmd.volumes:
                    self.storage.mark_removing(volume, index, self)
                else:
                    kept.append(volume.name)
        del self.stacks[stack.id]
        self._change(index, Topic.STACK, stack.id, removed=True)
        note = f"; its volumes are kept ({', '.join(kept)}): `stack rm --volumes` removes them" if kept else ""
        self._event(index, EventKind.STACK_REMOVED, f"stack {stack.name} removed{note}", stack=stack.id)
        return Outcome(index, removed=tuple(removed))

    def _service_create(self, cmd: ServiceCreate, index: int) -> Outcome:
        stack = self.stack(cmd.stack)
        name = specs.name(cmd.name)
        if any(s.name == name and s.stack == stack.id for s in self.services.values()):
            raise conflict(f"service {name!r} exists in stack {stack.name!r}", "name")
        spec = specs.parse(cmd.spec)
        self.storage.check_spec(stack.environment, stack.name, spec)
        self.check_ports_and_targets(stack.environment, stack.name, name, spec)
        return self._make_service(stack, name, spec, index, f"sv{index}")

    def _peers(self, environment: str, exclude: Iterable[tuple[str, str]] = ()) -> list[lb_rules.Peer]:
        skip = set(exclude)
        out = []
        for service in self.services.values():
            stack = self.stacks.get(service.stack)
            if stack is None or stack.environment != environment or (stack.name, service.name) in skip:
                continue
            out.append(_peer(stack.name, service.name, service.spec))
        return out

    def check_ports_and_targets(self, environment: str, stack: str, name: str, spec: specs.ServiceSpec,
                                pending: Iterable[tuple[str, specs.ServiceSpec]] = (), field: str = "") -> None:
        """A load balancer's targets exist (in the state or in ``pending``, the same deploy's services)
        and its listen ports are bound by no other service of the environment; a service that publishes
        ports does not take one a load balancer listens on. SpecError naming the field otherwise."""
        pending = [(n, s) for n, s in pending if n != name]
        others = self._peers(environment, [(stack, name), *((stack, n) for n, _ in pending)])
        others += [_peer(stack, n, s) for n, s in pending]
        prefix = f"{field}." if field else ""
        if spec.lb is not None:
            lb_rules.check_against(spec.lb, stack, others, f"{prefix}lb")
        elif spec.ports:
            for i, port in enumerate(spec.ports):
                for p in others:
                    if p.kind is lb_rules.ServiceKind.LOAD_BALANCER and port.published in p.host_ports \
                            and port.protocol == specs.Protocol.TCP:
                        raise SpecError(f"{prefix}ports[{i}]", f"port {port.published} is bound already by "
                                                               f"load balancer {p.stack}/{p.name}")

    def _make_service(self, stack: Stack, name: str, spec: specs.ServiceSpec, index: int, id: str) -> Outcome:
        service = Service(id, stack.id, name, spec, ServiceState.ACTIVE, version=index, created=index, updated=index)
        self._put_service(service, index)
        self._event(index, EventKind.SERVICE_CREATED, f"service {stack.name}/{name} created, scale {spec.scale}",
                    service=service.id)
        return Outcome(index, id=service.id)

    def check_deploy(self, cmd: StackDeploy) -> DeployPlan:
        """What a stack deploy would do, every part checked first (CommandError naming the service, mount
        or config otherwise): the API's ``dry_run`` answers with it, :meth:`_stack_deploy` applies it."""
        if cmd.environment not in self.environments:
            raise not_found("environment", cmd.environment, "environment")
        name = specs.name(cmd.name)
        if not cmd.services:
            raise bad_request("a stack deploy names at least one service", "services")
        stack = next((s for s in self.stacks.values() if s.name == name and s.environment == cmd.environment), None)
        plan = DeployPlan(stack=name, stack_id=stack.id if stack else None)
        sizes = {k: c.size for k, c in self.storage.configs.items()}
        for config in cmd.configs:
            check_files(config, f"configs.{config.name}")
            key = f"{cmd.environment}/{name}_{config.name}"
            old = self.storage.configs.get(key)
            if old is not None and (old.stack != name or old.secret != config.secret):
                raise conflict(f"configs.{config.name}: {old.name} exists already as "
                               f"{'a secret' if old.secret else 'a config'}", f"configs.{config.name}")
            digest = config_digest(sorted(config.files))
            (plan.configs_unchanged if old is not None and old.digest == digest
             else plan.configs_changed if old is not None else plan.configs_created).append(config.name)
            sizes[key] = sum(len(d) for _, d in config.files)
        if sum(sizes.values()) > MAX_CONFIGS_TOTAL:
            raise bad_request(f"configs would hold {sum(sizes.values())} bytes in all; at most "
                              f"{MAX_CONFIGS_TOTAL // 2**20} MiB", "configs")
        pending = {f"{name}_{c.name}": c.secret for c in cmd.configs}
        existing = {s.name: s for s in self.services_of(stack.id)} if stack else {}
        for svc_name, raw in sorted(cmd.services.items()):
            field = f"services.{svc_name}"
            specs.name(svc_name, field)
            try:
                spec = specs.parse(raw)
                self.storage.check_spec(cmd.environment, name, spec, pending)
            except CommandError as exc:
                raise CommandError(exc.code, f"{field}: {exc.message}", f"{field}.{exc.field or ''}".rstrip(".")) \
                    from None
            plan.specs[svc_name] = spec
            old_service = existing.get(svc_name)
            (plan.created if old_service is None else plan.unchanged if old_service.spec == spec
             else plan.changed).append(svc_name)
            for m in spec.mounts:
                if m.type == MountType.VOLUME:
                    vname = volume_key(name, m, 1)
                    if self.storage.volume(cmd.environment, vname) is None and vname not in plan.volumes_new:
                        plan.volumes_new.append(vname)
        if cmd.prune:
            plan.removed = sorted(set(existing) - set(cmd.services))
        names = (set(existing) - set(plan.removed)) | set(plan.specs)
        kept = [(n, s.spec) for n, s in existing.items() if n not in plan.removed and n not in plan.specs]
        for svc_name, spec in sorted(plan.specs.items()):
            self.check_ports_and_targets(cmd.environment, name, svc_name, spec,
                                         [*plan.specs.items(), *kept], f"services.{svc_name}")
        for svc_name, spec in sorted(plan.specs.items()):
            for dep in sorted(spec.depends_on):
                if dep not in names:
                    raise bad_request(f"services.{svc_name}.depends_on: {dep} is not a service of stack {name}",
                                      f"services.{svc_name}.depends_on")
        return plan

    def _stack_deploy(self, cmd: StackDeploy, index: int) -> Outcome:
        plan = self.check_deploy(cmd)
        if plan.stack_id is None:
            stack_id = self._stack_create(StackCreate(plan.stack, cmd.environment), index).id
            assert stack_id is not None
        else:
            stack_id = plan.stack_id
        stack = self.stacks[stack_id]
        for config in cmd.configs:
            self.storage.config_set(ConfigSet(cmd.environment, stack.name, config), index, self.environments, self)
        existing = {s.name: s for s in self.services_of(stack.id)}
        for svc_name in plan.removed:
            self._service_remove(existing[svc_name].id, index)
        for svc_name, spec in sorted(plan.specs.items()):
            old = existing.get(svc_name)
            if old is None:
                self._make_service(stack, svc_name, spec, index, f"sv{index}-{svc_name}")
            elif old.spec != spec:
                if upgrades.needs_upgrade(self, old, spec):
                    # what shapes its containers changed: replaced batch by batch, with the file's update_config
                    upgrades.begin_change(self, old, spec, index, cmd.at or (self._actor.at if self._actor else 0.0),
                                          self._actor.user if self._actor else None, "a stack deploy")
                    continue
                for inst in self.instances_of(old.id):
                    if spec.mode == specs.ServiceMode.REPLICATED and inst.slot > spec.scale:
                        self._drop_instance(inst, index)
                self._put_service(dataclasses.replace(old, spec=spec, version=index, updated=index), index)
                self._to_current_spec(old.id, index)
                self._event(index, EventKind.SERVICE_UPDATED, f"service {stack.name}/{svc_name} updated",
                            service=old.id)
        self._event(index, EventKind.STACK_DEPLOYED, f"stack {stack.name} deployed: {plan.summary()}", stack=stack.id)
        return Outcome(index, id=stack.id)

    def volume_users(self, environment: str, name: str) -> list[str]:
        """The services (``stack/service``) that mount volume ``name`` (any of their slots)."""
        users = []
        for service in self.services.values():
            stack = self.stacks.get(service.stack)
            if stack is None or stack.environment != environment:
                continue
            slots = {i.slot for i in self.instances_of(service.id)} | set(range(1, service.spec.scale + 1))
            if any(m.type == MountType.VOLUME and any(volume_key(stack.name, m, slot) == name for slot in slots)
                   for m in service.spec.mounts):
                users.append(f"{stack.name}/{service.name}")
        return users

    def config_users(self, key: str) -> list[str]:
        """The services (``stack/service``) that mount the config (or secret) ``ENVIRONMENT/NAME``."""
        users = []
        for service in self.services.values():
            stack = self.stacks.get(service.stack)
            if stack is None:
                continue
            for m in service.spec.mounts:
                if m.type in (MountType.CONFIG, MountType.SECRET) and m.source is not None:
                    config = self.storage.config_for(stack.environment, stack.name, m.source)
                    if config is not None and config.key == key:
                        users.append(f"{stack.name}/{service.name}")
                        break
        return users

    def _service_update(self, cmd: ServiceUpdate, index: int) -> Outcome:
        service = self.service(cmd.id)
        spec = service.spec.changed(cmd.spec)
        stack = self.stacks[service.stack]
        self.storage.check_spec(stack.environment, stack.name, spec)
        self.check_ports_and_targets(stack.environment, stack.name, service.name, spec)
        if cmd.rolling and upgrades.needs_upgrade(self, service, spec):
            # what shapes its containers changed: an upgrade with its update_config (one under way is taken over)
            up = upgrades.begin_change(self, service, spec, index, cmd.at or (self._actor.at if self._actor else 0.0),
                                       self._actor.user if self._actor else None, "a change of its spec")
            return Outcome(index, id=up.id)
        self.check_no_upgrade(service)
        self._put_service(dataclasses.replace(service, spec=spec, version=index, updated=index), index)
        self._to_current_spec(service.id, index)
        self._event(index, EventKind.SERVICE_UPDATED, f"service {service.name} updated", service=service.id)
        return Outcome(index)

    def check_no_upgrade(self, service: Service, field: str = "id") -> None:
        """A change of the whole spec at once is refused while an upgrade of the service is under way."""
        up = self.current_upgrade(service.id)
        if up is not None and up.state not in FINISHED:
            raise conflict(f"service {service.name} is being upgraded ({up.id}, {up.state}): start a new upgrade, "
                           "or roll this one back", field)

    def _to_current_spec(self, service_id: str, index: int) -> None:
        """Every instance of the service runs its spec as it now is (a change made all at once)."""
        for inst in self.instances_of(service_id):
            if inst.spec_version:
                self._put_instance(dataclasses.replace(inst, spec_version=0), index)

    def _service_scale(self, cmd: ServiceScale, index: int) -> Outcome:
        service = self.service(cmd.id)
        spec = service.spec.changed({"scale": cmd.scale})
        removed = [i for i in self.instances_of(service.id) if i.slot > spec.scale]
        for inst in removed:
            self._drop_instance(inst, index)
        self._put_service(dataclasses.replace(service, spec=spec, updated=index), index)
        self._event(index, EventKind.SERVICE_SCALED, f"service {service.name} scaled to {spec.scale}",
                    service=service.id)
        return Outcome(index, removed=tuple(i.id for i in removed))

    def _service_set_state(self, cmd: ServiceSetState, index: int) -> Outcome:
        service = self.service(cmd.id)
        self._put_service(dataclasses.replace(service, state=cmd.state, updated=index), index)
        desired = Desired.RUNNING if cmd.state == ServiceState.ACTIVE else Desired.STOPPED
        for inst in self.instances_of(service.id):
            # a new generation makes the host recreate the container
            self._put_instance(dataclasses.replace(inst, desired=desired,
                                                   generation=index if cmd.restart else inst.generation), index)
        kind = EventKind.SERVICE_ACTIVE if cmd.state == ServiceState.ACTIVE else EventKind.SERVICE_STOPPED
        self._event(index, kind, f"service {service.name} {cmd.state}", service=service.id)
        return Outcome(index)

    def _service_remove(self, service_id: str, index: int) -> Outcome:
        service = self.service(service_id)
        gone = self.instances_of(service.id)
        for inst in gone:
            self._drop_instance(inst, index)
        del self.services[service.id]
        self._change(index, Topic.SERVICE, service.id, removed=True)
        if self.upgrades.pop(service.id, None) is not None:
            self._change(index, Topic.UPGRADE, service.id, removed=True)
        self._event(index, EventKind.SERVICE_REMOVED, f"service {service.name} removed", service=service.id)
        return Outcome(index, removed=tuple(i.id for i in gone))

    # -------------------------------------------------------------- instances

    def _placements_commit(self, cmd: PlacementsCommit, index: int) -> Outcome:
        """The leader's decision for one service: re-checked here, since the state may have moved on."""
        service = self.service(cmd.service)
        taken = {i.slot: i for i in self.instances_of(service.id)}
        slots: dict[int, list[Instance]] = {}
        for i in self.instances_of(service.id):  # two during a start-first upgrade of the slot
            slots.setdefault(i.slot, []).append(i)
        stack = self.stacks[service.stack]
        top = specs.MAX_SCALE if service.spec.mode == specs.ServiceMode.GLOBAL else service.spec.scale
        recreate = service.spec.on_host_loss == specs.HostLoss.RECREATE_EMPTY
        placed = []
        for slot, host in cmd.placements:
            if not 1 <= slot <= top or host not in self.hosts:
                continue
            old = taken.get(slot)
            if old is not None and old.host == host:
                continue
            volumes = [(m, volume_key(stack.name, m, slot)) for m in service.spec.mounts if m.type == MountType.VOLUME]
            if not all(self.storage.may_pin(stack.environment, name, host, recreate) for _, name in volumes):
                continue  # its volume lives elsewhere now: the leader decided on an older state
            for mount, name in volumes:
                self.storage.pin(stack.environment, stack.name, mount, name, host, index, self, recreate)
            for replaced in slots.pop(slot, []):
                self._drop_instance(replaced, index)
            inst = Instance(
                id=f"c{index}-{slot}", service=service.id, slot=slot, host=host,
                desired=Desired.RUNNING if service.state == ServiceState.ACTIVE else Desired.STOPPED,
                status=Status.PENDING, exit_code=None, error=None, health=None, health_detail=None,
                generation=index, created=index, updated=index,
            )
            taken[slot], slots[slot] = inst, [inst]
            self._put_instance(inst, index)
            placed.append(inst.id)
            self._event(index, EventKind.INSTANCE_PLACED, f"{service.name}-{slot} placed on {host}",
                        service=service.id, instance=inst.id, host=host)
        environment = self.environment_of_service(service.id)
        for slot in cmd.evict:
            old = taken.get(slot)
            record = self.hosts.get(old.host) if old is not None else None
            gone = service.spec.mode == specs.ServiceMode.GLOBAL and old is not None and (
                record is None or not self._fits_global(service, record))
            if old is not None and (gone or (record is not None and record.environment != environment)):
                self._drop_instance(old, index)
                del taken[slot]
                why = (f"left {old.host}, which is gone" if record is None else
                       f"left {record.name}, which is in {record.environment} now" if record.environment != environment
                       else f"left {record.name}, which its placement no longer allows")
                self._event(index, EventKind.INSTANCE_REMOVED, f"{service.name}-{slot} {why}", service=service.id,
                            instance=old.id, host=old.host)
        unplaced = cmd.unplaced or None
        if unplaced != service.unplaced:
            self._put_service(dataclasses.replace(service, unplaced=unplaced), index)
            if unplaced:
                self._event(index, EventKind.SERVICE_UNPLACED, f"service {service.name}: {unplaced[0][1]}",
                            service=service.id)
        return Outcome(index, placed=tuple(placed))

    def _fits_global(self, service: Service, host: Host) -> bool:
        """Whether a global service's instance may stay on ``host`` (its environment, its constraints)."""
        facts = HostFacts(host.name, True, host.labels, host.cpus, host.memory, host.state.value, host.manager)
        return host.environment == self.environment_of_service(service.id) and all(
            Constraint.parse(c).holds(facts) for c in service.spec.placement.must)

    def _instance_status(self, cmd: InstanceStatus, index: int) -> Outcome:
        inst = self.instances.get(cmd.id)
        if inst is None:
            return Outcome(index, stale=True)  # removed meanwhile: a late report is not an error
        if cmd.host != inst.host:
            raise conflict(f"instance {inst.id} is assigned to {inst.host}", "host")
        error = cmd.error[:MAX_ERROR] if cmd.error else None
        health = cmd.health
        detail = cmd.health_detail[:MAX_ERROR] if cmd.health_detail and health != Health.HEALTHY else None
        if error is not None and error != inst.error:
            self._event(index, EventKind.INSTANCE_FAILED, f"container {inst.id} on {inst.host}: {error}",
                        instance=inst.id)
        if health == Health.UNHEALTHY and inst.health != Health.UNHEALTHY:
            self._event(index, EventKind.INSTANCE_UNHEALTHY, f"container {inst.id} on {inst.host} is unhealthy"
                        + (f": {detail}" if detail else ""), instance=inst.id)
        self._put_instance(dataclasses.replace(
            inst, status=cmd.status, exit_code=cmd.exit_code, container_id=cmd.container_id, ip=cmd.ip,
            ports=cmd.ports, error=error, health=health, health_detail=detail, updated=index), index)
        return Outcome(index)

    def _instance_remove(self, cmd: InstanceRemove, index: int) -> Outcome:
        inst = self.instances.get(cmd.id)
        if inst is None:
            raise not_found("container", cmd.id, "id")
        self._drop_instance(inst, index)
        self._event(index, EventKind.INSTANCE_REMOVED, f"container {inst.id} removed", instance=inst.id)
        return Outcome(index, removed=(inst.id,))

    def _container_exec(self, cmd: ContainerExec, index: int, actor: Actor | None) -> Outcome:
        """Only the event: who ran what in which container (the exec itself runs on the container's host)."""
        if actor is None:
            raise bad_request("an exec is a user's: it names who ran it", "by")
        problem = exec_command_problem(cmd.cmd)
        if problem is not None:
            raise bad_request(problem, "cmd")
        inst = self.instances.get(cmd.id)
        if inst is None or inst.service not in self.services:
            raise not_found("container", cmd.id, "id")
        name, command = self.container_name(inst), shlex.join(cmd.cmd)
        mode = " with a TTY" if cmd.tty else ""
        self._event(index, EventKind.CONTAINER_EXEC, f"{actor.user} ran {command} in container {name}{mode}",
                    instance=inst.id, host=inst.host, command=command, tty="1" if cmd.tty else "0",
                    interactive="1" if cmd.interactive else "0")
        return Outcome(index, id=inst.id)

    # -------------------------------------------------------------- the gossip/Raft keyring

    def _keys_set(self, cmd: KeysSet, index: int) -> Outcome:
        """The whole keyring after an install, use or remove (computed and checked by the API on the leader)."""
        keys = cmd.keys
        if not 1 <= len(keys) <= MAX_KEYS or not all(len(k) == 64 and set(k) <= HEX for k in keys):
            raise bad_request(f"keys must be 1-{MAX_KEYS} keys of 32 bytes in lowercase hex", "keys")
        if len(set(keys)) != len(keys):
            raise bad_request("a key is listed twice", "keys")
        if cmd.primary not in keys:
            raise bad_request("the primary key must be one of the keys", "primary")
        self.keyring = Keyring(keys, cmd.primary, index)
        self._change(index, Topic.KEYRING, "")
        primary_id = hashlib.sha256(bytes.fromhex(cmd.primary)).hexdigest()[:8]
        self._event(index, EventKind.KEYS_CHANGED, f"keyring: {len(keys)} key(s), primary key id {primary_id}")
        return Outcome(index)

    # -------------------------------------------------------------- kv

    def _check_cas(self, key: str, cas: int | None) -> KvEntry | None:
        old = self.kv.get(key)
        if cas is not None and (old.modify_index if old else 0) != cas:
            raise CommandError(ErrorCode.CAS_FAILED, f"{key} is at index {old.modify_index if old else 0}, "
                               f"not {cas}", "cas")
        return old

    def _kv_put(self, cmd: KvPut, index: int) -> Outcome:
        old = self._check_cas(cmd.key, cmd.cas)
        self.kv[cmd.key] = KvEntry(cmd.value, old.create_index if old else index, index)
        self._change(index, Topic.KV, cmd.key)
        return Outcome(index)

    def _kv_delete(self, cmd: KvDelete, index: int) -> Outcome:
        old = self._check_cas(cmd.key, cmd.cas)
        if old is None:
            return Outcome(index, deleted=False)
        del self.kv[cmd.key]
        self._change(index, Topic.KV, cmd.key, removed=True)
        return Outcome(index, deleted=True)


# ------------------------------------------------------------------ format 1 snapshots

def _upgrade_v1(raw: dict[object, object]) -> dict[str, object]:
    """A format 1 snapshot (maps of plain maps, as agents wrote before the typed model) in format 2.

    Field names are the same; format 1 kept an instance ``address`` that nothing ever set (dropped),
    and instances not yet reported had no ``container_id``, ``ip`` or ``ports`` (their defaults).
    """
    def rows(key: str) -> list[object]:
        value = raw.get(key) or {}
        return list(value.values()) if isinstance(value, dict) else []

    instances = []
    for inst in rows("instances"):
        if isinstance(inst, dict):
            inst = {k: v for k, v in inst.items() if k != "address"}
        instances.append(inst)
    keyring = raw.get("keyring") or None
    return {
        "format": SNAPSHOT_FORMAT, "applied_index": raw.get("applied_index", 0),
        "environments": rows("environments"), "hosts": rows("hosts"), "stacks": rows("stacks"),
        "services": rows("services"), "instances": instances, "kv": raw.get("kv") or {},
        "events": list(_iter(raw.get("events"))), "subnets": raw.get("subnets"), "keyring": keyring,
    }


def _iter(value: object) -> Iterable[object]:
    return value if isinstance(value, list) else ()


def _rows(body: dict[str, object], key: str) -> list[object]:
    value = body.get(key)
    if not isinstance(value, list):
        raise WireError(key, "must be a list")
    return value


__all__ = ["KV_ENVIRONMENT", "MAX_ERROR", "MAX_EVENTS", "SNAPSHOT_FORMAT", "ClusterState", "Entry"]


def _peer(stack: str, name: str, spec: specs.ServiceSpec) -> lb_rules.Peer:
    ports = spec.lb.ports() if spec.lb is not None else tuple(
        p.published for p in spec.ports if p.published is not None and p.protocol == specs.Protocol.TCP)
    return lb_rules.Peer(stack, name, spec.kind, ports)
