"""The lab's image registry (``corral lab up --registry``): Debian's ``docker-registry`` (distribution
2.8), run as a user would run it — TLS with a certificate from a CA of its own, htpasswd (bcrypt)
accounts — so that pulling from a private registry is tried against the real thing.

It runs in the root namespace on the lab bridge's address (the underlay's .1), port 5000, where
every lab host reaches it over the underlay. Everything it has lives in ``<lab root>/registry/``
(config, certificate and key, htpasswd, storage, pid file, log); its one account is ``lab``, with a
random password in ``<lab root>/registry-password`` (0600). The CA's key signs the server's
certificate and is thrown away: nothing else is ever signed by it.

The lab's dockerds share the root filesystem, so one ``/etc/docker/certs.d/<address>:5000/ca.crt``
makes every one of them trust it. That file is the one thing outside the lab root: its CA names
the lab root (in its OU), so ``down`` finds and removes it even when the lab state is gone, and
never another lab's. The daemon is found the same way, by its argv naming the lab's config file.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import ipaddress
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import time
from pathlib import Path

import aiohttp
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.lab import procs
from mesh.files import write_private
from mesh.pki import key_pem, load_key, new_key, self_signed_ca

BINARY = "docker-registry"
PORT = 5000
USER = "lab"
CERTS_D = Path("/etc/docker/certs.d")
CERT_DAYS = 365
BCRYPT_COST = 10  # Go's bcrypt default; htpasswd's own (5) is too cheap
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
CA_COMMON_NAME = "Corral lab registry CA"


class RegistryError(Exception):
    """The registry cannot be made or started; the message is one line for the user."""


@dataclasses.dataclass(frozen=True)
class RegistrySpec:
    """Where one lab's registry listens and keeps its files."""

    root: Path  # the lab root
    address: str  # the lab bridge's address in the root namespace
    certs_d: Path = CERTS_D  # where the lab's dockerds look for a registry's CA

    @property
    def host(self) -> str:
        """``address:port``: how images in it are named (``10.77.0.1:5000/corral/base:latest``)."""
        return f"{self.address}:{PORT}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    @property
    def dir(self) -> Path:
        return self.root / "registry"

    @property
    def config_file(self) -> Path:
        return self.dir / "config.yml"

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def cert_file(self) -> Path:
        return self.dir / "server.pem"

    @property
    def key_file(self) -> Path:
        return self.dir / "server-key.pem"

    @property
    def htpasswd_file(self) -> Path:
        return self.dir / "htpasswd"

    @property
    def storage(self) -> Path:
        return self.dir / "storage"

    @property
    def pidfile(self) -> Path:
        return self.dir / "registry.pid"

    @property
    def log(self) -> Path:
        return self.dir / "registry.log"

    @property
    def password_file(self) -> Path:
        return self.root / "registry-password"

    @property
    def trust_dir(self) -> Path:
        """What dockerd reads for this registry: ``<certs.d>/<address>:<port>/ca.crt``."""
        return self.certs_d / self.host

    def argv(self) -> list[str]:
        return [BINARY, "serve", str(self.config_file)]


# ---------------------------------------------------------------------- pure: certificates and config


def _utc(now: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(now, tz=datetime.UTC)


def make_ca(root: Path, now: float) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a lab's registry CA, named after the lab root (so that its copy
    in certs.d tells whose it is). It may sign servers only (path length 0)."""
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corral lab"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, str(root)),
                      x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    return self_signed_ca(name, CERT_DAYS, 0, now)


def make_server_cert(ca_cert_pem: bytes, ca_key_pem: bytes, address: str, now: float) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for the registry at ``address``: its IP is the one SAN, for TLS
    servers only."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = load_key(ca_key_pem)
    key = new_key()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - 300)).not_valid_after(_utc(now + CERT_DAYS * 86400))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
                           critical=False)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)


def names_lab(ca_pem: bytes, root: Path) -> bool:
    """Is this the registry CA of the lab rooted at ``root``? (False for anything else, a bad PEM too.)"""
    try:
        cert = x509.load_pem_x509_certificate(ca_pem)
    except ValueError:
        return False
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return ([str(u.value) for u in units] == [str(root)]
            and [str(c.value) for c in common] == [CA_COMMON_NAME])


def render_config(spec: RegistrySpec) -> str:
    """distribution's ``config.yml`` for the lab's registry (its ``configuration.md``). No
    ``http.secret``: one registry makes its own at start, it matters only behind a load balancer."""
    config = {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "registry", "lab": str(spec.root)}},
        "storage": {"filesystem": {"rootdirectory": str(spec.storage)}, "delete": {"enabled": True}},
        "http": {
            "addr": spec.host,
            "tls": {"certificate": str(spec.cert_file), "key": str(spec.key_file), "minimumtls": "tls1.2"},
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "auth": {"htpasswd": {"realm": "corral-lab", "path": str(spec.htpasswd_file)}},
    }
    return yaml.safe_dump(config, sort_keys=False)


# ---------------------------------------------------------------------- files


def htpasswd_line(user: str, password: str) -> str:
    """``user:$2y$…``, bcrypt-hashed by Apache's ``htpasswd -B`` (the password travels on its stdin,
    never in argv); distribution accepts only bcrypt."""
    if shutil.which("htpasswd") is None:
        raise RegistryError("no htpasswd on PATH: install apache2-utils (scripts/install.sh does)")
    done = subprocess.run(["htpasswd", "-niB", "-C", str(BCRYPT_COST), user], input=password + "\n",
                          capture_output=True, text=True)
    line = done.stdout.strip()
    if done.returncode != 0 or not line.startswith(f"{user}:$2"):
        raise RegistryError(f"htpasswd -B failed: {done.stderr.strip() or line or done.returncode}")
    return line


def prepare(spec: RegistrySpec, now: float) -> None:
    """Every file the registry needs: CA, server certificate and key, password and htpasswd, config."""
    if shutil.which(BINARY) is None:
        raise RegistryError(f"no {BINARY} on PATH: install Debian's docker-registry (scripts/install.sh does)")
    spec.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    spec.storage.mkdir(exist_ok=True)
    ca_cert, ca_key = make_ca(spec.root, now)
    cert, key = make_server_cert(ca_cert, ca_key, spec.address, now)  # the CA key goes out of scope here
    spec.ca_file.write_bytes(ca_cert)
    spec.cert_file.write_bytes(cert)
    write_private(spec.key_file, key)
    password = secrets.token_urlsafe(18)
    write_private(spec.password_file, (password + "\n").encode())
    write_private(spec.htpasswd_file, (htpasswd_line(USER, password) + "\n").encode())
    spec.config_file.write_text(render_config(spec))


def password(spec: RegistrySpec) -> str:
    return spec.password_file.read_text().strip()


def trust(spec: RegistrySpec) -> None:
    """Make every lab dockerd trust the registry's CA (dockerd reads certs.d at each push and pull)."""
    spec.trust_dir.mkdir(parents=True, exist_ok=True)
    tmp = spec.trust_dir / "ca.crt.tmp"
    tmp.write_bytes(spec.ca_file.read_bytes())
    os.replace(tmp, spec.trust_dir / "ca.crt")


def trusted_dirs(root: Path, certs_d: Path = CERTS_D) -> list[Path]:
    """The certs.d entries whose CA is the registry CA of the lab at ``root``."""
    if not certs_d.is_dir():
        return []
    found = []
    for entry in sorted(certs_d.iterdir()):
        try:
            ca = (entry / "ca.crt").read_bytes()
        except OSError:
            continue
        if names_lab(ca, root):
            found.append(entry)
    return found


# ---------------------------------------------------------------------- the daemon


def start(spec: RegistrySpec) -> int:
    """Start ``docker-registry serve``; returns its pid (also in the pid file)."""
    spec.pidfile.unlink(missing_ok=True)
    pid = procs.spawn(spec.argv(), spec.log)
    spec.pidfile.write_text(f"{pid}\n")
    return pid


def pids(root: Path) -> set[int]:
    """Every registry daemon serving the lab at ``root``'s config (found by argv, not the pid file)."""
    config = str(RegistrySpec(root, address="").config_file)  # its files depend on the root alone
    return procs.find(lambda argv: len(argv) == 3 and Path(argv[0]).name == BINARY and argv[1:] == ["serve", config])


def stop(root: Path, certs_d: Path = CERTS_D) -> list[str]:
    """Stop the lab's registry (SIGTERM, then SIGKILL) and take its CA out of certs.d; what was done."""
    done = []
    running = pids(root)
    if running:
        procs.kill(running, signal.SIGTERM)
        if not procs.wait_gone(running, STOP_TIMEOUT):
            procs.kill(running, signal.SIGKILL)
            procs.wait_gone(running, STOP_TIMEOUT)
        done.append(f"registry: {len(running)} processes")
    for entry in trusted_dirs(root, certs_d):
        shutil.rmtree(entry)
        done.append(f"directory {entry}")
    return done


def basic_auth(user: str, password: str) -> dict[str, str]:
    """The ``Authorization`` header a registry client sends (aiohttp's own helper moved between versions)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def client_tls(spec: RegistrySpec) -> ssl.SSLContext:
    """A client context that trusts the registry's CA, and only it."""
    return ssl.create_default_context(cafile=str(spec.ca_file))


async def wait_ready(spec: RegistrySpec, pid: int, timeout: float = READY_TIMEOUT) -> None:
    """Until ``GET /v2/`` answers 401 without credentials and 200 with them; fail early if it died."""
    deadline = time.monotonic() + timeout
    url = spec.url + "/v2/"
    signed_in = basic_auth(USER, password(spec))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2),
                                     connector=aiohttp.TCPConnector(ssl=client_tls(spec))) as session:
        while True:
            try:
                async with session.get(url) as anonymous:
                    if anonymous.status == 401:
                        async with session.get(url, headers=signed_in) as signed:
                            if signed.status == 200:
                                return
                            raise RegistryError(f"the registry at {spec.url} refused the lab's own credentials "
                                                f"({signed.status}); see {spec.log}")
                    raise RegistryError(f"the registry at {spec.url} answered {anonymous.status} without "
                                        f"credentials, not 401; see {spec.log}")
            except aiohttp.ClientConnectorCertificateError as exc:
                raise RegistryError(f"the registry at {spec.url} has a certificate its CA does not verify: "
                                    f"{exc.certificate_error}") from exc
            except (aiohttp.ClientConnectionError, TimeoutError):
                pass
            if not procs.alive(pid):
                raise RegistryError(f"the registry exited: {procs.tail(spec.log)}")
            if time.monotonic() > deadline:
                raise RegistryError(f"the registry did not answer at {url} within {timeout:g} s; see {spec.log}")
            await asyncio.sleep(0.1)
