"""A compose file using many of the keys issue 16 maps, deployed through the real CLI: `docker inspect`
of the container on its host shows each of them (and the warnings were printed)."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli.client import Client
from agent.lab import Lab
from tests.cli import corral
from tests.lab.cluster import until
from tests.lab.conftest import fresh_lab

COMPOSE = """
name: keys
services:
  app_server:
    image: corral/base
    container_name: ignored-name
    command: sleep 3600
    user: "1000:1000"
    working_dir: /tmp
    hostname: app.internal
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    read_only: true
    init: true
    security_opt: ["no-new-privileges:true"]
    sysctls:
      net.core.somaxconn: 1024
    ulimits:
      nofile: {soft: 1024, hard: 2048}
    extra_hosts: ["db.local:10.0.0.5"]
    dns: [10.0.0.53]
    env_file: app.env
    environment:
      GREETING: ${GREETING:-hello}
      ON_VALUE: on
    ports:
      - "127.0.0.1:18080:80"
    expose: [9000]
    stop_signal: SIGINT
    stop_grace_period: 1m30s
    shm_size: 32m
    labels: {tier: web}
    restart: unless-stopped
    deploy:
      labels: {team: a}
      resources:
        limits: {cpus: "0.5", memory: 256M}
        reservations: {memory: 32M}
    logging: {driver: json-file}
"""


@pytest.fixture(scope="module")
def lab1() -> Iterator[Lab]:
    yield from fresh_lab(1)


def _inspect(lab: Lab, host: str, container: str) -> dict[str, Any]:
    argv, env = lab.exec_argv(host, ["docker", "inspect", container])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=True).stdout
    return dict(json.loads(out)[0])


def test_mapped_compose_keys_reach_the_container(lab1: Lab, tmp_path: Path) -> None:
    (tmp_path / "compose.yml").write_text(COMPOSE)
    (tmp_path / "app.env").write_text("FROM_FILE=yes\n# a comment\nGREETING=overridden\n")
    env = {"CORRAL_URL": lab1.host("h1").api_url}
    done = corral("stack", "deploy", "-f", str(tmp_path / "compose.yml"), env=env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning: services.app_server.container_name: ignored" in done.stderr, done.stderr
    assert "warning: services.app_server.logging: ignored" in done.stderr
    assert "warning: services.app_server: named app-server" in done.stderr
    client = Client(lab1.host("h1").api_url, token=lab1.admin_token())
    service = next(s for s in client.items("/v1/services") if s["stack_name"] == "keys")
    assert service["name"] == "app-server" and service["spec"]["service_labels"] == {"team": "a"}

    def running() -> list[dict[str, Any]] | None:
        items = client.items("/v1/containers", service=service["id"])
        return items if items and items[0]["state"] == "running" else None

    (container,) = until("the container runs", running, 90)
    seen = _inspect(lab1, container["host"], container["container_id"])
    config, host = seen["Config"], seen["HostConfig"]
    assert config["User"] == "1000:1000" and config["WorkingDir"] == "/tmp" and config["Hostname"] == "app.internal"
    assert config["Cmd"] == ["sleep", "3600"] and config["StopSignal"] == "SIGINT" and config["StopTimeout"] == 90
    assert "FROM_FILE=yes" in config["Env"] and "GREETING=hello" in config["Env"] and "ON_VALUE=on" in config["Env"]
    assert config["Labels"]["tier"] == "web" and "team" not in config["Labels"]
    assert "9000/tcp" in config["ExposedPorts"]
    assert host["CapAdd"] == ["NET_ADMIN"] and host["CapDrop"] == ["MKNOD"]
    assert host["ReadonlyRootfs"] is True and host["Init"] is True and host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Sysctls"] == {"net.core.somaxconn": "1024"}
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    assert host["ExtraHosts"] == ["db.local:10.0.0.5"] and host["Dns"] == ["10.0.0.53"]
    assert host["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}]}
    assert host["ShmSize"] == 32 * 2**20 and host["NanoCpus"] == 500_000_000 and host["Memory"] == 256 * 2**20
    assert host["MemoryReservation"] == 32 * 2**20 and host["RestartPolicy"]["Name"] == "unless-stopped"
    # the container itself runs as it was asked
    argv, run_env = lab1.exec_argv(container["host"], ["docker", "exec", container["container_id"], "sh", "-c",
                                                       "id -u; ulimit -n; grep db.local /etc/hosts; "
                                                       "touch /x 2>/dev/null && echo writable || echo read-only"])
    out = subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=30).stdout.split("\n")
    assert out[0] == "1000" and out[1] == "1024" and "10.0.0.5" in out[2] and out[3] == "read-only", out
    removed = corral("stack", "rm", "keys", env=env)
    assert removed.returncode == 0, removed.stdout + removed.stderr


RESTARTS = """
services:
  flaky:
    image: corral/base
    command: ["sh", "-c", "date +%s >> /log/starts; exit 1"]
    volumes: [log:/log]
    deploy:
      restart_policy: {condition: on-failure, delay: 3s, max_attempts: 2}
  everywhere:
    image: corral/base
    command: ["sleep", "3600"]
    deploy: {mode: global}
volumes:
  log: {}
"""


def test_a_restart_delay_spaces_the_restarts_and_max_attempts_stops_them(lab1: Lab, tmp_path: Path) -> None:
    (tmp_path / "compose.yml").write_text(RESTARTS)
    env = {"CORRAL_URL": lab1.host("h1").api_url}
    done = corral("stack", "deploy", "-f", str(tmp_path / "compose.yml"), "restarts", "--no-wait", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "restart_policy.delay" not in done.stderr, "a delay is applied, not warned about"
    client = Client(lab1.host("h1").api_url, token=lab1.admin_token())
    services = {s["name"]: s for s in client.items("/v1/services") if s["stack_name"] == "restarts"}
    assert services["everywhere"]["scale"] == 1, "global: one on the lab's one host"

    def starts() -> list[int]:
        argv, run_env = lab1.exec_argv("h1", ["sh", "-c", "docker run --rm -v restarts_log:/log corral/base "
                                                          "cat /log/starts"])
        out = subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=30).stdout
        return [int(x) for x in out.split()]

    seen = until("the first run and two restarts", lambda: s if len(s := starts()) >= 3 else None, 60)
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert all(g >= 3 for g in gaps), f"restarts {gaps} s apart: not before the 3 s delay"
    (container,) = client.items("/v1/containers", service=services["flaky"]["id"])
    assert _inspect(lab1, "h1", container["container_id"])["HostConfig"]["RestartPolicy"]["Name"] == "no", \
        "Docker restarts nothing itself: the agent does, after the delay"
    time.sleep(8)  # two more delays: a third restart would have happened by now
    assert len(starts()) == 3, "max_attempts 2: the first run and two restarts, no more"
    (container,) = client.items("/v1/containers", service=services["flaky"]["id"])
    assert container["state"] == "exited" and container["exit_code"] == 1
    everywhere = client.items("/v1/containers", service=services["everywhere"]["id"])
    assert [c["host"] for c in everywhere] == ["h1"]
    assert corral("stack", "rm", "restarts", "--volumes", env=env).returncode == 0
