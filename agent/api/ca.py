"""The cluster CA: what it is, and rotating it without downtime (``corral ca rotate``).

A rotation has two steps, each a replicated command:

1. ``POST /v1/ca/rotate`` makes a new CA (its generation in its name) and a cross-signed copy of it
   (issued by the old CA) and commits both (:class:`~agent.model.commands.CaRotate`). The new CA signs
   from then on. Every node, on the change feed, re-issues its own certificate from the new CA at once,
   trusts both CAs, and serves its certificate followed by the cross-signed copy: a peer or a client
   that still trusts only the old CA verifies it (leaf → new CA → old CA), one that has the new one
   verifies it directly. Join tokens made before still work (they carry the old CA's fingerprint, and
   the old CA vouches for the new one).
2. ``POST /v1/ca/finish`` retires the old CA (:class:`~agent.model.commands.CaRetire`) once every live
   host serves a certificate of the new one (``GET /v1/ca/hosts`` looks: it opens a TLS connection to
   each host's API and reads the certificate it is shown); ``force`` finishes anyway. From then on
   nothing trusts the old CA: clients must have the new one (``corral ca``; the CLI that runs
   ``corral ca rotate --finish`` re-pins its own session).
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse

from aiohttp import web

from agent.api.auth import write
from agent.api.body import json_object
from agent.api.deps import DEPS, ApiDeps
from agent.errors import BadRequest, Conflict, Unavailable
from agent.model.access import Authority
from agent.model.commands import CaRetire, CaRotate
from mesh import pki

PROBE_TIMEOUT = 3.0


def authority_of(deps: ApiDeps) -> Authority:
    authority = deps.replica.state.access.authority
    if authority is None:
        raise Unavailable("the cluster has no certificate authority yet (is it still bootstrapping?)")
    return authority


def view(authority: Authority) -> dict[str, object]:
    return {"cert": authority.cert_pem, "fingerprint": authority.fingerprint, "generation": authority.generation,
            "trusted": authority.trusted_pem, "fingerprints": list(authority.fingerprints),
            "rotating": bool(authority.previous),
            "retiring": authority.previous_fingerprint or None}


async def ca(request: web.Request) -> web.Response:
    """The CA certificate and its fingerprint (public: a client pins it, as ``corral login`` shows);
    ``trusted`` is every CA a node trusts now (two while a rotation is under way)."""
    return web.json_response(view(authority_of(request.app[DEPS])))


async def _served_certificate(url: str) -> bytes:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or parts.hostname is None:
        raise ValueError("its API is plain HTTP (it has no certificate)")
    blind = ssl.create_default_context()
    blind.check_hostname = False
    blind.verify_mode = ssl.CERT_NONE  # only read: which CA issued what it shows
    _reader, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname, parts.port or 443, ssl=blind), PROBE_TIMEOUT)
    try:
        peer = writer.get_extra_info("ssl_object")
        der = peer.getpeercert(binary_form=True) if peer is not None else None
        if der is None:
            raise ValueError("it showed no certificate")
        return bytes(der)
    finally:
        writer.close()


async def host_states(deps: ApiDeps) -> list[dict[str, object]]:
    """For each live member: which CA issued the certificate its API shows."""
    authority = authority_of(deps)
    now = deps.auth.clock()
    members = [m for m in deps.gossip.members() if m.state.value == "alive"]

    async def probe(name: str, url: str) -> dict[str, object]:
        try:
            der = await _served_certificate(url)
        except (TimeoutError, OSError, ValueError) as exc:
            return {"host": name, "url": url, "ca": None, "current": False, "error": str(exc) or type(exc).__name__}
        if pki.issued_by(der, authority.cert_pem.encode(), now):
            which: str | None = authority.fingerprint
        elif authority.previous and pki.issued_by(der, authority.previous.encode(), now):
            which = authority.previous_fingerprint
        else:
            which = None
        return {"host": name, "url": url, "ca": which, "current": which == authority.fingerprint,
                "error": None if which else "its certificate is not from a CA the cluster trusts"}

    return list(await asyncio.gather(*(probe(m.name, str(m.meta.get("api") or "")) for m in sorted(
        members, key=lambda m: m.name))))


async def hosts(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    return web.json_response({**view(authority_of(deps)), "hosts": await host_states(deps)})


async def rotate(request: web.Request) -> web.Response:
    """Begin a rotation: a new CA signs; both are trusted until ``/v1/ca/finish``."""
    deps = request.app[DEPS]
    old = authority_of(deps)
    if old.previous:
        raise Conflict(f"a rotation is under way already (CA {old.previous_fingerprint[:16]} is retiring): "
                       "finish it first (`corral ca rotate --finish`)")
    now = deps.auth.clock()
    old_key = pki.open_ca_key(deps.secret, old.sealed_key)
    cert, key = pki.next_ca(old.cert_pem.encode(), old.generation + 1, now)
    cross = pki.cross_sign(cert, old.cert_pem.encode(), old_key, now)
    fingerprint = pki.fingerprint(cert)
    await write(request, CaRotate(cert.decode(), pki.seal_ca_key(deps.secret, key), fingerprint, cross.decode()))
    return web.json_response(view(authority_of(deps)), status=201)


async def finish(request: web.Request) -> web.Response:
    """Retire the old CA once every live host shows a certificate of the new one (``force``: anyway)."""
    deps = request.app[DEPS]
    body = await json_object(request, ("force",))
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise BadRequest("force is true or false", field="force")
    authority = authority_of(deps)
    if not authority.previous:
        raise Conflict("no CA rotation is under way (`corral ca rotate` begins one)")
    states = await host_states(deps)
    behind = [s for s in states if not s.get("current")]
    if behind and not force:
        detail = ", ".join(f"{s['host']} ({s['error'] or 'shows a certificate of the retiring CA'})" for s in behind)
        raise Conflict(f"not every live host has a certificate of the new CA yet: {detail}; wait a moment, "
                       "or give force to retire the old CA anyway (those hosts renew from the replicated state)")
    await write(request, CaRetire(authority.previous_fingerprint))
    return web.json_response({**view(authority_of(deps)), "hosts": states})


__all__ = ["authority_of", "ca", "finish", "host_states", "hosts", "rotate", "view"]
