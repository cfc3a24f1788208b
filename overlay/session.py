"""Sans-I/O overlay session core: one host's encrypted sessions with every other host.

Theory of operation (details, diagram and timers in ``overlay/design.md``):

* Each host has a static X25519 key; peers' public keys and underlay addresses come from the
  replicated host records through ``add_peer``. A Noise_IKpsk2 handshake (``overlay/noise.py``)
  with fresh ephemeral keys and the cluster secret as PSK yields one *keypair* per session: an
  AEAD key per direction, a 64-bit send counter used as nonce, and a replay window.
* A peer holds up to three keypairs, as WireGuard: ``current`` (used to send), ``previous`` (still
  opens late packets) and ``next`` (a responder's new keypair, promoted to current on the first packet
  the initiator sends with it — the key confirmation).
* Rekey: the sender of a keypair past ``rekey_after_messages`` (either side) or its initiator past
  ``rekey_after_time`` starts a new handshake; no keypair seals or opens past
  ``reject_after_messages`` / ``reject_after_time``, so a nonce is never reused: packets wait in a
  bounded queue for the next handshake instead.
* MAC1 (keyed by the responder's public key) is checked on every handshake message before any DH;
  when the caller sets ``under_load``, initiations and responses also need MAC2 made with a cookie
  bound to the sender's address, else they get a cookie reply and no DH is done.

The core never does I/O: inputs are ``receive``/``send``/``handle_timer`` with ``now`` (seconds,
monotonic), outputs are pulled with ``datagrams_to_send`` and ``get_timer``. Randomness comes in
as ``rand_bytes`` (keys, indices, cookie secrets) and ``rng`` (retry jitter).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterable

from cryptography.exceptions import InvalidTag

from overlay import noise
from overlay.config import OverlayConfig
from overlay.ratelimit import HandshakeRateLimiter
from overlay.replay import ReplayWindow
from overlay.session_messages import (
    INIT_MAC1_OFFSET,
    MAC_LEN,
    PROTOCOL_VERSION,
    RESPONSE_MAC1_OFFSET,
    TRANSPORT_HEADER,
    TRANSPORT_MIN_LEN,
    CookieReply,
    DropReason,
    HandshakeInit,
    HandshakeResponse,
    MsgKind,
    decode,
)
from overlay.session_state import Addr, Keypair, Peer, PeerState, PeerStatus, PendingHandshake

Datagram = bytes | bytearray  # sealed transport datagrams are bytearrays built in place
Received = bytes | bytearray | memoryview  # what receive() takes: e.g. a slice of a recvmmsg buffer

_NONCE = struct.Struct("<4xQ")  # 32 zero bits ‖ counter, little-endian (WireGuard's nonce)
_TAI64N = struct.Struct(">QI")
_HDR_LEN = TRANSPORT_HEADER.size
_OVERHEAD = TRANSPORT_MIN_LEN  # header + AEAD tag
_SEAL_IN_PLACE_FROM = 8192  # measured: below this, header + ciphertext concatenation is faster
_KIND_DATA = int(MsgKind.TRANSPORT_DATA)


class OverlaySession:
    """All overlay sessions of one host. Not thread-safe; one event loop drives it."""

    def __init__(self, config: OverlayConfig, private_key: bytes, cluster_secret: bytes, *,
                 rand_bytes: Callable[[int], bytes], rng: random.Random, wall_clock_offset: float) -> None:
        """``private_key``: this host's 32-byte X25519 key (persisted by the agent, public half in its record).

        ``wall_clock_offset``: ``time.time() − now`` at start, so initiation timestamps keep growing
        across restarts of this host (peers refuse a timestamp not newer than the last they saw).
        """
        self.config = config
        self._reject_messages = config.reject_after_messages
        self._reject_time = config.reject_after_time
        self._ident = noise.Identity.from_private(private_key, config.cipher)
        self._psk = noise.psk_from_cluster_secret(cluster_secret)
        self._rand_bytes = rand_bytes
        self._rng = rng
        self._offset = wall_clock_offset
        self._last_ts = 0
        self._peers: dict[str, Peer] = {}
        self._by_public: dict[bytes, Peer] = {}
        self._ss_by_public: dict[bytes, bytes] = {}
        self._keypairs: dict[int, Keypair] = {}
        self._handshakes: dict[int, Peer] = {}
        self._outbox: list[tuple[Datagram, Addr]] = []
        self._drops = [0] * (max(DropReason) + 1)
        self._under_load = False
        self._limiter = HandshakeRateLimiter(config.handshake_rate, config.handshake_burst)
        self._cookie_secret = b""
        self._cookie_secret_at = float("-inf")

    # ------------------------------------------------------------------ peers and status
    @property
    def public_key(self) -> bytes:
        return self._ident.public

    def add_peer(self, peer_id: str, public_key: bytes, addr: Addr, now: float) -> None:
        """Add a host (or update its underlay address). A changed key drops the old sessions."""
        old = self._peers.get(peer_id)
        if old is not None and old.public == public_key:
            old.addr = addr
            return
        if old is not None:
            self.remove_peer(peer_id)
        if public_key == self._ident.public or public_key in self._by_public:
            raise ValueError("public key already in use by this host or another peer")
        ss = noise.dh(self._ident.private, public_key)
        if ss is None:
            raise ValueError("invalid X25519 public key")
        peer = Peer(peer_id, public_key, addr, ss)
        if self.config.persistent_keepalive > 0:
            peer.persist_at = now  # self-check starts at once: handshake on the next timer
        self._peers[peer_id] = peer
        self._by_public[public_key] = peer
        self._ss_by_public[public_key] = ss

    def remove_peer(self, peer_id: str) -> None:
        peer = self._peers.pop(peer_id, None)
        if peer is None:
            return
        del self._by_public[peer.public]
        del self._ss_by_public[peer.public]
        for kp in peer.keypairs():
            self._keypairs.pop(kp.local_index, None)
        if peer.handshake is not None:
            self._handshakes.pop(peer.handshake.local_index, None)

    def set_under_load(self, under_load: bool) -> None:
        """The adapter's verdict (e.g. handshake backlog or CPU): demand cookies (MAC2) from initiators."""
        self._under_load = under_load

    def peer_status(self, peer_id: str, now: float) -> PeerStatus:
        p = self._peers[peer_id]
        if self._sendable(p, now) is not None and not p.stale:
            state = PeerState.ESTABLISHED
        elif p.ever_established:
            state = PeerState.DEGRADED
        elif p.handshake is not None or p.next is not None:
            state = PeerState.HANDSHAKING
        else:
            state = PeerState.NONE
        return PeerStatus(p.peer_id, state, p.addr, p.last_handshake, p.handshakes, p.handshake_rtt, p.last_received,
                          p.last_sent, p.rx_bytes, p.tx_bytes, p.rx_packets, p.tx_packets, len(p.queue))

    def stats(self) -> dict[str, int]:
        """Drops by reason (every reason present, zero included)."""
        return {r.name.lower(): self._drops[r] for r in DropReason}

    def _drop(self, reason: DropReason) -> None:
        self._drops[reason] += 1

    # ------------------------------------------------------------------ outputs
    def datagrams_to_send(self) -> list[tuple[Datagram, Addr]]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        """The earliest `now` at which ``handle_timer`` has work, or None."""
        best: float | None = None
        reject3 = 3 * self.config.reject_after_time
        for p in self._peers.values():
            for t in (p.retry_at, p.new_handshake_at, p.keepalive_at, p.persist_at):
                if t is not None and (best is None or t < best):
                    best = t
            for kp in p.keypairs():
                t = kp.created + reject3
                if best is None or t < best:
                    best = t
        return best

    # ------------------------------------------------------------------ send path
    def send(self, peer_id: str, packet: bytes, now: float) -> None:
        """Seal one inner packet for a peer, or queue it until a session exists."""
        self.send_many(peer_id, (packet,), now)

    def send_many(self, peer_id: str, packets: Iterable[bytes], now: float) -> None:
        """Seal a batch for one peer with one lookup: the data path's per-packet cost is one AEAD call."""
        peer = self._peers.get(peer_id)
        if peer is None:
            for _ in packets:
                self._drop(DropReason.UNKNOWN_DESTINATION)
            return
        kp = self._sendable(peer, now)
        if kp is None:
            self._enqueue(peer, packets, now)
            return
        cfg = self.config
        limit = cfg.reject_after_messages
        outbox = self._outbox
        append = outbox.append
        addr = peer.addr
        seal = kp.send_aead.encrypt
        seal_into = kp.send_aead.encrypt_into
        pack_hdr = TRANSPORT_HEADER.pack
        pack_hdr_into = TRANSPORT_HEADER.pack_into
        pack_nonce = _NONCE.pack
        remote = kp.remote_index
        counter = kp.send_counter
        rest: list[bytes] = []
        nbytes = npk = 0
        it = iter(packets)
        for packet in it:
            if counter >= limit:  # nonce space exhausted: never reuse, queue for the next keypair
                rest.append(packet)
                rest.extend(it)
                break
            size = _OVERHEAD + len(packet)
            data: Datagram
            if size < _SEAL_IN_PLACE_FROM:  # small: concatenating is cheaper than a memoryview
                data = pack_hdr(_KIND_DATA, PROTOCOL_VERSION, 0, remote, counter) + seal(
                    pack_nonce(counter), packet, None)
            else:  # large (TSO segments): seal behind the header in place, saving a 64 KB copy
                data = bytearray(size)
                pack_hdr_into(data, 0, _KIND_DATA, PROTOCOL_VERSION, 0, remote, counter)
                seal_into(pack_nonce(counter), packet, None, memoryview(data)[_HDR_LEN:])
            counter += 1
            append((data, addr))
            nbytes += size
            npk += 1
        kp.send_counter = counter
        if npk:
            self._after_send(peer, now, nbytes, npk, expect_reply=True)
        if counter >= cfg.rekey_after_messages or (kp.initiator and now - kp.created >= cfg.rekey_after_time):
            self._want_handshake(peer, now)
        if rest:
            self._enqueue(peer, rest, now)

    def _after_send(self, peer: Peer, now: float, nbytes: int, npk: int, expect_reply: bool) -> None:
        peer.tx_bytes += nbytes
        peer.tx_packets += npk
        peer.last_sent = now
        peer.keepalive_at = None
        if self.config.persistent_keepalive > 0:
            peer.persist_at = now + self.config.persistent_keepalive
        if expect_reply and peer.new_handshake_at is None:
            peer.new_handshake_at = now + self.config.keepalive_timeout + self.config.rekey_timeout

    def _sendable(self, peer: Peer, now: float) -> Keypair | None:
        kp = peer.current
        if (kp is None or kp.send_counter >= self.config.reject_after_messages
                or now - kp.created >= self.config.reject_after_time):
            return None
        return kp

    def _enqueue(self, peer: Peer, packets: Iterable[bytes], now: float) -> None:
        q = peer.queue
        for packet in packets:
            if len(q) >= self.config.queue_limit:
                q.popleft()
                self._drop(DropReason.QUEUE_FULL)
            q.append(packet)
        self._want_handshake(peer, now)

    def _send_keepalive(self, peer: Peer, now: float, expect_reply: bool) -> bool:
        kp = self._sendable(peer, now)
        if kp is None:
            return False
        c = kp.send_counter
        kp.send_counter = c + 1
        data = TRANSPORT_HEADER.pack(_KIND_DATA, PROTOCOL_VERSION, 0, kp.remote_index, c) + kp.send_aead.encrypt(
            _NONCE.pack(c), b"", None)
        self._outbox.append((data, peer.addr))
        self._after_send(peer, now, len(data), 1, expect_reply)
        return True

    def _flush_queue(self, peer: Peer, now: float) -> None:
        if peer.queue:
            packets = list(peer.queue)
            peer.queue.clear()
            self.send_many(peer.peer_id, packets, now)

    # ------------------------------------------------------------------ handshake, initiator side
    def _want_handshake(self, peer: Peer, now: float) -> None:
        if peer.handshake is not None:
            return  # one in flight; the retry timer resends it
        self._send_initiation(peer, now)

    def _new_index(self) -> int:
        while True:
            idx = int.from_bytes(self._rand_bytes(4), "little")
            if idx and idx not in self._keypairs and idx not in self._handshakes:
                return idx

    def _timestamp(self, now: float) -> bytes:
        ns = max(int((now + self._offset) * 1e9), self._last_ts + 1)
        self._last_ts = ns
        return _TAI64N.pack((1 << 62) + ns // 1_000_000_000, ns % 1_000_000_000)

    def _send_initiation(self, peer: Peer, now: float) -> None:
        cfg = self.config
        if peer.handshake is not None:
            self._handshakes.pop(peer.handshake.local_index, None)
        idx = self._new_index()
        msg, state = noise.create_initiation(self._ident, cfg.cipher, peer.public, peer.ss, self._rand_bytes(32), idx,
                                             self._timestamp(now))
        body = msg.encode()[:INIT_MAC1_OFFSET]
        data, mac1 = self._add_macs(peer, body, now)
        peer.handshake = PendingHandshake(state, idx, mac1, now)
        self._handshakes[idx] = peer
        if peer.first_attempt_at is None:
            peer.first_attempt_at = now
        peer.attempts += 1
        backoff = min(cfg.rekey_timeout * 2 ** min(peer.attempts - 1, 30), cfg.handshake_backoff_max)
        peer.retry_at = now + backoff + self._rng.random() * cfg.handshake_jitter
        self._outbox.append((data, peer.addr))

    def _add_macs(self, peer: Peer, body: bytes, now: float) -> tuple[bytes, bytes]:
        mac1 = noise.mac(peer.mac1_key, body)
        if peer.cookie is not None and now - peer.cookie_at < self.config.cookie_refresh_time:
            mac2 = noise.mac(peer.cookie, body + mac1)
        else:
            mac2 = bytes(MAC_LEN)
        return body + mac1 + mac2, mac1

    # ------------------------------------------------------------------ receive path
    def receive(self, data: Received, addr: Addr, now: float) -> list[bytes]:
        """Handle one datagram; return the inner packet it carried, if any (keepalives carry none)."""
        if len(data) >= TRANSPORT_MIN_LEN and data[0] == _KIND_DATA:
            opened = self._open(data, now)
            if opened is None:
                return []
            kp, plain = opened
            self._on_authentic(kp, 1, len(data), bool(plain), now)
            return [plain] if plain else []
        self._receive_handshake(data, addr, now)
        return []

    def receive_many(self, datagrams: Iterable[tuple[Received, Addr]], now: float) -> list[tuple[str, bytes]]:
        """Handle a batch; return ``(peer_id, inner packet)`` so the data path can check source addresses.

        Per-peer bookkeeping (counters, timers, key confirmation) runs once per keypair per batch.
        """
        out: list[tuple[str, bytes]] = []
        seen: dict[Keypair, list[int]] = {}  # keypair → [packets, bytes, data packets]
        open_ = self._open
        for data, addr in datagrams:
            if len(data) >= TRANSPORT_MIN_LEN and data[0] == _KIND_DATA:
                opened = open_(data, now)
                if opened is None:
                    continue
                kp, plain = opened
                acc = seen.get(kp)
                if acc is None:
                    acc = seen[kp] = [0, 0, 0]
                acc[0] += 1
                acc[1] += len(data)
                if plain:
                    acc[2] += 1
                    out.append((kp.peer.peer_id, plain))
            else:
                self._receive_handshake(data, addr, now)
        for kp, (npk, nbytes, ndata) in seen.items():
            self._on_authentic(kp, npk, nbytes, ndata > 0, now)
        return out

    def _open(self, data: Received, now: float) -> tuple[Keypair, bytes] | None:
        """Authenticate and decrypt one transport datagram, or count why not."""
        _kind, version, reserved, idx, counter = TRANSPORT_HEADER.unpack_from(data)
        if version != PROTOCOL_VERSION:
            self._drop(DropReason.BAD_VERSION)
            return None
        if reserved:
            self._drop(DropReason.MALFORMED)
            return None
        kp = self._keypairs.get(idx)
        if kp is None:
            self._drop(DropReason.UNKNOWN_SESSION)
            return None
        if counter >= self._reject_messages or now - kp.created >= self._reject_time:
            self._drop(DropReason.EXPIRED_KEY)
            return None
        window = kp.window
        if not window.check(counter):  # cheap: a replay costs no decryption
            self._drop(DropReason.REPLAYED)
            return None
        try:
            plain = kp.recv_aead.decrypt(_NONCE.pack(counter), memoryview(data)[_HDR_LEN:], None)
        except InvalidTag:
            self._drop(DropReason.AUTH_FAILED)
            return None
        if not window.accept(counter):  # only now, so a forgery never moves the window
            self._drop(DropReason.REPLAYED)
            return None
        return kp, plain

    def _receive_handshake(self, data: Received, addr: Addr, now: float) -> None:
        raw = bytes(data)  # handshake path: rare, so a copy keeps the helpers on plain bytes
        parsed = decode(raw)
        if isinstance(parsed, DropReason):
            self._drop(parsed)
        elif isinstance(parsed, HandshakeInit):
            self._on_initiation(parsed, raw, addr, now)
        elif isinstance(parsed, HandshakeResponse):
            self._on_response(parsed, raw, addr, now)
        elif isinstance(parsed, CookieReply):
            self._on_cookie_reply(parsed, now)
        else:  # a transport header that failed the fast path's checks cannot reach here
            self._drop(DropReason.MALFORMED)

    def _on_authentic(self, kp: Keypair, npk: int, nbytes: int, is_data: bool, now: float) -> None:
        peer = kp.peer
        peer.rx_bytes += nbytes
        peer.rx_packets += npk
        peer.last_received = now
        peer.new_handshake_at = None
        peer.stale = False
        cfg = self.config
        if kp is peer.next:  # key confirmation: the initiator used the keypair we made as responder
            if peer.previous is not None:
                self._keypairs.pop(peer.previous.local_index, None)
            peer.previous, peer.current, peer.next = peer.current, kp, None
            self._flush_queue(peer, now)
        if is_data and peer.keepalive_at is None:
            peer.keepalive_at = now + cfg.keepalive_timeout
        if (kp is peer.current and kp.initiator
                and now - kp.created >= cfg.reject_after_time - cfg.keepalive_timeout - cfg.rekey_timeout):
            self._want_handshake(peer, now)

    # ------------------------------------------------------------------ handshake, responder side
    def _cookie_for(self, addr: Addr, now: float) -> bytes:
        if now - self._cookie_secret_at >= self.config.cookie_refresh_time:
            self._cookie_secret = self._rand_bytes(32)
            self._cookie_secret_at = now
        return noise.mac(self._cookie_secret, repr(addr).encode())

    def _check_macs(self, data: bytes, mac1_offset: int, sender: int, addr: Addr, now: float) -> bool:
        """MAC1 always; MAC2 when under load, else answer with a cookie reply. False = dropped."""
        mac1 = data[mac1_offset:mac1_offset + MAC_LEN]
        if not noise.macs_ok(self._ident.mac1_key, data, mac1_offset, mac1):
            self._drop(DropReason.BAD_MAC)
            return False
        if not self._under_load:
            return True
        cookie = self._cookie_for(addr, now)
        if noise.macs_ok(cookie, data, mac1_offset + MAC_LEN, data[mac1_offset + MAC_LEN:mac1_offset + 2 * MAC_LEN]):
            if self._limiter.allow(addr[0] if addr else addr, now):
                return True
            self._drop(DropReason.RATE_LIMITED)
            return False
        nonce = self._rand_bytes(12)
        sealed = noise.seal_cookie(self._ident.cookie_key, nonce, cookie, mac1)
        self._outbox.append((CookieReply(sender, nonce, sealed).encode(), addr))
        self._drop(DropReason.COOKIE_REQUIRED)
        return False

    def _on_initiation(self, msg: HandshakeInit, data: bytes, addr: Addr, now: float) -> None:
        if not self._check_macs(data, INIT_MAC1_OFFSET, msg.sender, addr, now):
            return
        got = noise.consume_initiation(self._ident, msg, self._ss_by_public)
        if isinstance(got, DropReason):
            self._drop(got)
            return
        peer = self._by_public[got.peer_public]
        if got.timestamp <= peer.last_init_ts:
            self._drop(DropReason.STALE_TIMESTAMP)
            return
        if peer.last_init_at is not None and now - peer.last_init_at < self.config.min_initiation_interval:
            self._drop(DropReason.RATE_LIMITED)
            return
        idx = self._new_index()
        made = noise.create_response(got, self._psk, self._rand_bytes(32), idx, msg.sender)
        if isinstance(made, DropReason):
            self._drop(made)
            return
        peer.last_init_ts = got.timestamp
        peer.last_init_at = now
        resp, send_key, recv_key = made
        body = resp.encode()[:RESPONSE_MAC1_OFFSET]
        out, peer.response_mac1 = self._add_macs(peer, body, now)
        kp = Keypair(peer, self.config.cipher, send_key, recv_key, False, idx, msg.sender, now, self._window())
        if peer.next is not None:
            self._keypairs.pop(peer.next.local_index, None)
        peer.next = kp
        self._keypairs[idx] = kp
        self._outbox.append((out, peer.addr))

    def _window(self) -> ReplayWindow:
        return ReplayWindow(self.config.replay_window, self.config.reject_after_messages)

    def _on_response(self, msg: HandshakeResponse, data: bytes, addr: Addr, now: float) -> None:
        if not self._check_macs(data, RESPONSE_MAC1_OFFSET, msg.sender, addr, now):
            return
        peer = self._handshakes.get(msg.receiver)
        if peer is None or peer.handshake is None:
            self._drop(DropReason.UNKNOWN_SESSION)
            return
        hs = peer.handshake
        keys = noise.consume_response(self._ident, hs.state, self._psk, msg)
        if isinstance(keys, DropReason):
            self._drop(keys)
            return
        del self._handshakes[hs.local_index]
        peer.handshake = None
        peer.attempts = 0
        peer.first_attempt_at = peer.retry_at = None
        kp = Keypair(peer, self.config.cipher, keys[0], keys[1], True, hs.local_index, msg.sender, now,
                      self._window())
        if peer.previous is not None:
            self._keypairs.pop(peer.previous.local_index, None)
        if peer.next is not None:  # a crossing handshake's keypair stays usable for receiving
            if peer.current is not None:
                self._keypairs.pop(peer.current.local_index, None)
            peer.previous, peer.next = peer.next, None
        else:
            peer.previous = peer.current
        peer.current = kp
        self._keypairs[kp.local_index] = kp
        peer.last_handshake = now
        peer.handshake_rtt = now - hs.sent_at
        peer.handshakes += 1
        peer.ever_established = True
        peer.stale = False
        peer.new_handshake_at = None
        if peer.queue:
            self._flush_queue(peer, now)
        else:
            self._send_keepalive(peer, now, expect_reply=False)  # confirms the keypair to the responder

    def _on_cookie_reply(self, msg: CookieReply, now: float) -> None:
        # A cookie reply answers either our initiation (receiver = its sender index) or, when the
        # initiator is under load too, our response (receiver = our unconfirmed keypair's index).
        peer = self._handshakes.get(msg.receiver)
        kp = self._keypairs.get(msg.receiver)
        if peer is not None and peer.handshake is not None:
            mac1 = peer.handshake.mac1
        elif kp is not None and kp is kp.peer.next:
            peer, mac1 = kp.peer, kp.peer.response_mac1
        else:
            self._drop(DropReason.UNKNOWN_SESSION)
            return
        cookie = noise.open_cookie(peer.cookie_key, msg.nonce, msg.encrypted_cookie, mac1)
        if cookie is None:
            self._drop(DropReason.AUTH_FAILED)
            return
        peer.cookie = cookie
        peer.cookie_at = now

    # ------------------------------------------------------------------ timers
    def handle_timer(self, now: float) -> None:
        """Run every deadline that is due: retries, keepalives, dead-peer detection, key expiry."""
        cfg = self.config
        for peer in list(self._peers.values()):
            if peer.retry_at is not None and now >= peer.retry_at:
                self._retry_handshake(peer, now)
            if peer.new_handshake_at is not None and now >= peer.new_handshake_at:
                peer.new_handshake_at = None  # sent but heard nothing: the tunnel is suspect
                peer.stale = True
                self._want_handshake(peer, now)
            if peer.keepalive_at is not None and now >= peer.keepalive_at:
                peer.keepalive_at = None
                self._send_keepalive(peer, now, expect_reply=False)
            if peer.persist_at is not None and now >= peer.persist_at:
                peer.persist_at = now + cfg.persistent_keepalive
                if not self._send_keepalive(peer, now, expect_reply=True):
                    self._want_handshake(peer, now)
                else:
                    kp = peer.current
                    if kp is not None and kp.initiator and now - kp.created >= cfg.rekey_after_time:
                        self._want_handshake(peer, now)
            self._expire_keypairs(peer, now)

    def _retry_handshake(self, peer: Peer, now: float) -> None:
        cfg = self.config
        if (peer.queue and peer.first_attempt_at is not None
                and now - peer.first_attempt_at >= cfg.rekey_attempt_time):
            for _ in peer.queue:
                self._drop(DropReason.HANDSHAKE_TIMEOUT)
            peer.queue.clear()
        if peer.queue or cfg.persistent_keepalive > 0 or peer.current is not None:
            self._send_initiation(peer, now)
            return
        if peer.handshake is not None:  # nothing wants this peer any more: give up quietly
            self._handshakes.pop(peer.handshake.local_index, None)
        peer.handshake = None
        peer.retry_at = peer.first_attempt_at = None
        peer.attempts = 0

    def _expire_keypairs(self, peer: Peer, now: float) -> None:
        limit = 3 * self.config.reject_after_time
        for name in ("current", "previous", "next"):
            kp = getattr(peer, name)
            if kp is not None and now - kp.created >= limit:
                self._keypairs.pop(kp.local_index, None)
                setattr(peer, name, None)


__all__ = ["Addr", "Datagram", "OverlaySession", "PeerState", "PeerStatus", "Received"]
