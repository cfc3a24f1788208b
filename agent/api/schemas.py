"""The JSON schemas of request and response bodies, as the OpenAPI document publishes them.

They are written from the same constants the validators use (:mod:`agent.model.spec`,
:mod:`agent.model.scheduler`): names, patterns, ranges, lengths, required fields and refused extra
fields are declared exactly as the server enforces them. What a schema cannot say — a health check's
timeout longer than its interval, a port published twice, a name already taken — the server answers
with a 400 or 409 that the route declares. ``tests/unit/test_api_fuzz.py`` holds the server to it.
"""

from __future__ import annotations

from agent.api import drills
from agent.api.join import JOIN_RE
from agent.api.passwords import MAX_PASSWORD, MAX_TTL, MIN_PASSWORD, MIN_TTL, TTL_PATTERN
from agent.model.access import MAX_DESCRIPTION
from agent.model.external import HOSTNAME_RE as EXTERNAL_HOSTNAME
from agent.model.external import MAX_ADDRESSES as EXTERNAL_MAX
from agent.model.images import REGISTRY_RE
from agent.model.lb import DRAIN_TIMEOUT, MAX_PRIORITY, MAX_RULES, PATH_RE, TARGET_RE, ServiceKind
from agent.model.mounts import MAX_MOUNTS, MAX_PATH, VOLUME_NAME_PATTERN
from agent.model.policy import Role
from agent.model.scheduler import CONSTRAINT_PATTERN
from agent.model.spec import (
    CAPABILITY_PATTERN,
    DURATION_PATTERN,
    HEALTH_INTERVAL,
    HEALTH_RETRIES,
    HEALTH_START_PERIOD,
    HEALTH_TIMEOUT,
    HOSTNAME_PATTERN,
    MAX_CPUS,
    MAX_IMAGE,
    MAX_MEMORY,
    MAX_RESTART_ATTEMPTS,
    MAX_SCALE,
    MAX_STOP_GRACE,
    MAX_STRING,
    MEMORY_PATTERN,
    NAME_PATTERN,
    PORT_PATTERN,
    SIGNAL_PATTERN,
    SYSCTL_PATTERN,
)
from agent.model.strategy import DEADLINE, MAX_INTERVAL, MAX_MIN_HEALTHY, FailureAction, Order

Schema = dict[str, object]

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NULL: Schema = {"type": "null"}
OBJ: Schema = {"type": "object"}
NAME: Schema = {"type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": 63}
PORT: Schema = {"type": "integer", "minimum": 1, "maximum": 65535}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, NULL]}


def duration(low: float, high: float) -> Schema:
    return {"anyOf": [{"type": "number", "minimum": low, "maximum": high},
                      {"type": "string", "pattern": DURATION_PATTERN,
                       "description": f"a duration such as 5s or 500ms, from {low:g} s to {high:g} s"}]}


STRING_MAP: Schema = {"anyOf": [
    {"type": "object", "propertyNames": {"minLength": 1},
     "additionalProperties": {"anyOf": [STR, {"type": "number"}]}},
    {"type": "array", "items": {"type": "string", "pattern": "^[^=][^=]*="}, "description": "KEY=VALUE strings"},
    NULL,
]}

_CHECK_COMMON: dict[str, Schema] = {
    "interval": duration(*HEALTH_INTERVAL),
    "timeout": {**duration(*HEALTH_TIMEOUT), "description": "not longer than the interval"},
    "retries": {"type": "integer", "minimum": HEALTH_RETRIES[0], "maximum": HEALTH_RETRIES[1]},
    "start_period": duration(*HEALTH_START_PERIOD),
    "on_unhealthy": {"enum": ["recreate", "none"]},
}
HEALTH_PATH: Schema = {"type": "string", "pattern": "^/[^ \\r\\n\\t]*$", "maxLength": MAX_STRING}
HEALTH_CHECK: Schema = {"oneOf": [
    {"type": "object", "additionalProperties": False, "required": ["type", "port"],
     "properties": {"type": {"const": "http"}, "port": PORT, "path": HEALTH_PATH, **_CHECK_COMMON}},
    {"type": "object", "additionalProperties": False, "required": ["type", "port"],
     "properties": {"type": {"const": "tcp"}, "port": PORT, **_CHECK_COMMON}},
    {"type": "object", "additionalProperties": False, "required": ["type", "command"],
     "properties": {"type": {"const": "command"},
                    "command": {"type": "string", "pattern": "\\S", "maxLength": MAX_STRING}, **_CHECK_COMMON}},
    NULL,
]}
SIZE: Schema = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_MEMORY},
                          {"type": "string", "pattern": MEMORY_PATTERN, "description": "512m, 1g, 64MiB …"}]}
CONSTRAINTS: Schema = nullable({"type": "array", "items": {"type": "string", "pattern": CONSTRAINT_PATTERN}})

ABS_PATH: Schema = {"type": "string", "pattern": "^/[^:\\x00\\n\\r]*$", "maxLength": MAX_PATH,
                    "description": "an absolute, normalised path"}
VOLUME: Schema = {"type": "string", "pattern": VOLUME_NAME_PATTERN}
_MOUNT_COMMON: dict[str, Schema] = {"target": ABS_PATH, "read_only": {"type": "boolean"}}
MOUNT: Schema = {"oneOf": [
    {"type": "object", "additionalProperties": False, "required": ["type", "target"], "properties": {
        "type": {"const": "volume"}, "source": VOLUME, "scope": {"enum": ["stack", "instance", "external"]},
        **_MOUNT_COMMON}, "description": "a named volume (no source: an anonymous, instance volume)"},
    {"type": "object", "additionalProperties": False, "required": ["type", "source", "target"], "properties": {
        "type": {"const": "bind"}, "source": ABS_PATH, **_MOUNT_COMMON},
     "description": "a host folder, only under the cluster's bind_paths"},
    {"type": "object", "additionalProperties": False, "required": ["type", "source"], "properties": {
        "type": {"enum": ["config", "secret"]}, "source": VOLUME, "mode": {"type": "integer", "minimum": 0,
                                                                          "maximum": 0o777}, **_MOUNT_COMMON},
     "description": "a config (target required) or secret (default target /run/secrets/SOURCE)"},
    {"type": "object", "additionalProperties": False, "required": ["type", "target"], "properties": {
        "type": {"const": "tmpfs"}, "size": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_MEMORY},
                                                        {"type": "string", "pattern": MEMORY_PATTERN}]},
        **_MOUNT_COMMON}},
]}
CONFIG_FILES: Schema = {"type": "array", "minItems": 1, "maxItems": 256, "items": {
    "type": "object", "additionalProperties": False, "required": ["path", "data"], "properties": {
        "path": {"type": "string", "maxLength": 1024, "description": "relative; \"\" for a single file"},
        "data": {"type": "string", "contentEncoding": "base64"}}}}

PORT_NUMBER_SCHEMA: Schema = {"type": "integer", "minimum": 1, "maximum": 65535}
LB_TARGET: Schema = {"type": "string", "pattern": TARGET_RE.pattern, "description": "SERVICE or STACK/SERVICE"}
LB_RULE: Schema = {"type": "object", "additionalProperties": False, "required": ["port", "target", "target_port"],
                   "properties": {
                       "port": PORT_NUMBER_SCHEMA, "protocol": {"enum": ["http", "tcp"]},
                       "hostname": nullable({"type": "string", "maxLength": 255,
                                             "description": "www.example.com, *.example.com or example.* (http)"}),
                       "path": nullable({"type": "string", "pattern": PATH_RE.pattern,
                                         "description": "a path prefix (http)"}),
                       "target": LB_TARGET, "target_port": PORT_NUMBER_SCHEMA,
                       "priority": {"type": "integer", "minimum": 0, "maximum": MAX_PRIORITY}}}
STRATEGY: Schema = {"type": "object", "additionalProperties": False, "properties": {
    "parallelism": {"type": "integer", "minimum": 1, "maximum": 1000,
                    "description": "slots replaced together (at most the service's containers)"},
    "interval": {**duration(0, MAX_INTERVAL), "description": "between the end of a batch and the next"},
    "order": nullable({"enum": [o.value for o in Order]}),
    "min_healthy": {**duration(0, MAX_MIN_HEALTHY), "description": "a new container stays running (healthy) so long"},
    "healthy_deadline": {**duration(*DEADLINE), "description": "longer than min_healthy"},
    "failure_action": {"enum": [a.value for a in FailureAction]},
    "max_failure_ratio": {"type": "number", "minimum": 0, "maximum": 1},
}, "description": "how an upgrade replaces the containers (docs/UPGRADES.md)"}
SPEC_PROPERTIES: dict[str, Schema] = {
    "image": {"type": "string", "pattern": "\\S", "maxLength": MAX_IMAGE},
    "command": {"anyOf": [STR, {"type": "array", "items": STR}, NULL]},
    "environment": STRING_MAP,
    "ports": nullable({"type": "array", "description": "no published port twice", "items": {"anyOf": [
        {"type": "string", "pattern": PORT_PATTERN, "description": "[PUBLISHED:]TARGET[/tcp|udp]"},
        PORT,
        {"type": "object", "additionalProperties": False, "required": ["target"],
         "properties": {"target": PORT, "published": nullable(PORT), "protocol": {"enum": ["tcp", "udp"]},
                        "host_ip": nullable({"type": "string", "description": "an IPv4 or IPv6 address"})}},
    ]}}),
    "labels": STRING_MAP,
    "scale": {"type": "integer", "minimum": 0, "maximum": MAX_SCALE},
    "restart": {"enum": ["always", "on-failure", "no", "unless-stopped"]},
    "cpus": {"type": "number", "minimum": 0, "maximum": MAX_CPUS},
    "memory": SIZE,
    "placement": {"anyOf": [{"type": "object", "additionalProperties": False, "properties": {
        "constraints": CONSTRAINTS, "preferences": CONSTRAINTS, "must": CONSTRAINTS, "should": CONSTRAINTS,
        "strategy": {"enum": ["spread", "pack"]}, "one_per_host": {"type": "boolean"},
        "spread": nullable({"type": "array", "maxItems": 8, "items": {"type": "string"},
                            "description": "host label keys whose values the instances spread over"})}}, NULL]},
    "health_check": HEALTH_CHECK,
    "mounts": nullable({"type": "array", "maxItems": MAX_MOUNTS, "description": "no target twice", "items": MOUNT}),
    "on_host_loss": {"enum": ["wait", "recreate-empty"], "description": "when the host a volume lives on is lost: "
                     "wait for it (default), or start again elsewhere on an empty volume"},
    "mode": {"enum": ["replicated", "global"], "description": "global: one on every host its placement allows"},
    "pull": {"enum": ["if-not-present", "always"],
             "description": "fetch the image only when the host has none of that name (default), or before "
                            "every container it creates"},
    # since issue 16 (docs/COMPOSE.md says which compose key each one comes from)
    "entrypoint": nullable({"type": "array", "items": STR}),
    "user": nullable({"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}(:[A-Za-z0-9_.-]{1,64})?$"}),
    "working_dir": nullable({"type": "string", "pattern": "^/", "description": "an absolute, normalised path"}),
    "hostname": nullable({"type": "string", "pattern": HOSTNAME_PATTERN,
                          "description": "default: the container's name"}),
    "cap_add": nullable({"type": "array", "maxItems": 64, "items": {"type": "string", "pattern": CAPABILITY_PATTERN}}),
    "cap_drop": nullable({"type": "array", "maxItems": 64, "items": {"type": "string", "pattern": CAPABILITY_PATTERN}}),
    "read_only": nullable({"type": "boolean"}),
    "init": nullable({"type": "boolean"}),
    "sysctls": {"anyOf": [{"type": "object", "propertyNames": {"pattern": SYSCTL_PATTERN},
                           "additionalProperties": {"anyOf": [STR, {"type": "number"}]}},
                          {"type": "array", "items": {"type": "string", "pattern": "^[^=][^=]*="}}, NULL]},
    "ulimits": nullable({"type": "object", "propertyNames": {"pattern": "^[a-z]{1,16}$"}, "additionalProperties": {
        "anyOf": [{"type": "integer", "minimum": -1},
                  {"type": "object", "additionalProperties": False, "required": ["soft", "hard"],
                   "properties": {"soft": {"type": "integer", "minimum": -1},
                                  "hard": {"type": "integer", "minimum": -1}}}]}}),
    "extra_hosts": nullable({"type": "array", "items": {"type": "string", "description": "HOST:IP or HOST=IP"}}),
    "dns": {"anyOf": [STR, {"type": "array", "maxItems": 8, "items": STR}, NULL],
            "description": "name server addresses"},
    "stop_signal": nullable({"type": "string", "pattern": SIGNAL_PATTERN}),
    "stop_grace_period": nullable(duration(0, MAX_STOP_GRACE)),
    "shm_size": SIZE,
    "expose": nullable({"type": "array", "items": {"anyOf": [
        PORT, {"type": "string", "pattern": "^[0-9]+(/(tcp|udp))?$"}]}}),
    "privileged": nullable({"type": "boolean"}),
    "tty": nullable({"type": "boolean"}),
    "stdin_open": nullable({"type": "boolean"}),
    "cpu_limit": {"type": "number", "minimum": 0, "maximum": MAX_CPUS, "description": "0: no limit"},
    "memory_limit": {**SIZE, "description": "0: no limit"},
    "restart_max_attempts": {"type": "integer", "minimum": 0, "maximum": MAX_RESTART_ATTEMPTS,
                             "description": "with on-failure: Docker's MaximumRetryCount (0: no limit)"},
    "restart_delay": duration(0, 3600),
    "restart_window": duration(0, 86400),
    "depends_on": nullable({"type": "object", "propertyNames": {"pattern": NAME_PATTERN},
                            "additionalProperties": {"enum": ["started", "healthy", "completed"]}}),
    "service_labels": STRING_MAP,
    "aliases": nullable({"type": "array", "maxItems": 32, "items": {"type": "string", "pattern": NAME_PATTERN}}),
    "no_new_privileges": nullable({"type": "boolean"}),
    "kind": {"enum": [k.value for k in ServiceKind],
             "description": "container (the default: needs an image), load-balancer (needs lb; runs HAProxy) or "
                            "external (needs external; runs nothing: a DNS name for outside addresses or a host)"},
    "external": nullable({"type": "object", "additionalProperties": False, "properties": {
        "addresses": nullable({"type": "array", "maxItems": EXTERNAL_MAX, "items": {"type": "string", "format": "ipv4"},
                               "description": "A records (not 10.42.0.0/16, the containers' own)"}),
        "hostname": nullable({"type": "string", "pattern": EXTERNAL_HOSTNAME.pattern,
                              "description": "a CNAME target outside corral.internal"}),
    }, "description": "kind: external only: exactly one of addresses and hostname"}),
    "links": nullable({"type": "object", "maxProperties": 64, "propertyNames": {"pattern": NAME_PATTERN},
                       "additionalProperties": {"type": "string", "pattern": NAME_PATTERN},
                       "description": "compose links: ALIAS → SERVICE of the same stack, resolved in this "
                                      "service's containers only"}),
    "lb": nullable({"type": "object", "additionalProperties": False, "required": ["rules"], "properties": {
        "rules": {"type": "array", "minItems": 1, "maxItems": MAX_RULES, "items": LB_RULE},
        "default": nullable({"type": "object", "additionalProperties": False, "required": ["target", "port"],
                             "properties": {"target": LB_TARGET, "port": PORT_NUMBER_SCHEMA},
                             "description": "where http requests no rule matches go (none: 503)"}),
        "stickiness": nullable({"type": "boolean", "description": "a cookie keeps a client on one container"}),
        "forwarded_for": nullable({"type": "boolean", "description": "http: X-Forwarded-For/-Proto (default true)"}),
        "proxy_protocol": nullable({"type": "boolean", "description": "tcp: PROXY protocol v1 to the containers"}),
        "drain_timeout": {"type": "number", "minimum": DRAIN_TIMEOUT[0], "maximum": DRAIN_TIMEOUT[1],
                          "description": "seconds in-flight requests of a leaving container may take (default 10)"},
    }, "description": "a load balancer's port rules (kind: load-balancer only)"}),
    "update_config": nullable(STRATEGY),
    "rollback_config": nullable(STRATEGY),
}
UPGRADE_SPEC: dict[str, Schema] = {k: v for k, v in SPEC_PROPERTIES.items() if k not in ("scale", "kind", "mode")}

ENTITY: Schema = {"type": "object"}
PASSWORD: Schema = {"type": "string", "minLength": MIN_PASSWORD, "maxLength": MAX_PASSWORD}
TTL: Schema = {"anyOf": [{"type": "integer", "minimum": MIN_TTL, "maximum": MAX_TTL},
                         {"type": "string", "pattern": TTL_PATTERN, "description": "12h, 90d, 3600s …"}]}
ROLE: Schema = {"enum": [r.value for r in Role]}

_TEXT: Schema = {"type": "string", "maxLength": drills.MAX_TEXT}
DRILL_RESULT: Schema = {"type": "object", "required": ["name", "verdict"], "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "pattern": drills.DRILL_NAME},
                            "verdict": {"enum": list(drills.VERDICTS)}, "reason": nullable(_TEXT),
                            "action": _TEXT, "expect": _TEXT,
                            "happened": {"type": "array", "maxItems": drills.MAX_LINES, "items": _TEXT},
                            "figures": {**OBJ, "description": "the drill's figures by name"}}}

SCHEMAS: dict[str, Schema] = {
    "Error": {"type": "object", "required": ["error", "message"], "properties": {
        "error": STR, "message": STR, "details": OBJ}},
    "Page": {"type": "object", "required": ["items", "total", "limit", "offset"], "properties": {
        "items": {"type": "array", "items": OBJ}, "total": INT, "limit": INT, "offset": INT}},
    "StackCreate": {"type": "object", "required": ["name"], "additionalProperties": False,
                    "properties": {"name": NAME, "environment": NAME}},
    "ServiceSpec": {"type": "object", "additionalProperties": False,
                    "properties": SPEC_PROPERTIES},
    "ServiceChange": {"type": "object", "additionalProperties": False, "minProperties": 1,
                      "properties": SPEC_PROPERTIES,
                      "description": "the fields to change; a placement given replaces the whole placement"},
    "ServiceCreate": {"type": "object", "required": ["name", "stack"], "additionalProperties": False,
                      "description": "image is required for kind container, lb for kind load-balancer, "
                                     "external for kind external",
                      "properties": {"name": NAME, "stack": {"type": "string", "minLength": 1, "maxLength": 256},
                                     **SPEC_PROPERTIES}},
    "UpgradeStart": {"type": "object", "required": ["spec"], "additionalProperties": False, "properties": {
        "spec": {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": UPGRADE_SPEC,
                 "description": "the fields to change (not the scale, kind or mode); it must change something"},
        "strategy": nullable(STRATEGY), "rollback_strategy": nullable(STRATEGY)}},
    "DrillReport": {"type": "object", "required": ["seed", "hosts", "drills"], "additionalProperties": False,
                    "description": f"what `corral drill` prints, as JSON (at most {drills.MAX_REPORT} bytes)",
                    "properties": {
                        "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                        "hosts": {"type": "integer", "minimum": 1, "maximum": 1000},
                        "started": nullable({"type": "number", "minimum": 0, "maximum": 1e11}),
                        "finished": nullable({"type": "number", "minimum": 0, "maximum": 1e11}),
                        "drills": {"type": "array", "maxItems": drills.MAX_DRILLS, "items": DRILL_RESULT}}},
    "Scale": {"type": "object", "required": ["scale"], "additionalProperties": False,
              "properties": {"scale": {"type": "integer", "minimum": 0, "maximum": MAX_SCALE}}},
    "KeyChange": {"type": "object", "required": ["action", "key"], "additionalProperties": False, "properties": {
        "action": {"enum": ["install", "use", "remove"]},
        "key": {"type": "string", "pattern": "^[A-Za-z0-9+/]{43}=$", "description": "32 bytes, base64"}}},
    "Login": {"type": "object", "required": ["user", "password"], "additionalProperties": False, "properties": {
        "user": {"type": "string", "minLength": 1, "maxLength": 63}, "password": PASSWORD, "ttl": nullable(TTL)}},
    "UserCreate": {"type": "object", "required": ["name", "password"], "additionalProperties": False,
                   "properties": {"name": NAME, "password": PASSWORD, "admin": {"type": "boolean"}}},
    "UserChange": {"type": "object", "additionalProperties": False, "properties": {
        "password": PASSWORD, "current_password": {**PASSWORD, "description": "needed to change one's own"},
        "admin": nullable({"type": "boolean"})}},
    "ApiKeyCreate": {"type": "object", "additionalProperties": False, "properties": {
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION}, "environment": nullable(NAME),
        "role": nullable(ROLE), "user": {"type": "string", "minLength": 1, "maxLength": 63},
        "ttl": {**nullable(TTL), "description": "default 90 days; null: never expires"},
        "metrics": {"type": "boolean", "description": "a key that can only scrape /metrics (administrators; "
                    "no environment or role)"}}},
    "TeamCreate": {"type": "object", "required": ["name"], "additionalProperties": False,
                   "properties": {"name": NAME, "members": {"type": "array", "items": STR}}},
    "TeamMembers": {"type": "object", "required": ["members"], "additionalProperties": False,
                    "properties": {"members": {"type": "array", "items": STR}}},
    "EnvironmentCreate": {"type": "object", "required": ["name"], "additionalProperties": False,
                          "properties": {"name": NAME}},
    "RoleGrant": {"type": "object", "required": ["role"], "additionalProperties": False, "properties": {"role": ROLE}},
    "Join": {"type": "object", "required": ["token", "name", "address", "csr"], "additionalProperties": False,
             "properties": {"token": {"type": "string", "pattern": JOIN_RE.pattern}, "name": NAME,
                            "address": {"type": "string", "format": "ipv4"},
                            "csr": {"type": "string", "maxLength": 4096}, "manager": {"type": "boolean"}}},
    "JoinTokenCreate": {"type": "object", "additionalProperties": False, "properties": {
        "ttl": {**nullable(TTL), "description": "default 24 hours"},
        "uses": nullable({"type": "integer", "minimum": 1, "maximum": 10_000}),
        "environment": {**NAME, "description": "the environment joining hosts belong to (default: default)"},
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION}}},
    "RegistrySet": {"type": "object", "required": ["host", "username", "password"], "additionalProperties": False,
                    "properties": {"host": {"type": "string", "maxLength": 255, "pattern": REGISTRY_RE.pattern,
                                            "description": "HOST[:PORT]"},
                                   "username": {"type": "string", "pattern": r"^[^:\n\r\x00]{1,255}$"},
                                   "password": {"type": "string", "minLength": 1, "maxLength": 1024}}},
    "CaFinish": {"type": "object", "additionalProperties": False, "properties": {
        "force": {"type": "boolean",
                  "description": "retire the old CA even if a live host still shows its certificate"}}},
    "HostMove": {"type": "object", "required": ["environment"], "additionalProperties": False,
                 "properties": {"environment": NAME}},
    "StackDeploy": {"type": "object", "required": ["services"], "additionalProperties": False, "properties": {
        "environment": NAME,
        "services": {"type": "object", "minProperties": 1, "propertyNames": {"pattern": NAME_PATTERN},
                     "additionalProperties": {"type": "object", "additionalProperties": False,
                                              "properties": SPEC_PROPERTIES}},
        "configs": nullable({"type": "object", "propertyNames": {"pattern": VOLUME_NAME_PATTERN},
                             "additionalProperties": {"type": "object", "required": ["files"],
                                                      "additionalProperties": False, "properties": {
                                                          "secret": {"type": "boolean"}, "files": CONFIG_FILES}}}),
        "prune": {"type": "boolean", "description": "remove the stack's services the file does not name"}}},
    "VolumeCreate": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
        "name": VOLUME, "environment": NAME, "host": nullable(STR), "labels": STRING_MAP}},
    "ConfigCreate": {"type": "object", "required": ["name", "files"], "additionalProperties": False, "properties": {
        "name": VOLUME, "environment": NAME, "secret": {"type": "boolean"}, "files": CONFIG_FILES}},
    "Settings": {"type": "object", "required": ["bind_paths"], "additionalProperties": False, "properties": {
        "bind_paths": {"type": "array", "maxItems": 32, "items": ABS_PATH,
                       "description": "host folders services may bind-mount (and all under them)"}}},
    "Entity": ENTITY,
}

__all__ = ["SCHEMAS", "SPEC_PROPERTIES", "Schema"]
