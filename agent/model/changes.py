"""What an applied command changed, so that views of the state follow it one change at a time.

The state machine fills an outbox of :class:`Change` records as it applies commands (as the protocol
cores fill theirs); the agent drains it after each batch of applied entries and hands every change to
the subscribers that want it (``agent/cluster/feed.py``). A change names the record, not its new
value: a subscriber reads the state, which already holds it. ``Topic.ALL`` means "anything may have
changed" (a snapshot was installed): read everything again.
"""

from __future__ import annotations

import dataclasses
import enum


class Topic(enum.StrEnum):
    ALL = "all"
    ENVIRONMENT = "environment"
    HOST = "host"
    STACK = "stack"
    SERVICE = "service"
    INSTANCE = "instance"
    KV = "kv"
    EVENT = "event"
    KEYRING = "keyring"
    ACCESS = "access"
    IMAGE = "image"
    """An image of the catalog (key: its id) or a registry's credentials (key: ``registry:HOST``)."""
    VOLUME = "volume"
    """A volume's record (key: ``ENVIRONMENT/NAME``)."""
    CONFIG = "config"
    """A config or secret (key: ``ENVIRONMENT/NAME``), or the allowed bind paths (``bind-paths``)."""
    UPGRADE = "upgrade"
    """A service's current upgrade (key: the service id)."""


@dataclasses.dataclass(frozen=True)
class Change:
    index: int
    topic: Topic
    key: str = ""
    removed: bool = False
    host: str | None = None
    """For an instance: the host it is (or was, when removed) assigned to."""
    service: str | None = None
    """For an instance: its service."""


__all__ = ["Change", "Topic"]
