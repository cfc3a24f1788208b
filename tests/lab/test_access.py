"""Access control on the real lab: the bootstrapped administrator, logins from the CLI, a key revoked
on one host refused by another within a second, the audit trail, the loopback API."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agent.cli.client import ApiError, Client
from agent.lab import Lab
from agent.process import joining
from agent.process.bootstrap import PENDING_FILE
from agent.process.certs import NodeCerts
from agent.process.joining import JoinRefused
from mesh import pki
from tests.cli import corral
from tests.lab.cluster import service_running, until


def test_the_bootstrapped_administrator_and_nothing_without_a_token(lab3: Lab) -> None:
    h1 = lab3.host("h1")
    assert not (h1.agent_data / PENDING_FILE).exists(), "the pending first admin is gone once applied"
    assert stat.S_IMODE(lab3.admin_token_file.stat().st_mode) == 0o600
    me = Client(h1.api_url, token=lab3.admin_token()).get("/v1/auth/whoami")
    assert me["user"] == "admin" and me["admin"]
    for host in lab3.hosts():
        req = urllib.request.Request(host.api_url + "/v1/stacks")
        try:
            urllib.request.urlopen(req, timeout=5, context=lab3.tls())
            raise AssertionError(f"{host.name} answered without a token")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401 and exc.headers["WWW-Authenticate"].startswith("Bearer")
            assert json.loads(exc.read())["error"] == "unauthorized"
        with urllib.request.urlopen(host.api_url + "/v1/health", timeout=5, context=lab3.tls()) as resp:
            assert resp.status == 200, "health stays open (load balancers and the lab poll it)"


def test_login_whoami_logout_from_the_cli(lab3: Lab, tmp_path: Path) -> None:
    url = lab3.host("h2").api_url
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": "", "CORRAL_TOKEN": "", "CORRAL_URL": url}
    wrong = corral("login", "--password-stdin", env=env, input_text="not the password\n")
    assert wrong.returncode == 1 and "wrong user name or password" in wrong.stderr
    done = corral("login", "--password-stdin", env=env, input_text=lab3.admin_password() + "\n")
    assert done.returncode == 0, done.stderr
    sessions = tmp_path / ".config" / "corral" / "sessions.json"
    assert stat.S_IMODE(sessions.stat().st_mode) == 0o600
    assert url in json.loads(sessions.read_text())
    me = corral("whoami", env=env)
    assert me.returncode == 0 and "admin (administrator) with a session" in me.stdout, me.stdout + me.stderr
    made = corral("stack", "create", "audited", env=env)
    assert made.returncode == 0, made.stderr
    audit = corral("events", "--audit", env=env)
    line = next(ln for ln in audit.stdout.splitlines() if "stack audited created" in ln)
    assert "[admin key " in line and "via h2]" in line, line
    assert corral("stack", "rm", "audited", env=env).returncode == 0
    out = corral("logout", env=env)
    assert out.returncode == 0 and url not in json.loads(sessions.read_text())
    after = corral("whoami", env=env)
    assert after.returncode == 1 and "authentication required" in after.stderr and "corral login" in after.stderr


def test_login_pins_the_cluster_ca_by_its_fingerprint(lab3: Lab, tmp_path: Path) -> None:
    url = lab3.host("h3").api_url
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": "", "CORRAL_TOKEN": "", "CORRAL_CACERT": "", "CORRAL_URL": url}
    untrusted = corral("hosts", env={**env, "CORRAL_TOKEN": lab3.admin_token()})
    assert untrusted.returncode == 1 and "does not trust" in untrusted.stderr, "no CA known: nothing is sent"
    real = pki.fingerprint(lab3.ca_file.read_bytes())
    blind = corral("login", "--password-stdin", env=env, input_text=lab3.admin_password() + "\n")
    assert blind.returncode == 1 and "--ca-fingerprint" in blind.stderr and real in blind.stderr
    wrong = corral("login", "--password-stdin", "--ca-fingerprint", "00" * 32, env=env,
                   input_text=lab3.admin_password() + "\n")
    assert wrong.returncode == 1 and "not logging in" in wrong.stderr
    done = corral("login", "--password-stdin", "--ca-fingerprint", real, env=env,
                  input_text=lab3.admin_password() + "\n")
    assert done.returncode == 0, done.stderr
    listed = corral("hosts", env=env)
    assert listed.returncode == 0 and "h1" in listed.stdout, "the pinned CA verifies every later call"


def test_a_host_joins_only_with_a_valid_token(lab3: Lab) -> None:
    """An expired token is refused, a fresh single-use one accepted once (the join exchange, as a new host
    makes it, against h1's real API over TLS)."""
    admin = Client(lab3.host("h1").api_url, token=lab3.admin_token())
    short = admin.post("/v1/jointokens", {"ttl": 1, "uses": 1})["token"]
    fresh = admin.post("/v1/jointokens", {"ttl": "10m", "uses": 1})["token"]
    time.sleep(1.2)
    seeds = [(lab3.host("h1").address, 8080)]
    with tempfile.TemporaryDirectory() as d:
        certs = NodeCerts(Path(d))
        with pytest.raises(JoinRefused, match="expired"):
            asyncio.run(joining.exchange(seeds, short, "h9", "10.77.0.99", False, certs, timeout=5))
        assert not certs.present(), "a refused join writes nothing"
        secret = asyncio.run(joining.exchange(seeds, fresh, "h9", "10.77.0.99", False, certs, timeout=5))
        assert secret == (lab3.host("h1").agent_data / "cluster-secret").read_bytes()
        assert certs.present() and pki.role_of(certs.cert_path.read_bytes()) == "worker"
        assert pki.issued_by(certs.cert_path.read_bytes(), lab3.ca_file.read_bytes(), time.time())
        (Path(d) / "x").mkdir()
        with pytest.raises(JoinRefused, match="used up"):
            asyncio.run(joining.exchange(seeds, fresh, "h8", "10.77.0.98", False, NodeCerts(Path(d) / "x"),
                                         timeout=5))
    events = [e["message"] for e in admin.items("/v1/events", kind="host.joined")]
    assert any("host h9 joined" in m for m in events)


def test_a_key_revoked_on_one_host_is_refused_by_another_within_a_second(lab3: Lab) -> None:
    admin = Client(lab3.host("h1").api_url, token=lab3.admin_token())
    made = admin.post("/v1/apikeys", {"description": "revocation test", "role": "read-only"})
    on_h3 = Client(lab3.host("h3").api_url, token=made["token"])
    until("h3 knows the new key", lambda: on_h3.get("/v1/auth/whoami"), 5)
    admin.delete(f"/v1/apikeys/{made['id']}")
    revoked = time.monotonic()

    def refused() -> bool:
        try:
            on_h3.get("/v1/auth/whoami")
            return False
        except ApiError as exc:
            return exc.status == 401
    until("h3 refuses the revoked key", refused, 5, every=0.01)
    assert time.monotonic() - revoked < 1.0


def test_the_cli_on_a_host_finds_its_agent_on_loopback_and_api_prints_json(lab3: Lab) -> None:
    argv, env = lab3.exec_argv("h3", [sys.executable, "-m", "agent", "hosts"])
    env.pop("CORRAL_URL")
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "h1" in out.stdout and "h3" in out.stdout, out.stderr
    argv, env = lab3.exec_argv("h1", [sys.executable, "-m", "agent", "api", "GET", "/v1/raft"])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["role"] in ("leader", "follower"), out.stderr
    argv, env = lab3.exec_argv("h1", [sys.executable, "-m", "agent", "api", "POST", "/v1/stacks", "-d", "{x"])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "--data is not JSON" in out.stderr


def test_the_ca_is_rotated_without_downtime(lab3: Lab, tmp_path: Path) -> None:
    """`corral ca rotate` on the real lab: writes through every host keep working during it (forwarded to
    the leader over mTLS), containers keep running, every host ends with a certificate of the new CA, a
    client that has only the old CA is refused after the finish, one with the new CA is not, and a host
    joins with a token made afterwards. Last in this module: the lab's CA file is the new CA after it."""
    old_ca = lab3.ca_file.read_bytes()
    admin = Client(lab3.host("h1").api_url, token=lab3.admin_token())
    stack = admin.post("/v1/stacks", {"name": "rotation"})
    service = admin.post("/v1/services", {"stack": stack["id"], "name": "web", "image": "corral/base", "scale": 3,
                                          "command": "exec sleep 3600"})
    before = until("3 containers run", lambda: service_running(lab3, "h1", service["id"], 3), 60)
    failures: list[str] = []
    writes = [0]
    stop = threading.Event()

    def write_all_the_time(host: str) -> None:
        while not stop.is_set():
            try:  # the CA file is read again for each write: the test swaps it as a client would
                client = Client(lab3.host(host).api_url, token=lab3.admin_token(), cafile=str(tmp_path / "both.pem"))
                client.request("PUT", f"/v1/kv/rotation-{host}", {"value": str(writes[0])})
                writes[0] += 1
            except (ApiError, OSError) as exc:
                failures.append(f"{host}: {exc}")
            time.sleep(0.02)

    # the writers trust both CAs (as the agents do during the rotation), so a refused write is downtime
    (tmp_path / "both.pem").write_bytes(old_ca)
    env = {"CORRAL_URL": lab3.host("h2").api_url, "CORRAL_CACERT": str(lab3.ca_file)}
    threads = [threading.Thread(target=write_all_the_time, args=(h,)) for h in ("h2", "h3")]
    for t in threads:
        t.start()
    try:
        begun = corral("ca", "rotate", "--begin-only", env=env)
        assert begun.returncode == 0 and "rotation begun" in begun.stdout, begun.stderr
        new = Client(lab3.host("h2").api_url, token=lab3.admin_token()).get("/v1/ca")
        assert new["rotating"] and new["retiring"] == pki.fingerprint(old_ca)
        (tmp_path / "both.pem").write_bytes(new["trusted"].encode())
        until("every host shows a certificate of the new CA",
              lambda: all(h["current"] for h in admin.get("/v1/ca/hosts")["hosts"]), 20)
        listed = corral("hosts", env=env)
        assert listed.returncode == 0, "a client with only the old CA verifies the new certificates (cross-signed)"
        finished = corral("ca", "rotate", "--finish", env=env)
        assert finished.returncode == 0 and "rotation finished" in finished.stdout, finished.stderr
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures and writes[0] > 20, (failures[:5], writes[0])
    (tmp_path / "new.pem").write_text(new["cert"])
    # each node drops the cross-signed CA from what it shows a moment (certs.CA_CHANGE_GRACE) after the finish
    until("a client with only the old CA is refused", lambda: "does not trust" in corral("hosts", env=env).stderr, 10)
    lab3.ca_file.write_text(new["cert"])
    os.environ["CORRAL_CACERT"] = str(lab3.ca_file)
    for host in lab3.hosts():
        client = Client(host.api_url, token=lab3.admin_token(), cafile=str(tmp_path / "new.pem"))
        seen = until(f"{host.name} is verified with the new CA", lambda c=client: c.get("/v1/ca"), 10)
        assert seen["fingerprint"] == new["fingerprint"]
        assert pki.issued_by(pki.split_pem((host.agent_data / "node.pem").read_bytes())[0], new["cert"].encode(),
                             time.time())
        assert (host.agent_data / "ca.pem").read_text() == new["cert"], f"{host.name} trusts the new CA only"
    after = service_running(lab3, "h3", service["id"], 3)
    assert after is not None and {c["container_id"] for c in after} == {c["container_id"] for c in before}
    admin = Client(lab3.host("h1").api_url, token=lab3.admin_token())  # CORRAL_CACERT: the new CA now
    token = admin.post("/v1/jointokens", {"ttl": "10m", "uses": 1})["token"]
    with tempfile.TemporaryDirectory() as d:
        certs = NodeCerts(Path(d))
        asyncio.run(joining.exchange([(lab3.host("h3").address, 8080)], token, "h7", "10.77.0.97", False, certs,
                                     timeout=5))
        assert pki.issued_by(certs.cert_path.read_bytes(), new["cert"].encode(), time.time())
