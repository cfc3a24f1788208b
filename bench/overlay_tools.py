"""Small network tools run inside the lab's namespaces (no ping or tcpdump needed on the machine).

``python -m bench.overlay_tools ping DST [-c N] [-i S]`` — ICMP echo over a raw socket; JSON with RTTs.
``… tcp-serve PORT`` / ``… tcp-send DST PORT PAYLOAD`` — one connection; the server echoes what it got.
``… udp-serve PORT`` / ``… udp-send DST PORT PAYLOAD`` — one datagram, echoed back.
``… capture IFACE SECONDS MARKER`` — AF_PACKET capture; JSON: packets, bytes, whether MARKER was seen,
UDP/4500 datagrams seen.
Every command prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import struct
import sys
import time
from typing import Any


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ping(dst: str, count: int, interval: float, timeout: float) -> dict[str, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    rtts: list[float] = []
    for seq in range(count):
        body = struct.pack("!d", time.perf_counter()) + b"ovt-ping" * 4
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        pkt = struct.pack("!BBHHH", 8, 0, _checksum(hdr + body), ident, seq) + body
        sent = time.perf_counter()
        sock.sendto(pkt, (dst, 0))
        deadline = sent + timeout
        while True:
            left = deadline - time.perf_counter()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                break
            data, _addr = sock.recvfrom(2048)
            ihl = (data[0] & 0xF) * 4
            typ, _code, _ck, rid, rseq = struct.unpack_from("!BBHHH", data, ihl)
            if typ == 0 and rid == ident and rseq == seq:
                rtts.append((time.perf_counter() - sent) * 1000)
                break
        if seq + 1 < count:
            time.sleep(interval)
    return {"sent": count, "received": len(rtts), "rtt_ms": rtts}


def tcp_serve(port: int, timeout: float) -> dict[str, Any]:
    srv = socket.create_server(("0.0.0.0", port))
    srv.settimeout(timeout)
    print(json.dumps({"listening": port}), flush=True)
    conn, addr = srv.accept()
    conn.settimeout(timeout)
    got = b""
    while chunk := conn.recv(65536):
        got += chunk
    conn.sendall(got)
    conn.close()
    return {"from": addr[0], "bytes": len(got)}


def tcp_send(dst: str, port: int, payload: bytes, repeat: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = socket.create_connection((dst, port), timeout=timeout)
            break
        except ConnectionRefusedError:  # the server is not listening yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    data = payload * repeat
    conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
    back = b""
    while chunk := conn.recv(65536):
        back += chunk
    return {"sent": len(data), "echoed_ok": back == data}


def udp_serve(port: int, timeout: float) -> dict[str, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(timeout)
    print(json.dumps({"listening": port}), flush=True)
    data, addr = sock.recvfrom(65535)
    sock.sendto(data, addr)
    return {"from": addr[0], "bytes": len(data)}


def udp_send(dst: str, port: int, payload: bytes, timeout: float) -> dict[str, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.3)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # UDP: resend until echoed (the server may not be up yet)
        sock.sendto(payload, (dst, port))
        try:
            data, _ = sock.recvfrom(65535)
            return {"echoed_ok": data == payload}
        except TimeoutError:
            continue
    return {"echoed_ok": False}


def capture(iface: str, seconds: float, marker: bytes) -> dict[str, Any]:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sock.bind((iface, 0))
    sock.settimeout(0.1)
    print(json.dumps({"capturing": iface}), flush=True)
    end = time.monotonic() + seconds
    packets = nbytes = udp4500 = 0
    seen = False
    while time.monotonic() < end:
        try:
            frame = sock.recv(65535)
        except TimeoutError:
            continue
        packets += 1
        nbytes += len(frame)
        if marker in frame:
            seen = True
        if len(frame) >= 42 and frame[12:14] == b"\x08\x00" and frame[23] == 17:
            ihl = (frame[14] & 0xF) * 4
            if struct.unpack_from("!H", frame, 14 + ihl + 2)[0] == 4500 or struct.unpack_from(
                    "!H", frame, 14 + ihl)[0] == 4500:
                udp4500 += 1
    return {"packets": packets, "bytes": nbytes, "marker_seen": seen, "udp4500": udp4500}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ping")
    p.add_argument("dst")
    p.add_argument("-c", type=int, default=3)
    p.add_argument("-i", type=float, default=0.2)
    p.add_argument("-W", type=float, default=1.0)
    for name in ("tcp-serve", "udp-serve"):
        s = sub.add_parser(name)
        s.add_argument("port", type=int)
        s.add_argument("--timeout", type=float, default=10)
    for name in ("tcp-send", "udp-send"):
        s = sub.add_parser(name)
        s.add_argument("dst")
        s.add_argument("port", type=int)
        s.add_argument("payload")
        s.add_argument("--repeat", type=int, default=1)
        s.add_argument("--timeout", type=float, default=10)
    c = sub.add_parser("capture")
    c.add_argument("iface")
    c.add_argument("seconds", type=float)
    c.add_argument("marker")
    a = ap.parse_args()
    if a.cmd == "ping":
        out = ping(a.dst, a.c, a.i, a.W)
    elif a.cmd == "tcp-serve":
        out = tcp_serve(a.port, a.timeout)
    elif a.cmd == "udp-serve":
        out = udp_serve(a.port, a.timeout)
    elif a.cmd == "tcp-send":
        out = tcp_send(a.dst, a.port, a.payload.encode(), a.repeat, a.timeout)
    elif a.cmd == "udp-send":
        out = udp_send(a.dst, a.port, a.payload.encode(), a.timeout)
    else:
        out = capture(a.iface, a.seconds, a.marker.encode())
    print(json.dumps(out), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
