"""`corral lab up --registry`: a real registry (docker-registry, TLS from the lab's registry CA, htpasswd)
on the bridge's address, holding the base image, that every lab engine trusts — and that `down` removes."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from agent.cli.client import Client
from agent.lab import Lab, procs, registry
from agent.lab.layout import BASE_IMAGE
from agent.node.docker import DockerEngine, PullFailed, RegistryAuth
from tests.cli import corral
from tests.lab.cluster import until
from tests.lab.conftest import fresh_lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from fresh_lab(2, registry=True)


async def _get(lab: Lab, path: str, auth: tuple[str, str] | None = None) -> tuple[int, Any]:
    tls = ssl.create_default_context(cafile=str(lab.registry_ca_file))
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                              connector=aiohttp.TCPConnector(ssl=tls)) as session,
        session.get(f"https://{lab.registry_address}{path}",
                    headers=registry.basic_auth(*auth) if auth else None) as resp,
    ):
        body = await resp.json(content_type=None)
        return resp.status, body


def _handshake(address: str, context: ssl.SSLContext) -> dict[str, Any]:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as conn:
        cert: dict[str, Any] = conn.getpeercert() or {}
        return cert


async def test_the_registry_wants_the_lab_credentials(lab: Lab) -> None:
    user, password = lab.registry_credentials()
    assert user == "lab" and len(password) >= 20
    assert lab.registry_address == f"{lab.hosts()[0].address.rsplit('.', 1)[0]}.1:5000", "the bridge's .1"
    status, body = await _get(lab, "/v2/")
    assert status == 401 and body["errors"][0]["code"] == "UNAUTHORIZED"
    assert (await _get(lab, "/v2/_catalog"))[0] == 401
    assert (await _get(lab, "/v2/_catalog", (user, password + "x")))[0] == 401, "a wrong password is refused"
    assert (await _get(lab, "/v2/_catalog", ("admin", password)))[0] == 401, "so is another user"
    assert await _get(lab, "/v2/", (user, password)) == (200, {})
    status, catalog = await _get(lab, "/v2/_catalog", (user, password))
    assert status == 200 and catalog["repositories"] == ["corral/base"]
    status, tags = await _get(lab, "/v2/corral/base/tags/list", (user, password))
    assert status == 200 and tags["tags"] == ["latest"], "up pushed the base image"


def test_its_certificate_verifies_against_the_registry_ca_and_nothing_else(lab: Lab) -> None:
    address = lab.registry_address
    cert = _handshake(address, ssl.create_default_context(cafile=str(lab.registry_ca_file)))
    assert ("IP Address", address.split(":")[0]) in cert["subjectAltName"]
    for other in (ssl.create_default_context(), ssl.create_default_context(cafile=str(lab.ca_file))):
        with pytest.raises(ssl.SSLCertVerificationError):
            _handshake(address, other)  # not the system's CAs, not the lab cluster's CA


def test_a_service_from_the_registry_waits_for_credentials_then_runs(lab: Lab) -> None:
    """The agent's own pulls: without credentials the container is pull-failed and says so, with a wrong
    password it says the registry refused them, with the right ones it runs; the password is never shown
    back nor logged."""
    user, password = lab.registry_credentials()
    reference = f"{lab.registry_address}/{BASE_IMAGE}"

    async def untag() -> None:  # h2 has the base image (the lab loaded it), not under the registry's name
        engine = await DockerEngine.connect(lab.host("h2").docker_host)
        try:
            await engine.remove_image(reference)
        finally:
            await engine.close()

    asyncio.run(untag())
    admin = Client(lab.host("h1").api_url, token=lab.admin_token())
    stack = admin.post("/v1/stacks", {"name": "pulled"})
    service = admin.post("/v1/services", {"stack": stack["id"], "name": "app", "image": reference, "scale": 1,
                                          "command": "exec sleep 3600",
                                          "placement": {"constraints": ["node.hostname==h2"]}})

    def container() -> dict[str, Any] | None:
        items = admin.items("/v1/containers", service=service["id"])
        return items[0] if items else None

    def failing(words: str) -> Callable[[], dict[str, Any] | None]:
        def probe() -> dict[str, Any] | None:
            c = container()
            return c if c and c["state"] == "pull-failed" and words in (c.get("error") or "") else None
        return probe

    seen = until("no credentials: pull-failed, saying so", failing("asks for credentials"), 60)
    assert f"corral registry add {lab.registry_address}" in seen["error"]
    env = {"CORRAL_URL": lab.host("h1").api_url}
    added = corral("registry", "add", lab.registry_address, "-u", user, "--password-stdin", env=env,
                   input_text="wrong\n")
    assert added.returncode == 0, added.stderr
    until("a wrong password: the registry refused the credentials", failing("refused the credentials"), 60)
    added = corral("registry", "add", lab.registry_address, "-u", user, "--password-stdin", env=env,
                   input_text=password + "\n")
    assert added.returncode == 0 and password not in added.stdout + added.stderr
    until("the right ones: it runs", lambda: (c := container()) and c["state"] == "running", 60)
    shown = admin.items("/v1/registries")
    assert shown == [{"host": lab.registry_address, "username": user, "created": shown[0]["created"]}]
    listed = corral("registry", "ls", env=env)
    assert listed.returncode == 0 and user in listed.stdout and password not in listed.stdout
    for host in lab.hosts():
        assert password not in host.agent_log.read_text(errors="replace"), f"{host.name}'s log has the password"
    assert corral("registry", "rm", lab.registry_address, env=env).returncode == 0
    assert admin.items("/v1/registries") == []


async def test_a_host_that_never_pushed_pulls_the_base_image_with_the_credentials_only(lab: Lab) -> None:
    user, password = lab.registry_credentials()
    reference = f"{lab.registry_address}/{BASE_IMAGE}"
    engine = await DockerEngine.connect(lab.host("h2").docker_host)
    try:
        await engine.remove_image(reference)
        assert reference not in await engine.image_ids()
        with pytest.raises(PullFailed, match="no basic auth credentials"):
            await engine.pull(reference, None, lambda _share: None)
        with pytest.raises(PullFailed, match="unauthorized"):
            await engine.pull(reference, RegistryAuth(user, "wrong"), lambda _share: None)
        assert reference not in await engine.image_ids()
        shares: list[float | None] = []
        await engine.pull(reference, RegistryAuth(user, password), shares.append)
        images = await engine.image_ids()
        assert images[reference] == images[BASE_IMAGE], "the same image, by its id"
        assert shares and all(s is None or 0 <= s <= 1 for s in shares)
    finally:
        await engine.close()


def test_status_shows_the_registry(lab: Lab) -> None:
    shown = lab.registry_status()
    assert shown is not None and shown["state"] == "running"
    assert shown["url"] == f"https://{lab.registry_address}"
    assert shown["pid"] in registry.pids(lab.root)
    state = lab.read_state()
    assert state is not None and state["registry"] == {"address": lab.registry_address, "pid": shown["pid"]}


def test_down_stops_the_registry_and_removes_its_trust_even_without_the_lab_state(lab: Lab) -> None:
    """Last in the module: it takes the lab down (the fixture's own down then finds nothing)."""
    address = lab.registry_address
    trust = registry.CERTS_D / address
    assert (trust / "ca.crt").read_bytes() == lab.registry_ca_file.read_bytes()
    pids = registry.pids(lab.root)
    assert len(pids) == 1
    lab.state_file.unlink()  # as after a crash: down must find the daemon and the trust by themselves
    removed = lab.down()
    assert f"directory {trust}" in removed and "registry: 1 processes" in removed
    assert not trust.exists()
    assert not any(procs.alive(pid) for pid in pids) and not registry.pids(lab.root)
    assert lab.leftovers() == []
