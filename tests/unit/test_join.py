"""Joining: the CA and node certificates (mesh.pki), join tokens (expiry, uses, revocation, the CA
fingerprint they carry), and the join exchange on the real app over an in-memory cluster."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.api.join import new_join_token, parse_join_token
from agent.errors import BadRequest
from agent.model.access import Authority
from agent.model.commands import JoinTokenCreate, JoinTokenUse
from agent.model.errors import CommandError, ErrorCode
from agent.model.state import ClusterState
from agent.process.certs import NodeCerts
from mesh import pki
from tests.unit.fakes import SECRET, Harness, harness_ca, running_api


def test_a_node_certificate_names_its_node_and_role_and_chains_to_the_ca() -> None:
    now = time.time()
    ca_pem, ca_key = pki.make_ca("test", now)
    key = pki.new_key()
    issued = pki.sign(ca_pem, ca_key, pki.make_csr("h2", key), "h2", "worker", ["10.0.0.2"], now)
    assert pki.issued_by(issued.cert_pem, ca_pem, now) and pki.role_of(issued.cert_pem) == "worker"
    assert not pki.due_for_renewal(issued.cert_pem, now)
    assert pki.due_for_renewal(issued.cert_pem, now + 61 * 86400), "renewed when a third of 90 days is left"
    assert not pki.issued_by(issued.cert_pem, ca_pem, now + 91 * 86400), "expired"
    other_ca, _ = pki.make_ca("other", now)
    assert not pki.issued_by(issued.cert_pem, other_ca, now), "another cluster's CA did not issue it"
    with pytest.raises(pki.PkiError, match="not for 'h3'"):
        pki.sign(ca_pem, ca_key, pki.make_csr("h2", key), "h3", "worker", [], now)
    with pytest.raises(pki.PkiError, match="role"):
        pki.sign(ca_pem, ca_key, pki.make_csr("h2", key), "h2", "root", [], now)
    with pytest.raises(pki.PkiError, match="CSR"):
        pki.sign(ca_pem, ca_key, b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", "h2", "worker", [], now)
    sealed = pki.seal_ca_key(b"s" * 32, ca_key)
    assert pki.open_ca_key(b"s" * 32, sealed) == ca_key
    with pytest.raises(pki.PkiError):
        pki.open_ca_key(b"t" * 32, sealed)


def test_join_tokens_carry_the_ca_fingerprint_and_expire_and_run_out() -> None:
    token_id, secret_hash, token = new_join_token("ab" * 32)
    assert token.startswith(f"corral2.{token_id}.") and token.endswith("ab" * 32)
    assert parse_join_token(token) == (token_id, secret_hash, "ab" * 32)
    for bad in ("", "corral1.xyz", token[:-1], token.replace("corral2", "corral3"), 42):
        with pytest.raises(BadRequest, match="malformed"):
            parse_join_token(bad)
    state = ClusterState()
    state.execute(JoinTokenCreate(token_id, secret_hash, expires=100.0, uses=2), 1)
    state.execute(JoinTokenUse(token_id, secret_hash, "h2", at=10.0), 2)
    state.execute(JoinTokenUse(token_id, secret_hash, "h3", at=11.0), 3)
    with pytest.raises(CommandError, match="used up") as err:
        state.execute(JoinTokenUse(token_id, secret_hash, "h4", at=12.0), 4)
    assert err.value.code is ErrorCode.FORBIDDEN
    state.execute(JoinTokenCreate("f" * 16, secret_hash, expires=100.0), 5)
    with pytest.raises(CommandError, match="expired"):
        state.execute(JoinTokenUse("f" * 16, secret_hash, "h5", at=100.0), 6)
    with pytest.raises(CommandError, match="not valid"):
        state.execute(JoinTokenUse("f" * 16, "0" * 64, "h5", at=50.0), 7)
    assert [e.message for e in state.events if e.kind.value == "host.joined"] == [
        f"host h2 joined environment default with join token {token_id}",
        f"host h3 joined environment default with join token {token_id}"]


class Api:
    def __init__(self, h: Harness, session: aiohttp.ClientSession) -> None:
        self.h, self.session = h, session

    async def call(self, method: str, path: str, body: Any = None, token: bool = True) -> tuple[int, Any]:
        headers = self.h.auth if token else {}
        async with self.session.request(method, self.h.url + path, json=body, headers=headers) as resp:
            return resp.status, json.loads(await resp.read() or b"null")


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running_api() as h, aiohttp.ClientSession() as session:
        yield Api(h, session)


def _join_body(token: str, name: str = "h9", csr_name: str | None = None) -> dict[str, Any]:
    return {"token": token, "name": name, "address": "10.9.9.9",
            "csr": pki.make_csr(csr_name or name, pki.new_key()).decode()}


async def test_a_host_joins_with_a_token_and_gets_a_certificate_and_the_secret(api: Api) -> None:
    status, ca = await api.call("GET", "/v1/ca", token=False)
    assert status == 200 and ca["fingerprint"] == pki.fingerprint(harness_ca()[0])
    status, made = await api.call("POST", "/v1/jointokens", {"uses": 1, "ttl": "1h"})
    assert status == 201 and made["uses_left"] == 1 and made["token"].endswith(ca["fingerprint"])
    status, joined = await api.call("POST", "/v1/join", _join_body(made["token"]), token=False)
    assert status == 200, joined
    assert pki.issued_by(joined["cert"].encode(), ca["cert"].encode(), time.time())
    assert pki.role_of(joined["cert"].encode()) == "worker" and joined["ca"] == ca["cert"]
    assert base64.b64decode(joined["secret"]) == SECRET
    status, again = await api.call("POST", "/v1/join", _join_body(made["token"], "h10"), token=False)
    assert status == 403 and "used up" in again["message"], "single use"
    listed = (await api.call("GET", "/v1/jointokens"))[1]
    assert made["id"] not in {t["id"] for t in listed["items"]}


async def test_joins_that_are_refused(api: Api) -> None:
    made = (await api.call("POST", "/v1/jointokens", {"ttl": 1}))[1]
    before = api.h.replica.state.snapshot()
    token_id, _, fingerprint = parse_join_token(made["token"])
    forged = made["token"].replace(made["token"].split(".")[2], "A" * 43)
    other_cluster = made["token"][:-64] + "0" * 64
    cases = [
        (_join_body(forged), 403, "not valid"),
        (_join_body(other_cluster), 403, "another cluster"),
        (_join_body(made["token"], "h9", csr_name="h1"), 400, "csr"),
        (_join_body(made["token"], "h1"), 409, "live host is named h1"),
        ({**_join_body(made["token"]), "address": "nowhere"}, 400, "address"),
        ({**_join_body(made["token"]), "csr": "garbage"}, 400, "csr"),
        ({"token": "corral1.abc", "name": "h9", "address": "10.0.0.9", "csr": "x"}, 400, "malformed"),
    ]
    for body, status, words in cases:
        got, answer = await api.call("POST", "/v1/join", body, token=False)
        assert got == status and words in json.dumps(answer), (body.get("name"), got, answer)
    assert api.h.replica.state.snapshot() == before, "a refused join changes nothing (the token is not used up)"
    await asyncio.sleep(1.1)
    got, answer = await api.call("POST", "/v1/join", _join_body(made["token"]), token=False)
    assert got == 403 and "expired" in answer["message"]
    assert (await api.call("DELETE", f"/v1/jointokens/{token_id}"))[0] == 200
    got, answer = await api.call("POST", "/v1/join", _join_body(made["token"]), token=False)
    assert got == 403 and "not valid" in answer["message"], "revoked"
    stats = (await api.call("GET", "/v1/auth/stats"))[1]
    assert stats["rejected"]["join"] >= 4 and fingerprint


def test_a_member_issues_and_renews_its_own_certificate_from_the_state(tmp_path: Path) -> None:
    now = time.time()
    ca_pem, ca_key = harness_ca()
    authority = Authority(ca_pem.decode(), pki.seal_ca_key(SECRET, ca_key), pki.fingerprint(ca_pem), 1)
    certs = NodeCerts(tmp_path)
    assert not certs.present() and certs.due(now)
    certs.issue_here(SECRET, authority, "h5", "10.0.0.5", True, now)
    assert certs.present() and not certs.due(now)
    assert (tmp_path / "node-key.pem").stat().st_mode & 0o777 == 0o600
    first = certs.cert_path.read_bytes()
    assert pki.role_of(first) == "manager" and pki.issued_by(first, ca_pem, now)
    assert certs.due(now + 70 * 86400), "due once a third of its life is left"
    key_before = certs.key()
    certs.issue_here(SECRET, authority, "h5", "10.0.0.5", True, now + 70 * 86400)
    assert certs.cert_path.read_bytes() != first and certs.key() == key_before, "renewed, same key"
    with pytest.raises(pki.PkiError):
        certs.issue_here(b"x" * 32, authority, "h5", "10.0.0.5", True, now)  # not this cluster's secret
