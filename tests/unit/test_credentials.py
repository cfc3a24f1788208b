"""The cluster secret in the data dir: made by a bootstrap, kept across restarts, given by a join."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import BadRequest, DataDirError
from agent.process import credentials


def test_bootstrap_then_restart_keeps_the_secret(tmp_path: Path) -> None:
    secret = credentials.establish_secret(tmp_path, bootstrap=True, joined=None)
    assert len(secret) == 32
    assert (tmp_path / "cluster-secret").stat().st_mode & 0o777 == 0o600
    assert credentials.establish_secret(tmp_path, bootstrap=False, joined=None) == secret
    assert credentials.establish_secret(tmp_path, bootstrap=False, joined=b"\x01" * 32) == secret, \
        "a node that has a secret keeps it"
    with pytest.raises(DataDirError, match="already belongs to a cluster"):
        credentials.establish_secret(tmp_path, bootstrap=True, joined=None)


def test_joining_stores_the_secret_a_member_gave(tmp_path: Path) -> None:
    assert credentials.establish_secret(tmp_path, bootstrap=False, joined=b"\x05" * 32) == b"\x05" * 32
    assert credentials.load_secret(tmp_path) == b"\x05" * 32
    with pytest.raises(credentials.TokenError, match="32"):
        credentials.establish_secret(tmp_path / "x", bootstrap=False, joined=b"short")


def test_a_node_needs_a_secret_from_somewhere(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="--bootstrap or with --join"):
        credentials.establish_secret(tmp_path, bootstrap=False, joined=None)
    with pytest.raises(BadRequest, match="give one of them"):
        credentials.establish_secret(tmp_path, bootstrap=True, joined=b"\x05" * 32)
    (tmp_path / "cluster-secret").write_bytes(b"short")
    with pytest.raises(DataDirError, match="damaged"):
        credentials.load_secret(tmp_path)


def test_old_tokens_that_carry_the_secret_no_longer_let_a_host_in() -> None:
    with pytest.raises(credentials.TokenError, match="corral token create"):
        credentials.check_new_join("corral1.BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBXvJjg")
    credentials.check_new_join(None)
    credentials.check_new_join("corral2." + "0" * 16 + "." + "A" * 43 + "." + "0" * 64)
