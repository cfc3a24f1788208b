"""Volumes, configs and secrets on the real lab: data that outlives its container and its agent, an
instance that waits for its volume's host instead of starting empty elsewhere, files shipped with a
deploy and mounted read-only, secrets never shown back."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli.client import ApiError, Client
from agent.lab import Lab
from tests.cli import corral
from tests.lab.cluster import lab_sh, until
from tests.lab.conftest import fresh_lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from fresh_lab(3)


def _client(lab: Lab, host: str = "h1") -> Client:
    return Client(lab.host(host).api_url, token=lab.admin_token())


def _deploy(lab: Lab, stack: str, services: dict[str, Any], configs: dict[str, Any] | None = None,
            via: str = "h1") -> dict[str, Any]:
    return dict(_client(lab, via).post(f"/v1/stacks/{stack}/deploy", {"services": services,
                                                                      "configs": configs or {}}))


def _containers(lab: Lab, service: str, via: str = "h1") -> list[dict[str, Any]]:
    """The containers of ``stack/service``."""
    client = _client(lab, via)
    stack, _, name = service.partition("/")
    sid = next(s["id"] for s in client.items("/v1/services") if (s["stack_name"], s["name"]) == (stack, name))
    return client.items("/v1/containers", service=sid)


def _one(lab: Lab, service: str, via: str = "h1", new_than: str | None = None) -> dict[str, Any] | None:
    items = _containers(lab, service, via)
    if len(items) == 1 and items[0]["state"] == "running" and items[0]["container_id"] != new_than:
        return items[0]
    return None


def _in(lab: Lab, host: str, container: str, command: str) -> str:
    done = lab_sh(lab, host, f"docker exec {container} sh -c '{command}'")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_instance_volume_outlives_its_container_and_its_agent(lab: Lab) -> None:
    spec = {"image": "corral/base", "command": "exec sleep 1000000", "placement": {
        "constraints": ["node.hostname==h2"]},
        "mounts": [{"type": "volume", "source": "data", "target": "/data", "scope": "instance"}]}
    _deploy(lab, "keep", {"db": spec})
    first = until("db runs", lambda: _one(lab, "keep/db"), 60)
    assert first["host"] == "h2"
    _in(lab, "h2", first["name"], "echo written-before > /data/file")
    volumes = {v["name"]: v for v in _client(lab).items("/v1/volumes")}
    assert volumes["keep_data-1"]["host"] == "h2" and volumes["keep_data-1"]["scope"] == "instance"
    assert volumes["keep_data-1"]["used_by"] == ["keep/db"]

    lab_sh(lab, "h2", f"docker rm -f {first['name']}")
    second = until("db replaced", lambda: _one(lab, "keep/db", new_than=first["container_id"]), 60)
    assert second["host"] == "h2" and _in(lab, "h2", second["name"], "cat /data/file") == "written-before\n"

    lab.kill_agent("h2")
    lab_sh(lab, "h2", f"docker rm -f {second['name']}")  # gone while its agent is down
    lab.start_agent("h2")
    third = until("db back after the agent's restart", lambda: _one(lab, "keep/db", new_than=second["container_id"]),
                  60)
    assert third["host"] == "h2" and _in(lab, "h2", third["name"], "cat /data/file") == "written-before\n"

    busy = corral("volume", "rm", "keep_data-1", "--host", lab.host("h1").api_url)
    assert busy.returncode == 1 and "mounted by keep/db" in busy.stderr
    listed = corral("volume", "ls", "--host", lab.host("h3").api_url)
    assert listed.returncode == 0 and "keep_data-1" in listed.stdout and "h2" in listed.stdout


def test_a_pinned_volume_waits_for_its_lost_host_and_says_why(lab: Lab) -> None:
    spec = {"image": "corral/base", "command": "exec sleep 1000000",
            "placement": {"constraints": ["node.hostname==h3"]},
            "mounts": [{"type": "volume", "source": "data", "target": "/data"}]}
    _deploy(lab, "pin", {"db": spec})
    first = until("db runs", lambda: _one(lab, "pin/db"), 60)
    _in(lab, "h3", first["name"], "echo precious > /data/file")
    # the constraint goes: only the volume keeps it on h3 now
    _client(lab).patch(f"/v1/services/{first['service']}", {"placement": {"constraints": []}})
    lab.stop_host("h3")
    try:
        def waiting() -> dict[str, Any] | None:
            items = _containers(lab, "pin/db")
            return items[0] if len(items) == 1 and items[0].get("waiting") else None

        row = until("the instance says it waits for its volume", waiting, 60)
        assert "volume pin_data lives on h3, which is disconnected" in row["waiting"], row
        assert row["host"] == "h3", "not started elsewhere on an empty volume"
        ps = corral("ps", "--service", row["service"], "--host", lab.host("h2").api_url)
        assert ps.returncode == 0 and "pin_data lives on h3" in " ".join(ps.stdout.split())
        for host in ("h1", "h2"):
            names = lab_sh(lab, host, "docker ps -a --format '{{.Names}}'").stdout.split()
            assert not any(n.startswith("pin-db") for n in names), f"nothing of pin/db on {host}"
    finally:
        lab.start_host("h3")
    back = until("db back on h3", lambda: _one(lab, "pin/db", via="h2"), 90)
    assert back["host"] == "h3" and _in(lab, "h3", back["name"], "cat /data/file") == "precious\n"


def test_configs_and_secrets_are_mounted_read_only_and_secrets_never_shown(lab: Lab) -> None:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    spec = {"image": "corral/base", "command": "exec sleep 1000000", "mounts": [
        {"type": "config", "source": "site.conf", "target": "/etc/site.conf"},
        {"type": "config", "source": "www", "target": "/www"},
        {"type": "secret", "source": "pw"}]}
    configs = {"site.conf": {"files": [{"path": "", "data": b64("version 1\n")}]},
               "www": {"files": [{"path": "index.html", "data": b64("<h1>hi</h1>")},
                                 {"path": "css/a.css", "data": b64("a{}")}]},
               "pw": {"secret": True, "files": [{"path": "", "data": b64("hunter2")}]}}
    _deploy(lab, "conf", {"web": spec}, configs, via="h2")
    first = until("web runs", lambda: _one(lab, "conf/web"), 60)
    host, name = first["host"], first["name"]
    assert _in(lab, host, name, "cat /etc/site.conf") == "version 1\n"
    assert _in(lab, host, name, "cat /www/index.html /www/css/a.css") == "<h1>hi</h1>a{}"
    assert _in(lab, host, name, "cat /run/secrets/pw") == "hunter2"
    refused = lab_sh(lab, host, f"docker exec {name} sh -c 'echo x > /etc/site.conf'")
    assert refused.returncode != 0, "a config is mounted read-only"
    admin = _client(lab, "h3")  # reads are answered from h3's own replica: it may be a moment behind h2

    def shown_on_h3() -> dict[str, Any] | None:
        try:
            return dict(admin.get("/v1/configs/conf_pw", content="true"))
        except ApiError:
            return None

    secret = until("h3 has applied the deploy", shown_on_h3, 15)
    assert secret["secret"] and "content" not in secret and "hunter2" not in str(secret)
    assert "hunter2" not in str(admin.items("/v1/events")), "nor in the events"
    shown = admin.get("/v1/configs/conf_site.conf", content="true")
    assert base64.b64decode(shown["content"][0]["data"]) == b"version 1\n"

    # new content: a new container with it; the same content again changes nothing
    configs["site.conf"] = {"files": [{"path": "", "data": b64("version 2\n")}]}
    plan = _deploy(lab, "conf", {"web": spec}, configs)
    assert plan["configs"]["changed"] == ["site.conf"] and plan["configs"]["unchanged"] == ["pw", "www"]
    second = until("web replaced", lambda: _one(lab, "conf/web", new_than=first["container_id"]), 60)
    assert _in(lab, second["host"], second["name"], "cat /etc/site.conf") == "version 2\n"
    again = _deploy(lab, "conf", {"web": spec}, configs)
    assert again["services"]["unchanged"] == ["web"] and again["configs"]["changed"] == []

    with pytest.raises(ApiError) as err:
        admin.delete("/v1/configs/conf_pw")
    assert err.value.status == 400 and "goes with the stack" in err.value.message


def test_host_folders_only_where_the_cluster_allows_and_configs_from_the_cli(lab: Lab, tmp_path: Path) -> None:
    folder = tmp_path / "www"
    folder.mkdir()
    (folder / "index.html").write_text("from the host\n")
    url = lab.host("h2").api_url
    bind = {"image": "corral/base", "command": "exec sleep 1000000",
            "mounts": [{"type": "bind", "source": str(folder), "target": "/www", "read_only": True}]}
    with pytest.raises(ApiError) as err:
        _deploy(lab, "binds", {"web": bind})
    assert err.value.status == 400 and f"binding host path {folder} is not allowed" in err.value.message
    allowed = corral("settings", "--allow-bind-path", str(tmp_path), "--host", url)
    assert allowed.returncode == 0 and str(tmp_path) in allowed.stdout, allowed.stderr
    _deploy(lab, "binds", {"web": bind})
    row = until("web runs", lambda: _one(lab, "binds/web"), 60)
    assert _in(lab, row["host"], row["name"], "cat /www/index.html") == "from the host\n"
    assert corral("settings", "--host", url).stdout.strip() == f"bind paths: {tmp_path}"

    (tmp_path / "motd").write_text("hello\n")
    made = corral("config", "create", "motd", str(tmp_path / "motd"), "--host", url)
    assert made.returncode == 0 and "config motd created (6 bytes)" in made.stdout, made.stderr
    shown = corral("config", "inspect", "motd", "--content", "--host", url)
    assert "hello" in shown.stdout
    too_big = tmp_path / "big"
    too_big.write_bytes(b"x" * (600 * 1024))
    refused = corral("config", "create", "big", str(too_big), "--host", url)
    assert refused.returncode == 1 and "a config is at most 512 KiB" in refused.stderr
    assert corral("config", "rm", "motd", "--host", url).returncode == 0
    assert "motd" not in corral("config", "ls", "--host", url).stdout
    assert corral("settings", "--no-bind-paths", "--host", url).stdout.strip().startswith("bind paths: none")


COMPOSE = """\
services:
  web:
    image: corral/base
    command: ["sh", "-c", "exec sleep 1000000"]
    volumes:
      - ./site.conf:/etc/site.conf:ro
      - ./html:/www
      - ./empty:/scratch
      - cache:/cache
    secrets: [token]
    configs:
      - source: motd
        target: /etc/motd
    container_name: ignored-name
    depends_on:
      db: {condition: service_healthy}
  db:
    image: corral/base
    command: ["sh", "-c", "exec sleep 1000000"]
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
volumes:
  cache:
    x-corral: {scope: instance}
configs:
  motd:
    content: "welcome to ${PLACE:-the lab}\\n"
secrets:
  token:
    file: ./token.txt
"""


def test_a_compose_file_ships_its_files_and_a_dry_run_changes_nothing(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "compose.yml").write_text(COMPOSE)
    (tmp_path / "site.conf").write_text("listen 80;\n")
    (tmp_path / "html").mkdir()
    (tmp_path / "html" / "index.html").write_text("<h1>hi</h1>\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "token.txt").write_text("s3cret")
    url = lab.host("h3").api_url
    args = ("stack", "deploy", "-f", str(tmp_path / "compose.yml"), "files", "--host", url)
    dry = corral(*args, "--dry-run", env={"PLACE": "Corral"})
    assert dry.returncode == 0, dry.stderr
    assert "service files/web would be created" in dry.stdout and "service files/db would be created" in dry.stdout
    assert "volume files_cache-1 would be made" in dry.stdout
    assert "services.web.container_name: ignored" in dry.stderr, dry.stderr
    assert "./empty: an empty folder: a stack volume" in dry.stderr
    assert not [s for s in _client(lab).items("/v1/stacks") if s["name"] == "files"], "a dry run makes nothing"

    done = corral(*args, env={"PLACE": "Corral"}, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    row = until("web runs", lambda: _one(lab, "files/web"), 60)
    host, name = row["host"], row["name"]
    assert _in(lab, host, name, "cat /etc/site.conf /www/index.html") == "listen 80;\n<h1>hi</h1>\n"
    assert _in(lab, host, name, "cat /etc/motd") == "welcome to Corral\n"
    assert _in(lab, host, name, "cat /run/secrets/token") == "s3cret"
    assert _in(lab, host, name, "touch /scratch/x /cache/y && echo ok") == "ok\n", "volumes are writable"
    db = _containers(lab, "files/db")[0]
    web_started = lab_sh(lab, host, f"docker inspect -f '{{{{.State.StartedAt}}}}' {name}").stdout.strip()
    db_started = lab_sh(lab, db["host"], f"docker inspect -f '{{{{.State.StartedAt}}}}' {db['name']}").stdout.strip()
    assert db_started < web_started, "web started once db was healthy (depends_on)"

    bad = tmp_path / "cycle.yml"
    bad.write_text("services:\n  a: {image: corral/base, depends_on: [b]}\n"
                   "  b: {image: corral/base, depends_on: [a]}\n")
    refused = corral("stack", "deploy", "-f", str(bad), "cycle", "--host", url)
    assert refused.returncode == 1 and "a → b → a" in refused.stderr, refused.stderr
    unset = tmp_path / "unset.yml"
    unset.write_text("services:\n  a:\n    image: ${IMAGE}\n")
    refused = corral("stack", "deploy", "-f", str(unset), "unset", "--host", url)
    assert refused.returncode == 1 and "IMAGE" in refused.stderr and "line 3" in refused.stderr, refused.stderr
    assert not [s for s in _client(lab).items("/v1/stacks") if s["name"] in ("cycle", "unset")]
