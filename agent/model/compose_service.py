"""One compose service → a service spec in the API's request form (see docs/COMPOSE.md for every key).

Each key of a service is in exactly one of three tables: :data:`MAPPED` (a function that writes spec
fields), :data:`IGNORED` (a warning with the reason) or :data:`REFUSED` (an error with the reason);
a key in none of them (a typo, a key from a newer compose) is refused too. ``x-*`` keys are the
file's own and ignored, but ``x-corral``, which is Corral's.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping

from agent.model import compose_text
from agent.model import external as external_rules
from agent.model import lb as lb_rules
from agent.model.compose_context import Build, Context, Service, flag, number, str_map, strings, text, whole
from agent.model.compose_mounts import file_mounts, tmpfs_mounts, volume_mounts
from agent.model.errors import SpecError
from agent.model.spec import HEALTH_INTERVAL, NAME_RE, duration

PULL = {"always": "always", "missing": "if-not-present", "if_not_present": "if-not-present",
        "build": "if-not-present"}
PULL_WARNED = {"never": "the image is fetched when a host lacks it (Corral's if-not-present)",
               "daily": "Corral fetches when a host lacks the image, or before every container with always",
               "weekly": "Corral fetches when a host lacks the image, or before every container with always"}
BUILD_KEYS = {"context", "dockerfile", "args"}
BUILT = "corral-build/pending"
"""What a service to be built names as its image until its build is tagged (never sent as such)."""
RESTART = {"no": "no", "always": "always", "on-failure": "on-failure", "unless-stopped": "unless-stopped"}
CONDITION = {"any": "always", "on-failure": "on-failure", "none": "no"}
DEPENDS = {"service_started": "started", "service_healthy": "healthy",
           "service_completed_successfully": "completed"}
DOCKER_HEALTH: dict[str, object] = {"interval": 30.0, "timeout": 30.0, "retries": 3, "start_period": 0.0}
"""Docker's defaults for a health check's timing, which a compose file's check assumes."""


# ---------------------------------------------------------------------------- simple keys


def _image(s: Service, v: object) -> None:
    if s.build is None:
        s.spec["image"] = text(s.ctx, v, s.at("image"), "an image name")


def _build(s: Service, value: object) -> None:
    path = s.at("build")
    if isinstance(value, str) and value.strip():
        s.build = Build(value.strip())
    else:
        if not isinstance(value, Mapping) or not isinstance(value.get("context", "."), str):
            raise s.error("build", "is a folder, or a map with context, dockerfile and args")
        unknown = sorted(set(value) - BUILD_KEYS)
        if unknown:
            raise s.error(f"build.{unknown[0]}", "is not supported (context, dockerfile and args are)")
        dockerfile = value.get("dockerfile", "Dockerfile")
        if not isinstance(dockerfile, str) or not dockerfile or dockerfile.startswith("/") \
                or ".." in dockerfile.split("/"):
            raise s.error("build.dockerfile", "is a path inside the context")
        args = str_map(s.ctx, value.get("args"), f"{path}.args", null_from_env=True)
        s.build = Build(str(value.get("context", ".")), dockerfile, args)
    s.spec["image"] = BUILT


def _words(s: Service, key: str, value: object) -> list[str] | None:
    """A string split as a shell would (compose does: no shell runs it), or a list of strings."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise s.error(key, f"cannot be split into words: {exc}") from None
    if not isinstance(value, list):
        raise s.error(key, "must be a string or a list of strings")
    return [text(s.ctx, v, s.at(f"{key}[{i}]")) for i, v in enumerate(value)]


def _command(s: Service, v: object) -> None:
    words = _words(s, "command", v)
    if words is not None:
        s.spec["command"] = words


def _entrypoint(s: Service, v: object) -> None:
    words = _words(s, "entrypoint", v)
    if words is not None:
        s.spec["entrypoint"] = words


def _environment(s: Service, v: object) -> None:
    env = dict(s.spec.get("environment") or {})  # type: ignore[call-overload]
    env.update(str_map(s.ctx, v, s.at("environment"), null_from_env=True))
    s.spec["environment"] = env


def _env_file(s: Service, value: object) -> None:
    entries: list[tuple[str, bool, str]] = []
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        where = s.at(f"env_file[{i}]") if isinstance(value, list) else s.at("env_file")
        if isinstance(item, Mapping):
            unknown = sorted(set(item) - {"path", "required", "format"})
            if unknown:
                raise s.ctx.error(f"{where}.{unknown[0]}", "is not a field of an env_file (path, required)")
            if item.get("format") not in (None, "raw"):
                raise s.ctx.error(f"{where}.format", "only raw is known")
            entries.append((text(s.ctx, item.get("path"), f"{where}.path", "a file's path"),
                            flag(s.ctx, item.get("required", True), f"{where}.required"), where))
        else:
            entries.append((text(s.ctx, item, where, "a file's path"), True, where))
    env: dict[str, str] = {}
    for file, required, where in entries:
        content = s.ctx.read(file)
        if content is None:
            if required:
                raise s.ctx.error(where, f"{file} is not there (required: false makes it optional)")
            s.ctx.warn(where, f"{file} is not there: skipped (required: false)")
            continue
        try:
            env.update(compose_text.dotenv(content, s.ctx.lookup, file))
        except compose_text.TextError as exc:
            raise s.ctx.error(where, str(exc)) from None
    # environment: wins over env_file whatever the order of the keys
    s.spec["environment"] = {**env, **dict(s.spec.get("environment") or {})}  # type: ignore[call-overload]


def _labels(s: Service, v: object) -> None:
    s.spec["labels"] = str_map(s.ctx, v, s.at("labels"))


def _restart(s: Service, v: object) -> None:
    raw = text(s.ctx, v, s.at("restart"))
    policy, _, attempts = raw.partition(":")
    if policy not in RESTART or (attempts and (policy != "on-failure" or not attempts.isdigit())):
        raise s.error("restart", f"{raw!r} is not no, always, on-failure[:N] or unless-stopped")
    s.spec["restart"] = RESTART[policy]
    if attempts:
        s.spec["restart_max_attempts"] = int(attempts)


def _pull_policy(s: Service, v: object) -> None:
    raw = text(s.ctx, v, s.at("pull_policy"))
    if raw in PULL:
        s.spec["pull"] = PULL[raw]
    elif raw in PULL_WARNED or raw.startswith("every_"):
        s.warn("pull_policy", f"{raw}: not supported: {PULL_WARNED.get(raw, PULL_WARNED['daily'])}")
    else:
        raise s.error("pull_policy", "is always, missing, if_not_present, never, build, daily, weekly or every_<d>")


def _copy(field: str, convert: Callable[[Context, object, str], object] = text) -> Callable[[Service, object], None]:
    def apply(s: Service, v: object) -> None:
        if v is not None:
            s.spec[field] = convert(s.ctx, v, s.at(field))
    return apply


def _list(field: str) -> Callable[[Service, object], None]:
    def apply(s: Service, v: object) -> None:
        s.spec[field] = strings(s.ctx, v, s.at(field))
    return apply


def _map(field: str) -> Callable[[Service, object], None]:
    def apply(s: Service, v: object) -> None:
        s.spec[field] = str_map(s.ctx, v, s.at(field))
    return apply


def size_field(field: str, key: str | None = None) -> Callable[[Service, object], None]:
    def apply(s: Service, v: object) -> None:
        s.spec[field] = v if isinstance(v, int) and not isinstance(v, bool) else text(s.ctx, v, s.at(key or field))
    return apply


def seconds_of(s: Service, key: str, v: object) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    parsed = duration(text(s.ctx, v, s.at(key)))
    if parsed is None:
        raise s.error(key, f"{v!r} is not a duration such as 10s, 1m30s or 500ms")
    return parsed


def _stop_grace_period(s: Service, v: object) -> None:
    s.spec["stop_grace_period"] = seconds_of(s, "stop_grace_period", v)


def _container_name(s: Service, v: object) -> None:
    s.warn("container_name", "ignored: a cluster names its containers (STACK-SERVICE-SLOT); other services "
                             f"reach this one as {s.ctx.names.get(s.name, s.name)}")


def _user(s: Service, v: object) -> None:
    s.spec["user"] = text(s.ctx, v, s.at("user"))


def _ulimits(s: Service, v: object) -> None:
    if not isinstance(v, Mapping):
        raise s.error("ulimits", "must be a map of NAME: LIMIT or NAME: {soft, hard}")
    out: dict[str, object] = {}
    for key, limit in v.items():
        if isinstance(limit, Mapping):
            out[key] = {k: whole(s.ctx, x, s.at(f"ulimits.{key}.{k}")) for k, x in limit.items()}
        else:
            out[key] = whole(s.ctx, limit, s.at(f"ulimits.{key}"))
    s.spec["ulimits"] = out


def _extra_hosts(s: Service, v: object) -> None:
    if isinstance(v, Mapping):
        hosts = []
        for host, ip in v.items():
            for one in strings(s.ctx, ip, s.at(f"extra_hosts.{host}")):
                hosts.append(f"{host}={one}")
        s.spec["extra_hosts"] = hosts
    else:
        s.spec["extra_hosts"] = strings(s.ctx, v, s.at("extra_hosts"))


def _expose(s: Service, v: object) -> None:
    out: list[object] = []
    for i, item in enumerate(v if isinstance(v, list) else [v]):
        raw = text(s.ctx, item, s.at(f"expose[{i}]"))
        port, _, proto = raw.partition("/")
        low, dash, high = port.partition("-")
        if dash and low.isdigit() and high.isdigit() and int(low) <= int(high) and int(high) - int(low) < 1000:
            out += [f"{p}/{proto or 'tcp'}" for p in range(int(low), int(high) + 1)]
        else:
            out.append(raw)
    s.spec["expose"] = out


def _scale(s: Service, v: object) -> None:
    s.spec.setdefault("scale", whole(s.ctx, v, s.at("scale")))


def _cpus(s: Service, v: object) -> None:
    s.spec["cpu_limit"] = number(s.ctx, v, s.at("cpus"))


def _network_mode(s: Service, v: object) -> None:
    mode = text(s.ctx, v, s.at("network_mode"))
    if mode in ("bridge", "default"):
        s.warn("network_mode", f"{mode}: ignored: every container is on its stack's overlay network")
        return
    reasons = {"host": "a container on the host's network would bypass the overlay, and its ports would clash "
                       "between replicas on one host",
               "none": "a Corral container is always on its stack's network (health checks and DNS need it)"}
    kind = mode.split(":")[0]
    raise s.error("network_mode", f"{mode} is refused: " + reasons.get(
        kind, "sharing another container's network needs both on one host, which the scheduler does not promise"))


def _networks(s: Service, v: object) -> None:
    aliases: list[str] = []
    if isinstance(v, list):
        names = [text(s.ctx, n, s.at(f"networks[{i}]")) for i, n in enumerate(v)]
        settings: dict[str, object] = {}
    elif isinstance(v, Mapping):
        names, settings = [str(k) for k in v], dict(v)
    else:
        raise s.error("networks", "must be a list of network names or a map")
    for net in names:
        if net not in s.ctx.networks:
            raise s.error(f"networks.{net}", "is not declared in the top-level networks")
        conf = settings.get(net)
        if conf is None:
            continue
        if not isinstance(conf, Mapping):
            raise s.error(f"networks.{net}", "must be a map (aliases, …) or empty")
        for key, value in conf.items():
            if key == "aliases":
                aliases += strings(s.ctx, value, s.at(f"networks.{net}.aliases"))
            else:
                s.warn(f"networks.{net}.{key}", "ignored: one overlay network per stack, addressed by Corral")
    if len(names) > 1:
        s.warn("networks", "the stack has one overlay network: every service is on it")
    if aliases:
        s.spec["aliases"] = [a.lower().replace("_", "-") for a in dict.fromkeys(aliases)]


def _security_opt(s: Service, v: object) -> None:
    for i, opt in enumerate(strings(s.ctx, v, s.at("security_opt"))):
        name, _, value = opt.replace("=", ":", 1).partition(":")
        if name == "no-new-privileges" and value in ("", "true", "false"):
            s.spec["no_new_privileges"] = value != "false"
        else:
            s.warn(f"security_opt[{i}]", f"{opt}: ignored: the engine's default security options apply")


def _profiles(s: Service, v: object) -> None:
    strings(s.ctx, v, s.at("profiles"))  # read by the document (which services are deployed)


def _depends_on(s: Service, v: object) -> None:
    if isinstance(v, list):
        for i, dep in enumerate(v):
            s.depends[text(s.ctx, dep, s.at(f"depends_on[{i}]"), "a service's name")] = "started"
        return
    if not isinstance(v, Mapping):
        raise s.error("depends_on", "must be a list of services or a map")
    for dep, conf in v.items():
        where = f"depends_on.{dep}"
        conf = conf if conf is not None else {}
        if not isinstance(conf, Mapping):
            raise s.error(where, "must be a map (condition, required, restart)")
        for key in conf:
            if key not in ("condition", "required", "restart"):
                raise s.error(f"{where}.{key}", "is not a field of depends_on (condition, required, restart)")
        condition = conf.get("condition", "service_started")
        if condition not in DEPENDS:
            raise s.error(f"{where}.condition", "is service_started, service_healthy or "
                                                "service_completed_successfully")
        s.depends[str(dep)] = DEPENDS[str(condition)]
        if not flag(s.ctx, conf.get("required", True), s.at(f"{where}.required")):
            s.optional.add(str(dep))
        if conf.get("restart") is not None and flag(s.ctx, conf["restart"], s.at(f"{where}.restart")):
            s.warn(f"{where}.restart", "ignored: this service is not restarted when that one is updated")


def _x_corral(s: Service, v: object) -> None:
    if not isinstance(v, Mapping):
        raise s.error("x-corral", "must be a map (on_host_loss)")
    for key, value in v.items():
        if key != "on_host_loss":
            raise s.error(f"x-corral.{key}", "is not a Corral setting of a service (on_host_loss is)")
        if value not in ("wait", "recreate-empty"):
            raise s.error("x-corral.on_host_loss", "is wait or recreate-empty")
        s.spec["on_host_loss"] = value


def _links(s: Service, v: object) -> None:
    """``links: [db, "db:database"]``: the alias ``database`` resolves to ``db`` in this service's
    containers (docs/DNS.md), and ``db`` is started first, as compose does."""
    for i, entry in enumerate(strings(s.ctx, v, s.at("links"))):
        target, _, alias = entry.partition(":")
        alias = alias or target
        if not NAME_RE.match(alias):
            raise s.error(f"links[{i}]", f"the alias {alias!r} must be a DNS name here: lowercase letters, "
                                         "digits, '-'")
        s.links[alias] = target
        s.depends.setdefault(target, "started")


def _x_corral_external(s: Service, v: object) -> None:
    """An external service: ``x-corral-external: {addresses: [192.0.2.10]}`` or ``{hostname: db.example.com}``."""
    if "image" in s.body or "build" in s.body:
        raise s.error("x-corral-external", "an external service runs nothing: it has no image or build")
    try:
        external_rules.parse(v)
    except SpecError as exc:
        raise s.error("x-corral-external" + (exc.field or "external")[8:], exc.problem) from None
    s.spec["kind"] = "external"
    s.spec["external"] = v


def _x_corral_lb(s: Service, v: object) -> None:
    """A load balancer: ``x-corral-lb: {rules: [...], default, stickiness, forwarded_for, proxy_protocol,
    drain_timeout}``; a rule is a map or the CLI's ``PORT[/http|tcp]=SERVICE:PORT[,hostname=H][,path=/P]``."""
    if not isinstance(v, Mapping):
        raise s.error("x-corral-lb", "must be a map with rules")
    if "image" in s.body or "build" in s.body:
        raise s.error("x-corral-lb", "a load balancer runs HAProxy: it has no image or build")
    raw = dict(v)
    rules = raw.get("rules")
    try:
        if isinstance(rules, list):
            raw["rules"] = [lb_rules.rule_from_text(r, f"lb.rules[{i}]") if isinstance(r, str) else r
                            for i, r in enumerate(rules)]
        lb_rules.parse(raw)
    except SpecError as exc:
        raise s.error("x-corral-lb" + (exc.field or "lb")[2:], exc.problem) from None
    s.spec["kind"] = "load-balancer"
    s.spec["lb"] = raw


# ---------------------------------------------------------------------------- ports


PORT_SHORT = re.compile(r"^(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):)?(?:(?P<published>[0-9-]*):)?"
                        r"(?P<target>[0-9-]+)(?:/(?P<proto>[a-z]+))?$")


def _ports(s: Service, v: object) -> None:
    if not isinstance(v, list):
        raise s.error("ports", "must be a list")
    out: list[object] = []
    for i, item in enumerate(v):
        key = f"ports[{i}]"
        if isinstance(item, Mapping):
            out.append(_long_port(s, key, item))
            continue
        raw = text(s.ctx, item, s.at(key), "a port such as 8080:80")
        match = PORT_SHORT.match(raw)
        if match and "-" in (match.group("published") or "") + match.group("target"):
            raise s.error(key, f"{raw}: port ranges are not supported: list each port")
        out.append(raw)
    s.spec["ports"] = out


def _long_port(s: Service, key: str, item: Mapping[str, object]) -> dict[str, object]:
    port: dict[str, object] = {}
    for field, value in item.items():
        where = f"{key}.{field}"
        if field == "target":
            port["target"] = whole(s.ctx, value, s.at(where))
        elif field == "published":
            raw = text(s.ctx, value, s.at(where))
            if "-" in raw:
                raise s.error(where, f"{raw}: port ranges are not supported: list each port")
            port["published"] = whole(s.ctx, raw, s.at(where)) if raw else None
        elif field == "protocol":
            port["protocol"] = text(s.ctx, value, s.at(where))
        elif field == "host_ip":
            port["host_ip"] = text(s.ctx, value, s.at(where))
        elif field == "mode":
            if value == "ingress":
                s.warn(where, "ingress: there is no routing mesh yet: published on the container's host only")
            elif value != "host":
                raise s.error(where, "is host or ingress")
        elif field in ("name", "app_protocol"):
            s.warn(where, "ignored: not used by Corral")
        else:
            raise s.error(where, "is not a field of a port (target, published, protocol, host_ip, mode)")
    return port


# ---------------------------------------------------------------------------- healthcheck


def _healthcheck(s: Service, value: object) -> None:
    """A command check run by Docker in the container, with Docker's timing defaults filled in."""
    if not isinstance(value, Mapping):
        raise s.error("healthcheck", "must be a map")
    for key in value:
        if key not in ("test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"):
            raise s.error(f"healthcheck.{key}", "is not a field of a healthcheck")
    test = value.get("test")
    if (value.get("disable") is not None and flag(s.ctx, value["disable"], s.at("healthcheck.disable"))) \
            or test == ["NONE"]:
        return
    if isinstance(test, str):
        command = test
    elif isinstance(test, list) and len(test) >= 2 and all(isinstance(t, str) for t in test) \
            and test[0] in ("CMD", "CMD-SHELL"):
        command = test[1] if test[0] == "CMD-SHELL" and len(test) == 2 else shlex.join(test[1:])
    elif test is None:  # the image's own HEALTHCHECK, which Docker runs unless a test replaces it
        for key in sorted(set(value) - {"disable", "test"}):
            s.warn(f"healthcheck.{key}", "ignored without a test: the image's own check runs with its own timing")
        return
    else:
        raise s.error("healthcheck.test", "must be a string, [CMD, …] or [CMD-SHELL, command]")
    if value.get("start_interval") is not None:
        s.warn("healthcheck.start_interval", "ignored: checks run at the interval from the start")
    check: dict[str, object] = {"type": "command", "command": command, **DOCKER_HEALTH}
    for key in ("interval", "timeout", "start_period"):
        if value.get(key) is not None:
            check[key] = seconds_of(s, f"healthcheck.{key}", value[key])
    if value.get("retries") is not None:
        check["retries"] = whole(s.ctx, value["retries"], s.at("healthcheck.retries"))
    interval = seconds_of(s, "healthcheck.interval", check["interval"])
    timeout = seconds_of(s, "healthcheck.timeout", check["timeout"])
    if timeout > interval and interval >= HEALTH_INTERVAL[0]:
        if value.get("timeout") is not None:
            s.warn("healthcheck.timeout", f"{timeout:g} s is longer than the interval: {interval:g} s is used")
        check["timeout"] = interval
    s.spec["health_check"] = check


# ---------------------------------------------------------------------------- the tables

MAPPED: dict[str, Callable[[Service, object], None]] = {
    "build": _build, "image": _image, "command": _command, "entrypoint": _entrypoint,
    "env_file": _env_file, "environment": _environment, "labels": _labels, "ports": _ports, "expose": _expose,
    "restart": _restart, "pull_policy": _pull_policy, "healthcheck": _healthcheck, "container_name": _container_name,
    "hostname": _copy("hostname"), "user": _user, "working_dir": _copy("working_dir"),
    "cap_add": _list("cap_add"), "cap_drop": _list("cap_drop"), "read_only": _copy("read_only", flag),
    "init": _copy("init", flag), "privileged": _copy("privileged", flag), "tty": _copy("tty", flag),
    "stdin_open": _copy("stdin_open", flag), "sysctls": _map("sysctls"), "ulimits": _ulimits,
    "extra_hosts": _extra_hosts, "dns": _list("dns"), "stop_signal": _copy("stop_signal"),
    "stop_grace_period": _stop_grace_period, "shm_size": size_field("shm_size"), "tmpfs": tmpfs_mounts,
    "volumes": volume_mounts, "configs": file_mounts("config"), "secrets": file_mounts("secret"),
    "networks": _networks, "network_mode": _network_mode, "security_opt": _security_opt,
    "depends_on": _depends_on, "profiles": _profiles,
    "scale": _scale, "cpus": _cpus, "mem_limit": size_field("memory_limit", "mem_limit"),
    "mem_reservation": size_field("memory", "mem_reservation"), "x-corral": _x_corral,
    "x-corral-lb": _x_corral_lb, "x-corral-external": _x_corral_external, "links": _links,
    "deploy": lambda s, v: None,  # read by compose_deploy, after the service's own keys
}
NOT_APPLIED = "ignored: not applied by Corral yet"
IGNORED: dict[str, str] = {
    "annotations": "ignored: Corral keeps no annotations",
    "attach": "ignored: logs are read with corral logs",
    "blkio_config": NOT_APPLIED, "cpu_count": NOT_APPLIED, "cpu_percent": NOT_APPLIED, "cpu_shares": NOT_APPLIED,
    "cpu_period": NOT_APPLIED, "cpu_quota": NOT_APPLIED, "cpu_rt_runtime": NOT_APPLIED, "cpu_rt_period": NOT_APPLIED,
    "cpuset": NOT_APPLIED, "mem_swappiness": NOT_APPLIED, "memswap_limit": NOT_APPLIED,
    "oom_kill_disable": NOT_APPLIED, "oom_score_adj": NOT_APPLIED, "pids_limit": NOT_APPLIED,
    "develop": "ignored: compose watch is a development loop, not a deployment",
    "dns_opt": NOT_APPLIED, "dns_search": NOT_APPLIED, "domainname": NOT_APPLIED, "group_add": NOT_APPLIED,
    "mac_address": "ignored: the overlay gives addresses",
    "external_links": "ignored: containers outside the cluster are not on its network (an external service, "
                      "x-corral-external, names one)",
    "logging": "ignored: containers log with the engine's default driver (corral logs reads them)",
    "platform": "ignored: a host runs the image's variant for its own platform",
    "pull_refresh_after": "ignored: see pull_policy",
}
REFUSED: dict[str, str] = {
    "cgroup": "a container's cgroup namespace is the engine's default",
    "cgroup_parent": "hosts differ in their cgroups",
    "credential_spec": "Windows containers are not supported",
    "device_cgroup_rules": "devices are a host's, and the scheduler does not place by device",
    "devices": "devices are a host's, and the scheduler does not place by device",
    "extends": "not supported yet: write the service out in full (YAML anchors and '<<' merges work)",
    "gpus": "GPUs are not scheduled",
    "ipc": "sharing an IPC namespace needs the containers on one host, which is not promised",
    "isolation": "Windows containers are not supported",
    "label_file": "not supported yet: give the labels in the file",
    "models": "AI models are not supported",
    "pid": "sharing a PID namespace needs the containers on one host, which is not promised",
    "post_start": "lifecycle hooks are not run",
    "pre_stop": "lifecycle hooks are not run",
    "provider": "provider services are not supported",
    "runtime": "hosts may not have that runtime",
    "storage_opt": "storage options depend on each host's storage driver",
    "use_api_socket": "a container is never given the engine's socket",
    "userns_mode": "user namespaces are the engine's configuration",
    "uts": "sharing the host's UTS namespace is not supported",
    "volumes_from": "sharing another container's volumes needs both on one host, which is not promised",
}


def read(ctx: Context, name: str, path: str, body: Mapping[str, object]) -> Service:
    """The service's own keys (``deploy`` is read after, by :mod:`agent.model.compose_deploy`)."""
    s = Service(ctx, name, path, body)
    if body.get("build") is not None:
        _build(s, body["build"])
    for key, value in body.items():
        if key == "build":
            continue
        if key in MAPPED:
            if value is not None or key in ("command", "entrypoint"):
                MAPPED[key](s, value)
        elif key in IGNORED:
            s.warn(key, IGNORED[key])
        elif key in REFUSED:
            raise s.error(key, f"is refused: {REFUSED[key]}")
        elif not key.startswith("x-"):
            raise s.error(key, "is not a compose key Corral knows")
    if s.mounts:
        s.spec["mounts"] = s.mounts
    return s


__all__ = ["BUILT", "IGNORED", "MAPPED", "REFUSED", "Build", "Service", "read", "seconds_of", "size_field"]
