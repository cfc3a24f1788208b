"""Every route of the API in one table: method, path, handler, and what the OpenAPI document says of it.

Every route names the permission it needs (:mod:`agent.model.policy`); the app authenticates the
caller before the handler runs, checks the cluster-wide permissions (``admin``, and an environment
permission a route always asks in one environment), and the handler checks the environment of the
object it is about (a 404 when the caller has no role there). A route marked ``write`` changes the
replicated state: any node takes it, validates it against its replica and commits the command through
the leader (``agent/cluster/replica.py``), so every node answers every route. ``statuses`` are the ones
a route answers besides 200 (every route may also answer 400 for a bad parameter, and a write 503
when no leader can take it): the document lists them all, and the fuzz test holds the server to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from aiohttp import web

from agent.api import (
    ca,
    cluster,
    containers,
    dns,
    drills,
    events,
    execs,
    hosts,
    images,
    join,
    kv,
    metrics,
    node,
    services,
    stacks,
    storage,
    upgrades,
    users,
)
from agent.api.params import (
    AUDIT,
    CAS,
    CMD,
    CONSISTENT,
    CONTENT,
    DNS_NAME,
    DNS_TYPE,
    DRY_RUN,
    ENVIRONMENT,
    FOLLOW,
    HOST,
    ID,
    IN_ENVIRONMENT,
    INDEX,
    INTERACTIVE,
    KEY,
    KIND,
    LIMIT,
    MEMBER_STATE,
    NAME,
    NOW,
    OFFSET,
    POINTS,
    SERVICE,
    SINCE,
    STACK,
    STATE,
    STREAM,
    SUBJECT,
    TAIL,
    TTY,
    USER,
    VOLUMES,
    WAIT,
    Param,
)
from agent.model.policy import Permission
from agent.model.state import KV_ENVIRONMENT

P = Permission

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
    websocket: bool = False
    """Answers 101 and speaks a websocket (``exec``: its framing is :mod:`agent.api.exec_wire`'s)."""
    permission: Permission = Permission.ADMIN
    """What the caller needs (:mod:`agent.model.policy`); a route that names none is for administrators."""
    environment: str | None = None
    """The environment the permission is asked in, when the route is always about one (the kv store);
    routes about a stack, service or container ask it of the object's environment in their handler."""


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/openapi.json", node.openapi, "meta", "This document", permission=P.AUTHENTICATED),
    Route("GET", "/v1/health", node.health, "node", "Liveness, and what is wrong with each part of the agent",
          permission=P.PUBLIC),
    Route("GET", "/metrics", metrics.metrics, "node",
          "This agent in Prometheus' text format (a metrics key or an administrator; docs/MONITORING.md)",
          stream="text/plain", permission=P.METRICS),
    Route("GET", "/v1/host", node.host, "node", "This host: name, address, CPUs, memory, engine", statuses=(503,),
          permission=P.AUTHENTICATED),
    Route("GET", "/v1/members", cluster.members, "cluster", "Gossip members as this node sees them",
          (MEMBER_STATE,), permission=P.AUTHENTICATED),
    Route("GET", "/v1/members/stats", cluster.member_stats, "cluster", "Gossip counters, drops by reason",
          permission=P.AUTHENTICATED),
    Route("GET", "/v1/raft", cluster.raft, "cluster", "Raft role, term, leader, indexes, peers",
          permission=P.AUTHENTICATED),
    Route("GET", "/v1/overlay", cluster.overlay, "overlay", "Overlay peers, sessions, RTT, traffic, drops by reason",
          permission=P.AUTHENTICATED),
    Route("GET", "/v1/dns", dns.query, "dns", "This node's DNS server (address, counters) and its answer to a name",
          (DNS_NAME, DNS_TYPE), permission=P.AUTHENTICATED),
    Route("GET", "/v1/keys", cluster.list_keys, "cluster", "Key ids, the primary, how many live members hold each"),
    Route("POST", "/v1/keys", cluster.change_keys, "cluster", "Install, use (make primary) or remove a key",
          body="KeyChange", write=True),
    Route("POST", "/v1/internal/propose", cluster.internal_propose, "internal",
          "A sealed Raft command from a member (not for users)", body="raw", statuses=(403, 503),
          permission=P.SYSTEM),
    Route("POST", "/v1/internal/propose-batch", cluster.internal_batch, "internal",
          "Sealed Raft commands from a member, proposed in order (not for users)", body="raw", statuses=(403,),
          permission=P.SYSTEM),
    Route("GET", "/v1/kv/{key}", kv.get, "kv", "Read a key", (KEY, CONSISTENT, INDEX, WAIT), statuses=(404, 503),
          permission=P.READ, environment=KV_ENVIRONMENT),
    Route("PUT", "/v1/kv/{key}", kv.put, "kv", "Write a key (the body is the value, at most 512 KiB)", (KEY, CAS),
          body="raw", statuses=(409, 413), write=True, permission=P.DEPLOY, environment=KV_ENVIRONMENT),
    Route("DELETE", "/v1/kv/{key}", kv.delete, "kv", "Delete a key", (KEY, CAS), statuses=(409,), write=True,
          permission=P.DEPLOY, environment=KV_ENVIRONMENT),
    Route("GET", "/v1/drills/report", drills.get_report, "kv",
          "The last drill report `corral drill` stored (kept in the kv store, under corral/drill/last-report)",
          statuses=(404,), permission=P.READ, environment=KV_ENVIRONMENT),
    Route("PUT", "/v1/drills/report", drills.put_report, "kv", "Store a drill report (made by `corral drill`)",
          body="DrillReport", statuses=(413,), write=True),
    Route("GET", "/v1/environments", hosts.list_environments, "stacks",
          "Environments the caller has a role in, with that role", PAGE, permission=P.AUTHENTICATED),
    Route("GET", "/v1/hosts", hosts.list_hosts, "hosts",
          "Hosts (of the environments the caller has a role in) with environment, state, health, labels, capacity",
          (*PAGE, STATE, ENVIRONMENT), permission=P.AUTHENTICATED),
    Route("GET", "/v1/hosts/{name}", hosts.get_host, "hosts", "One host", (NAME,), statuses=(404,),
          permission=P.READ),
    Route("POST", "/v1/hosts/{name}/move", hosts.move_host, "hosts",
          "Give a host to another environment (its containers of the old one are placed elsewhere first)",
          (NAME,), body="HostMove", statuses=(404,), write=True),
    Route("GET", "/v1/hosts/{name}/stats", hosts.host_stats, "hosts",
          "Host CPU, memory, network and block I/O from Docker (from the host's agent); with since, the host's "
          "own figures over the last hour from its history (docs/HISTORY.md)", (NAME, SINCE, POINTS),
          statuses=(404, 503), permission=P.READ),
    Route("GET", "/v1/stacks", stacks.list_stacks, "stacks", "Stacks", (*PAGE, ENVIRONMENT), permission=P.READ),
    Route("POST", "/v1/stacks", stacks.create_stack, "stacks", "Create a stack", body="StackCreate",
          statuses=(404, 409), write=True, created=True, permission=P.DEPLOY),
    Route("GET", "/v1/stacks/{id}", stacks.get_stack, "stacks", "One stack", (ID,), statuses=(404,), permission=P.READ),
    Route("DELETE", "/v1/stacks/{id}", stacks.delete_stack, "stacks",
          "Remove a stack, its services and configs (its volumes only with volumes=true)", (ID, VOLUMES),
          statuses=(404,), write=True, permission=P.DEPLOY),
    Route("POST", "/v1/stacks/{id}/deploy", storage.deploy_stack, "stacks",
          "Deploy a whole compose file (made by `corral stack deploy`): the stack named, its configs and services, "
          "all or nothing; dry_run says what would change", (ID, DRY_RUN), body="StackDeploy",
          statuses=(404, 409, 413), write=True, permission=P.DEPLOY),
    Route("GET", "/v1/volumes", storage.list_volumes, "volumes", "Volumes: where each lives, who mounts it",
          (*PAGE, IN_ENVIRONMENT), permission=P.READ),
    Route("POST", "/v1/volumes", storage.create_volume, "volumes",
          "Create an external volume (on a host, or where its first container goes)", body="VolumeCreate",
          statuses=(404, 409, 413), write=True, created=True, permission=P.DEPLOY),
    Route("GET", "/v1/volumes/{name}", storage.get_volume, "volumes", "One volume", (NAME, IN_ENVIRONMENT),
          statuses=(404,), permission=P.READ),
    Route("DELETE", "/v1/volumes/{name}", storage.remove_volume, "volumes",
          "Remove a volume no service mounts (its host deletes it and its data)", (NAME, IN_ENVIRONMENT),
          statuses=(404, 409), write=True, permission=P.DEPLOY),
    Route("GET", "/v1/configs", storage.list_configs, "volumes", "Configs and secrets (never a secret's bytes)",
          (*PAGE, IN_ENVIRONMENT), permission=P.READ),
    Route("POST", "/v1/configs", storage.create_config, "volumes",
          "Create or replace a config or a secret of an environment (a stack's come with its deploy)",
          body="ConfigCreate", statuses=(404, 409, 413), write=True, created=True, permission=P.DEPLOY),
    Route("GET", "/v1/configs/{name}", storage.get_config, "volumes", "One config (its files with content=true) "
          "or secret (never its bytes)", (NAME, IN_ENVIRONMENT, CONTENT), statuses=(404,), permission=P.READ),
    Route("DELETE", "/v1/configs/{name}", storage.remove_config, "volumes",
          "Remove a config or secret no service mounts", (NAME, IN_ENVIRONMENT), statuses=(404, 409), write=True,
          permission=P.DEPLOY),
    Route("GET", "/v1/settings", storage.get_settings, "cluster", "Cluster settings: the host folders services may "
          "bind-mount", permission=P.AUTHENTICATED),
    Route("PATCH", "/v1/settings", storage.change_settings, "cluster", "Change the cluster settings",
          body="Settings", write=True),
    Route("GET", "/v1/services", services.list_services, "services", "Services", (*PAGE, STACK, STATE),
          permission=P.READ),
    Route("POST", "/v1/services", services.create_service, "services", "Create a service", body="ServiceCreate",
          statuses=(404, 409), write=True, created=True, permission=P.DEPLOY),
    Route("GET", "/v1/services/{id}", services.get_service, "services", "One service", (ID,), statuses=(404,),
          permission=P.READ),
    Route("PATCH", "/v1/services/{id}", services.update_service, "services",
          "Change a service's spec: a change of what shapes its containers is an upgrade with its update_config "
          "(the answer's upgrade; docs/UPGRADES.md), now=true replaces them all at once", (ID, NOW),
          body="ServiceChange", statuses=(404, 409), write=True, permission=P.DEPLOY),
    Route("DELETE", "/v1/services/{id}", services.delete_service, "services", "Remove a service and its containers",
          (ID,), statuses=(404,), write=True, permission=P.DEPLOY),
    Route("POST", "/v1/services/{id}/scale", services.scale_service, "services", "Set the scale", (ID,),
          body="Scale", statuses=(404,), write=True, permission=P.DEPLOY),
    Route("POST", "/v1/services/{id}/stop", services.stop_service, "services", "Stop every container", (ID,),
          statuses=(404,), write=True, permission=P.DEPLOY),
    Route("POST", "/v1/services/{id}/start", services.start_service, "services", "Start the service again", (ID,),
          statuses=(404,), write=True, permission=P.DEPLOY),
    Route("POST", "/v1/services/{id}/restart", services.restart_service, "services", "Replace every container",
          (ID,), statuses=(404,), write=True, permission=P.DEPLOY),
    Route("GET", "/v1/services/{id}/upgrade", upgrades.get_upgrade, "services",
          "The service's current upgrade (state, reason, progress per slot) and its last ones", (ID,),
          statuses=(404,), permission=P.READ),
    Route("POST", "/v1/services/{id}/upgrade", upgrades.start_upgrade, "services",
          "Upgrade the service batch by batch, health-gated, rolled back on failure (docs/UPGRADES.md)", (ID,),
          body="UpgradeStart", statuses=(404, 409), write=True, created=True, permission=P.DEPLOY),
    Route("POST", "/v1/services/{id}/upgrade/pause", upgrades.pause_upgrade, "services",
          "Pause the upgrade: no new batch (the slots in flight are kept)", (ID,), statuses=(404, 409), write=True,
          permission=P.DEPLOY),
    Route("POST", "/v1/services/{id}/upgrade/resume", upgrades.resume_upgrade, "services",
          "Resume a paused (or failed) upgrade in its direction", (ID,), statuses=(404, 409), write=True,
          permission=P.DEPLOY),
    Route("POST", "/v1/services/{id}/upgrade/rollback", upgrades.rollback_upgrade, "services",
          "Roll the upgrade back to the previous spec, at once, with the same gating", (ID,), statuses=(404, 409),
          write=True, permission=P.DEPLOY),
    Route("GET", "/v1/containers", containers.list_containers, "containers", "Containers",
          (*PAGE, STACK, SERVICE, HOST, STATE), permission=P.READ),
    Route("GET", "/v1/containers/{id}", containers.get_container, "containers", "One container", (ID,),
          statuses=(404,), permission=P.READ),
    Route("DELETE", "/v1/containers/{id}", containers.delete_container, "containers",
          "Delete a container (the scheduler places its slot again)", (ID,), statuses=(404,), write=True,
          permission=P.DEPLOY),
    Route("GET", "/v1/containers/{id}/logs", containers.logs, "containers", "Logs, streamed from the container's host",
          (ID, FOLLOW, TAIL), statuses=(404, 503), stream="text/plain", permission=P.READ),
    Route("GET", "/v1/containers/{id}/stats", containers.stats, "containers",
          "CPU, memory, network, block I/O (from the container's host); with since, its samples over the last "
          "hour from the host's history (docs/HISTORY.md)", (ID, SINCE, POINTS), statuses=(404, 503),
          permission=P.READ),
    Route("GET", "/v1/containers/{id}/exec", execs.exec_container, "containers",
          "Run a command in the container (a websocket: binary frames are its input and output, text frames "
          "resizes and its exit code; docs/EXEC.md)", (ID, CMD, TTY, INTERACTIVE), statuses=(404, 409, 503),
          websocket=True, permission=P.DEPLOY),
    Route("GET", "/v1/events", events.events, "events",
          "Cluster events (those of the environments the caller has a role in, and the cluster's own)",
          (*PAGE, INDEX, WAIT, STREAM, KIND, AUDIT), stream="application/x-ndjson", permission=P.AUTHENTICATED),
    # ---- images: registries, the catalog, agent-to-agent transfers
    Route("GET", "/v1/registries", images.list_registries, "images", "Registries with credentials (never the password)",
          PAGE),
    Route("POST", "/v1/registries", images.set_registry, "images",
          "Keep a registry's credentials (sealed; passed to Docker per pull)", body="RegistrySet", write=True,
          created=True),
    Route("DELETE", "/v1/registries/{name}", images.remove_registry, "images", "Forget a registry's credentials",
          (NAME,), write=True, statuses=(404,)),
    Route("GET", "/v1/images", images.list_images, "images", "The catalog: images the cluster distributes, and "
          "which hosts hold each", PAGE, permission=P.AUTHENTICATED),
    Route("POST", "/v1/images", images.load_image, "images",
          "A `docker save` tarball (the body) into the catalog: loaded here, fetched by peers when needed",
          body="raw", write=True, created=True, statuses=(503,), permission=P.DEPLOY),
    Route("DELETE", "/v1/images/{id}", images.remove_image, "images", "Take an image out of the catalog (hosts "
          "drop their tarballs; engines keep the image)", (ID,), write=True, statuses=(404,)),
    Route("POST", "/v1/builds", images.build_image, "images",
          "Build a context (a tar, the body) on the answering host; the image goes into the catalog",
          (images.BUILD_TAG, images.DOCKERFILE, images.BUILD_ARGS), body="raw", write=True, created=True,
          statuses=(503,), permission=P.DEPLOY),
    Route("POST", "/v1/images/{id}/fetch", images.fetch_image, "images",
          "The answering host gets a catalog image now, from its peers (warm it before it is needed)", (ID,),
          statuses=(404, 503), permission=P.DEPLOY),
    Route("GET", "/v1/host/images", images.image_status, "images",
          "What this host's image manager does now: pulls, fetches, what it sends to whom", statuses=(503,),
          permission=P.AUTHENTICATED),
    Route("GET", "/v1/internal/images/{id}", images.send_tarball, "internal",
          "A catalog tarball to another agent (Range resumes; 503 redirects to relays; not for users)", (ID,),
          stream="application/x-tar", statuses=(403, 404, 416, 503), permission=P.SYSTEM),
    Route("GET", "/v2/", images.registry_ping, "internal",
          "The registry protocol's base, for a peer fetching a catalog image's blobs (a pull grant; not for users)",
          statuses=(401, 403, 503), permission=P.SYSTEM),
    Route("GET", "/v2/corral/peer/manifests/{id}", images.registry_manifest, "internal",
          "A catalog image's manifest, made from this host's tarball, for a peer (a pull grant; not for users)",
          (ID,), stream="application/vnd.docker.distribution.manifest.v2+json", statuses=(401, 403, 404, 503),
          permission=P.SYSTEM),
    Route("HEAD", "/v2/corral/peer/manifests/{id}", images.registry_manifest, "internal",
          "A catalog image's manifest, made from this host's tarball, for a peer (a pull grant; not for users)",
          (ID,), stream="application/vnd.docker.distribution.manifest.v2+json", statuses=(401, 403, 404, 503),
          permission=P.SYSTEM),
    Route("GET", "/v2/corral/peer/blobs/{id}", images.registry_blob, "internal",
          "A layer or config of a catalog image, from this host's tarball, to a peer (Range; a pull grant)",
          (ID,), stream="application/octet-stream", statuses=(401, 403, 404, 416, 503), permission=P.SYSTEM),
    Route("HEAD", "/v2/corral/peer/blobs/{id}", images.registry_blob, "internal",
          "A layer or config of a catalog image, from this host's tarball, to a peer (Range; a pull grant)",
          (ID,), stream="application/octet-stream", statuses=(401, 403, 404, 416, 503), permission=P.SYSTEM),
    # ---- joining: the CA, join tokens, node certificates
    Route("GET", "/v1/ca", ca.ca, "access",
          "The cluster CA's certificate and SHA-256 fingerprint, and every CA trusted now (public)",
          statuses=(503,), permission=P.PUBLIC),
    Route("GET", "/v1/ca/hosts", ca.hosts, "access", "Which CA issued the certificate each live host shows",
          statuses=(503,)),
    Route("POST", "/v1/ca/rotate", ca.rotate, "access",
          "Begin a CA rotation: a new CA signs, the old one is trusted until the rotation is finished",
          write=True, created=True, statuses=(409, 503)),
    Route("POST", "/v1/ca/finish", ca.finish, "access",
          "Finish a CA rotation: retire the old CA once every live host shows a certificate of the new one",
          body="CaFinish", write=True, statuses=(409, 503)),
    Route("POST", "/v1/join", join.join, "access", "A host joins with a join token and a CSR (no API credential)",
          body="Join", statuses=(403, 409, 503), permission=P.PUBLIC),
    Route("GET", "/v1/jointokens", join.list_tokens, "access", "Join tokens (ids, expiry, uses left)", PAGE),
    Route("POST", "/v1/jointokens", join.create_token, "access", "Make a join token (shown once)",
          body="JoinTokenCreate", write=True, created=True, statuses=(404, 409)),
    Route("DELETE", "/v1/jointokens/{id}", join.revoke_token, "access", "Revoke a join token", (ID,),
          write=True, statuses=(404,)),
    Route("POST", "/v1/internal/certificate", join.internal_certificate, "internal",
          "A member's sealed CSR: its certificate (not for users)", body="raw", statuses=(403, 503),
          permission=P.SYSTEM),
    # ---- access: sessions, users, keys, teams, environments and their members
    Route("POST", "/v1/auth/login", users.login, "access", "Log in: a session token (shown once)", body="Login",
          statuses=(401, 429, 503), permission=P.PUBLIC),
    Route("POST", "/v1/auth/logout", users.logout, "access", "End the session this request is made with",
          statuses=(503,), permission=P.AUTHENTICATED),
    Route("GET", "/v1/auth/whoami", users.whoami, "access", "The caller: user, credential, roles, teams",
          permission=P.AUTHENTICATED),
    Route("GET", "/v1/auth/stats", users.auth_stats, "access",
          "This node's counts of authenticated, refused and rate-limited requests and logins"),
    Route("GET", "/v1/users", users.list_users, "access", "Users", PAGE),
    Route("POST", "/v1/users", users.create_user, "access", "Create a user", body="UserCreate", write=True,
          created=True, statuses=(409,)),
    Route("GET", "/v1/users/{name}", users.get_user, "access", "One user (oneself, or anyone for an administrator)",
          (NAME,), statuses=(404,), permission=P.AUTHENTICATED),
    Route("PATCH", "/v1/users/{name}", users.update_user, "access",
          "Change a password (one's own, with the current one) or the admin flag (administrators)", (NAME,),
          body="UserChange", statuses=(404, 409), write=True, permission=P.AUTHENTICATED),
    Route("DELETE", "/v1/users/{name}", users.delete_user, "access", "Remove a user, its keys and its roles",
          (NAME,), statuses=(404, 409), write=True),
    Route("GET", "/v1/apikeys", users.list_keys, "access",
          "API keys and sessions: one's own (an administrator: anyone's)", (*PAGE, USER),
          statuses=(404,), permission=P.AUTHENTICATED),
    Route("POST", "/v1/apikeys", users.create_key, "access", "Make an API key (its token is shown once)",
          body="ApiKeyCreate", statuses=(404, 409), write=True, created=True, permission=P.AUTHENTICATED),
    Route("DELETE", "/v1/apikeys/{id}", users.revoke_key, "access", "Revoke an API key or end a session, everywhere",
          (ID,), statuses=(404,), write=True, permission=P.AUTHENTICATED),
    Route("GET", "/v1/teams", users.list_teams, "access", "Teams", PAGE),
    Route("POST", "/v1/teams", users.create_team, "access", "Create a team", body="TeamCreate", write=True,
          created=True, statuses=(404, 409)),
    Route("PUT", "/v1/teams/{name}", users.set_team, "access", "Replace a team's members", (NAME,),
          body="TeamMembers", write=True, statuses=(404,)),
    Route("DELETE", "/v1/teams/{name}", users.delete_team, "access", "Remove a team (and its roles)", (NAME,),
          write=True, statuses=(404,)),
    Route("POST", "/v1/environments", users.create_environment, "access", "Create an environment",
          body="EnvironmentCreate", write=True, created=True, statuses=(409,)),
    Route("GET", "/v1/environments/{name}", users.get_environment, "access",
          "One environment, its members and their roles", (NAME,), statuses=(404,), permission=P.READ),
    Route("PUT", "/v1/environments/{name}/members/{subject}", users.set_member, "access",
          "Give a user or a team a role in the environment (its owners, administrators)", (NAME, SUBJECT),
          body="RoleGrant", write=True, statuses=(404,), permission=P.MANAGE),
    Route("DELETE", "/v1/environments/{name}/members/{subject}", users.remove_member, "access",
          "Take a user's or a team's role in the environment away", (NAME, SUBJECT), write=True,
          statuses=(404,), permission=P.MANAGE),
)

__all__ = ["PAGE", "ROUTES", "Handler", "Route"]
