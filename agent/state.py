"""The desired state of the cluster: the Raft state machine every agent applies the log to.

Theory of operation. Every change is a command, a msgpack map ``{"op": …, …}`` proposed to Raft.
Once committed it is applied here, on every node, in log order. Applying is deterministic: it
reads nothing but the command, the entry's index and the state (no clock, no randomness; ids come
from the log index), so every node that applied index N holds the same state. A command that is
wrong (unknown id, clashing name, bad spec) changes nothing and returns an error result naming the
field; the API turns that into a 4xx.

    environments  name → {name, created}
    hosts         name → {name, address, labels, cpus, memory, state, subnet, overlay_key, updated}
    subnets       the overlay's /24 leases (:class:`overlay.ipam.SubnetLeases`): one per host, kept
                  across restarts and re-registrations, freed by ``host.remove``
    stacks        id   → {id, environment, name, created}
    services      id   → {id, stack, name, spec, state: active|stopped, version, created, updated}
    instances     id   → {id, service, slot, host, desired: running|stopped, status, exit_code, …}
    kv            key  → {value, create_index, modify_index}
    events        the last MAX_EVENTS events, each {index, kind, message, refs}

``placements.commit`` carries the leader's scheduler decision; it is re-checked when applied (the
state may have moved on since the decision was made) and the parts that no longer fit are dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgpack

from agent import spec as specs
from overlay.ipam import PoolExhausted, SubnetLeases

MAX_EVENTS = 1000
MAX_ERROR = 500  # characters of an instance's error kept in the state
HEALTH_STATES = ("starting", "healthy", "unhealthy")
MAX_KEYS = 16
HOST_STATES = ("active", "reconnecting", "disconnected")
Result = dict[str, Any]


class CommandError(Exception):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


def _need(cmd: dict[str, Any], key: str, kind: type | tuple[type, ...] = str) -> Any:
    value = cmd.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise CommandError("bad_request", f"{key} is required", key)
    return value


class ClusterState:
    """Implements the Raft ``StateMachine`` protocol: ``apply``, ``snapshot``, ``restore``."""

    def __init__(self) -> None:
        self.applied_index = 0
        self.environments: dict[str, dict[str, Any]] = {"default": {"name": "default", "created": 0}}
        self.hosts: dict[str, dict[str, Any]] = {}
        self.stacks: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.instances: dict[str, dict[str, Any]] = {}
        self.kv: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.subnets = SubnetLeases()
        self.keyring: dict[str, Any] = {}  # {"keys": [hex, …], "primary": hex, "index": N}; empty: the derived key only
        self._ops: dict[str, Callable[[dict[str, Any], int], Result]] = {
            "env.create": self._env_create,
            "host.register": self._host_register,
            "host.state": self._host_state,
            "host.remove": self._host_remove,
            "stack.create": self._stack_create,
            "stack.remove": self._stack_remove,
            "service.create": self._service_create,
            "service.update": self._service_update,
            "service.scale": self._service_scale,
            "service.set_state": self._service_set_state,
            "service.remove": self._service_remove,
            "placements.commit": self._placements_commit,
            "instance.status": self._instance_status,
            "instance.remove": self._instance_remove,
            "keys.set": self._keys_set,
            "kv.put": self._kv_put,
            "kv.delete": self._kv_delete,
        }

    # -------------------------------------------------------------- the StateMachine protocol

    def apply(self, entry: Any) -> Result:
        """Apply one committed entry (anything with ``index`` and ``data``); never raises."""
        index = int(entry.index)
        self.applied_index = max(self.applied_index, index)
        if not entry.data:
            return {"ok": True}
        try:
            cmd = msgpack.unpackb(entry.data, raw=False)
            if not isinstance(cmd, dict) or not isinstance(cmd.get("op"), str):
                raise CommandError("bad_request", "a command is a map with an op")
            handler = self._ops.get(cmd["op"])
            if handler is None:
                raise CommandError("bad_request", f"unknown op {cmd['op']!r}", "op")
            return handler(cmd, index)
        except CommandError as exc:
            return {"ok": False, "error": exc.code, "message": exc.message, "field": exc.field}
        except specs.SpecError as exc:
            return {"ok": False, "error": "bad_request", "message": str(exc), "field": exc.field}
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            return {"ok": False, "error": "bad_request", "message": f"malformed command: {exc}", "field": None}

    def snapshot(self) -> bytes:
        data: bytes = msgpack.packb(
            {"applied_index": self.applied_index, "environments": self.environments, "hosts": self.hosts,
             "stacks": self.stacks, "services": self.services, "instances": self.instances, "kv": self.kv,
             "events": self.events, "subnets": self.subnets.to_dict(), "keyring": self.keyring},
            use_bin_type=True,
        )
        return data

    def restore(self, data: bytes) -> None:
        state = msgpack.unpackb(data, raw=False)
        self.applied_index = state["applied_index"]
        for key in ("environments", "hosts", "stacks", "services", "instances", "kv"):
            setattr(self, key, dict(state[key]))
        self.events = list(state["events"])
        self.subnets = SubnetLeases.from_dict(state["subnets"]) if "subnets" in state else SubnetLeases()
        self.keyring = dict(state.get("keyring") or {})

    # -------------------------------------------------------------- helpers

    def _event(self, index: int, kind: str, message: str, **refs: str) -> None:
        self.events.append({"index": index, "kind": kind, "message": message, "refs": refs})
        del self.events[:-MAX_EVENTS]

    def _stack(self, stack_id: str) -> dict[str, Any]:
        if stack_id not in self.stacks:
            raise CommandError("not_found", f"no stack {stack_id!r}", "stack")
        return self.stacks[stack_id]

    def _service(self, service_id: str) -> dict[str, Any]:
        if service_id not in self.services:
            raise CommandError("not_found", f"no service {service_id!r}", "service")
        return self.services[service_id]

    def instances_of(self, service_id: str) -> list[dict[str, Any]]:
        return sorted((i for i in self.instances.values() if i["service"] == service_id), key=lambda i: i["slot"])

    def container_name(self, instance: dict[str, Any]) -> str:
        """``stack-service-slot``, as Rancher named them."""
        service = self.services[instance["service"]]
        return f"{self.stacks[service['stack']]['name']}-{service['name']}-{instance['slot']}"

    # -------------------------------------------------------------- environments and hosts

    def _env_create(self, cmd: dict[str, Any], index: int) -> Result:
        name = specs.name(cmd.get("name"))
        if name in self.environments:
            raise CommandError("conflict", f"environment {name!r} exists", "name")
        self.environments[name] = {"name": name, "created": index}
        return {"ok": True, "name": name}

    def _host_register(self, cmd: dict[str, Any], index: int) -> Result:
        name = _need(cmd, "name")
        address = _need(cmd, "address")
        labels = cmd.get("labels") or {}
        if not isinstance(labels, dict):
            raise CommandError("bad_request", "labels must be a map", "labels")
        overlay_key = cmd.get("overlay_key")
        if overlay_key is not None and not (isinstance(overlay_key, str) and len(overlay_key) == 64
                                            and all(c in "0123456789abcdef" for c in overlay_key)):
            raise CommandError("bad_request", "overlay_key must be 32 bytes in lowercase hex", "overlay_key")
        old = self.hosts.get(name, {})
        try:
            leases, subnet = self.subnets.lease(name)
        except PoolExhausted as exc:
            raise CommandError("conflict", str(exc), "subnet") from None
        self.subnets = leases
        self.hosts[name] = {
            "name": name, "address": address, "labels": {str(k): str(v) for k, v in labels.items()},
            "cpus": float(cmd.get("cpus") or 0), "memory": int(cmd.get("memory") or 0),
            "state": old.get("state", "active"), "registered": old.get("registered", index), "updated": index,
            "subnet": str(subnet), "overlay_key": overlay_key if overlay_key is not None else old.get("overlay_key"),
        }
        if not old:
            self._event(index, "host.registered", f"host {name} ({address}) joined", host=name)
        return {"ok": True, "name": name}

    def _host_state(self, cmd: dict[str, Any], index: int) -> Result:
        name, state = _need(cmd, "name"), _need(cmd, "state")
        if name not in self.hosts:
            raise CommandError("not_found", f"no host {name!r}", "name")
        if state not in HOST_STATES:
            raise CommandError("bad_request", f"state must be one of {', '.join(HOST_STATES)}", "state")
        host = self.hosts[name]
        if host["state"] != state:
            self._event(index, "host.state", f"host {name} is {state} (was {host['state']})", host=name)
            host["state"], host["updated"] = state, index
        return {"ok": True}

    def _host_remove(self, cmd: dict[str, Any], index: int) -> Result:
        """Forget a host for good (an operator's decision): its subnet is freed, its slots are placed again."""
        name = _need(cmd, "name")
        if name not in self.hosts:
            raise CommandError("not_found", f"no host {name!r}", "name")
        if self.hosts[name]["state"] != "disconnected":
            raise CommandError("conflict", f"host {name} is {self.hosts[name]['state']}; only a disconnected host "
                               "can be removed", "name")
        del self.hosts[name]
        self.subnets = self.subnets.release(name)
        gone = [i for i, inst in self.instances.items() if inst["host"] == name]
        for inst_id in gone:  # the leader places their slots again
            del self.instances[inst_id]
        self._event(index, "host.removed", f"host {name} removed ({len(gone)} containers to place again); "
                    "its subnet is free", host=name)
        return {"ok": True}

    # -------------------------------------------------------------- stacks and services

    def _stack_create(self, cmd: dict[str, Any], index: int) -> Result:
        env = cmd.get("environment", "default")
        if env not in self.environments:
            raise CommandError("not_found", f"no environment {env!r}", "environment")
        name = specs.name(cmd.get("name"))
        if any(s["name"] == name and s["environment"] == env for s in self.stacks.values()):
            raise CommandError("conflict", f"stack {name!r} exists in environment {env!r}", "name")
        stack_id = f"st{index}"
        self.stacks[stack_id] = {"id": stack_id, "environment": env, "name": name, "created": index}
        self._event(index, "stack.created", f"stack {name} created", stack=stack_id)
        return {"ok": True, "id": stack_id}

    def _stack_remove(self, cmd: dict[str, Any], index: int) -> Result:
        stack = self._stack(_need(cmd, "id"))
        for service in [s for s in self.services.values() if s["stack"] == stack["id"]]:
            self._service_remove({"id": service["id"]}, index)
        del self.stacks[stack["id"]]
        self._event(index, "stack.removed", f"stack {stack['name']} removed", stack=stack["id"])
        return {"ok": True}

    def _service_create(self, cmd: dict[str, Any], index: int) -> Result:
        stack = self._stack(_need(cmd, "stack"))
        name = specs.name(cmd.get("name"))
        if any(s["name"] == name and s["stack"] == stack["id"] for s in self.services.values()):
            raise CommandError("conflict", f"service {name!r} exists in stack {stack['name']!r}", "name")
        spec = specs.service_spec(cmd.get("spec"))
        service_id = f"sv{index}"
        self.services[service_id] = {"id": service_id, "stack": stack["id"], "name": name, "spec": spec,
                                     "state": "active", "version": index, "created": index, "updated": index,
                                     "unplaced": None}
        self._event(index, "service.created", f"service {stack['name']}/{name} created, scale {spec['scale']}",
                    service=service_id)
        return {"ok": True, "id": service_id}

    def _service_update(self, cmd: dict[str, Any], index: int) -> Result:
        service = self._service(_need(cmd, "id"))
        changes = cmd.get("spec")
        if not isinstance(changes, dict):
            raise CommandError("bad_request", "spec must be a map of the fields to change", "spec")
        merged = {**service["spec"], **changes}
        merged["placement"] = changes.get("placement", _raw_placement(service["spec"]["placement"]))
        service["spec"] = specs.service_spec(merged)
        service["version"] = service["updated"] = index
        self._event(index, "service.updated", f"service {service['name']} updated", service=service["id"])
        return {"ok": True}

    def _service_scale(self, cmd: dict[str, Any], index: int) -> Result:
        service = self._service(_need(cmd, "id"))
        scale = cmd.get("scale")
        service["spec"] = specs.service_spec({**service["spec"], "scale": scale,
                                              "placement": _raw_placement(service["spec"]["placement"])})
        service["updated"] = index
        removed = [i["id"] for i in self.instances_of(service["id"]) if i["slot"] > service["spec"]["scale"]]
        for instance_id in removed:
            del self.instances[instance_id]
        self._event(index, "service.scaled", f"service {service['name']} scaled to {scale}", service=service["id"])
        return {"ok": True, "removed": removed}

    def _service_set_state(self, cmd: dict[str, Any], index: int) -> Result:
        service = self._service(_need(cmd, "id"))
        state = _need(cmd, "state")
        if state not in ("active", "stopped"):
            raise CommandError("bad_request", "state must be active or stopped", "state")
        service["state"], service["updated"] = state, index
        for inst in self.instances_of(service["id"]):
            inst["desired"] = "running" if state == "active" else "stopped"
        if cmd.get("restart"):
            for inst in self.instances_of(service["id"]):
                inst["generation"] = index  # a new generation makes the reconciler recreate it
        self._event(index, f"service.{state}", f"service {service['name']} {state}", service=service["id"])
        return {"ok": True}

    def _service_remove(self, cmd: dict[str, Any], index: int) -> Result:
        service = self._service(_need(cmd, "id"))
        for inst in self.instances_of(service["id"]):
            del self.instances[inst["id"]]
        del self.services[service["id"]]
        self._event(index, "service.removed", f"service {service['name']} removed", service=service["id"])
        return {"ok": True}

    # -------------------------------------------------------------- instances

    def _placements_commit(self, cmd: dict[str, Any], index: int) -> Result:
        """The leader's decision for one service: re-checked here, since the state may have moved on."""
        service = self._service(_need(cmd, "service"))
        taken = {i["slot"]: i for i in self.instances_of(service["id"])}
        placed = []
        for slot, host in cmd.get("placements") or []:
            if not (isinstance(slot, int) and 1 <= slot <= service["spec"]["scale"]) or host not in self.hosts:
                continue
            old = taken.get(slot)
            if old is not None and old["host"] == host:
                continue
            if old is not None:
                del self.instances[old["id"]]
            instance_id = f"c{index}-{slot}"
            self.instances[instance_id] = {
                "id": instance_id, "service": service["id"], "slot": slot, "host": host,
                "desired": "running" if service["state"] == "active" else "stopped",
                "status": "pending", "exit_code": None, "error": None, "health": None, "generation": index,
                "created": index,
                "updated": index,
            }
            placed.append(instance_id)
            self._event(index, "instance.placed", f"{service['name']}-{slot} placed on {host}",
                        service=service["id"], instance=instance_id, host=host)
        unplaced = cmd.get("unplaced") or None
        if unplaced != service.get("unplaced"):
            service["unplaced"] = unplaced
            if unplaced:
                self._event(index, "service.unplaced", f"service {service['name']}: {unplaced[0][1]}",
                            service=service["id"])
        return {"ok": True, "placed": placed}

    def _instance_status(self, cmd: dict[str, Any], index: int) -> Result:
        instance_id = _need(cmd, "id")
        inst = self.instances.get(instance_id)
        if inst is None:
            return {"ok": True, "stale": True}  # removed meanwhile: a late report is not an error
        if cmd.get("host") != inst["host"]:
            raise CommandError("conflict", f"instance {instance_id} is assigned to {inst['host']}", "host")
        inst["status"] = _need(cmd, "status")
        inst["exit_code"] = cmd.get("exit_code")
        inst["container_id"] = cmd.get("container_id", inst.get("container_id"))
        inst["ip"] = cmd.get("ip", inst.get("ip"))
        ports = cmd.get("ports", inst.get("ports") or [])
        inst["ports"] = [str(p) for p in ports] if isinstance(ports, list) else []
        inst["address"] = cmd.get("address", inst.get("address"))
        error = cmd.get("error")
        error = error[:MAX_ERROR] if isinstance(error, str) and error else None
        if error is not None and error != inst.get("error"):
            self._event(index, "instance.failed", f"container {instance_id} on {inst['host']}: {error}",
                        instance=instance_id)
        inst["error"] = error
        health = cmd.get("health")
        health = health if health in HEALTH_STATES else None
        detail = cmd.get("health_detail")
        detail = detail[:MAX_ERROR] if isinstance(detail, str) and detail and health != "healthy" else None
        if health == "unhealthy" and inst.get("health") != "unhealthy":
            self._event(index, "instance.unhealthy", f"container {instance_id} on {inst['host']} is unhealthy"
                        + (f": {detail}" if detail else ""), instance=instance_id)
        inst["health"] = health
        inst["health_detail"] = detail
        inst["updated"] = index
        return {"ok": True}

    def _instance_remove(self, cmd: dict[str, Any], index: int) -> Result:
        instance_id = _need(cmd, "id")
        inst = self.instances.pop(instance_id, None)
        if inst is None:
            raise CommandError("not_found", f"no container {instance_id!r}", "id")
        self._event(index, "instance.removed", f"container {instance_id} removed", instance=instance_id)
        return {"ok": True}

    # -------------------------------------------------------------- the gossip/Raft keyring

    def _keys_set(self, cmd: dict[str, Any], index: int) -> Result:
        """The whole keyring after an install, use or remove (computed and checked by the API on the leader)."""
        keys, primary = cmd.get("keys"), cmd.get("primary")
        hexdigits = set("0123456789abcdef")
        if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_KEYS or not all(
                isinstance(k, str) and len(k) == 64 and set(k) <= hexdigits for k in keys):
            raise CommandError("bad_request", f"keys must be 1-{MAX_KEYS} keys of 32 bytes in lowercase hex", "keys")
        if len(set(keys)) != len(keys):
            raise CommandError("bad_request", "a key is listed twice", "keys")
        if primary not in keys:
            raise CommandError("bad_request", "the primary key must be one of the keys", "primary")
        self.keyring = {"keys": list(keys), "primary": primary, "index": index}
        primary_id = hashlib.sha256(bytes.fromhex(str(primary))).hexdigest()[:8]
        self._event(index, "keys.changed", f"keyring: {len(keys)} key(s), primary key id {primary_id}")
        return {"ok": True, "index": index}

    # -------------------------------------------------------------- kv

    def _kv_put(self, cmd: dict[str, Any], index: int) -> Result:
        key = _need(cmd, "key")
        value = cmd.get("value")
        if not isinstance(value, bytes | str):
            raise CommandError("bad_request", "value must be bytes or a string", "value")
        old = self.kv.get(key)
        cas = cmd.get("cas")
        if cas is not None and (old["modify_index"] if old else 0) != cas:
            return {"ok": False, "error": "cas_failed", "message": f"{key} is at index "
                    f"{old['modify_index'] if old else 0}, not {cas}", "field": "cas"}
        self.kv[key] = {"value": value, "create_index": old["create_index"] if old else index, "modify_index": index}
        return {"ok": True, "index": index}

    def _kv_delete(self, cmd: dict[str, Any], index: int) -> Result:
        key = _need(cmd, "key")
        old = self.kv.get(key)
        cas = cmd.get("cas")
        if cas is not None and (old["modify_index"] if old else 0) != cas:
            return {"ok": False, "error": "cas_failed", "message": f"{key} is not at index {cas}", "field": "cas"}
        if old is None:
            return {"ok": True, "deleted": False}
        del self.kv[key]
        return {"ok": True, "deleted": True}


def _raw_placement(normalised: dict[str, Any]) -> dict[str, Any]:
    """Turn a normalised placement back into request form, for re-validation after a change."""
    return {"constraints": normalised["must"], "preferences": normalised["should"],
            "strategy": normalised["strategy"], "one_per_host": normalised["one_per_host"]}


def command(op: str, **fields: Any) -> bytes:
    """Encode a command for Raft."""
    data: bytes = msgpack.packb({"op": op, **fields}, use_bin_type=True)
    return data
