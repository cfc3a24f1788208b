"""Gossip membership as the rest of the agent sees it.

:class:`MemberInfo` is a member as the leader needs it (to register it as a host and to reach it);
:class:`Members` adapts :class:`mesh.gossip.node.GossipNode` to it and tells subscribers when the
membership changed. What a member advertises in its gossip metadata (:func:`local_meta`): its API
URL, its Raft address, whether it prefers to vote, its labels and capacity, its overlay public key,
the ids of the keys it holds, and its health.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from mesh.gossip.node import GossipNode
from mesh.gossip.swim import Event


@dataclasses.dataclass(frozen=True)
class MemberInfo:
    """A member as gossip sees it: what the leader needs to register it and to reach it."""

    name: str
    address: str
    state: str  # alive, suspect, dead, left
    meta: Mapping[str, object]

    def meta_str(self, key: str) -> str | None:
        value = self.meta.get(key)
        return str(value) if value not in (None, "") else None


class Members:
    def __init__(self, node: GossipNode) -> None:
        self.node = node

    def members(self) -> list[MemberInfo]:
        return [MemberInfo(m.name, m.address[0], m.state.value, m.meta) for m in self.node.members()]

    def on_change(self, callback: Callable[[], None]) -> None:
        def on_event(_event: Event) -> None:
            callback()

        self.node.subscribe(on_event)

    def api_of(self, name: str) -> str | None:
        """The API URL a member advertises, if it is known (asked for every write a follower forwards)."""
        member = self.node.core.member(name)
        api = member.meta.get("api") if member is not None else None
        return str(api) if api else None


__all__ = ["MemberInfo", "Members"]
