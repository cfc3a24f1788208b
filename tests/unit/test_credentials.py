"""The cluster secret and join tokens: round trip, clear errors, 0600 files, no silent re-bootstrap."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import BadRequest, DataDirError
from agent.process import credentials


def test_token_round_trip() -> None:
    secret = bytes(range(32))
    token = credentials.encode_token(secret)
    assert token.startswith("corral1.")
    assert credentials.decode_token(token) == secret
    assert credentials.decode_token(f"  {token}\n") == secret


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda t: t.replace("corral1.", "corral2."), "starts with"),
        (lambda t: t[:-5], "cut short"),
        (lambda t: t[:-2] + ("A" if t[-2] != "A" else "B") + t[-1], "checksum"),
        (lambda t: t + "!!", "base64url"),
    ],
)
def test_bad_tokens_are_refused_with_the_reason(mangle: object, message: str) -> None:
    token = credentials.encode_token(b"\x07" * 32)
    with pytest.raises(credentials.TokenError, match=message):
        credentials.decode_token(mangle(token))  # type: ignore[operator]


def test_bootstrap_then_restart_keeps_the_secret(tmp_path: Path) -> None:
    secret = credentials.establish_secret(tmp_path, bootstrap=True, token=None)
    assert (tmp_path / "cluster-secret").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "join-token").stat().st_mode & 0o777 == 0o600
    token = (tmp_path / "join-token").read_text().strip()
    assert credentials.decode_token(token) == secret
    assert credentials.establish_secret(tmp_path, bootstrap=False, token=None) == secret
    assert credentials.establish_secret(tmp_path, bootstrap=False, token=token) == secret
    with pytest.raises(DataDirError, match="already belongs to a cluster"):
        credentials.establish_secret(tmp_path, bootstrap=True, token=None)
    with pytest.raises(credentials.TokenError, match="another cluster"):
        credentials.establish_secret(tmp_path, bootstrap=False, token=credentials.encode_token(b"\x01" * 32))


def test_joining_stores_the_tokens_secret(tmp_path: Path) -> None:
    token = credentials.encode_token(b"\x05" * 32)
    assert credentials.establish_secret(tmp_path, bootstrap=False, token=token) == b"\x05" * 32
    assert credentials.load_secret(tmp_path) == b"\x05" * 32


def test_a_node_needs_a_secret_from_somewhere(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="--bootstrap or with --join"):
        credentials.establish_secret(tmp_path, bootstrap=False, token=None)
    with pytest.raises(BadRequest, match="give one of them"):
        credentials.establish_secret(tmp_path, bootstrap=True, token=credentials.encode_token(b"\x05" * 32))
    (tmp_path / "cluster-secret").write_bytes(b"short")
    with pytest.raises(DataDirError, match="damaged"):
        credentials.load_secret(tmp_path)
