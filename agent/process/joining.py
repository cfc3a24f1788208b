"""A new host joins with a ``corral2.`` token (:mod:`agent.api.join`): before its agent starts anything,
it asks a member's API for its certificate and the cluster secret.

The member is reached over TLS that cannot be verified yet (the joining host knows no CA); the answer
is believed only once the CA certificate it carries has the token's fingerprint and the member's own
certificate — the one its TLS session presented — was signed by that CA. Nothing is written before.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time

import aiohttp

from agent.api.join import UnknownJoinToken, parse_join_token
from agent.errors import BadRequest
from agent.process.certs import NodeCerts
from mesh import pki

log = logging.getLogger("corral.join")

JOIN_TIMEOUT = 60.0
UNKNOWN_TOKEN_GRACE = 10.0
"""How long a token the member does not know is asked again (it may be the first one of a cluster
whose bootstrap is being committed) before the join is refused."""


class JoinRefused(BadRequest):
    code = "join_refused"


async def exchange(seeds: list[tuple[str, int]], token: str, name: str, address: str, manager: bool,
                   certs: NodeCerts, timeout: float = JOIN_TIMEOUT) -> bytes:
    """The cluster secret, once a member has issued this host's certificate; JoinRefused otherwise."""
    _, _, fingerprint = parse_join_token(token)
    body = {"token": token, "name": name, "address": address, "csr": certs.csr(name).decode(), "manager": manager}
    blind = ssl.create_default_context()
    blind.check_hostname = False
    blind.verify_mode = ssl.CERT_NONE  # verified below, against the token's fingerprint
    started = time.monotonic()
    deadline = started + timeout
    problem = "no member answered"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=blind),
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        while True:
            for host, port in seeds:
                url = f"https://{host}:{port}/v1/join"
                try:
                    async with session.post(url, json=body) as resp:
                        answer = await resp.json(content_type=None)
                        if resp.status == 200:
                            return _accept(answer, await _server_certificate(host, port, blind), fingerprint,
                                           certs, url)
                        message = answer.get("message") if isinstance(answer, dict) else None
                        code = answer.get("error") if isinstance(answer, dict) else None
                        # a cluster still committing its bootstrap may not know its first token yet
                        unknown_yet = code == UnknownJoinToken.code and time.monotonic() < started + UNKNOWN_TOKEN_GRACE
                        if resp.status != 503 and not unknown_yet:
                            raise JoinRefused(f"{url} refused the join: {message or resp.status}")
                        problem = f"{url}: {message}"
                except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                    problem = f"{url}: {exc}"
            if time.monotonic() > deadline:
                raise JoinRefused(f"could not join within {timeout:g} s: {problem}")
            await asyncio.sleep(0.5)


async def _server_certificate(host: str, port: int, blind: ssl.SSLContext) -> bytes | None:
    """The certificate the member's API presents (DER), read from a TLS session of its own."""
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=blind), 10)
    except (OSError, TimeoutError):
        return None
    try:
        peer = writer.get_extra_info("ssl_object")
        return peer.getpeercert(binary_form=True) if peer is not None else None
    finally:
        writer.close()


def _accept(answer: object, leaf: bytes | None, fingerprint: str, certs: NodeCerts, url: str) -> bytes:
    if not isinstance(answer, dict) or not all(isinstance(answer.get(k), str) for k in ("ca", "cert", "secret")):
        raise JoinRefused(f"{url} answered something that is not a join")
    now = time.time()
    try:
        offered, chain = pki.split_pem(answer["ca"].encode()), pki.split_pem(answer["cert"].encode())
    except pki.PkiError as exc:
        raise JoinRefused(f"{url} answered with a bad certificate: {exc}") from None
    pinned = [c for c in offered if pki.fingerprint(c) == fingerprint]
    if not pinned:
        raise JoinRefused(f"{url} is not the cluster the token is for: its CA's fingerprint is "
                          f"{pki.fingerprint(offered[0])}, the token's {fingerprint}")
    # While the CA is rotated a token may carry the old CA's fingerprint: the new CA is believed only as
    # the old one vouches for it (its cross-signed copy, sent after the certificate). Another CA the
    # answer names but the pinned one does not vouch for is not trusted.
    kept = [c for c in offered if c == pinned[0] or any(pki.vouched(c, x, pinned[0], now) for x in chain[1:])]
    ca = b"".join(kept)
    if leaf is None or not pki.issued_by(leaf, ca, now):
        raise JoinRefused(f"{url} presented a certificate the cluster CA did not issue")
    if not pki.issued_by(answer["cert"].encode(), ca, now):
        raise JoinRefused(f"{url} answered with a certificate the cluster CA did not issue")
    secret = base64.b64decode(answer["secret"])
    certs.store(ca, answer["cert"].encode())
    log.info("joined through %s: certificate issued (%s), CA %s", url, answer.get("role"), fingerprint[:16])
    return secret



__all__ = ["JoinRefused", "exchange"]
