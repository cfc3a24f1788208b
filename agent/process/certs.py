"""This node's TLS files (``ca.pem``, ``node.pem``, ``node-key.pem`` in the data dir, 0600) and the SSL
contexts made from them: the API's server side (HTTPS, a client certificate asked for but optional —
users have none, agents present theirs) and the agent's client side (it verifies every agent it calls
against the cluster CA and presents its own certificate).

A certificate is renewed in place when a third of its life is left (:func:`mesh.pki.due_for_renewal`):
new connections get the new one, the contexts are loaded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from agent.model.access import Authority
from mesh import pki
from mesh.aio import supervised
from mesh.files import write_private

log = logging.getLogger("corral.certs")

CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "node.pem", "node-key.pem"
RENEW_CHECK = 3600.0


class NodeCerts:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        # made now and filled once the files exist, so a connector made early sees the certificate later
        self.server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.verify_mode = ssl.CERT_OPTIONAL
        self.client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self._loaded = False

    @property
    def ca_path(self) -> Path:
        return self.dir / CA_FILE

    @property
    def cert_path(self) -> Path:
        return self.dir / CERT_FILE

    @property
    def key_path(self) -> Path:
        return self.dir / KEY_FILE

    def key(self) -> bytes:
        """This node's private key, made on first use; it never leaves the data dir."""
        try:
            return self.key_path.read_bytes()
        except FileNotFoundError:
            pem = pki.key_pem(pki.new_key())
            write_private(self.key_path, pem)
            return pem

    def csr(self, name: str) -> bytes:
        return pki.make_csr(name, pki.load_key(self.key()))

    def store(self, ca_pem: bytes, cert_pem: bytes) -> None:
        write_private(self.ca_path, ca_pem)
        write_private(self.cert_path, cert_pem)
        self._load()

    def fingerprint(self) -> str | None:
        return pki.fingerprint(self.ca_path.read_bytes()) if self.ca_path.exists() else None

    def _load(self) -> None:
        for ctx in (self.server, self.client):
            ctx.load_cert_chain(self.cert_path, self.key_path)
            ctx.load_verify_locations(cafile=str(self.ca_path))
        self._loaded = True

    def present(self) -> bool:
        """Are this node's CA, certificate and key in its data dir (and loaded into the contexts)?"""
        if not (self.ca_path.exists() and self.cert_path.exists() and self.key_path.exists()):
            return False
        if not self._loaded:
            self._load()
        return True

    def issue_here(self, secret: bytes, authority: Authority, name: str, address: str, manager: bool,
                   now: float) -> None:
        """Sign this node's CSR with the cluster CA (whose key every member can open) and keep it."""
        ca_key = pki.open_ca_key(secret, authority.sealed_key)
        issued = pki.sign(authority.cert_pem.encode(), ca_key, self.csr(name), name,
                          "manager" if manager else "worker", [address], now)
        self.store(authority.cert_pem.encode(), issued.cert_pem)
        log.info("certificate for %s issued by the cluster CA, valid until %s", name,
                 time.strftime("%Y-%m-%d", time.gmtime(issued.not_after)))

    def due(self, now: float) -> bool:
        return not self.cert_path.exists() or pki.due_for_renewal(self.cert_path.read_bytes(), now)


@contextlib.asynccontextmanager
async def renewing(certs: NodeCerts, renew: Callable[[], None], every: float = RENEW_CHECK) -> AsyncIterator[None]:
    """Check the certificate every ``every`` seconds and renew it when it is due."""
    async def loop() -> None:
        while True:
            await asyncio.sleep(every)
            if certs.due(time.time()):
                try:
                    renew()
                except (pki.PkiError, OSError) as exc:
                    log.warning("could not renew this node's certificate: %s", exc)

    async with supervised(loop(), "certificate renewal"):
        yield


__all__ = ["CA_FILE", "CERT_FILE", "KEY_FILE", "NodeCerts", "renewing"]
