"""A real two-tier application on the lab, made from Debian's packages: ``corral lab image build redis
web`` (debootstrap once, then from the cache), the example stack agent/examples/two-tier.yml deployed
as it is written (web × 2 with a published port, Redis pinned to h1 with its data in a named volume),
a value written and read through the web tier's published port, the database's container removed
behind Corral's back (``docker rm -f`` on h1), and once Corral has replaced it the value read again:
it survives because it is in the volume.
"""

from __future__ import annotations

import secrets
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.lab import Lab
from tests.cli import corral
from tests.lab.cluster import api, until
from tests.lab.conftest import fresh_lab

EXAMPLE = Path(__file__).resolve().parents[2] / "agent" / "examples" / "two-tier.yml"
STACK = "two-tier"
WEB_PORT = 8081


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    labs = fresh_lab(3)
    lab = next(labs)
    try:
        started = time.monotonic()
        built = corral("lab", "image", "build", "redis", "web", timeout=1800)
        assert built.returncode == 0, built.stdout + built.stderr
        print(f"lab image build redis web: {time.monotonic() - started:.1f} s\n{built.stdout}")
        env = {"CORRAL_URL": lab.host("h1").api_url}
        deployed = corral("stack", "deploy", "-f", str(EXAMPLE), STACK,
                          "--wait", env=env, timeout=300)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        yield lab
    finally:
        labs.close()  # the lab goes down, whatever failed


def _containers(lab: Lab, service: str) -> list[dict[str, Any]]:
    return [c for c in api(lab, "h2").items("/v1/containers")
            if c["stack_name"] == STACK and c["service_name"] == service]


def _running(lab: Lab, service: str, count: int) -> list[dict[str, Any]] | None:
    found = _containers(lab, service)
    return found if len(found) == count and all(c["state"] == "running" for c in found) else None


def _page(lab: Lab, host: str, query: str = "") -> tuple[int, str]:
    """Status and body of the web tier's page on ``host``'s published port (from the root namespace,
    over the underlay, as a browser on the lab's machine would)."""
    url = f"http://{lab.host(host).address}:{WEB_PORT}/" + (f"?{query}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _answered(lab: Lab, host: str, query: str = "") -> tuple[int, str] | None:
    """The page once the web tier reaches the database (not 502, not refused)."""
    try:
        status, body = _page(lab, host, query)
    except OSError:
        return None
    return (status, body) if status != 502 else None


def test_the_images_come_from_debian_packages_and_reach_every_host(lab: Lab) -> None:
    catalog = {tag: image for image in api(lab, "h3").items("/v1/images") for tag in image["tags"]}
    for tag in ("corral-lab/redis:latest", "corral-lab/web:latest"):
        assert catalog[tag]["holders"] == ["h1", "h2", "h3"], catalog[tag]
    # the second build is the cache's: seconds, no debootstrap
    started = time.monotonic()
    again = corral("lab", "image", "build", "redis", "web", "--no-load")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("from the cache") == 2 and "debootstrap" not in again.stdout
    assert time.monotonic() - started < 30
    redis = _run_in(lab, "h1", ["docker", "run", "--rm", "corral-lab/redis", "redis-server", "--version"])
    assert redis.returncode == 0 and redis.stdout.startswith("Redis server v=7"), redis.stderr


def _run_in(lab: Lab, host: str, command: list[str]) -> subprocess.CompletedProcess[str]:
    """``corral lab exec HOST COMMAND``: in the host's namespace, DOCKER_HOST its engine."""
    argv, env = lab.exec_argv(host, command)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_the_web_tier_keeps_its_data_in_redis_and_it_survives_the_database_being_replaced(lab: Lab) -> None:
    subnet = next(h["subnet"] for h in api(lab, "h1").items("/v1/hosts") if h["name"] == "h1")
    assert subnet == "10.42.1.0/24", f"the example's REDIS_HOST 10.42.1.1 is h1's gateway only if h1 holds {subnet}"
    (db,) = until("the database runs", lambda: _running(lab, "db", 1), 120)
    assert db["host"] == "h1" and db["ports"] == ["6379:6379/tcp"]
    web = until("both web containers run", lambda: _running(lab, "web", 2), 120)
    web_hosts = sorted(c["host"] for c in web)
    assert len(set(web_hosts)) == 2  # spread: the two replicas answer on two hosts
    first, second = web_hosts

    # the counter: every GET / is one INCR, whichever replica answers
    status, body = until("the web tier reaches the database", lambda: _answered(lab, first), 60)
    assert status == 200 and body.startswith("hits "), body
    hits = int(body.split()[1])
    status, body = _page(lab, second)
    assert status == 200 and body.split("\n")[0] == f"hits {hits + 1}", body

    # a value written through one replica is read through the other
    value = f"two tier {secrets.token_hex(4)} & more"
    query = urllib.parse.urlencode({"set": "greeting", "value": value})
    assert _page(lab, first, query) == (200, f"ok\nserved by {_name(web, first)}\n")
    assert _page(lab, second, "get=greeting") == (200, f"{value}\nserved by {_name(web, second)}\n")
    assert _page(lab, second, "get=nothing-here")[0] == 404
    assert _page(lab, second, "get=bad%20key")[0] == 400

    # the database's container goes, behind Corral's back; Corral makes a new one on h1
    removed = _run_in(lab, "h1", ["docker", "rm", "-f", db["name"]])
    assert removed.returncode == 0, removed.stderr
    (replaced,) = until("a new database container runs", lambda: [
        c for c in (_running(lab, "db", 1) or []) if c["container_id"] != db["container_id"]], 120)
    assert replaced["host"] == "h1"
    status, body = until("the web tier reaches the new database", lambda: _answered(lab, first, "get=greeting"), 60)
    # this needs the named volume: without it the new container starts with an empty /data
    assert (status, body) == (200, f"{value}\nserved by {_name(web, first)}\n"), \
        "the value did not survive the database's replacement (is /data the named volume `data`?)"


def _name(containers: list[dict[str, Any]], host: str) -> str:
    return next(str(c["name"]) for c in containers if c["host"] == host)


def test_bad_input_is_a_clear_error_and_a_non_zero_exit(tmp_path: Path) -> None:
    """No lab needed: an unknown image, and a debootstrap that fails (a mirror that is not there)."""
    unknown = corral("lab", "image", "build", "postgres")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "corral lab: no lab image 'postgres': the recipes are redis, web"
    started = time.monotonic()
    failed = corral("lab", "image", "build", "redis", "--no-load", "--mirror", "http://127.0.0.1:9/debian",
                    env={"CORRAL_LAB_CACHE": str(tmp_path)})
    assert failed.returncode == 1
    assert failed.stderr.startswith("corral lab: debootstrap failed (exit 1): E: Failed getting release file "
                                    "http://127.0.0.1:9/debian/dists/"), failed.stderr
    assert time.monotonic() - started < 60
    assert not list((tmp_path / "images").glob("*.tar")) and not list((tmp_path / "build").iterdir())
