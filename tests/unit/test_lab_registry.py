"""The lab registry's pieces that need no lab: its CA and certificate, config, htpasswd, certs.d entries;
and DockerEngine's image references."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from agent.lab import registry
from agent.node.docker import RegistryAuth, split_reference

NOW = 1_800_000_000.0


def _verify(leaf_pem: bytes, ca_pem: bytes, address: str) -> None:
    """RFC 5280 path validation as a TLS client does it (the leaf names ``address``, chain to ``ca_pem``)."""
    verifier = (PolicyBuilder().store(Store([x509.load_pem_x509_certificate(ca_pem)]))
                .time(datetime.datetime.fromtimestamp(NOW + 60, tz=datetime.UTC))
                .build_server_verifier(x509.IPAddress(ipaddress.ip_address(address))))
    verifier.verify(x509.load_pem_x509_certificate(leaf_pem), [])


def test_the_server_certificate_verifies_for_its_address_against_its_ca_only() -> None:
    ca, ca_key = registry.make_ca(Path("/var/lib/corral-lab2"), NOW)
    cert, _key = registry.make_server_cert(ca, ca_key, "10.77.2.1", NOW)
    _verify(cert, ca, "10.77.2.1")
    with pytest.raises(VerificationError):
        _verify(cert, ca, "10.77.2.2")  # another address
    other, _ = registry.make_ca(Path("/var/lib/corral-lab2"), NOW)  # same name, another key
    with pytest.raises(VerificationError):
        _verify(cert, other, "10.77.2.1")
    ca_cert = x509.load_pem_x509_certificate(ca)
    constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0, "it signs servers, never another CA"


def test_a_registry_ca_names_its_lab() -> None:
    ca, _ = registry.make_ca(Path("/var/lib/corral-lab2"), NOW)
    assert registry.names_lab(ca, Path("/var/lib/corral-lab2"))
    assert not registry.names_lab(ca, Path("/var/lib/corral-lab"))
    assert not registry.names_lab(b"not a certificate", Path("/var/lib/corral-lab2"))


def test_config_listens_on_the_bridge_with_tls_and_htpasswd(tmp_path: Path) -> None:
    spec = registry.RegistrySpec(tmp_path, "10.77.2.1")
    config = yaml.safe_load(registry.render_config(spec))
    assert config["http"]["addr"] == "10.77.2.1:5000"
    assert config["http"]["tls"] == {"certificate": str(tmp_path / "registry/server.pem"),
                                     "key": str(tmp_path / "registry/server-key.pem"), "minimumtls": "tls1.2"}
    assert config["auth"] == {"htpasswd": {"realm": "corral-lab", "path": str(tmp_path / "registry/htpasswd")}}
    assert config["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "registry/storage")
    assert spec.argv() == ["docker-registry", "serve", str(tmp_path / "registry/config.yml")]
    assert spec.trust_dir == Path("/etc/docker/certs.d/10.77.2.1:5000")


def test_htpasswd_line_is_bcrypt_and_htpasswd_checks_it(tmp_path: Path) -> None:
    line = registry.htpasswd_line("lab", "s3cret-pass")
    assert line.startswith(f"lab:$2y${registry.BCRYPT_COST:02d}$") and "s3cret" not in line
    file = tmp_path / "htpasswd"
    file.write_text(line + "\n")
    for attempt, verified in (("s3cret-pass", True), ("s3cret-pasS", False), ("", False)):
        done = subprocess.run(["htpasswd", "-vi", str(file), "lab"], input=attempt, capture_output=True, text=True)
        assert (done.returncode == 0) == verified, (attempt, done.stderr)


def test_prepare_then_trust_then_stop(tmp_path: Path) -> None:
    """Files with their modes, no CA key kept; the certs.d entry found by its CA's name and removed."""
    certs_d = tmp_path / "certs.d"
    spec = registry.RegistrySpec(tmp_path / "lab", "10.77.2.1", certs_d=certs_d)
    registry.prepare(spec, time.time())
    for private in (spec.key_file, spec.password_file, spec.htpasswd_file):
        assert private.stat().st_mode & 0o777 == 0o600, private
    assert spec.dir.stat().st_mode & 0o777 == 0o700
    password = registry.password(spec)
    assert len(password) >= 20 and password not in spec.htpasswd_file.read_text()
    keys = [p for p in spec.dir.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    assert keys == [spec.key_file], "the CA's key is not kept"
    other_lab = registry.RegistrySpec(tmp_path / "other", "10.77.3.1", certs_d=certs_d)
    registry.prepare(other_lab, time.time())
    registry.trust(spec)
    registry.trust(other_lab)
    (certs_d / "registry.example:443").mkdir()  # somebody's own, with no ca.crt
    assert registry.trusted_dirs(spec.root, certs_d) == [spec.trust_dir]
    assert (spec.trust_dir / "ca.crt").read_bytes() == spec.ca_file.read_bytes()
    assert registry.stop(spec.root, certs_d) == [f"directory {spec.trust_dir}"]  # no daemon was started
    assert sorted(p.name for p in certs_d.iterdir()) == ["10.77.3.1:5000", "registry.example:443"]


@pytest.mark.parametrize("reference, split", [
    ("10.77.0.1:5000/corral/base:latest", ("10.77.0.1:5000/corral/base", "latest")),
    ("10.77.0.1:5000/corral/base", ("10.77.0.1:5000/corral/base", "latest")),
    ("corral/base:v2", ("corral/base", "v2")),
    ("busybox", ("busybox", "latest")),
    ("localhost:5000/a/b/c:1.2", ("localhost:5000/a/b/c", "1.2")),
])
def test_split_reference(reference: str, split: tuple[str, str]) -> None:
    assert split_reference(reference) == split


def test_registry_auth_keeps_its_password_out_of_repr() -> None:
    assert "hunter2" not in repr(RegistryAuth("lab", "hunter2"))
