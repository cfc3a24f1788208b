"""Compose files as people write them: every key is mapped, ignored with a warning, or refused with its path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.model import compose_service, spec
from agent.model.compose import BUILT, Compose, ComposeError, ConfigSource, load, parse

ENV = {"HOME_DIR": "/srv", "TAG": "7", "EMPTY": ""}


def one(service: str, extra: str = "", **kwargs: object) -> tuple[dict[str, object], list[str]]:
    """The spec and warnings of a file whose one service ``web`` has the given body (YAML)."""
    text = "services:\n  web:\n" + textwrap.indent(textwrap.dedent(service).strip("\n"), "    ") + "\n" + extra
    parsed = parse(text, **{"environ": ENV, **kwargs})  # type: ignore[arg-type]
    return parsed.services["web"], parsed.warnings


def refused(text: str, match: str, **kwargs: object) -> str:
    with pytest.raises(ComposeError) as caught:
        parse(text, **{"environ": ENV, **kwargs})  # type: ignore[arg-type]
    assert match in str(caught.value), str(caught.value)
    return str(caught.value)


MAPPED = [
    ("image: corral/base", {"image": "corral/base", "scale": 1}),
    ("image: x\ncommand: httpd -f -p 80 'a b'", {"command": ["httpd", "-f", "-p", "80", "a b"]}),
    ("image: x\ncommand: [sh, -c, 'echo hi']", {"command": ["sh", "-c", "echo hi"]}),
    ("image: x\nentrypoint: /docker-entrypoint.sh --flag", {"entrypoint": ["/docker-entrypoint.sh", "--flag"]}),
    ("image: x\nentrypoint: [tini, --]", {"entrypoint": ["tini", "--"]}),
    ("image: x\nenvironment: [A=1, B=, 'C=x=y']", {"environment": {"A": "1", "B": "", "C": "x=y"}}),
    ("image: x\nenvironment: {A: 1, B: true, C: on, D: 2222:22}",
     {"environment": {"A": "1", "B": "true", "C": "on", "D": "2222:22"}}),
    ("image: x\nenvironment: [HOME_DIR]", {"environment": {"HOME_DIR": "/srv"}}),
    ("image: x\nenvironment: {HOME_DIR: null}", {"environment": {"HOME_DIR": "/srv"}}),
    ("image: x\nports: ['8080:80', '127.0.0.1:8081:81', 2222:22, '53:53/udp', 9000]",
     {"ports": ["8080:80", "127.0.0.1:8081:81", "2222:22", "53:53/udp", "9000"]}),
    ("image: x\nports: [{target: 80, published: '8080', protocol: tcp, host_ip: 127.0.0.1, mode: host}]",
     {"ports": [{"target": 80, "published": 8080, "protocol": "tcp", "host_ip": "127.0.0.1"}]}),
    ("image: x\nexpose: [80, '53/udp', '3000-3002']", {"expose": ["80", "53/udp", "3000/tcp", "3001/tcp", "3002/tcp"]}),
    ("image: x\nlabels: [a=1, b=two]", {"labels": {"a": "1", "b": "two"}}),
    ("image: x\nlabels: {traefik.enable: true}", {"labels": {"traefik.enable": "true"}}),
    ("image: x\nrestart: 'no'", {"restart": "no"}),
    ("image: x\nrestart: no", {"restart": "no"}),
    ("image: x\nrestart: always", {"restart": "always"}),
    ("image: x\nrestart: unless-stopped", {"restart": "unless-stopped"}),
    ("image: x\nrestart: on-failure:5", {"restart": "on-failure", "restart_max_attempts": 5}),
    ("image: x\nhostname: web.local", {"hostname": "web.local"}),
    ("image: x\nuser: '1000:1000'", {"user": "1000:1000"}),
    ("image: x\nuser: 1000", {"user": "1000"}),
    ("image: x\nworking_dir: /app", {"working_dir": "/app"}),
    ("image: x\ncap_add: [NET_ADMIN]\ncap_drop: [ALL]", {"cap_add": ["NET_ADMIN"], "cap_drop": ["ALL"]}),
    ("image: x\nread_only: true\ninit: true\nprivileged: true\ntty: true\nstdin_open: true",
     {"read_only": True, "init": True, "privileged": True, "tty": True, "stdin_open": True}),
    ("image: x\nsysctls: {net.core.somaxconn: 1024}", {"sysctls": {"net.core.somaxconn": "1024"}}),
    ("image: x\nsysctls: [net.ipv4.tcp_syncookies=0]", {"sysctls": {"net.ipv4.tcp_syncookies": "0"}}),
    ("image: x\nulimits: {nofile: {soft: 20000, hard: 40000}, nproc: 65535}",
     {"ulimits": {"nofile": {"soft": 20000, "hard": 40000}, "nproc": 65535}}),
    ("image: x\nextra_hosts: ['db.local:10.0.0.5', 'cache=10.0.0.6']",
     {"extra_hosts": ["db.local:10.0.0.5", "cache=10.0.0.6"]}),
    ("image: x\nextra_hosts: {db.local: 10.0.0.5}", {"extra_hosts": ["db.local=10.0.0.5"]}),
    ("image: x\ndns: 1.1.1.1", {"dns": ["1.1.1.1"]}),
    ("image: x\ndns: [1.1.1.1, 8.8.8.8]", {"dns": ["1.1.1.1", "8.8.8.8"]}),
    ("image: x\nstop_signal: SIGQUIT\nstop_grace_period: 1m30s", {"stop_signal": "SIGQUIT", "stop_grace_period": 90.0}),
    ("image: x\nshm_size: 256m", {"shm_size": "256m"}),
    ("image: x\ntmpfs: /run", {"mounts": [{"type": "tmpfs", "target": "/run"}]}),
    ("image: x\ntmpfs: ['/run:size=64m', /tmp]",
     {"mounts": [{"type": "tmpfs", "target": "/run", "size": "64m"}, {"type": "tmpfs", "target": "/tmp"}]}),
    ("image: x\nscale: 3", {"scale": 3}),
    ("image: x\ncpus: 1.5\nmem_limit: 1g\nmem_reservation: 256m",
     {"cpu_limit": 1.5, "memory_limit": "1g", "memory": "256m"}),
    ("image: x\npull_policy: always", {"pull": "always"}),
    ("image: x\npull_policy: missing", {"pull": "if-not-present"}),
    ("image: x\nx-corral: {on_host_loss: recreate-empty}", {"on_host_loss": "recreate-empty"}),
    ("x-corral-lb: {rules: ['80=web:8080,path=/api', {port: 5432, protocol: tcp, target: db, target_port: 5432}]}",
     {"kind": "load-balancer", "mode": "global", "lb": {"rules": [
         {"port": 80, "target": "web", "target_port": 8080, "path": "/api"},
         {"port": 5432, "protocol": "tcp", "target": "db", "target_port": 5432}]}}),
    ("x-corral-lb: {rules: ['80=web:80'], stickiness: true}\ndeploy: {replicas: 2}",
     {"kind": "load-balancer", "scale": 2}),
    ("image: x\nsecurity_opt: ['no-new-privileges:true']", {"no_new_privileges": True}),
    ("image: x\nsecurity_opt: [no-new-privileges]", {"no_new_privileges": True}),
    ("image: x\nx-whatever: {anything: 1}", {"image": "x"}),
    ("image: x\nnetworks: [default]", {"image": "x"}),
    ("image: x\nnetworks: {default: {aliases: [www, web_1]}}", {"aliases": ["www", "web-1"]}),
    # deploy
    ("image: x\ndeploy: {replicas: 3}", {"scale": 3}),
    ("image: x\ndeploy: {mode: global}", {"mode": "global"}),
    ("image: x\ndeploy: {labels: {team: a}}\nlabels: {tier: web}",
     {"service_labels": {"team": "a"}, "labels": {"tier": "web"}}),
    ("image: x\ndeploy: {resources: {limits: {cpus: '0.50', memory: 512M}, reservations: {cpus: 0.25, memory: 128M}}}",
     {"cpu_limit": 0.5, "memory_limit": "512M", "cpus": 0.25, "memory": "128M"}),
    ("image: x\ndeploy: {restart_policy: {condition: on-failure, max_attempts: 3}}",
     {"restart": "on-failure", "restart_max_attempts": 3}),
    ("image: x\ndeploy: {restart_policy: {condition: any}}", {"restart": "always"}),
    ("image: x\ndeploy: {restart_policy: {condition: none}}", {"restart": "no"}),
    ("image: x\ndeploy: {restart_policy: {}}", {"restart": "always"}),
    ("image: x\ndeploy: {placement: {constraints: [node.role == manager, node.labels.zone==a, node.hostname!=h1]}}",
     {"placement": {"constraints": ["node.role == manager", "node.labels.zone==a", "node.hostname!=h1"]}}),
    ("image: x\ndeploy: {placement: {preferences: [{spread: node.labels.zone}, {spread: node.labels.rack}]}}",
     {"placement": {"spread": ["zone", "rack"]}}),
    ("image: x\ndeploy: {placement: {max_replicas_per_node: 1}}", {"placement": {"one_per_host": True}}),
    ("image: x\ndeploy: {update_config: {parallelism: 2, delay: 10s, order: start-first, monitor: 5s, "
     "failure_action: pause, max_failure_ratio: 0.25}}",
     {"update_config": {"parallelism": 2, "interval": 10.0, "order": "start-first", "min_healthy": 5.0,
                        "failure_action": "pause", "max_failure_ratio": 0.25}}),
    ("image: x\ndeploy: {rollback_config: {parallelism: 3, failure_action: continue}}",
     {"rollback_config": {"parallelism": 3, "failure_action": "continue"}}),
    # healthcheck: Docker's defaults filled in, so timeout alone is valid
    ("image: x\nhealthcheck: {test: [CMD, curl, -f, 'http://localhost/a b'], timeout: 20s}",
     {"health_check": {"type": "command", "command": "curl -f 'http://localhost/a b'", "interval": 30.0,
                       "timeout": 20.0, "retries": 3, "start_period": 0.0}}),
    ("image: x\nhealthcheck: {test: [CMD-SHELL, 'pg_isready -U x'], interval: 5s, retries: 5, start_period: 1m}",
     {"health_check": {"type": "command", "command": "pg_isready -U x", "interval": 5.0, "timeout": 5.0,
                       "retries": 5, "start_period": 60.0}}),
    ("image: x\nhealthcheck: {test: 'nc -z localhost 80', interval: 1m30s}",
     {"health_check": {"type": "command", "command": "nc -z localhost 80", "interval": 90.0, "timeout": 30.0,
                       "retries": 3, "start_period": 0.0}}),
]


@pytest.mark.parametrize("service, expected", MAPPED, ids=[m[0].replace("\n", "; ")[:60] for m in MAPPED])
def test_every_mapped_key_reaches_its_spec_fields(service: str, expected: dict[str, object]) -> None:
    got, _ = one(service)
    assert {k: got.get(k) for k in expected} == expected
    spec.parse(got)  # and the API takes it


def test_extension_keys_anywhere_are_ignored_silently() -> None:
    text = ("x-top: {a: 1}\nservices:\n  web:\n    image: x\n    x-svc: 1\n"
            "    healthcheck: {test: 'true', x-note: why}\n    ports: [{target: 80, x-port: 1}]\n"
            "    deploy: {x-d: 1, resources: {limits: {x-l: 1, cpus: 1}}}\nvolumes:\n  v: {x-note: 1}\n")
    parsed = parse(text)
    assert parsed.warnings == [] and parsed.services["web"]["ports"] == [{"target": 80}]


def test_a_disabled_health_check_is_none() -> None:
    for body in ("image: x\nhealthcheck: {test: [NONE]}", "image: x\nhealthcheck: {test: 'true', disable: true}",
                 "image: x\nhealthcheck: {disable: true}"):
        assert "health_check" not in one(body)[0]


WARNED = [
    ("image: x\ncontainer_name: wp", "services.web.container_name: ignored: a cluster names its containers"),
    ("image: x\nports: [{target: 80, published: 8080, mode: ingress}]",
     "services.web.ports[0].mode: ingress: there is no routing mesh yet"),
    ("image: x\nnetworks: {default: {ipv4_address: 10.0.0.5}}", "services.web.networks.default.ipv4_address: ignored"),
    ("image: x\nnetwork_mode: bridge", "services.web.network_mode: bridge: ignored"),
    ("image: x\nhealthcheck: {test: 'true', start_interval: 1s}", "services.web.healthcheck.start_interval: ignored"),
    ("image: x\nhealthcheck: {test: 'true', interval: 5s, timeout: 10s}",
     "services.web.healthcheck.timeout: 10 s is longer than the interval"),
    ("image: x\ndeploy: {update_config: {parallelism: 0}}", "services.web.deploy.update_config.parallelism: 0 (all "
     "at once): one at a time"),
    ("image: x\ndeploy: {endpoint_mode: dnsrr}", "services.web.deploy.endpoint_mode: ignored"),
    ("image: x\ndeploy: {resources: {limits: {pids: 10}}}", "services.web.deploy.resources.limits.pids: ignored"),
    ("image: x\ndeploy: {resources: {reservations: {devices: [{capabilities: [gpu]}]}}}",
     "services.web.deploy.resources.reservations.devices: ignored"),
    ("image: x\ndeploy: {restart_policy: {delay: 5s, window: 2m}}",
     "services.web.deploy.restart_policy.window: recorded, not enforced"),
    ("image: x\ndeploy: {restart_policy: {condition: any, max_attempts: 3}}",
     "services.web.deploy.restart_policy.max_attempts: ignored with condition any"),
    ("image: x\ndeploy: {placement: {max_replicas_per_node: 2}}",
     "services.web.deploy.placement.max_replicas_per_node: 2: ignored"),
    ("image: x\ndeploy: {placement: {constraints: [node.platform.os == linux]}}",
     "services.web.deploy.placement.constraints[0]: node.platform.os == linux: ignored"),
    ("image: x\nrestart: always\ndeploy: {restart_policy: {condition: on-failure}}",
     "services.web.restart: overridden by deploy.restart_policy"),
    ("image: x\nvolumes: [./conf:/etc/conf]", "services.web.volumes[0]: ./conf: mounted read-only"),
    ("image: x\nvolumes: ['data:/x:nocopy']", "services.web.volumes[0]: nocopy: ignored"),
    ("image: x\nvolumes: [{type: volume, source: data, target: /x, volume: {nocopy: true}}]",
     "services.web.volumes[0].volume.nocopy: ignored"),
    ("image: x\nvolumes: [{type: bind, source: /srv, target: /x, bind: {create_host_path: true}}]",
     "services.web.volumes[0].bind.create_host_path: ignored"),
    ("image: x\nconfigs: [{source: app, uid: '103'}]", "services.web.configs[0].uid: ignored"),
    ("image: x\nenvironment: [NOT_SET_ANYWHERE]", "services.web.environment[0]: NOT_SET_ANYWHERE is not set"),
    ("image: x\npull_policy: never", "services.web.pull_policy: never: not supported"),
    ("image: x\nsecurity_opt: ['seccomp:unconfined']", "services.web.security_opt[0]: seccomp:unconfined: ignored"),
    ("image: x\ndepends_on: {db: {condition: service_started, restart: true}}",
     "services.web.depends_on.db.restart: ignored"),
]


@pytest.mark.parametrize("service, warning", WARNED, ids=[w[1][:60] for w in WARNED])
def test_what_is_not_applied_is_a_warning_naming_its_path(service: str, warning: str) -> None:
    text = ("services:\n  web:\n" + textwrap.indent(service, "    ") + "\n  db: {image: x}\n"
            "volumes: {data: {}}\nconfigs: {app: {content: x}}\n")
    warnings = parse(text, environ=ENV).warnings
    assert any(w.startswith(warning) for w in warnings), warnings


@pytest.mark.parametrize("key", sorted(compose_service.IGNORED))
def test_every_ignored_service_key_warns(key: str) -> None:
    warnings = parse(f"services:\n  web:\n    image: x\n    {key}: {{}}\n").warnings
    assert [w for w in warnings if w.startswith(f"services.web.{key}: ignored")], warnings


@pytest.mark.parametrize("key", sorted(compose_service.REFUSED))
def test_every_refused_service_key_is_an_error_with_its_path_and_line(key: str) -> None:
    refused(f"services:\n  web:\n    image: x\n    {key}: x\n", f"services.web.{key}: is refused: ")
    refused(f"services:\n  web:\n    image: x\n    {key}: x\n", "(line 4)")


@pytest.mark.parametrize("text, message", [
    ("services: {web: {image: x, volumes: [a]}}", "services.web.volumes[0]: a: a target is an absolute path"),
    ("services: {web: {image: x, frobnicate: 1}}", "services.web.frobnicate: is not a compose key Corral knows"),
    ("services: {web: {image: x}}\nfrob: {}", "frob: is not a top-level compose key"),
    ("services: {web: {image: x}}\ninclude: [a.yml]", "include: is refused"),
    ("services: {web: {command: x}}", "services.web: image: is required"),
    ("services: {web: {image: x, deploy: {replicas: -2}}}", "services.web: scale: must be"),
    ("services: {web: {image: x, deploy: {mode: replicated-job}}}", "only replicated and global"),
    ("services: {web: {image: x, deploy: {frob: 1}}}", "services.web.deploy.frob: is not a deploy key"),
    ("services: {'We b': {image: x}}", "services.We b: 'We b' cannot be a service's name"),
    ("services: {}", "at least one service"),
    ("services: [", "not YAML"),
    ("services: {web: {image: x, deploy: {placement: {constraints: [zone]}}}}", "placement.constraints[0]"),
    ("services: {web: {image: x, deploy: {placement: {constraints: [engine.labels.a==b]}}}}", "only node.hostname"),
    ("services: {web: {image: x, deploy: {placement: {preferences: [{spread: node.id}]}}}}", "only node.labels"),
    ("services: {web: {image: x, healthcheck: {test: [HTTP, /]}}}", "services.web.healthcheck.test: must be"),
    ("services: {web: {image: x, healthcheck: {test: true}}}", "services.web.healthcheck.test: must be"),
    ("services: {web: {image: x, healthcheck: {test: 'true', every: 5s}}}", "healthcheck.every: is not a field"),
    ("services: {web: {image: x, healthcheck: {test: 'true', retries: 0}}}", "health_check.retries"),
    ("services: {web: {image: x, healthcheck: {test: 'true', interval: soon}}}", "not a duration"),
    ("services: {web: {image: x, ports: ['8000-8010:8000-8010']}}", "port ranges are not supported"),
    ("services: {web: {image: x, ports: [{target: 80, published: '8000-8010'}]}}", "port ranges are not supported"),
    ("services: {web: {image: x, ports: [{target: 80, mode: bridge}]}}", "is host or ingress"),
    ("services: {web: {image: x, network_mode: host}}", "network_mode: host is refused: "),
    ("services: {web: {image: x, network_mode: none}}", "network_mode: none is refused: "),
    ("services: {web: {image: x, network_mode: 'service:db'}}", "network_mode: service:db is refused"),
    ("services: {web: {image: x, networks: [back]}}", "services.web.networks.back: is not declared"),
    ("services: {web: {image: x, volumes: ['data:/x']}}", "the volume data is not declared"),
    ("services: {web: {image: x, volumes: ['~/x:/x']}}", "home folder"),
    ("services: {web: {image: x, volumes: ['/:/rootfs:ro']}}", "the host's root folder cannot be mounted"),
    ("services: {web: {image: x, volumes: [{type: npipe, source: a, target: /x}]}}", "only volume, bind and tmpfs"),
    ("services: {web: {image: x, configs: [app]}}", "the config app is not declared"),
    ("services: {web: {image: x, secrets: [pw]}}", "the secret pw is not declared"),
    ("services: {web: {image: x}}\nvolumes: {data: {driver: nfs}}", "volumes.data.driver: nfs: only the local driver"),
    ("services: {web: {image: x}}\nsecrets: {pw: {file: a, environment: B}}", "needs exactly one of"),
    ("services: {web: {image: x}}\nsecrets: {pw: {environment: NOT_SET_ANYWHERE}}", "NOT_SET_ANYWHERE is not set"),
    ("services: {web: {image: x}}\nsecrets: {pw: {driver: vault}}", "secrets.pw.driver: is refused"),
    ("services: {web: {image: x, restart: sometimes}}", "services.web.restart: 'sometimes' is not"),
    ("services: {web: {image: x, depends_on: [db]}}", "services.web.depends_on: db is not a service"),
    ("services: {web: {image: x, depends_on: {db: {condition: service_ready}}}}", "condition: is service_started"),
    ("services: {web: {image: x, env_file: missing.env}}", "services.web.env_file: missing.env is not there"),
    ("services: {web: {image: x, x-corral: {on_host_loss: panic}}}", "x-corral.on_host_loss: is wait"),
    ("services: {web: {image: x, x-corral: {colour: red}}}", "x-corral.colour: is not a Corral setting"),
    ("services: {lb: {image: x, x-corral-lb: {rules: ['80=web:80']}}}", "x-corral-lb: a load balancer runs HAProxy"),
    ("services: {lb: {x-corral-lb: {rules: ['80=web']}}}", "services.lb.x-corral-lb.rules[0]: '80=web' is not"),
    ("services: {lb: {x-corral-lb: {rules: [{port: 80, target: web, target_port: 80, hostname: '*.*'}]}}}",
     "services.lb.x-corral-lb.rules[0].hostname: '*.*' is not a hostname pattern"),
    ("services: {lb: {x-corral-lb: [80]}}", "services.lb.x-corral-lb: must be a map"),
    ("services: {web: {image: x, command: 'echo \"unclosed'}}", "services.web.command: cannot be split"),
    ("services: {web: {image: x, build: {context: ., target: x}}}", "services.web.build.target: is not supported"),
    ("services: {web: {image: x, build: {dockerfile: /etc/passwd}}}", "build.dockerfile: is a path inside"),
    ("services: {web: {image: x, pull_policy: sometimes}}", "services.web.pull_policy: is always"),
    ("services: {web: {image: x}}\nservices: {db: {image: y}}", "services is given twice"),
    ("services: {web: {image: !!binary aGk=}}", "the tag tag:yaml.org,2002:binary is not supported"),
])
def test_what_cannot_be_done_is_refused_with_the_path(text: str, message: str) -> None:
    refused(text, message)


def test_errors_name_the_line() -> None:
    text = "services:\n  web:\n    image: x\n    ports:\n      - 80\n      - '1-2:3-4'\n"
    assert refused(text, "services.web.ports[1]").endswith("(line 6)")
    assert refused("services:\n  web:\n    image: x\n    labels: {a: $NOPE}\n",
                   "the variable NOPE is not set").startswith("line 4: services.web.labels.a")


# ---------------------------------------------------------------------------- substitution


@pytest.mark.parametrize("value, expected", [
    ("${TAG}", "7"), ("$TAG", "7"), ("v$TAG.1", "v7.1"), ("${TAG:-1}", "7"), ("${NOPE:-1}", "1"),
    ("${EMPTY:-1}", "1"), ("${EMPTY-1}", ""), ("${NOPE-1}", "1"), ("${TAG:?gone}", "7"), ("${EMPTY?x}", ""),
    ("${TAG:+set}", "set"), ("${NOPE:+set}", ""), ("${EMPTY:+set}", ""), ("${EMPTY+set}", "set"),
    ("$$TAG", "$TAG"), ("$${TAG}", "${TAG}"), ("a$$b", "a$b"), ("${NOPE:-${TAG}}", "7"),
    ("${NOPE:-${ALSO:-deep}}", "deep"), ("${NOPE:-}", ""), ("${NOPE:-a b}", "a b"),
])
def test_variables_are_substituted_as_compose_does(value: str, expected: str) -> None:
    got, _ = one(f"image: x\nenvironment: {{V: '{value}'}}")
    assert got["environment"] == {"V": expected}


@pytest.mark.parametrize("value, message", [
    ("${NOPE}", "line 4: services.web.environment.V: the variable NOPE is not set"),
    ("$NOPE", "line 4: services.web.environment.V: the variable NOPE is not set"),
    ("${NOPE:?the password}", "the variable NOPE is required: the password"),
    ("${EMPTY:?must be given}", "the variable EMPTY is required: must be given"),
    ("${NOPE?}", "the variable NOPE is required: not set"),
    ("a $ b", "a lone '$'"),
    ("${TAG", "has no closing"),
    ("${1A}", "does not start with a variable name"),
    ("${TAG:=x}", "is not ${VAR}"),
])
def test_an_unset_variable_without_default_is_an_error_with_its_line(value: str, message: str) -> None:
    refused(f"services:\n  web:\n    image: x\n    environment: {{V: '{value}'}}\n", message)


def test_dot_env_beside_the_file_and_env_file_instead() -> None:
    files = {".env": "# the project's defaults\nTAG=8\nexport IMAGE=corral/base\nQUOTED='a $b'\n"
                     "DOUBLE=\"x ${TAG}\\n\"\nINLINE=v # a comment\n",
             "other.env": "TAG=9\n"}
    text = "services:\n  web:\n    image: $IMAGE:$TAG\n    environment: [Q=$QUOTED, D=$DOUBLE, I=$INLINE]\n"
    parsed = parse(text, environ={}, read=files.get)
    assert parsed.services["web"]["image"] == "corral/base:8"
    assert parsed.services["web"]["environment"] == {"Q": "a $b", "D": "x 8\n", "I": "v"}
    assert parse(text, environ={"TAG": "1"}, read=files.get).services["web"]["image"] == "corral/base:1", \
        "the environment wins over .env"
    with pytest.raises(ComposeError, match="IMAGE is not set"):
        parse(text, environ={}, read=files.get, env_file="other.env")  # --env-file replaces .env
    assert parse("services: {web: {image: 'x:$TAG'}}", read=files.get, env_file="other.env").services["web"][
        "image"] == "x:9"
    with pytest.raises(ComposeError, match=r"--env-file nope\.env: no such file"):
        parse(text, read=files.get, env_file="nope.env")


def test_env_file_in_every_form_and_environment_wins() -> None:
    files = {"a.env": "A=1\nB=from-file\n", "b.env": "C=3\n"}
    for form in ("env_file: a.env", "env_file: [a.env, b.env]",
                 "env_file: [{path: a.env}, {path: b.env, required: true}, {path: none.env, required: false}]"):
        got, warnings = one(f"image: x\n{form}\nenvironment: {{B: mine}}", read=files.get)
        env = got["environment"]
        assert isinstance(env, dict) and env["A"] == "1" and env["B"] == "mine", (form, env)
    assert any("none.env is not there: skipped" in w for w in warnings)


# ---------------------------------------------------------------------------- YAML 1.1 pitfalls


def test_yaml_1_1_pitfalls_do_not_bite() -> None:
    got, _ = one("image: x\nports: [2222:22, 22:22]\nenvironment: {A: on, B: yes, C: no, D: off, E: 0755, F: 1e3,"
                 " G: 1_000, H: ~}\nlabels: {on: 1}\nrestart: no\n")
    assert got["ports"] == ["2222:22", "22:22"], "never a base-60 integer"
    assert got["environment"] == {"A": "on", "B": "yes", "C": "no", "D": "off", "E": "493", "F": "1000",
                                  "G": "1_000"}, "H: ~ takes H from the environment, where it is not set"
    assert got["labels"] == {"on": "1"} and got["restart"] == "no"


def test_anchors_and_merge_keys_work() -> None:
    text = """
x-defaults: &defaults
  image: corral/base
  restart: unless-stopped
  environment: &env {A: "1"}
services:
  a:
    <<: *defaults
  b:
    <<: *defaults
    restart: always
    environment:
      <<: *env
      B: "2"
"""
    services = load(text)
    assert services["a"]["restart"] == "unless-stopped" and services["b"]["restart"] == "always"
    assert services["b"]["environment"] == {"A": "1", "B": "2"} and services["b"]["image"] == "corral/base"


@pytest.mark.parametrize("text, seconds", [("5", 5.0), ("2.5s", 2.5), ("500ms", 0.5), ("1m30s", 90.0), ("1h", 3600.0),
                                           ("1h2m3s", 3723.0), ("10 s", 10.0), ("250us", 0.00025)])
def test_go_durations_parse(text: str, seconds: float) -> None:
    assert spec.seconds(text, "f", 0, 10_000) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1m30", "s", "1d", "-1s", "1 m 3 s", ""])
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    assert spec.duration(text) is None


# ---------------------------------------------------------------------------- mounts


def test_volumes_in_every_form_become_mounts_per_the_contract() -> None:
    text = """
services:
  web:
    image: x
    volumes:
      - data:/var/lib/x
      - data:/ro:ro
      - cache:/cache
      - shared:/shared
      - ./nginx.conf:/etc/nginx/nginx.conf:ro
      - ./html/:/usr/share/html
      - /srv/www:/www:ro
      - /var/lib/anon
      - {type: volume, source: data, target: /long, read_only: true}
      - {type: bind, source: ./nginx.conf, target: /again.conf}
      - {type: bind, source: /srv/logs, target: /logs}
      - {type: tmpfs, target: /run, tmpfs: {size: 65536}}
      - {type: volume, target: /anon2}
    configs: [app, {source: app, target: /etc/app.yml, mode: 0440}]
    secrets: [pw, {source: pw, target: db_password}, {source: pw, target: /etc/pw}]
volumes:
  data:
  cache: {x-corral: {scope: instance}}
  shared: {external: true, name: corral-shared}
configs:
  app: {file: ./app.yml}
secrets:
  pw: {file: ./pw.txt}
"""
    parsed = parse(text)
    mounts = parsed.services["web"]["mounts"]
    conf = next(n for n, c in parsed.configs.items() if c.path == "./nginx.conf")
    html = next(n for n, c in parsed.configs.items() if c.path == "./html/")
    assert conf.startswith("nginx.conf-") and len(conf) == len("nginx.conf-") + 8
    assert html.startswith("html-")
    assert mounts == [
        {"type": "volume", "source": "data", "target": "/var/lib/x", "scope": "stack"},
        {"type": "volume", "source": "data", "target": "/ro", "scope": "stack", "read_only": True},
        {"type": "volume", "source": "cache", "target": "/cache", "scope": "instance"},
        {"type": "volume", "source": "corral-shared", "target": "/shared", "scope": "external"},
        {"type": "config", "source": conf, "target": "/etc/nginx/nginx.conf"},
        {"type": "config", "source": html, "target": "/usr/share/html"},
        {"type": "bind", "source": "/srv/www", "target": "/www", "read_only": True},
        {"type": "volume", "target": "/var/lib/anon"},
        {"type": "volume", "source": "data", "target": "/long", "scope": "stack", "read_only": True},
        {"type": "config", "source": conf, "target": "/again.conf"},
        {"type": "bind", "source": "/srv/logs", "target": "/logs", "read_only": False},
        {"type": "tmpfs", "target": "/run", "size": 65536},
        {"type": "volume", "target": "/anon2"},
        {"type": "config", "source": "app", "target": "/app"},
        {"type": "config", "source": "app", "target": "/etc/app.yml", "mode": 0o440},
        {"type": "secret", "source": "pw"},
        {"type": "secret", "source": "pw", "target": "/run/secrets/db_password"},
        {"type": "secret", "source": "pw", "target": "/etc/pw"},
    ]
    assert parsed.configs[conf] == ConfigSource(path="./nginx.conf", content=None, from_bind=True)
    assert parsed.configs["app"] == ConfigSource(path="./app.yml", content=None)
    assert parsed.configs["pw"] == ConfigSource(path="./pw.txt", content=None, secret=True)
    assert sum("mounted read-only" in w for w in parsed.warnings) == 2  # ./html/ and the long bind without ro
    # the same path is the same config, in every file that names it
    assert parse("services: {a: {image: x, volumes: ['./nginx.conf:/n:ro']}}").configs.keys() == {conf}


def test_top_level_configs_and_secrets_in_every_form() -> None:
    text = """
services:
  web: {image: x, configs: [a, b, c], secrets: [d, e, f]}
configs:
  a: {file: ./a.conf, name: ignored-name}
  b: {content: "port = ${TAG}"}
  c: {external: true}
secrets:
  d: {file: ./d.txt}
  e: {environment: TAG}
  f: {external: true}
"""
    parsed = parse(text, environ=ENV)
    assert parsed.configs == {
        "a": ConfigSource("./a.conf", None), "b": ConfigSource(None, "port = 7"),
        "c": ConfigSource(None, None, external=True), "d": ConfigSource("./d.txt", None, secret=True),
        "e": ConfigSource(None, "7", secret=True), "f": ConfigSource(None, None, secret=True, external=True)}
    assert "configs.a.name: ignored: the config is named a in the stack" in parsed.warnings


def test_top_level_volumes_and_networks_warn_for_what_they_do_not_do() -> None:
    text = """
services:
  web: {image: x, volumes: ['db:/db'], networks: [front, back]}
volumes:
  db: {name: explicit, driver: local, driver_opts: {type: nfs}, labels: [a=b]}
networks:
  front: {driver: bridge}
  back: {external: true, ipam: {config: []}}
"""
    warnings = parse(text).warnings
    for expected in ("volumes.db.name: ignored", "volumes.db.driver_opts: ignored", "volumes.db.labels: ignored",
                     "networks.front.driver: ignored", "networks.back.external: ignored", "networks.back.ipam: ignored",
                     "services.web.networks: the stack has one overlay network"):
        assert any(w.startswith(expected) for w in warnings), (expected, warnings)


# ---------------------------------------------------------------------------- services: names, depends_on, profiles


def test_names_with_underscores_and_capitals_are_mapped_and_said() -> None:
    parsed = parse("services:\n  My_DB: {image: x}\n  web: {image: y, depends_on: [My_DB]}\n")
    assert set(parsed.services) == {"my-db", "web"} and parsed.services["web"]["depends_on"] == {"my-db": "started"}
    assert any(w.startswith("services.My_DB: named my-db in the cluster") for w in parsed.warnings)
    refused("services:\n  my_db: {image: x}\n  my-db: {image: y}\n", "is named my-db in the cluster, as services.my_db")


def test_depends_on_in_both_forms_and_cycles_are_spelled_out() -> None:
    text = """
services:
  web:
    image: x
    depends_on:
      db: {condition: service_healthy}
      migrate: {condition: service_completed_successfully, required: true}
      cache:
  db: {image: x}
  migrate: {image: x, depends_on: [db]}
  cache: {image: x}
"""
    parsed = parse(text)
    assert parsed.services["web"]["depends_on"] == {"db": "healthy", "migrate": "completed", "cache": "started"}
    assert parsed.services["migrate"]["depends_on"] == {"db": "started"}
    assert "depends_on" not in parsed.services["db"]
    message = refused("services:\n  db: {image: x, depends_on: [web]}\n  web: {image: x, depends_on: [db]}\n",
                      "depends on itself: db → web → db")
    assert "(line 3)" in message
    refused("services:\n  a: {image: x, depends_on: [a]}\n", "depends on itself: a → a")
    refused("services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [c]}\n"
            "  c: {image: x, depends_on: [b]}\n", "b → c → b")


def test_links_become_aliases_of_the_linking_service_and_start_the_linked_first() -> None:
    text = """
services:
  web:
    image: x
    links: [db, "cache:sessions", "db:database"]
    depends_on: {db: {condition: service_healthy}}
  db: {image: x}
  cache: {image: x}
  legacy:
    x-corral-external: {addresses: [192.0.2.10, 192.0.2.11]}
  mail:
    x-corral-external: {hostname: smtp.example.net}
"""
    parsed = parse(text)
    web = parsed.services["web"]
    assert web["links"] == {"db": "db", "sessions": "cache", "database": "db"}
    assert web["depends_on"] == {"db": "healthy", "cache": "started"}, "a link starts its service first"
    assert spec.parse(web).links == {"db": "db", "sessions": "cache", "database": "db"}
    legacy, mail = spec.parse(parsed.services["legacy"]), spec.parse(parsed.services["mail"])
    assert legacy.kind == "external" and legacy.external is not None and legacy.scale == 0
    assert legacy.external.addresses == ("192.0.2.10", "192.0.2.11")
    assert mail.external is not None and mail.external.hostname == "smtp.example.net"
    assert not any("links" in w or "legacy" in w or "mail" in w for w in parsed.warnings), parsed.warnings
    refused("services:\n  web: {image: x, links: [nope]}\n", "services.web.depends_on: nope is not a service")
    refused("services:\n  web: {image: x, links: ['db:Data_Base']}\n  db: {image: x}\n",
            "services.web.links[0]: the alias 'Data_Base' must be a DNS name")
    refused("services:\n  e: {image: x, x-corral-external: {hostname: a.b}}\n",
            "services.e.x-corral-external: an external service runs nothing")
    refused("services:\n  e: {x-corral-external: {addresses: [10.42.0.9]}}\n",
            "services.e.x-corral-external.addresses[0]: 10.42.0.9 is a container address")
    refused("services:\n  e: {x-corral-external: {}}\n", "services.e.x-corral-external: needs exactly one")


def test_profiles_leave_services_out_unless_asked_for() -> None:
    text = """
services:
  web: {image: x, depends_on: {debug: {condition: service_started, required: false}}}
  debug: {image: x, profiles: [debug]}
  tools: {image: x, profiles: [tools, ops]}
"""
    assert set(parse(text).services) == {"web"}
    assert set(parse(text, profiles=["debug"]).services) == {"web", "debug"}
    assert set(parse(text, profiles=["ops"]).services) == {"web", "tools"}
    assert set(parse(text, profiles=["*"]).services) == {"web", "debug", "tools"}
    assert "depends_on" not in parse(text).services["web"]
    assert parse(text, profiles=["debug"]).services["web"]["depends_on"] == {"debug": "started"}
    refused("services:\n  web: {image: x, depends_on: [debug]}\n  debug: {image: x, profiles: [debug]}\n",
            "debug is left out by its profiles (debug): ask for one with --profile")


def test_version_and_name() -> None:
    parsed = parse("version: '3.8'\nname: blog\nservices: {web: {image: x}}\n")
    assert parsed.name == "blog" and parsed.warnings == [
        "version: ignored: obsolete (as docker compose says); the compose specification is read"]
    assert parse("services: {web: {image: x}}").name is None


def test_build_is_read_and_its_context_is_the_same_bytes_for_the_same_files(tmp_path: Path) -> None:
    import io
    import tarfile

    from agent.cli.stacks import build_context

    parsed = parse("services:\n  web:\n    build: {context: ./app, dockerfile: web.Dockerfile, args: [A=1]}\n"
                   "    image: ignored\n    pull_policy: always\n  db:\n    image: corral/base\n")
    assert parsed.builds["web"].context == "./app" and parsed.builds["web"].args == {"A": "1"}
    assert parsed.services["web"]["image"] == BUILT and parsed.services["web"]["pull"] == "always"
    assert "db" not in parsed.builds
    (tmp_path / "Dockerfile").write_text("FROM corral/base\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("a")
    (tmp_path / "secret.key").write_text("no")
    (tmp_path / ".dockerignore").write_text("# comment\nsecret.key\n")
    first = build_context(tmp_path)
    (tmp_path / "sub" / "a.txt").touch()  # a new mtime, the same content
    assert build_context(tmp_path) == first, "times are not part of the context"
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        names = tar.getnames()
    assert names == [".dockerignore", "Dockerfile", "sub", "sub/a.txt"], names
    (tmp_path / "sub" / "a.txt").write_text("b")
    assert build_context(tmp_path) != first


# ---------------------------------------------------------------------------- files as people write them

FILES = Path(__file__).parent / "compose_files"
EXPECTED: dict[str, tuple[set[str], list[str]]] = {
    # file: (the services deployed, the start of each warning expected, in any order)
    "wordpress.yml": ({"wordpress", "db"}, [
        "version: ignored", "services.wordpress.container_name: ignored", "services.db.container_name: ignored"]),
    "nextcloud.yml": ({"app", "db", "redis", "cron"}, [
        "services.app.volumes[1]: ./config/php.ini: mounted read-only", "networks.internal.internal: ignored",
        "services.app.networks: the stack has one overlay network"]),
    "gitea.yml": ({"server", "db"}, [
        "version: ignored", "networks.gitea.external: ignored", "services.server.container_name: ignored",
        "services.server.volumes[0]: ./gitea: mounted read-only", "services.db.container_name: ignored"]),
    "traefik.yml": ({"traefik", "whoami"}, [
        "services.traefik.ports[0].mode: ingress"]),
    "monitoring.yml": ({"prometheus", "grafana", "node-exporter", "cadvisor"}, [
        "services.node_exporter: named node-exporter in the cluster", "services.grafana.logging: ignored",
        "services.node_exporter.volumes[0]: rslave: ignored",
        "services.node_exporter.deploy.placement.constraints[0]: node.platform.os == linux: ignored"]),
    "mattermost.yml": ({"postgres", "mattermost"}, [
        "services.postgres.pids_limit: ignored", "services.mattermost.pids_limit: ignored",
        "services.postgres.environment[0]: TZ is not set in the environment: left out"]),
    "plausible.yml": ({"plausible-db", "plausible-events-db", "plausible"}, [
        "services.plausible_db: named plausible-db", "services.plausible_events_db: named plausible-events-db",
        "services.mail: left out: its profiles (mail) were not asked for",
        "services.plausible.depends_on.mail: left out with that service"]),
    "immich.yml": ({"immich-server", "immich-machine-learning", "redis", "database"}, [
        "services.immich-server.container_name: ignored", "services.redis.container_name: ignored",
        "services.database.healthcheck.start_interval: ignored",
        "services.database.volumes[0]: ./postgres: mounted read-only"]),
    "vaultwarden.yml": ({"vaultwarden"}, ["services.vaultwarden.container_name: ignored"]),
    "swarm-voting.yml": ({"redis", "db", "vote", "result", "worker"}, [
        "version: ignored", "services.worker.deploy.restart_policy.window: recorded, not enforced"]),
    "uptime-kuma.yml": ({"uptime-kuma"}, ["services.uptime-kuma.container_name: ignored"]),
}
ENVIRON = {"DB_PASSWORD": "s3cret", "POSTGRES_PASSWORD": "pg", "SECRET_KEY_BASE": "k" * 64, "GF_PASSWORD": "admin",
           "UPLOAD_LOCATION": "/srv/immich", "DOMAIN": "vault.example.org"}


def test_every_fixture_is_listed() -> None:
    assert sorted(p.name for p in FILES.glob("*.yml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_compose_files_parse_with_the_expected_warnings(name: str) -> None:
    folder = FILES

    def read(relative: str) -> str | None:
        path = folder / name.removesuffix(".yml") / relative
        return path.read_text() if path.is_file() else None

    parsed: Compose = parse((FILES / name).read_text(), environ=ENVIRON, read=read)
    services, warnings = EXPECTED[name]
    assert set(parsed.services) == services
    for expected in warnings:
        assert any(w.startswith(expected) for w in parsed.warnings), (expected, parsed.warnings)
    for svc in parsed.services.values():
        spec.parse(svc)


def test_the_cli_reads_the_environment_the_files_beside_and_the_profiles(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.cli.output import CommandFailed
    from agent.cli.stacks import read_compose, stack_name

    (tmp_path / "compose.yml").write_text(
        "name: shop\nservices:\n  web: {image: 'x:$TAG', env_file: web.env}\n  dbg: {image: x, profiles: [debug]}\n")
    (tmp_path / ".env").write_text("TAG=beside\n")
    (tmp_path / "web.env").write_text("A=1\n")
    (tmp_path / "other.env").write_text("TAG=other\n")
    monkeypatch.delenv("TAG", raising=False)
    parsed = read_compose(tmp_path / "compose.yml")
    assert parsed.services["web"]["image"] == "x:beside" and parsed.services["web"]["environment"] == {"A": "1"}
    assert read_compose(tmp_path / "compose.yml", tmp_path / "other.env").services["web"]["image"] == "x:other"
    monkeypatch.setenv("TAG", "shell")
    assert read_compose(tmp_path / "compose.yml").services["web"]["image"] == "x:shell"
    assert set(read_compose(tmp_path / "compose.yml", profiles=("debug",)).services) == {"web", "dbg"}
    assert stack_name(parsed, None) == "shop" and stack_name(parsed, "shop") == "shop"
    assert stack_name(parsed, "other") == "other" and parsed.warnings[0].startswith("name: shop: the stack's name")
    with pytest.raises(CommandFailed, match="give the stack's NAME"):
        stack_name(parse("services: {web: {image: x}}"), None)


def test_docs_compose_names_every_key_the_reader_knows() -> None:
    from agent.model import compose_deploy

    doc = (Path(__file__).parent.parent.parent / "docs" / "COMPOSE.md").read_text()
    keys = [*compose_service.MAPPED, *compose_service.IGNORED, *compose_service.REFUSED, *compose_deploy.DEPLOY_KEYS]
    missing = [k for k in keys if f"`{k}`" not in doc and f"`{k}." not in doc]
    assert not missing, missing
