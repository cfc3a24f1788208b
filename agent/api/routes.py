"""Every route of the API in one table: method, path, handler, and what the OpenAPI document says of it.

A route marked ``write`` changes the replicated state: any node takes it, validates it against its
replica and commits the command through the leader (``agent/cluster/replica.py``), so every node
answers every route. ``statuses`` are the ones
a route answers besides 200 (every route may also answer 400 for a bad parameter, and a write 503
when no leader can take it): the document lists them all, and the fuzz test holds the server to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from aiohttp import web

from agent.api import cluster, containers, events, hosts, kv, node, services, stacks
from agent.api.params import (
    CAS,
    CONSISTENT,
    ENVIRONMENT,
    FOLLOW,
    HOST,
    ID,
    INDEX,
    KEY,
    KIND,
    LIMIT,
    MEMBER_STATE,
    NAME,
    OFFSET,
    SERVICE,
    STACK,
    STATE,
    STREAM,
    TAIL,
    WAIT,
    Param,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PAGE = (LIMIT, OFFSET)


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    tag: str
    summary: str
    params: tuple[Param, ...] = ()
    body: str | None = None
    """The request body's schema in ``agent/api/schemas.py``; ``raw`` for bytes."""
    statuses: tuple[int, ...] = ()
    write: bool = False
    created: bool = False
    """Answers 201 (not 200) with what it made."""
    stream: str | None = None
    """The content type when the answer is a stream rather than JSON."""


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/openapi.json", node.openapi, "meta", "This document"),
    Route("GET", "/v1/health", node.health, "node", "Liveness, and what is wrong with each part of the agent"),
    Route("GET", "/v1/host", node.host, "node", "This host: name, address, CPUs, memory, engine", statuses=(503,)),
    Route("GET", "/v1/members", cluster.members, "cluster", "Gossip members as this node sees them",
          (MEMBER_STATE,)),
    Route("GET", "/v1/members/stats", cluster.member_stats, "cluster", "Gossip counters, drops by reason"),
    Route("GET", "/v1/raft", cluster.raft, "cluster", "Raft role, term, leader, indexes, peers"),
    Route("GET", "/v1/overlay", cluster.overlay, "overlay", "Overlay peers, sessions, RTT, traffic, drops by reason"),
    Route("GET", "/v1/keys", cluster.list_keys, "cluster", "Key ids, the primary, how many live members hold each"),
    Route("POST", "/v1/keys", cluster.change_keys, "cluster", "Install, use (make primary) or remove a key",
          body="KeyChange", write=True),
    Route("POST", "/v1/internal/propose", cluster.internal_propose, "internal",
          "A sealed Raft command from a member (not for users)", body="raw", statuses=(403, 503)),
    Route("POST", "/v1/internal/propose-batch", cluster.internal_batch, "internal",
          "Sealed Raft commands from a member, proposed in order (not for users)", body="raw", statuses=(403,)),
    Route("GET", "/v1/kv/{key}", kv.get, "kv", "Read a key", (KEY, CONSISTENT, INDEX, WAIT), statuses=(404, 503)),
    Route("PUT", "/v1/kv/{key}", kv.put, "kv", "Write a key (the body is the value, at most 512 KiB)", (KEY, CAS),
          body="raw", statuses=(409, 413), write=True),
    Route("DELETE", "/v1/kv/{key}", kv.delete, "kv", "Delete a key", (KEY, CAS), statuses=(409,), write=True),
    Route("GET", "/v1/environments", hosts.list_environments, "stacks", "Environments", PAGE),
    Route("GET", "/v1/hosts", hosts.list_hosts, "hosts", "Hosts with state, health, labels, capacity",
          (*PAGE, STATE)),
    Route("GET", "/v1/hosts/{name}", hosts.get_host, "hosts", "One host", (NAME,), statuses=(404,)),
    Route("GET", "/v1/hosts/{name}/stats", hosts.host_stats, "hosts",
          "Host CPU, memory, network and block I/O from Docker (from the host's agent)", (NAME,),
          statuses=(404, 503)),
    Route("GET", "/v1/stacks", stacks.list_stacks, "stacks", "Stacks", (*PAGE, ENVIRONMENT)),
    Route("POST", "/v1/stacks", stacks.create_stack, "stacks", "Create a stack", body="StackCreate",
          statuses=(404, 409), write=True, created=True),
    Route("GET", "/v1/stacks/{id}", stacks.get_stack, "stacks", "One stack", (ID,), statuses=(404,)),
    Route("DELETE", "/v1/stacks/{id}", stacks.delete_stack, "stacks", "Remove a stack and its services", (ID,),
          statuses=(404,), write=True),
    Route("GET", "/v1/services", services.list_services, "services", "Services", (*PAGE, STACK, STATE)),
    Route("POST", "/v1/services", services.create_service, "services", "Create a service", body="ServiceCreate",
          statuses=(404, 409), write=True, created=True),
    Route("GET", "/v1/services/{id}", services.get_service, "services", "One service", (ID,), statuses=(404,)),
    Route("PATCH", "/v1/services/{id}", services.update_service, "services", "Change a service's spec", (ID,),
          body="ServiceChange", statuses=(404,), write=True),
    Route("DELETE", "/v1/services/{id}", services.delete_service, "services", "Remove a service and its containers",
          (ID,), statuses=(404,), write=True),
    Route("POST", "/v1/services/{id}/scale", services.scale_service, "services", "Set the scale", (ID,),
          body="Scale", statuses=(404,), write=True),
    Route("POST", "/v1/services/{id}/stop", services.stop_service, "services", "Stop every container", (ID,),
          statuses=(404,), write=True),
    Route("POST", "/v1/services/{id}/start", services.start_service, "services", "Start the service again", (ID,),
          statuses=(404,), write=True),
    Route("POST", "/v1/services/{id}/restart", services.restart_service, "services", "Replace every container",
          (ID,), statuses=(404,), write=True),
    Route("GET", "/v1/containers", containers.list_containers, "containers", "Containers",
          (*PAGE, STACK, SERVICE, HOST, STATE)),
    Route("GET", "/v1/containers/{id}", containers.get_container, "containers", "One container", (ID,),
          statuses=(404,)),
    Route("DELETE", "/v1/containers/{id}", containers.delete_container, "containers",
          "Delete a container (the scheduler places its slot again)", (ID,), statuses=(404,), write=True),
    Route("GET", "/v1/containers/{id}/logs", containers.logs, "containers", "Logs, streamed from the container's host",
          (ID, FOLLOW, TAIL), statuses=(404, 503), stream="text/plain"),
    Route("GET", "/v1/containers/{id}/stats", containers.stats, "containers",
          "CPU, memory, network, block I/O (from the container's host)", (ID,), statuses=(404, 503)),
    Route("GET", "/v1/events", events.events, "events", "Cluster events", (*PAGE, INDEX, WAIT, STREAM, KIND),
          stream="application/x-ndjson"),
)

__all__ = ["PAGE", "ROUTES", "Handler", "Route"]
