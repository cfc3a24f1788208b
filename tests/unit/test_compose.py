"""The compose subset: what is understood becomes a spec; what is not is refused with its path."""

from __future__ import annotations

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
