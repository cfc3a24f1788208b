"""Rotating the cluster CA (``corral ca rotate``): the cross-signed chain, both CAs trusted while the old
one retires, the model's two commands, the API's routes and a joining host's view of a rotation."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.model.access import Authority
from agent.model.commands import CaRetire, CaRotate, CaSet
from agent.model.errors import CommandError, ErrorCode
from agent.model.state import ClusterState
from agent.process.certs import NodeCerts
from agent.process.joining import JoinRefused, _accept
from mesh import pki
from tests.unit.fakes import SECRET, harness_ca, running_api


def _authority(now: float) -> tuple[Authority, bytes]:
    ca_pem, ca_key = pki.make_ca("test", now)
    return Authority(ca_pem.decode(), pki.seal_ca_key(SECRET, ca_key), pki.fingerprint(ca_pem), 1), ca_key


def _rotated(old: Authority, old_key: bytes, now: float) -> tuple[Authority, bytes]:
    new_pem, new_key = pki.next_ca(old.cert_pem.encode(), old.generation + 1, now)
    cross = pki.cross_sign(new_pem, old.cert_pem.encode(), old_key, now)
    return Authority(new_pem.decode(), pki.seal_ca_key(SECRET, new_key), pki.fingerprint(new_pem), 2,
                     old.generation + 1, old.cert_pem, old.fingerprint, cross.decode()), new_key


def test_the_new_ca_has_its_own_name_and_the_old_one_vouches_for_it() -> None:
    now = time.time()
    old, old_key = _authority(now)
    new, _ = _rotated(old, old_key, now)
    from cryptography import x509
    assert x509.load_pem_x509_certificate(new.cert_pem.encode()).subject.rfc4514_string().endswith("test #2,O=Corral")
    assert pki.vouched(new.cert_pem.encode(), new.cross_pem.encode(), old.cert_pem.encode(), now)
    other, _ = _authority(now)
    assert not pki.vouched(new.cert_pem.encode(), new.cross_pem.encode(), other.cert_pem.encode(), now)
    assert not pki.vouched(other.cert_pem.encode(), new.cross_pem.encode(), old.cert_pem.encode(), now), \
        "the cross-signed copy is of one CA (its name and key), not of any"
    assert new.fingerprints == (new.fingerprint, old.fingerprint)
    assert pki.split_pem(new.trusted_pem.encode()) == [new.cert_pem.encode(), old.cert_pem.encode()]


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _serve(certs: NodeCerts) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/", _ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=certs.server)
    await site.start()
    return runner, runner.addresses[0][1]


async def _reaches(client: NodeCerts, port: int) -> bool:
    """Can ``client``'s context (the one object the agent's session holds) verify the server?"""
    connector = aiohttp.TCPConnector(ssl=client.client, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            async with session.get(f"https://127.0.0.1:{port}/") as resp:
                return await resp.text() == "ok"
        except aiohttp.ClientConnectorCertificateError:
            return False


async def test_during_a_rotation_old_and_new_nodes_verify_each_other_and_after_it_the_old_ca_is_refused(
        tmp_path: Path) -> None:
    now = time.time()
    old, old_key = _authority(now)
    new, _ = _rotated(old, old_key, now)
    behind, ahead = NodeCerts(tmp_path / "behind"), NodeCerts(tmp_path / "ahead")
    (tmp_path / "behind").mkdir()
    (tmp_path / "ahead").mkdir()
    behind.issue_here(SECRET, old, "127.0.0.1", "127.0.0.1", True, now)  # not rotated yet: trusts the old CA only
    ahead.issue_here(SECRET, new, "127.0.0.1", "127.0.0.1", True, now)  # rotated: new certificate, trusts both
    assert behind.behind(new, now) and not ahead.behind(new, now)
    assert ahead.cert_path.read_bytes().count(b"BEGIN CERTIFICATE") == 2, "the leaf, then the cross-signed CA"
    runners = []
    try:
        runner_b, port_b = await _serve(behind)
        runner_a, port_a = await _serve(ahead)
        runners = [runner_a, runner_b]
        assert await _reaches(behind, port_a), "the old CA verifies the new certificate through the cross-signed CA"
        assert await _reaches(ahead, port_b), "a rotated node still trusts the retiring CA"
        retired = Authority(new.cert_pem, new.sealed_key, new.fingerprint, 3, new.generation)
        assert ahead.behind(retired, now), "the rotation's end is a change too: trust and chain differ"
        ahead.issue_here(SECRET, retired, "127.0.0.1", "127.0.0.1", True, now)
        assert not await _reaches(ahead, port_b), "the same context object trusts the old CA no more"
        assert ahead.cert_path.read_bytes().count(b"BEGIN CERTIFICATE") == 1
    finally:
        for runner in runners:
            await runner.cleanup()


def test_the_model_takes_a_rotation_then_its_end_and_refuses_what_does_not_fit() -> None:
    now = time.time()
    old, old_key = _authority(now)
    new, _ = _rotated(old, old_key, now)
    state = ClusterState()
    rotate = CaRotate(new.cert_pem, new.sealed_key, new.fingerprint, new.cross_pem)
    with pytest.raises(CommandError) as no_ca:
        state.execute(rotate, 1)
    assert no_ca.value.code is ErrorCode.CONFLICT
    state.execute(CaSet(old.cert_pem, old.sealed_key, old.fingerprint), 2)
    with pytest.raises(CommandError, match="no CA rotation"):
        state.execute(CaRetire(old.fingerprint), 3)
    state.execute(rotate, 4)
    got = state.access.authority
    assert got is not None and got.fingerprint == new.fingerprint and got.previous_fingerprint == old.fingerprint
    assert got.generation == 2 and got.cross_pem == new.cross_pem
    with pytest.raises(CommandError, match="under way already"):
        state.execute(rotate, 5)
    restored = ClusterState()
    restored.restore(state.snapshot())
    assert restored.access.authority == got, "a snapshot keeps a rotation under way"
    with pytest.raises(CommandError, match="retiring CA is"):
        state.execute(CaRetire(new.fingerprint), 6)
    state.execute(CaRetire(old.fingerprint), 7)
    done = state.access.authority
    assert done is not None and done.fingerprints == (new.fingerprint,) and not done.previous and not done.cross_pem
    assert [e.kind for e in state.events].count("ca.rotated") == 2


def test_a_joining_host_believes_the_new_ca_only_as_the_old_one_vouches_for_it(tmp_path: Path) -> None:
    now = time.time()
    old, old_key = _authority(now)
    new, new_key = _rotated(old, old_key, now)
    (tmp_path / "a").mkdir()
    certs = NodeCerts(tmp_path / "a")
    leaf = pki.sign(new.cert_pem.encode(), new_key, certs.csr("h9"), "h9", "worker", ["10.9.9.9"], now).cert_pem
    member = pki.sign(new.cert_pem.encode(), new_key, pki.make_csr("h1", pki.new_key()), "h1", "manager",
                      ["10.9.9.1"], now).cert_pem
    member_der = pki.split_pem(member)[0]
    answer: dict[str, Any] = {"ca": new.trusted_pem, "cert": leaf.decode() + new.cross_pem, "secret": "a2V5"}
    _accept(answer, member_der, old.fingerprint, certs, "https://h1")  # a token made before the rotation
    assert pki.split_pem(certs.ca_path.read_bytes()) == pki.split_pem(new.trusted_pem.encode())
    # an answer naming a CA the token's does not vouch for: that CA is not trusted, its certificates refused
    rogue_pem, rogue_key = pki.make_ca("rogue", now)
    rogue_leaf = pki.sign(rogue_pem, rogue_key, pki.make_csr("h9", pki.new_key()), "h9", "worker",
                          ["10.9.9.9"], now).cert_pem
    forged = {"ca": old.cert_pem + rogue_pem.decode(), "cert": rogue_leaf.decode(), "secret": "a2V5"}
    (tmp_path / "b").mkdir()
    with pytest.raises(JoinRefused, match="did not issue"):
        _accept(forged, pki.split_pem(rogue_leaf)[0], old.fingerprint, NodeCerts(tmp_path / "b"), "https://evil")


@pytest.fixture
async def harness() -> AsyncIterator[Any]:
    async with running_api() as h, aiohttp.ClientSession() as session:
        async def call(method: str, path: str, body: Any = None, token: bool = True) -> tuple[int, Any]:
            async with session.request(method, h.url + path, json=body, headers=h.auth if token else {}) as resp:
                return resp.status, json.loads(await resp.read() or b"null")
        yield h, call


async def test_the_api_rotates_the_ca_keeps_old_tokens_working_and_finishes_only_when_hosts_have_caught_up(
        harness: Any) -> None:
    h, call = harness
    status, before = await call("GET", "/v1/ca", token=False)
    assert status == 200 and not before["rotating"] and before["trusted"] == before["cert"]
    old_token = (await call("POST", "/v1/jointokens", {"ttl": "1h"}))[1]["token"]
    assert (await call("POST", "/v1/ca/rotate", token=False))[0] == 401
    status, begun = await call("POST", "/v1/ca/rotate")
    assert status == 201 and begun["rotating"] and begun["retiring"] == before["fingerprint"]
    assert begun["fingerprint"] != before["fingerprint"] and begun["generation"] == 2
    status, again = await call("POST", "/v1/ca/rotate")
    assert status == 409 and "under way" in again["message"]
    body = {"token": old_token, "name": "h9", "address": "10.9.9.9",
            "csr": pki.make_csr("h9", pki.new_key()).decode()}
    status, joined = await call("POST", "/v1/join", body, token=False)
    assert status == 200, joined
    chain = pki.split_pem(joined["cert"].encode())
    assert len(chain) == 2 and pki.issued_by(chain[0], begun["cert"].encode(), time.time())
    assert pki.vouched(begun["cert"].encode(), chain[1], harness_ca()[0], time.time())
    status, hosts = await call("GET", "/v1/ca/hosts")
    assert status == 200 and [x["host"] for x in hosts["hosts"]] == ["h1"]
    assert hosts["hosts"][0]["current"] is not True and "plain HTTP" in hosts["hosts"][0]["error"]
    status, refused = await call("POST", "/v1/ca/finish", {})
    assert status == 409 and "h1" in refused["message"], refused
    assert (await call("POST", "/v1/ca/finish", {"force": "yes"}))[0] == 400
    status, done = await call("POST", "/v1/ca/finish", {"force": True})
    assert status == 200 and not done["rotating"] and done["fingerprints"] == [begun["fingerprint"]]
    body = {**body, "name": "h10", "csr": pki.make_csr("h10", pki.new_key()).decode()}
    status, late = await call("POST", "/v1/join", body, token=False)
    assert status == 403 and "another cluster" in late["message"], "a token of the retired CA"
    assert (await call("POST", "/v1/ca/finish", {"force": True}))[0] == 409
    await asyncio.sleep(0)
    assert h.replica.state.access.authority.fingerprint == begun["fingerprint"]


def test_a_verified_connection_needs_the_chain_when_the_client_has_only_the_old_ca(tmp_path: Path) -> None:
    """The bare leaf of the new CA is refused by an old-CA client: the cross-signed copy is what works."""
    now = time.time()
    old, old_key = _authority(now)
    new, new_key = _rotated(old, old_key, now)
    leaf_key = pki.new_key()
    leaf = pki.sign(new.cert_pem.encode(), new_key, pki.make_csr("n", leaf_key), "n", "worker", ["127.0.0.1"],
                    now).cert_pem
    (tmp_path / "key.pem").write_bytes(pki.key_pem(leaf_key))
    results = []
    for chain in (leaf, leaf + new.cross_pem.encode()):
        (tmp_path / "cert.pem").write_bytes(chain)
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
        client = ssl.create_default_context(cadata=old.cert_pem)
        client.check_hostname = False
        results.append(_handshake(server, client))
    assert results == [False, True]


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> bool:
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side, out, peer_in in ((client, c_out, s_in), (server, s_out, c_in)):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                return False
            peer_in.write(out.read())
        try:
            client.do_handshake()
            return True
        except ssl.SSLWantReadError:
            continue
        except ssl.SSLError:
            return False
    return False


async def test_a_cluster_from_before_tls_gets_its_ca_with_bootstrap_admin(tmp_path: Path) -> None:
    """A data dir with a secret and no certificate (made before TLS): ``--bootstrap-admin`` keeps a CA,
    a join token and the first administrator to propose; this node's certificate is from that CA."""
    from agent.model.commands import AdminBootstrap, JoinTokenCreate
    from agent.process import bootstrap
    from agent.process.agent import Agent
    from agent.process.config import AgentConfig
    from agent.process.credentials import SECRET_FILE

    (tmp_path / SECRET_FILE).write_bytes(SECRET)
    (tmp_path / "password").write_text("an old cluster's admin\n")
    agent = Agent(AgentConfig(bind="127.0.0.1", name="h1", data_dir=tmp_path, bootstrap_admin=True,
                              admin_password_file=tmp_path / "password", admin_key_file=tmp_path / "key"))
    async with agent._secret():
        pass
    kept = bootstrap.pending(tmp_path)
    assert [type(c) for c in kept] == [CaSet, JoinTokenCreate, AdminBootstrap]
    ca = kept[0]
    assert isinstance(ca, CaSet) and pki.open_ca_key(SECRET, ca.sealed_key)
    assert agent.certs.present()
    assert pki.issued_by(agent.certs.cert_path.read_bytes(), ca.cert_pem.encode(), time.time())
    again = Agent(AgentConfig(bind="127.0.0.1", name="h1", data_dir=tmp_path, bootstrap_admin=True,
                              admin_password_file=tmp_path / "password", admin_key_file=tmp_path / "key"))
    (tmp_path / bootstrap.PENDING_FILE).unlink()
    async with again._secret():
        pass
    assert [type(c) for c in bootstrap.pending(tmp_path)] == [AdminBootstrap], "a node with a CA makes no other"
