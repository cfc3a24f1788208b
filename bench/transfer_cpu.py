"""What moving a tarball costs the agents, per MB: one peer transfer on loopback, with the real code.

Run: ``python -m bench.transfer_cpu [--mb 500] [--path https|bulk] [--relay]``. Three processes (four with
``--relay``), each on uvloop as the agent is:

- the **sender**: an :class:`~agent.node.images.ImageManager` holding the tarball, served by the agent's
  own handler (``agent.api.images.send_tarball``) over HTTPS with the cluster's mTLS (a CA and node
  certificates made here with :mod:`mesh.pki`), or by its bulk channel (``--path bulk``);
- the **receiver**: an ``ImageManager.fetch`` of it into a :class:`~agent.node.docker.DockerEngine`;
- the **engine**: a stand-in for dockerd on a unix socket that reads ``POST /images/load`` into one
  buffer and throws it away (the engine's own cost is not the agents'; ``bench.images`` measures the real
  one), so what is counted is the agents' alone;
- with ``--relay`` a second receiver fetches from the first while it still receives (the tree's relay).

Each process says its CPU seconds (user + system, threads included) over the transfer; the figure is
CPU ms per MB moved, per role, beside the wall time. Loopback, not the lab's veth + bridge: the kernel's
share is smaller here than in the lab.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MB = 10**6
CERT_DAYS = 30


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_split() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


# ---------------------------------------------------------------------- a stand-in engine


async def _engine_serve(path: str, ready: Any, stop: Any) -> None:
    loop = asyncio.get_running_loop()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    server.setblocking(False)
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    loaded: set[str] = set()
    tasks: set[asyncio.Task[None]] = set()

    async def reply(conn: socket.socket, status: int, body: bytes) -> None:
        head = (f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"Api-Version: 1.41\r\n\r\n").encode()
        await loop.sock_sendall(conn, head + body)

    async def handle(conn: socket.socket) -> None:
        pending = b""
        try:
            while True:
                while b"\r\n\r\n" not in pending:
                    got = await loop.sock_recv(conn, 65536)
                    if not got:
                        return
                    pending += got
                head, _, pending = pending.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                length = int(headers.get("content-length", "0"))
                if method == "POST" and target.split("?")[0].endswith("/images/load"):
                    left = length - len(pending)
                    pending = b""
                    while left > 0:
                        n = await loop.sock_recv_into(conn, view[:min(len(buf), left)])
                        if not n:
                            return
                        left -= n
                    loaded.add("*")
                    await reply(conn, 200, b'{"stream":"Loaded image ID: sha256:x\\n"}\r\n')
                elif target.split("?")[0].endswith("/version"):
                    await reply(conn, 200, json.dumps({"ApiVersion": "1.41", "Version": "20.10.0"}).encode())
                elif "/images/" in target and target.split("?")[0].endswith("/json"):
                    if loaded:
                        await reply(conn, 200, json.dumps({"Id": target.split("/images/")[1][:-5]}).encode())
                    else:
                        await reply(conn, 404, b'{"message":"No such image"}')
                else:
                    pending = pending[length:]
                    await reply(conn, 404, b'{"message":"not here"}')
        finally:
            conn.close()

    async def accept() -> None:
        while True:
            conn, _ = await loop.sock_accept(server)
            conn.setblocking(False)
            tasks.add(loop.create_task(handle(conn)))

    task = loop.create_task(accept())
    ready.set()
    await loop.run_in_executor(None, stop.wait)
    task.cancel()


def engine_main(path: str, ready: Any, stop: Any) -> None:
    import uvloop
    uvloop.run(_engine_serve(path, ready, stop))


# ---------------------------------------------------------------------- the cluster's TLS, made here


def make_certs(root: Path, names: list[str]) -> None:
    from mesh import pki
    now = time.time()
    ca_cert, ca_key = pki.make_ca("bench", now)
    (root / "ca.pem").write_bytes(ca_cert)
    for name in names:
        key = pki.new_key()
        issued = pki.sign(ca_cert, ca_key, pki.make_csr(name, key), name, "worker", ["127.0.0.1"], now,
                          days=CERT_DAYS)
        (root / f"{name}.pem").write_bytes(issued.cert_pem)
        (root / f"{name}-key.pem").write_bytes(pki.key_pem(key))


def contexts(root: Path, name: str) -> tuple[Any, Any]:
    from agent.process.certs import _client_context, _server_context
    server, client = _server_context(), _client_context()
    for ctx in (server, client):
        ctx.load_cert_chain(root / f"{name}.pem", root / f"{name}-key.pem")
        ctx.load_verify_locations(cafile=str(root / "ca.pem"))
    return server, client


# ---------------------------------------------------------------------- an agent: sender, relay or receiver


SECRET = b"bench secret for the transfer...."


class _Deps:
    def __init__(self, manager: Any, sealer: Any) -> None:
        self.images = manager
        self.replica = type("Replica", (), {"sealer": sealer})()


async def _agent(role: str, root: str, image: dict[str, Any], ports: dict[str, int], source: str,
                 engine_path: str | None, conn: Any, opts: dict[str, Any]) -> None:
    import aiohttp
    from aiohttp import web

    from agent.api.deps import DEPS
    from agent.api.images import send_tarball
    from agent.model.images import CatalogImage
    from agent.model.state import ClusterState
    from agent.node.docker import DockerEngine
    from agent.node.images import ImageManager
    from mesh.keyring import Keyring

    base = Path(root)
    server_ctx, client_ctx = contexts(base, role)
    sealer = Keyring.from_secret(SECRET).channel(b"raft")
    engine = await DockerEngine.connect(f"unix://{engine_path}") if engine_path else None
    connector = aiohttp.TCPConnector(limit=0, ssl=client_ctx)
    async with aiohttp.ClientSession(connector=connector) as session:
        def api_of(host: str) -> str | None:
            return f"https://127.0.0.1:{ports[host]}" if host in ports else None

        async def propose(cmd: object) -> None:
            return None

        bulk_bind = ("127.0.0.1", 0) if opts.get("path") == "bulk" else None
        manager = ImageManager(role, ClusterState(), engine, base / role, SECRET, sealer, session,  # type: ignore[arg-type]
                               api_of, propose, bulk_bind=bulk_bind)
        (base / role / "images" / "partial").mkdir(parents=True, exist_ok=True)
        app = web.Application()
        app[DEPS] = _Deps(manager, sealer)  # type: ignore[assignment]
        app.router.add_get("/v1/internal/images/{id}", send_tarball)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", ports[role], ssl_context=server_ctx)
        await site.start()
        accepting = None
        if bulk_bind is not None:  # what ImageManager.running starts, without its catalog feed
            accepting = asyncio.get_running_loop().create_task(manager._bulk_accept(manager._bulk_listen()))
        loop = asyncio.get_running_loop()

        async def told() -> object:  # the pipe's read off the loop: the agent keeps serving meanwhile
            return await loop.run_in_executor(None, conn.recv)

        idle0 = _cpu()
        conn.send(("ready", os.getpid()))
        try:
            if role == "sender":
                await told()  # "done"
                conn.send({"cpu": _cpu() - idle0, "served": manager.stats["served_bytes"]})
                return
            await told()  # "go"
            cat = CatalogImage(image["id"], (), image["digest"], image["size"], (source,), "load", 1)
            started, cpu0, split0 = time.monotonic(), _cpu(), _cpu_split()
            await manager.fetch(cat)
            wall, cpu, split = time.monotonic() - started, _cpu() - cpu0, _cpu_split()
            if role == "relay":
                # stay up (and serving) until told: the receiver downstream may still read from here
                conn.send({"cpu": cpu, "wall": wall, "user": split[0] - split0[0], "sys": split[1] - split0[1]})
                await told()
                conn.send({"cpu": _cpu() - cpu0})
            else:
                conn.send({"cpu": cpu, "wall": wall, "user": split[0] - split0[0], "sys": split[1] - split0[1]})
        finally:
            if accepting is not None:
                accepting.cancel()
            await runner.cleanup()
            if engine is not None:
                await engine.close()


def agent_main(*args: Any) -> None:
    import uvloop
    sys.path.insert(0, os.getcwd())
    uvloop.run(_agent(*args))


# ---------------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--path", default="https", help="https (the agent's API) or bulk (its bulk channel)")
    parser.add_argument("--relay", action="store_true", help="a second receiver fetches from the first")
    parser.add_argument("--port", type=int, default=19400)
    parser.add_argument("--perf", metavar="PREFIX", help="perf record -g each agent into PREFIX-ROLE.data")
    parser.add_argument("--profile", metavar="PREFIX", help="py-spy each agent into PREFIX-ROLE.txt (raw stacks)")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="corral-xfer-", dir="/tmp") as tmp:
        root = Path(tmp)
        make_certs(root, ["sender", "relay", "receiver"])
        (root / "sender" / "images").mkdir(parents=True)
        data = os.urandom(args.mb * MB)
        digest = hashlib.sha256(data).hexdigest()
        (root / "sender" / "images" / f"{digest}.tar").write_bytes(data)
        del data
        image = {"id": "sha256:" + "0" * 64, "digest": digest, "size": args.mb * MB}
        ports = {"sender": args.port, "relay": args.port + 10, "receiver": args.port + 20}
        opts = {"path": args.path}
        procs, pipes, stops = [], {}, []
        receivers = ["relay", "receiver"] if args.relay else ["receiver"]
        for i, role in enumerate(["sender", *receivers]):
            engine_path = None
            if role != "sender":
                engine_path = str(root / f"engine-{i}.sock")
                ready, stop = ctx.Event(), ctx.Event()
                p = ctx.Process(target=engine_main, args=(engine_path, ready, stop), daemon=True)
                p.start()
                ready.wait(10)
                procs.append(p)
                stops.append(stop)
            source = "sender" if role == "relay" or not args.relay else "relay"
            parent, child = ctx.Pipe()
            p = ctx.Process(target=agent_main, args=(role, str(root), image, ports, source, engine_path, child,
                                                     opts), daemon=True)
            p.start()
            procs.append(p)
            pipes[role] = parent
        spies = []
        for role, pipe in pipes.items():
            said, pid = pipe.recv()
            if said != "ready":
                raise SystemExit(f"{role} did not start")
            if args.profile:
                spies.append(subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--native", "-r", "250",
                     "-f", "raw", "-o", f"{args.profile}-{role}.txt"], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL))
            if args.perf:
                spies.append(subprocess.Popen(
                    ["perf", "record", "-g", "-F", "499", "-p", str(pid), "-o", f"{args.perf}-{role}.data"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if spies:
            time.sleep(1.5)  # py-spy attached
        started = time.monotonic()
        for role in receivers:
            pipes[role].send("go")
            if role == "relay":
                time.sleep(0.3)  # the relay has bytes before the receiver asks it
        results = {role: pipes[role].recv() for role in receivers}
        wall = time.monotonic() - started
        if args.relay:
            pipes["relay"].send("done")
            results["relay"] = {**results["relay"], "total": pipes["relay"].recv()["cpu"]}
        pipes["sender"].send("done")
        sender = pipes["sender"].recv()
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        for stop in stops:
            stop.set()
        for p in procs:
            p.join(10)
    per = args.mb
    print(f"transfer {args.mb} MB over {args.path}{' with a relay' if args.relay else ''}: wall {wall:.2f} s "
          f"({args.mb / wall:.0f} MB/s)")
    print(f"  sender   {sender['cpu']:.2f} cpu-s  {sender['cpu'] / per * 1000:.2f} ms/MB")
    for role in receivers:
        r = results[role]
        total = r.get("total", r["cpu"])
        print(f"  {role:<8} {total:.2f} cpu-s  {total / per * 1000:.2f} ms/MB  (user {r['user']:.2f}, "
              f"sys {r['sys']:.2f}; fetch wall {r['wall']:.2f} s)")
    every = sender["cpu"] + sum(results[r].get("total", results[r]["cpu"]) for r in receivers)
    print(f"  agents   {every:.2f} cpu-s  {every / (per * len(receivers)) * 1000:.2f} ms per MB delivered")


if __name__ == "__main__":
    main()
