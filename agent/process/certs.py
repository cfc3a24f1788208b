"""This node's TLS files (``ca.pem``, ``node.pem``, ``node-key.pem`` in the data dir, 0600) and the SSL
contexts made from them: the API's server side (HTTPS, a client certificate asked for but optional —
users have none, agents present theirs) and the agent's client side (it verifies every agent it calls
against the cluster CA and presents its own certificate).

A certificate is renewed in place when a third of its life is left (:func:`mesh.pki.due_for_renewal`),
and at once when the cluster's CA changes (a rotation begun or finished: ``corral ca rotate``): new
connections get the new files. The contexts handed to aiohttp never change; each hands every new
connection to the context made from the newest files (:class:`Swappable`), so a CA that is retired is
trusted no more by connections made after, without a restart (OpenSSL cannot take a CA out of a
context).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from agent.cluster.feed import Subscription
from agent.model.access import Authority
from mesh import pki
from mesh.aio import supervised
from mesh.files import write_private

log = logging.getLogger("corral.certs")

CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "node.pem", "node-key.pem"
RENEW_CHECK = 3600.0
CA_CHANGE_GRACE = 1.0
"""After the CA changes, a node waits this long before it shows a certificate of the new CA, so every
live node has applied the change (and trusts the new CA) first — what lets a rotation of a CA made
before cross-signing worked (a path length of 0) go by without a refused connection too."""


class Swappable(ssl.SSLContext):
    """An SSL context that makes each connection with ``current``: the one aiohttp holds stays, what it
    does changes when the files do."""

    current: ssl.SSLContext

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        return self.current.wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        return self.current.wrap_socket(*args, **kwargs)


def _server_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def _client_context() -> ssl.SSLContext:
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)


class NodeCerts:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        # made now and filled once the files exist, so a connector made early sees the certificate later
        self.server = Swappable(ssl.PROTOCOL_TLS_SERVER)
        self.server.current = _server_context()
        self.client = Swappable(ssl.PROTOCOL_TLS_CLIENT)
        self.client.current = _client_context()
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
        """Keep the CAs to trust (a bundle while a rotation is under way) and this node's certificate
        (followed by the cross-signed CA, then) and load them for new connections."""
        write_private(self.ca_path, ca_pem)
        write_private(self.cert_path, cert_pem)
        self._load()

    def fingerprint(self) -> str | None:
        return pki.fingerprint(self.ca_path.read_bytes()) if self.ca_path.exists() else None

    def _load(self) -> None:
        server, client = _server_context(), _client_context()
        for ctx in (server, client):
            ctx.load_cert_chain(self.cert_path, self.key_path)
            ctx.load_verify_locations(cafile=str(self.ca_path))
        self.server.current, self.client.current = server, client
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
        self.store(authority.trusted_pem.encode(), issued.cert_pem + authority.cross_pem.encode())
        log.info("certificate for %s issued by the cluster CA, valid until %s", name,
                 time.strftime("%Y-%m-%d", time.gmtime(issued.not_after)))

    def due(self, now: float) -> bool:
        return not self.cert_path.exists() or pki.due_for_renewal(self.cert_path.read_bytes(), now)

    def behind(self, authority: Authority, now: float) -> bool:
        """Does this node trust other CAs than the cluster's, or hold a certificate the cluster's CA did not
        issue (a rotation begun or finished since)?"""
        try:
            trusted = self.ca_path.read_bytes()
            cert = self.cert_path.read_bytes()
        except FileNotFoundError:
            return True
        return (trusted != authority.trusted_pem.encode() or not pki.issued_by(cert, authority.cert_pem.encode(), now)
                or cert.count(b"-----BEGIN CERTIFICATE-----") != 1 + bool(authority.cross_pem))


@contextlib.asynccontextmanager
async def renewing(certs: NodeCerts, renew: Callable[[], None], every: float = RENEW_CHECK,
                   authority: Callable[[], Authority | None] | None = None,
                   ca_changes: Subscription | None = None) -> AsyncIterator[None]:
    """Check the certificate every ``every`` seconds and renew it when it is due, and at once when the
    cluster's CA changes (``ca_changes`` wakes, ``authority`` says what it is now)."""
    def try_renew() -> None:
        try:
            renew()
        except (pki.PkiError, OSError) as exc:
            log.warning("could not renew this node's certificate: %s", exc)

    async def loop() -> None:
        while True:
            if ca_changes is not None:
                await ca_changes.next(every)
            else:
                await asyncio.sleep(every)
            now = time.time()
            current = authority() if authority is not None else None
            if current is not None and certs.behind(current, now):
                await asyncio.sleep(CA_CHANGE_GRACE)
                try_renew()
            elif certs.due(now):
                try_renew()

    try:
        async with supervised(loop(), "certificate renewal"):
            yield
    finally:
        if ca_changes is not None:
            ca_changes.close()


__all__ = ["CA_FILE", "CERT_FILE", "KEY_FILE", "NodeCerts", "Swappable", "renewing"]
