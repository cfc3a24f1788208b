"""Lab fixtures: a real lab (namespaces, dockerds, agents) that is taken down even when tests fail.

Lab tests need root, iproute2, iptables and Docker Engine (the README's setup command installs
them). Where they are missing the tests fail, loudly: a suite that skips its lab is not a pass.
Set CORRAL_SKIP_LAB=1 to skip them on purpose (a laptop without root, say).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.lab import Lab
from tests.cli import corral

EXAMPLE = Path(__file__).resolve().parents[2] / "agent" / "examples" / "web-server.yml"
"""Rancher's users' guide example: stack ``web-server``, ``nginx-cluster`` × 10 behind load balancer ``lb``."""


def _lab_prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root"
    for tool in ("dockerd", "nsenter", "iptables", "ip"):
        if shutil.which(tool) is None:
            return f"lab tests need {tool}: run scripts/install.sh"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session", autouse=True)
def _lab_ready() -> None:
    if os.environ.get("CORRAL_SKIP_LAB") == "1":
        pytest.skip("CORRAL_SKIP_LAB=1")
    problem = _lab_prerequisites()
    if problem:
        pytest.fail(problem)


def fresh_lab(hosts: int, registry: bool = False) -> Iterator[Lab]:
    """Bring a lab up (taking down any left behind by a crashed run), yield it, always take it down."""
    lab = Lab()
    if lab.leftovers():
        lab.down()
    lab.up(hosts, registry=registry)
    before = {k: os.environ.get(k) for k in ("CORRAL_TOKEN", "CORRAL_CACERT")}
    os.environ["CORRAL_TOKEN"] = lab.admin_token()  # the tests act as the lab's administrator
    os.environ["CORRAL_CACERT"] = str(lab.ca_file)  # and trust its CA
    try:
        yield lab
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if os.environ.get("CORRAL_LAB_KEEP_FAILED") != "1":  # debugging: keep it for a look, then `lab down`
            lab.down()


def example_lab(ready: Callable[[Lab], None] | None = None) -> Iterator[Lab]:
    """A fresh 3-host lab with the example deployed (``corral stack deploy --wait`` through h1), and
    ``ready`` waited for; always taken down."""
    labs = fresh_lab(3)
    lab = next(labs)
    try:
        deployed = corral("stack", "deploy", "-f", str(EXAMPLE), "web-server", "--wait",
                          env={"CORRAL_URL": lab.host("h1").api_url}, timeout=300)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        if ready is not None:
            ready(lab)
        yield lab
    finally:
        labs.close()


@pytest.fixture(scope="module")
def lab3() -> Iterator[Lab]:
    yield from fresh_lab(3)
