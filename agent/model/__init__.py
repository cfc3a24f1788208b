"""The pure layer: the cluster's desired state and every rule about it, with no I/O.

    entities    frozen records: hosts, environments, stacks, services, instances, kv, events
    spec        what a service asks for, validated (ServiceSpec)
    commands    one dataclass per state-machine operation, their codec, and the Outcome of applying one
    state       the Raft state machine (ClusterState): apply, snapshot, restore, the change outbox
    access      users, API keys and sessions, teams, roles per environment, join tokens, the CA record
    policy      who may do what: one function, asked by the API and again when a command is applied
    changes     the change records the outbox holds
    scheduler   where a slot should run, and why not
    placement   the leader's placements from the state
    compose     a compose file as service specs
    codec       dataclasses to and from their wire form
    errors      CommandError and its codes

Nothing here imports asyncio, aiohttp, aiodocker, sqlite, socket or time, or draws randomness
(``tests/unit/test_layers.py`` checks): the same inputs always give the same state.
"""

from agent.model.changes import Change, Topic
from agent.model.commands import Command, Outcome, Result
from agent.model.errors import CommandError, ErrorCode, SpecError
from agent.model.state import ClusterState

__all__ = ["Change", "ClusterState", "Command", "CommandError", "ErrorCode", "Outcome", "Result", "SpecError", "Topic"]
