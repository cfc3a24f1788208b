"""The compose subset: what is understood becomes a spec; what is not is refused with its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.model.compose import ComposeError, load

WEB = """
version: "3.8"
services:
  nginx-cluster:
    image: corral/base
    command: httpd -f -p 80 -h /var/www
    environment:
      GREETING: hello
    ports: ["8080:80"]
    labels: {tier: web}
    deploy:
      replicas: 10
      placement:
        constraints: ["node.labels.zone == a"]
      restart_policy: {condition: on-failure}
"""


def test_a_web_stack_loads() -> None:
    services = load(WEB)
    spec = services["nginx-cluster"]
    assert spec["scale"] == 10 and spec["image"] == "corral/base" and spec["restart"] == "on-failure"
    assert spec["placement"] == {"constraints": ["node.labels.zone == a"]}
    assert spec["environment"] == {"GREETING": "hello"} and spec["ports"] == ["8080:80"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("services: {web: {image: x, volumes: [a]}}", "services.web.volumes is not supported"),
        ("services: {web: {image: x}}\nnetworks: {}", "top-level 'networks' is not supported"),
        ("services: {web: {command: x}}", "services.web.image: is required"),
        ("services: {web: {image: x, deploy: {replicas: -2}}}", "services.web.scale"),
        ("services: {Web: {image: x}}", "services.Web"),
        ("services: {}", "at least one service"),
        ("services: [", "not YAML"),
        ("services: {web: {image: x, deploy: {placement: {constraints: [zone]}}}}", "placement.constraints[0]"),
        ("services: {web: {image: x, healthcheck: {test: [HTTP, /]}}}", "services.web.healthcheck.test must be"),
        ("services: {web: {image: x, healthcheck: {test: true}}}", "services.web.healthcheck.test must be"),
        ("services: {web: {image: x, healthcheck: {test: 'true', every: 5s}}}", "healthcheck.every is not supported"),
        ("services: {web: {image: x, healthcheck: {test: 'true', retries: 0}}}", "services.web.health_check.retries"),
    ],
)
def test_unsupported_or_wrong_files_are_refused_with_the_path(text: str, message: str) -> None:
    with pytest.raises(ComposeError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load(text)


def test_a_compose_healthcheck_becomes_a_command_check() -> None:
    text = """
services:
  a: {image: x, healthcheck: {test: ["CMD", "wget", "-q", "http://localhost/a b"], interval: 10s, retries: 2}}
  b: {image: x, healthcheck: {test: ["CMD-SHELL", "test -f /ready"], start_period: 30s}}
  c: {image: x, healthcheck: {test: "nc -z localhost 80", timeout: 1s}}
  d: {image: x, healthcheck: {test: ["NONE"]}}
  e: {image: x, healthcheck: {test: "true", disable: true}}
"""
    services = load(text)
    assert services["a"]["health_check"] == {"type": "command", "command": "wget -q 'http://localhost/a b'",
                                             "interval": "10s", "retries": 2}
    assert services["b"]["health_check"] == {"type": "command", "command": "test -f /ready", "start_period": "30s"}
    assert services["c"]["health_check"] == {"type": "command", "command": "nc -z localhost 80", "timeout": "1s"}
    assert "health_check" not in services["d"] and "health_check" not in services["e"]


def test_build_is_read_and_its_context_is_the_same_bytes_for_the_same_files(tmp_path: Path) -> None:
    import io
    import tarfile

    from agent.cli.stacks import build_context
    from agent.model.compose import BUILT, parse

    parsed = parse("services:\n  web:\n    build: {context: ./app, dockerfile: web.Dockerfile, args: [A=1]}\n"
                   "    pull_policy: always\n  db:\n    image: corral/base\n")
    assert parsed.builds["web"].context == "./app" and parsed.builds["web"].args == {"A": "1"}
    assert parsed.services["web"]["image"] == BUILT and parsed.services["web"]["pull"] == "always"
    assert "db" not in parsed.builds
    for bad in ("services:\n  web:\n    build: {context: ., target: x}\n",
                "services:\n  web:\n    build: {dockerfile: /etc/passwd}\n",
                "services:\n  web:\n    image: x\n    pull_policy: sometimes\n"):
        with pytest.raises(ComposeError):
            parse(bad)
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
