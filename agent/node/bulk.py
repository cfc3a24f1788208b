"""The bulk channel: a tarball's bytes from one agent to another off the API's TLS, sealed per frame.

Why: over the API (aiohttp on asyncio's TLS), every byte crosses TLS records of 16 KiB, aiohttp's
stream reader and several Python-level copies; that cost more CPU than the engine's whole load of the
image (docs/IMAGES.md, "where the time goes"). Here the sender reads its file into one buffer, seals
it in place and hands it to the socket; the receiver reads each frame into one buffer and opens it.

How an asker gets one (the API still decides who is served: mTLS, the membership proof, the tree's
admission, redirects): it sends ``Corral-Bulk: 1`` with its ``GET /v1/internal/images/DIGEST``; a
holder that serves it answers 200 with ``{"bulk": {"port": P, "ticket": HEX}}`` instead of the body.
The asker connects to P on the same address, sends the ticket and a hello sealed under the transfer's
key (proof that it holds the cluster secret too), and reads frames until it has the tarball:

    frame  = length (4 bytes, big-endian: the sealed chunk's size) · sealed chunk
    sealed = AES-256-GCM(key, nonce = 0x00 · frame number (11 bytes), chunk), ≤ FRAME bytes of plaintext
    key    = HKDF-SHA256(cluster secret, salt = ticket, info = "corral image bulk v1 " DIGEST OFFSET)

A ticket is random, for one asker, one tarball and one offset, taken once, and good for
``TICKET_AGE`` seconds; the key is never sent. Frames are numbered, so none can be dropped, repeated or
reordered without the next one failing to open; a connection that ends early is a sender that stopped
(the fetch resumes elsewhere at the offset reached), and the whole is still checked against the catalog's
SHA-256 before its last chunk reaches the engine (:mod:`agent.node.images`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
from collections.abc import AsyncIterator, Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FRAME = 1 << 20
"""Plaintext bytes per frame at most."""
TAG = 16
TICKET_BYTES = 16
TICKET_AGE = 10.0
"""Seconds a ticket waits for its connection."""
HELLO_AAD = b"corral image bulk hello"
HEADER = "Corral-Bulk"
CONNECT_TIMEOUT = 5.0


class BulkError(OSError):
    """The bulk channel broke or was refused (an OSError: the fetch treats it as a sender that stopped)."""


def transfer_key(secret: bytes, ticket: bytes, digest: str, offset: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ticket,
                info=f"corral image bulk v1 {digest} {offset}".encode()).derive(secret)


def nonce(direction: int, counter: int) -> bytes:
    """0 for the sender's frames, 1 for the asker's hello."""
    return bytes((direction,)) + counter.to_bytes(11, "big")


@dataclasses.dataclass(frozen=True)
class Ticket:
    digest: str
    asker: str
    offset: int
    key: bytes = dataclasses.field(repr=False)
    expires: float


class Tickets:
    """Tickets handed out by the API and not yet taken by a connection (pure: time is an argument)."""

    def __init__(self, rand_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.rand_bytes = rand_bytes
        self.open: dict[bytes, Ticket] = {}

    def issue(self, secret: bytes, digest: str, asker: str, offset: int, now: float) -> bytes:
        ticket = self.rand_bytes(TICKET_BYTES)
        self.open[ticket] = Ticket(digest, asker, offset, transfer_key(secret, ticket, digest, offset),
                                   now + TICKET_AGE)
        return ticket

    def take(self, ticket: bytes, now: float) -> Ticket | None:
        got = self.open.pop(ticket, None)
        return got if got is not None and now <= got.expires else None

    def expired(self, now: float) -> list[Ticket]:
        """The tickets whose time is up, taken out."""
        gone = [t for t, v in self.open.items() if now > v.expires]
        return [self.open.pop(t) for t in gone]


def hello(key: bytes, ticket: bytes) -> bytes:
    return ticket + AESGCM(key).encrypt(nonce(1, 0), b"", HELLO_AAD)


def hello_ok(key: bytes, sealed: bytes) -> bool:
    try:
        AESGCM(key).decrypt(nonce(1, 0), sealed, HELLO_AAD)
    except InvalidTag:
        return False
    return True


RECV_LOW = 256 * 1024
"""The bulk socket wakes its reader once this much has arrived (``SO_RCVLOWAT``), not for every segment:
a 1 MiB frame in four reads, not in sixty (each read a pass of the event loop's Python)."""


def wake_for_batches(sock: socket.socket) -> None:
    """Fewer, bigger reads on a bulk socket (the sender's close or a short last frame still wakes it)."""
    with contextlib.suppress(OSError):  # not every kernel has every option: reads are merely smaller
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, RECV_LOW)


async def recv_exactly(sock: socket.socket, view: memoryview) -> None:
    loop = asyncio.get_running_loop()
    while view:
        got = await loop.sock_recv_into(sock, view)
        if not got:
            raise BulkError("the sender closed the bulk connection early")
        view = view[got:]


class FrameSealer:
    """The sender's side: chunks into frames, in one preallocated buffer (no copy but the cipher's)."""

    def __init__(self, key: bytes) -> None:
        self.aes = AESGCM(key)
        self.counter = 0
        self.buf = bytearray(4 + FRAME + TAG)
        self.view = memoryview(self.buf)

    def seal(self, chunk: memoryview) -> memoryview:
        size = len(chunk) + TAG
        self.buf[:4] = size.to_bytes(4, "big")
        self.aes.encrypt_into(nonce(0, self.counter), chunk, None, self.view[4:4 + size])
        self.counter += 1
        return self.view[:4 + size]


async def receive(host: str, port: int, ticket: bytes, key: bytes, stall: float) -> AsyncIterator[bytes]:
    """The asker's side: connect, say the ticket, and yield each frame's plaintext. BulkError if the
    channel breaks, a frame does not open, or nothing comes for ``stall`` seconds."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    wake_for_batches(sock)
    try:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_connect(sock, (host, port))
            await loop.sock_sendall(sock, hello(key, ticket))
        except TimeoutError:
            raise BulkError(f"no bulk connection to {host}:{port} within {CONNECT_TIMEOUT:g} s") from None
        aes = AESGCM(key)
        buf = bytearray(4 + FRAME + TAG)
        view = memoryview(buf)
        counter = 0
        while True:
            try:
                async with asyncio.timeout(stall):
                    first = await loop.sock_recv_into(sock, view[:4])
                    if not first:
                        return  # the sender is done (or stopped: the caller counts the bytes)
                    if first < 4:
                        await recv_exactly(sock, view[first:4])
                    size = int.from_bytes(buf[:4], "big")
                    if not TAG < size <= FRAME + TAG:
                        raise BulkError(f"a bulk frame of {size} bytes")
                    await recv_exactly(sock, view[4:4 + size])
            except TimeoutError:
                raise BulkError(f"the sender sent nothing for {stall:g} s") from None
            try:
                plain = aes.decrypt(nonce(0, counter), view[4:4 + size], None)
            except InvalidTag:
                raise BulkError("a bulk frame did not open under the transfer's key") from None
            counter += 1
            yield plain
    finally:
        sock.close()


__all__ = ["FRAME", "HEADER", "TICKET_AGE", "BulkError", "FrameSealer", "Ticket", "Tickets", "hello", "hello_ok",
           "nonce", "receive", "recv_exactly", "transfer_key"]
