"""Every change to the desired state is one of these commands, proposed to Raft and applied in log order.

One frozen dataclass per operation; :data:`OP_OF` / :data:`CLASS_OF` map it to the operation name it
carries on the wire, and :func:`encode` / :func:`decode` are the codec: a msgpack map
``{"op": NAME, FIELD: VALUE, …}``, the form the agent has always written into its Raft log, so a log
written by an earlier version is read unchanged. :func:`decode` never raises anything but
:class:`~agent.model.errors.CommandError`: a malformed entry is refused with the reason.

The state machine answers every command with an :class:`Outcome` or a ``CommandError``; both travel
back to a node that proposed through the leader (:func:`encode_result` / :func:`decode_result`).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

import msgpack

from agent.model.codec import WireError, from_wire, to_wire
from agent.model.entities import Health, HostState, ServiceState, Status
from agent.model.errors import CommandError, ErrorCode, bad_request
from agent.model.policy import Role
from agent.model.strategy import Order
from agent.model.upgrade import Control, UpgradeState


class Op(enum.StrEnum):
    """Append only: the values are written into every Raft log."""

    ENV_CREATE = "env.create"
    HOST_REGISTER = "host.register"
    HOST_STATE = "host.state"
    HOST_REMOVE = "host.remove"
    STACK_CREATE = "stack.create"
    STACK_REMOVE = "stack.remove"
    SERVICE_CREATE = "service.create"
    SERVICE_UPDATE = "service.update"
    SERVICE_SCALE = "service.scale"
    SERVICE_SET_STATE = "service.set_state"
    SERVICE_REMOVE = "service.remove"
    PLACEMENTS_COMMIT = "placements.commit"
    INSTANCE_STATUS = "instance.status"
    INSTANCE_REMOVE = "instance.remove"
    KEYS_SET = "keys.set"
    KV_PUT = "kv.put"
    KV_DELETE = "kv.delete"
    ADMIN_BOOTSTRAP = "admin.bootstrap"
    USER_CREATE = "user.create"
    USER_UPDATE = "user.update"
    USER_REMOVE = "user.remove"
    KEY_CREATE = "key.create"
    KEY_REVOKE = "key.revoke"
    TEAM_SET = "team.set"
    TEAM_REMOVE = "team.remove"
    ROLE_SET = "role.set"
    CA_SET = "ca.set"
    JOIN_TOKEN_CREATE = "join_token.create"
    JOIN_TOKEN_REVOKE = "join_token.revoke"
    JOIN_TOKEN_USE = "join_token.use"
    HOST_MOVE = "host.move"
    CA_ROTATE = "ca.rotate"
    CA_RETIRE = "ca.retire"
    REGISTRY_SET = "registry.set"
    REGISTRY_REMOVE = "registry.remove"
    IMAGE_ADD = "image.add"
    IMAGE_HELD = "image.held"
    IMAGE_REMOVE = "image.remove"
    VOLUME_CREATE = "volume.create"
    VOLUME_REMOVE = "volume.remove"
    VOLUME_GONE = "volume.gone"
    CONFIG_SET = "config.set"
    CONFIG_REMOVE = "config.remove"
    BIND_PATHS_SET = "bind_paths.set"
    STACK_DEPLOY = "stack.deploy"
    CONTAINER_EXEC = "container.exec"
    UPGRADE_START = "upgrade.start"
    UPGRADE_CONTROL = "upgrade.control"
    UPGRADE_ADVANCE = "upgrade.advance"


@dataclasses.dataclass(frozen=True)
class EnvCreate:
    name: str


@dataclasses.dataclass(frozen=True)
class HostRegister:
    """The leader registers a gossip member (or updates what it advertises)."""

    name: str
    address: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    cpus: float = 0.0
    memory: int = 0
    overlay_key: str | None = None
    manager: bool = False


@dataclasses.dataclass(frozen=True)
class HostSetState:
    name: str
    state: HostState


@dataclasses.dataclass(frozen=True)
class HostRemove:
    """An operator forgets a disconnected host: its subnet is freed, its slots are placed again."""

    name: str


@dataclasses.dataclass(frozen=True)
class StackCreate:
    name: str
    environment: str = "default"


@dataclasses.dataclass(frozen=True)
class StackRemove:
    id: str
    volumes: bool = False
    """Also remove the stack's volumes (``stack rm --volumes``); kept otherwise, for the next deploy."""


@dataclasses.dataclass(frozen=True)
class ServiceCreate:
    stack: str
    name: str
    spec: Mapping[str, object]
    """The request form (``agent.model.spec.parse`` validates it when applied)."""


@dataclasses.dataclass(frozen=True)
class ServiceUpdate:
    id: str
    spec: Mapping[str, object]
    """The fields to change, in request form."""
    rolling: bool = False
    """A change of what shapes the containers becomes an upgrade with the service's ``update_config``
    (``PATCH /v1/services/{id}``); False replaces them all at once (``?now=1``, and every entry written
    before upgrades existed)."""
    at: float = 0.0
    """The proposer's clock: when the upgrade it starts began."""


@dataclasses.dataclass(frozen=True)
class ServiceScale:
    id: str
    scale: int


@dataclasses.dataclass(frozen=True)
class ServiceSetState:
    id: str
    state: ServiceState
    restart: bool = False
    """Also give every instance a new generation, so its host replaces the container."""


@dataclasses.dataclass(frozen=True)
class ServiceRemove:
    id: str


@dataclasses.dataclass(frozen=True)
class PlacementsCommit:
    """The leader's scheduler decision for one service; re-checked when applied."""

    service: str
    placements: tuple[tuple[int, str], ...] = ()
    """(slot, host) pairs."""
    unplaced: tuple[tuple[int, str], ...] | None = None
    """(slot, reason) pairs for the slots no host fits; None when every slot is placed."""
    evict: tuple[int, ...] = ()
    """Slots whose instance is on a host that left the service's environment and that no host of the
    environment could take: the instance goes anyway (the host is drained)."""


@dataclasses.dataclass(frozen=True)
class InstanceStatus:
    """A host reports what its engine shows of an instance's container."""

    id: str
    host: str
    status: Status
    exit_code: int | None = None
    container_id: str | None = None
    ip: str | None = None
    ports: tuple[str, ...] = ()
    error: str | None = None
    health: Health | None = None
    health_detail: str | None = None


@dataclasses.dataclass(frozen=True)
class InstanceRemove:
    id: str


@dataclasses.dataclass(frozen=True)
class ContainerExec:
    """A user runs ``cmd`` in a container (``corral exec``): nothing of the desired state changes, but
    the command is authorized by the state machine like any change and recorded in the events (the
    audit trail) before the container's host starts it."""

    id: str
    cmd: tuple[str, ...]
    tty: bool = False
    interactive: bool = False


EXEC_MAX_ARGS = 16
EXEC_MAX_ARG = 512
EXEC_MAX_TOTAL = 4096
"""An exec's command: 1 to 16 arguments of at most 512 characters, 4096 in all (it travels in the
request's URL, and every event carries it whole)."""


def exec_command_problem(cmd: tuple[str, ...]) -> str | None:
    """What is wrong with an exec's command, or None."""
    if not cmd or not cmd[0]:
        return "an exec needs a command (its first argument may not be empty)"
    if len(cmd) > EXEC_MAX_ARGS:
        return f"an exec's command has at most {EXEC_MAX_ARGS} arguments"
    if any(len(arg) > EXEC_MAX_ARG or "\x00" in arg for arg in cmd):
        return f"an exec's argument is at most {EXEC_MAX_ARG} characters, with no NUL"
    if sum(map(len, cmd)) > EXEC_MAX_TOTAL:
        return f"an exec's command is at most {EXEC_MAX_TOTAL} characters in all"
    return None


@dataclasses.dataclass(frozen=True)
class KeysSet:
    """The whole gossip/Raft keyring after an install, use or remove (hex keys)."""

    keys: tuple[str, ...]
    primary: str


@dataclasses.dataclass(frozen=True)
class KvPut:
    key: str
    value: bytes | str
    cas: int | None = None
    """Write only if the key's modify index is this (0: only if it does not exist)."""


@dataclasses.dataclass(frozen=True)
class KvDelete:
    key: str
    cas: int | None = None


@dataclasses.dataclass(frozen=True)
class UserCreate:
    name: str
    password_hash: str
    """Argon2id, made by the node that took the password; the password never enters the log."""
    admin: bool = False


@dataclasses.dataclass(frozen=True)
class UserUpdate:
    name: str
    password_hash: str | None = None
    admin: bool | None = None


@dataclasses.dataclass(frozen=True)
class UserRemove:
    """Also ends the user's keys and sessions, its team memberships and its roles."""

    name: str


@dataclasses.dataclass(frozen=True)
class KeyCreate:
    id: str
    owner: str
    secret_hash: str
    """SHA-256 of the key's secret (hex); the secret itself is shown once, to its maker, and kept nowhere."""
    description: str = ""
    environment: str | None = None
    role: Role | None = None
    expires: float | None = None
    session: bool = False
    metrics: bool = False
    """A metrics key (``agent.model.access.ApiKey.metrics``)."""


@dataclasses.dataclass(frozen=True)
class KeyRevoke:
    id: str


@dataclasses.dataclass(frozen=True)
class TeamSet:
    """Create a team or replace its members."""

    name: str
    members: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class TeamRemove:
    name: str


@dataclasses.dataclass(frozen=True)
class RoleSet:
    """Give a user or a team a role in an environment (None: take it away)."""

    environment: str
    subject: str
    """``user:NAME`` or ``team:NAME``."""
    role: Role | None = None


@dataclasses.dataclass(frozen=True)
class AdminBootstrap:
    """The first administrator and its first key, made by ``corral agent --bootstrap``; applied only
    while the cluster has no user at all."""

    user: UserCreate
    key: KeyCreate
    at: float = 0.0
    """When it was made (the key's creation time)."""


@dataclasses.dataclass(frozen=True)
class CaSet:
    """The cluster's certificate authority: its certificate, and its key sealed with a key derived from
    the cluster secret (``mesh.pki``). Applied only while the cluster has none."""

    cert_pem: str
    sealed_key: bytes
    fingerprint: str


@dataclasses.dataclass(frozen=True)
class CaRotate:
    """Begin a CA rotation: a new CA signs from now on; the old one is trusted until :class:`CaRetire`."""

    cert_pem: str
    sealed_key: bytes
    fingerprint: str
    cross_pem: str
    """The new CA's certificate issued by the old one (``mesh.pki.cross_sign``)."""


@dataclasses.dataclass(frozen=True)
class CaRetire:
    """Finish a CA rotation: the old CA (this fingerprint) is trusted no more."""

    fingerprint: str


@dataclasses.dataclass(frozen=True)
class RegistrySet:
    """Credentials for a registry (``HOST[:PORT]``), passed to Docker on every pull from it. The password
    is sealed with a key derived from the cluster secret (``mesh.sealing``): the log and snapshots never
    hold it in the clear, and no route shows it back."""

    host: str
    username: str
    sealed_password: bytes


@dataclasses.dataclass(frozen=True)
class RegistryRemove:
    host: str


@dataclasses.dataclass(frozen=True)
class ImageAdd:
    """An image the cluster distributes itself (``corral image load``, a ``build:``): a ``docker save``
    tarball that ``host`` holds, identified by the image id and by the tarball's SHA-256."""

    id: str
    tags: tuple[str, ...]
    digest: str
    """SHA-256 of the tarball (hex): every holder keeps the same bytes, so a transfer resumes anywhere."""
    tar_size: int
    host: str
    source: str = "load"
    """``load`` or ``build``."""


@dataclasses.dataclass(frozen=True)
class ImageHeld:
    """``host`` holds the image's tarball now (``held``), or no longer."""

    id: str
    host: str
    held: bool = True


@dataclasses.dataclass(frozen=True)
class ImageRemove:
    id: str


@dataclasses.dataclass(frozen=True)
class VolumeCreate:
    """An external volume, made beforehand (``corral volume create``), on ``host`` or, when None, on the
    host of the first instance that mounts it."""

    name: str
    environment: str = "default"
    host: str | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class VolumeRemove:
    """Remove a volume no service mounts: its host deletes it (``volume.gone``), then it is forgotten."""

    name: str
    environment: str = "default"


@dataclasses.dataclass(frozen=True)
class VolumeGone:
    """``host`` has deleted a volume being removed (or found it gone)."""

    name: str
    environment: str
    host: str


@dataclasses.dataclass(frozen=True)
class ConfigFiles:
    """A config's or a secret's content: (relative path, bytes) pairs; one pair with the path ``""`` is
    a single file. A secret's bytes are sealed with the cluster secret (``mesh.sealing``)."""

    name: str
    files: tuple[tuple[str, bytes], ...]
    secret: bool = False


@dataclasses.dataclass(frozen=True)
class ConfigSet:
    """A config (or secret) of an environment; ``stack`` set: the stack's (named ``STACK_NAME``)."""

    environment: str
    stack: str | None
    config: ConfigFiles


@dataclasses.dataclass(frozen=True)
class ConfigRemove:
    name: str
    environment: str = "default"


@dataclasses.dataclass(frozen=True)
class BindPathsSet:
    """The host folders services may bind-mount (and everything under them): none by default."""

    paths: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class StackDeploy:
    """A whole compose file at once: the stack (made if new), its configs, its services (made, or their
    spec replaced); all checked before anything changes, so a file is deployed whole or not at all.
    ``prune``: services of the stack the file no longer names are removed."""

    name: str
    environment: str
    services: Mapping[str, Mapping[str, object]]
    configs: tuple[ConfigFiles, ...] = ()
    prune: bool = False
    at: float = 0.0
    """The proposer's clock: when the upgrades it starts (services whose containers change) began."""


@dataclasses.dataclass(frozen=True)
class JoinTokenCreate:
    id: str
    secret_hash: str
    expires: float
    uses: int | None = None
    """How many hosts may join with it (None: any number until it expires)."""
    description: str = ""
    environment: str = "default"
    """The environment the hosts that join with it belong to."""


@dataclasses.dataclass(frozen=True)
class JoinTokenRevoke:
    id: str


@dataclasses.dataclass(frozen=True)
class JoinTokenUse:
    """A host joins with a token: refused when the token is unknown, expired (at ``at``) or used up."""

    id: str
    secret_hash: str
    host: str
    at: float


@dataclasses.dataclass(frozen=True)
class HostMove:
    """Give a host to another environment: the leader moves the old environment's containers off it
    before the new one's are placed there."""

    name: str
    environment: str


@dataclasses.dataclass(frozen=True)
class UpgradeStart:
    """Upgrade a service to its spec with ``spec`` (request form, the fields to change) applied, batch by
    batch (``agent/model/upgrade.py``); ``strategy``/``rollback_strategy`` (request form) override the
    spec's ``update_config``/``rollback_config`` for this upgrade."""

    service: str
    spec: Mapping[str, object]
    strategy: Mapping[str, object] | None = None
    rollback_strategy: Mapping[str, object] | None = None
    at: float = 0.0
    """The proposer's clock (for the record's times; applying stays deterministic)."""


@dataclasses.dataclass(frozen=True)
class UpgradeControl:
    """Pause, resume or roll back a service's current upgrade."""

    service: str
    action: Control
    at: float = 0.0


class StepKind(enum.StrEnum):
    BEGIN = "begin"
    """Make the slot's new instance (on ``host``; beside its old one for start-first)."""
    HEALTHY = "healthy"
    """Its new container is running (and healthy, with a check) since ``at``."""
    FINISH = "finish"
    """It stayed so for min_healthy: its old instance goes."""
    FAIL = "fail"
    """It exited, failed its check or missed the deadline (``reason``): a start-first slot keeps its old one."""


@dataclasses.dataclass(frozen=True)
class UpgradeStep:
    kind: StepKind
    slot: int
    host: str | None = None
    order: Order | None = None
    reason: str | None = None


@dataclasses.dataclass(frozen=True)
class UpgradeAdvance:
    """The leader's planner moves an upgrade on (:func:`agent.model.rollout.next_batch`): refused whole
    when the record changed since ``revision`` (the plan was made on an older state)."""

    service: str
    upgrade: str
    revision: int
    steps: tuple[UpgradeStep, ...] = ()
    state: UpgradeState | None = None
    reason: str | None = None
    at: float = 0.0


Command = (EnvCreate | HostRegister | HostSetState | HostRemove | StackCreate | StackRemove | ServiceCreate
           | ServiceUpdate | ServiceScale | ServiceSetState | ServiceRemove | PlacementsCommit | InstanceStatus
           | InstanceRemove | KeysSet | KvPut | KvDelete | AdminBootstrap | UserCreate | UserUpdate | UserRemove
           | KeyCreate | KeyRevoke | TeamSet | TeamRemove | RoleSet | CaSet | JoinTokenCreate | JoinTokenRevoke
           | JoinTokenUse | HostMove | CaRotate | CaRetire | RegistrySet | RegistryRemove | ImageAdd | ImageHeld
           | ImageRemove | VolumeCreate | VolumeRemove | VolumeGone | ConfigSet | ConfigRemove | BindPathsSet
           | StackDeploy | ContainerExec | UpgradeStart | UpgradeControl | UpgradeAdvance)

CLASS_OF: dict[Op, type[Command]] = {
    Op.ENV_CREATE: EnvCreate, Op.HOST_REGISTER: HostRegister, Op.HOST_STATE: HostSetState,
    Op.HOST_REMOVE: HostRemove, Op.STACK_CREATE: StackCreate, Op.STACK_REMOVE: StackRemove,
    Op.SERVICE_CREATE: ServiceCreate, Op.SERVICE_UPDATE: ServiceUpdate, Op.SERVICE_SCALE: ServiceScale,
    Op.SERVICE_SET_STATE: ServiceSetState, Op.SERVICE_REMOVE: ServiceRemove,
    Op.PLACEMENTS_COMMIT: PlacementsCommit, Op.INSTANCE_STATUS: InstanceStatus, Op.INSTANCE_REMOVE: InstanceRemove,
    Op.KEYS_SET: KeysSet, Op.KV_PUT: KvPut, Op.KV_DELETE: KvDelete, Op.ADMIN_BOOTSTRAP: AdminBootstrap,
    Op.USER_CREATE: UserCreate, Op.USER_UPDATE: UserUpdate, Op.USER_REMOVE: UserRemove, Op.KEY_CREATE: KeyCreate,
    Op.KEY_REVOKE: KeyRevoke, Op.TEAM_SET: TeamSet, Op.TEAM_REMOVE: TeamRemove, Op.ROLE_SET: RoleSet,
    Op.CA_SET: CaSet, Op.JOIN_TOKEN_CREATE: JoinTokenCreate, Op.JOIN_TOKEN_REVOKE: JoinTokenRevoke,
    Op.JOIN_TOKEN_USE: JoinTokenUse, Op.HOST_MOVE: HostMove, Op.CA_ROTATE: CaRotate, Op.CA_RETIRE: CaRetire,
    Op.REGISTRY_SET: RegistrySet, Op.REGISTRY_REMOVE: RegistryRemove, Op.IMAGE_ADD: ImageAdd,
    Op.IMAGE_HELD: ImageHeld, Op.IMAGE_REMOVE: ImageRemove, Op.VOLUME_CREATE: VolumeCreate,
    Op.VOLUME_REMOVE: VolumeRemove, Op.VOLUME_GONE: VolumeGone, Op.CONFIG_SET: ConfigSet,
    Op.CONFIG_REMOVE: ConfigRemove, Op.BIND_PATHS_SET: BindPathsSet, Op.STACK_DEPLOY: StackDeploy,
    Op.CONTAINER_EXEC: ContainerExec, Op.UPGRADE_START: UpgradeStart, Op.UPGRADE_CONTROL: UpgradeControl,
    Op.UPGRADE_ADVANCE: UpgradeAdvance,
}
OP_OF: dict[type[Command], Op] = {cls: op for op, cls in CLASS_OF.items()}


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who asked for a command: the user and credential a node authenticated, that node, the client's
    address, and the node's clock when it took the request. Commands agents make themselves (host
    records, placements, status reports) and entries written before access control carry none."""

    user: str
    key: str | None = None
    node: str | None = None
    source: str | None = None
    at: float = 0.0


ENVELOPE = ("op", "by")
"""The keys of an entry's map that are not the command's own fields."""


def encode(command: Command, actor: Actor | None = None) -> bytes:
    """A command (and who asked for it) as a Raft entry's data."""
    wire = to_wire(command)
    assert isinstance(wire, dict)
    entry: dict[str, object] = {"op": OP_OF[type(command)].value, **wire}
    if actor is not None:
        entry["by"] = to_wire(actor)
    return bytes(msgpack.packb(entry, use_bin_type=True))


def decode(data: bytes) -> Command:
    """The command a Raft entry carries; CommandError (bad_request) naming what is wrong otherwise."""
    return decode_entry(data)[0]


def decode_entry(data: bytes) -> tuple[Command, Actor | None]:
    """The command a Raft entry carries and who asked for it; CommandError (bad_request) naming what is
    wrong otherwise."""
    try:
        raw = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise bad_request(f"malformed command: not msgpack ({type(exc).__name__})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("op"), str):
        raise bad_request("a command is a map with an op", "op")
    try:
        op = Op(raw["op"])
    except ValueError:
        raise bad_request(f"unknown op {raw['op']!r}", "op") from None
    fields = {k: v for k, v in raw.items() if k not in ENVELOPE}
    try:
        actor = from_wire(Actor, raw["by"], "by") if raw.get("by") is not None else None
        return from_wire(CLASS_OF[op], fields), actor
    except WireError as exc:
        raise bad_request(f"malformed {op.value} command: {exc}", exc.path or None) from None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What applying a command did: the log index, and what it made, placed, removed or found stale."""

    index: int
    id: str | None = None
    placed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    deleted: bool | None = None
    stale: bool = False
    """The instance a status report is about was removed meanwhile: a late report, not an error."""


Result = Outcome | CommandError


def encode_result(result: Result) -> bytes:
    if isinstance(result, CommandError):
        wire: object = {"error": result.code.value, "message": result.message, "field": result.field}
    else:
        wire = {"outcome": to_wire(result)}
    return bytes(msgpack.packb(wire, use_bin_type=True))


def decode_result(data: bytes) -> Result:
    """The result another node's state machine gave; a CommandError if it cannot be read at all."""
    try:
        raw = msgpack.unpackb(data, raw=False)
        if isinstance(raw, dict) and "outcome" in raw:
            return from_wire(Outcome, raw["outcome"])
        if isinstance(raw, dict) and isinstance(raw.get("error"), str):
            field = raw.get("field")
            return CommandError(ErrorCode(raw["error"]), str(raw.get("message", "")),
                                field if isinstance(field, str) else None)
    except (WireError, ValueError, TypeError, msgpack.UnpackException):
        pass
    return bad_request("the leader's answer could not be read")


__all__ = [
    "CLASS_OF",
    "ENVELOPE",
    "EXEC_MAX_ARG",
    "EXEC_MAX_ARGS",
    "EXEC_MAX_TOTAL",
    "OP_OF",
    "Actor",
    "AdminBootstrap",
    "BindPathsSet",
    "CaRetire",
    "CaRotate",
    "CaSet",
    "Command",
    "ConfigFiles",
    "ConfigRemove",
    "ConfigSet",
    "ContainerExec",
    "EnvCreate",
    "HostMove",
    "HostRegister",
    "HostRemove",
    "HostSetState",
    "ImageAdd",
    "ImageHeld",
    "ImageRemove",
    "InstanceRemove",
    "InstanceStatus",
    "JoinTokenCreate",
    "JoinTokenRevoke",
    "JoinTokenUse",
    "KeyCreate",
    "KeyRevoke",
    "KeysSet",
    "KvDelete",
    "KvPut",
    "Op",
    "Outcome",
    "PlacementsCommit",
    "RegistryRemove",
    "RegistrySet",
    "Result",
    "RoleSet",
    "ServiceCreate",
    "ServiceRemove",
    "ServiceScale",
    "ServiceSetState",
    "ServiceUpdate",
    "StackCreate",
    "StackDeploy",
    "StackRemove",
    "StepKind",
    "TeamRemove",
    "TeamSet",
    "UpgradeAdvance",
    "UpgradeControl",
    "UpgradeStart",
    "UpgradeStep",
    "UserCreate",
    "UserRemove",
    "UserUpdate",
    "VolumeCreate",
    "VolumeGone",
    "VolumeRemove",
    "decode",
    "decode_entry",
    "decode_result",
    "encode",
    "encode_result",
    "exec_command_problem",
]
