"""What the cluster's desired state is made of: frozen records, replaced whole when they change.

Each record's wire form (:func:`agent.model.codec.to_wire`) is the map the agent has always kept in
its snapshots and shown in its API, field for field; enums are their string values.

    Environment   name → the default one, and those ``env.create`` made
    Host          name → address, labels, capacity, state (as gossip sees it, agreed by the leader),
                  its overlay /24 and overlay public key
    Stack         id → environment, name
    Service       id → stack, name, spec, state (active or stopped), why slots are unplaced
    Instance      id → one slot of a service on one host: what is desired of it, and what its host
                  last reported (status, exit code, error, health, container id, address, ports)
    KvEntry       key → value, create and modify index
    Event         what happened at a log index, in words, with the ids it concerns
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from agent.model.spec import ServiceSpec


class HostState(enum.StrEnum):
    ACTIVE = "active"
    RECONNECTING = "reconnecting"
    DISCONNECTED = "disconnected"


class ServiceState(enum.StrEnum):
    ACTIVE = "active"
    STOPPED = "stopped"


class Desired(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


class Status(enum.StrEnum):
    """An instance's container as its host last saw it (``pending`` until the first report)."""

    PENDING = "pending"
    CREATED = "created"
    RUNNING = "running"
    RESTARTING = "restarting"
    PAUSED = "paused"
    EXITED = "exited"
    OOM = "oom"
    MISSING = "missing"
    PULLING = "pulling"
    """Its host is fetching the image (from a registry or a peer): the detail says how far."""
    PULL_FAILED = "pull-failed"
    """Its host could not get the image: the error says why (retried with back-off)."""
    WAITING = "waiting"
    """Its container is not started yet: a service it ``depends_on`` is not started (healthy, done) yet."""


class Health(enum.StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class EventKind(enum.StrEnum):
    """Append only: kinds are stored in snapshots and filtered on by users (``/v1/events?kind=``)."""

    HOST_REGISTERED = "host.registered"
    HOST_STATE = "host.state"
    HOST_REMOVED = "host.removed"
    STACK_CREATED = "stack.created"
    STACK_REMOVED = "stack.removed"
    SERVICE_CREATED = "service.created"
    SERVICE_UPDATED = "service.updated"
    SERVICE_SCALED = "service.scaled"
    SERVICE_ACTIVE = "service.active"
    SERVICE_STOPPED = "service.stopped"
    SERVICE_REMOVED = "service.removed"
    SERVICE_UNPLACED = "service.unplaced"
    INSTANCE_PLACED = "instance.placed"
    INSTANCE_FAILED = "instance.failed"
    INSTANCE_UNHEALTHY = "instance.unhealthy"
    INSTANCE_REMOVED = "instance.removed"
    KEYS_CHANGED = "keys.changed"
    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    USER_REMOVED = "user.removed"
    KEY_CREATED = "key.created"
    KEY_REVOKED = "key.revoked"
    TEAM_CHANGED = "team.changed"
    TEAM_REMOVED = "team.removed"
    ROLE_CHANGED = "role.changed"
    JOIN_TOKEN_CREATED = "join_token.created"
    JOIN_TOKEN_REVOKED = "join_token.revoked"
    HOST_JOINED = "host.joined"
    HOST_MOVED = "host.moved"
    CA_ROTATED = "ca.rotated"
    REGISTRY_CHANGED = "registry.changed"
    IMAGE_ADDED = "image.added"
    IMAGE_REMOVED = "image.removed"
    WRITE = "write"
    """A user's write that has no event of its own (a kv write): recorded for the audit trail."""
    VOLUME_CREATED = "volume.created"
    VOLUME_MOVED = "volume.moved"
    VOLUME_REMOVED = "volume.removed"
    CONFIG_CHANGED = "config.changed"
    CONFIG_REMOVED = "config.removed"
    SETTINGS_CHANGED = "settings.changed"
    STACK_DEPLOYED = "stack.deployed"
    CONTAINER_EXEC = "container.exec"
    """A user ran a command in a container (``corral exec``): which, where, with a TTY or not."""
    UPGRADE_STARTED = "upgrade.started"
    UPGRADE_BATCH = "upgrade.batch"
    """A batch of an upgrade (or of its rollback) began: which slots, on which hosts, in which order."""
    UPGRADE_SLOT = "upgrade.slot"
    """A slot of an upgrade is done (its new container healthy for min_healthy, its old one gone) or failed."""
    UPGRADE_STATE = "upgrade.state"
    """An upgrade was paused, resumed, rolled back, or ended (done, rolled back, failed), with the reason."""


ACCESS_EVENTS = frozenset({EventKind.USER_CREATED, EventKind.USER_UPDATED, EventKind.USER_REMOVED,
                           EventKind.KEY_CREATED, EventKind.KEY_REVOKED, EventKind.TEAM_CHANGED,
                           EventKind.TEAM_REMOVED, EventKind.KEYS_CHANGED, EventKind.JOIN_TOKEN_CREATED,
                           EventKind.JOIN_TOKEN_REVOKED, EventKind.REGISTRY_CHANGED})
"""Events only administrators see (who has which credentials)."""


@dataclasses.dataclass(frozen=True)
class Environment:
    name: str
    created: int


@dataclasses.dataclass(frozen=True)
class Host:
    name: str
    address: str
    labels: Mapping[str, str]
    cpus: float
    memory: int
    state: HostState
    registered: int
    updated: int
    subnet: str
    overlay_key: str | None
    environment: str = "default"
    """The environment whose containers this host runs (and whose overlay it is on)."""
    manager: bool = False
    """A Raft voter candidate (its gossip metadata says so): ``node.role==manager`` in a constraint."""


@dataclasses.dataclass(frozen=True)
class Stack:
    id: str
    environment: str
    name: str
    created: int


@dataclasses.dataclass(frozen=True)
class Service:
    id: str
    stack: str
    name: str
    spec: ServiceSpec
    state: ServiceState
    version: int
    """The log index of the last change to the spec (not to the scale or state)."""
    created: int
    updated: int
    unplaced: tuple[tuple[int, str], ...] | None = None
    """(slot, reason) for each slot the scheduler could not place; None when every slot is placed."""


@dataclasses.dataclass(frozen=True)
class Instance:
    id: str
    service: str
    slot: int
    host: str
    desired: Desired
    status: Status
    exit_code: int | None
    error: str | None
    """Why the host could not act on it (a create Docker refused…), as reported; None when it can."""
    health: Health | None
    generation: int
    """A new generation (``service restart``) makes the host replace the container."""
    created: int
    updated: int
    health_detail: str | None = None
    container_id: str | None = None
    ip: str | None = None
    ports: tuple[str, ...] = ()
    spec_version: int = 0
    """The service version (log index) of the spec its container is made from; 0: the service's spec as
    it is. During an upgrade the old and the new instances of a slot run different versions."""
    revision: int = 0
    """How many upgrades made this slot's instance anew: names its container apart from the one it
    replaces (``STACK-SERVICE-SLOT`` at 0, then ``STACK-SERVICE-SLOT-rN``), so both can live on one host."""


@dataclasses.dataclass(frozen=True)
class KvEntry:
    value: bytes | str
    create_index: int
    modify_index: int


@dataclasses.dataclass(frozen=True)
class Event:
    index: int
    kind: EventKind
    message: str
    refs: Mapping[str, str]
    environment: str | None = None
    """The environment the event is about (None: the cluster's hosts and keys)."""
    actor: str | None = None
    """The user whose request made it (None: an agent's own command)."""
    credential: str | None = None
    """The id of the key (or session) the user made the request with."""
    source: str | None = None
    """The client's address, and the node that took the request (``ADDR via NODE``)."""


@dataclasses.dataclass(frozen=True)
class Keyring:
    """The gossip/Raft keyring every node should hold (hex keys), the primary first to seal with."""

    keys: tuple[str, ...]
    primary: str
    index: int


__all__ = [
    "ACCESS_EVENTS", "Desired", "Environment", "Event", "EventKind", "Health", "Host", "HostState", "Instance",
    "Keyring", "KvEntry", "Service", "ServiceState", "Stack", "Status",
]
