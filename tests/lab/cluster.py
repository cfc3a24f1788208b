"""Helpers for lab tests of the running cluster: the API of every host, polling until a condition holds."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

from agent.cli.client import ApiError, Client
from agent.lab import Lab
from mesh import waiting

T = TypeVar("T")


def tls() -> ssl.SSLContext | None:
    """The lab cluster's CA, which the lab fixture names in CORRAL_CACERT."""
    cafile = os.environ.get("CORRAL_CACERT")
    return ssl.create_default_context(cafile=cafile) if cafile else None


def token_header() -> dict[str, str]:
    """The lab administrator's token, which the lab fixture puts in CORRAL_TOKEN."""
    token = os.environ.get("CORRAL_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def api(lab: Lab, host: str, timeout: float = 10.0) -> Client:
    return Client(lab.host(host).api_url, timeout=timeout)


def raw(url: str, method: str = "GET", body: bytes | None = None,
        timeout: float = 10.0) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body (the text of a ``text/plain`` answer) of one request, 4xx/5xx included."""
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json",
                                                                         **token_header()})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=tls()) as resp:
            data = resp.read()
            if resp.headers.get_content_type() == "text/plain":  # GET /metrics: Prometheus' text
                return resp.status, dict(resp.headers), data.decode()
            return resp.status, dict(resp.headers), json.loads(data or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


def until(what: str, probe: Callable[[], T | None], timeout: float = 30.0, every: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy (an API error or OSError counts as not yet)."""
    return waiting.until(what, probe, timeout, every, retry_on=(ApiError, OSError))


def leader(lab: Lab, hosts: list[str] | None = None) -> str | None:
    """The leader every answering host of ``hosts`` agrees on and that is one of them, or None."""
    seen = set()
    hosts = hosts or [h.name for h in lab.hosts()]
    for name in hosts:
        try:
            seen.add(api(lab, name, 2).get("/v1/raft").get("leader"))
        except ApiError:
            continue
    chief = seen.pop() if len(seen) == 1 else None
    return chief if chief in hosts else None


def members_seen_by(lab: Lab, host: str) -> dict[str, str]:
    return {m["name"]: m["state"] for m in api(lab, host, 2).get("/v1/members")["items"]}


def containers(lab: Lab, host: str, **query: Any) -> list[dict[str, Any]]:
    return api(lab, host).items("/v1/containers", **query)


def docker_ps(lab: Lab, host: str) -> list[dict[str, str]]:
    """Corral's containers on one host's engine, as `docker ps -a` shows them."""
    argv, env = lab.exec_argv(host, ["docker", "ps", "-a", "--filter", "label=corral.instance",
                                     "--format", "{{json .}}"])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def lab_sh(lab: Lab, host: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    argv, env = lab.exec_argv(host, ["sh", "-c", command])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def service_running(lab: Lab, host: str, service_id: str, scale: int) -> list[dict[str, Any]] | None:
    items = containers(lab, host, service=service_id)
    running = [c for c in items if c["state"] == "running"]
    return items if len(running) == scale == len(items) else None
