"""The base image ``corral/base``, made here from Debian's busybox-static: no registry is needed.

It is written as a ``docker save`` tarball (manifest.json, the image config, one layer) that every
lab engine loads with ``POST /images/load``. The tarball is deterministic (fixed mtimes, owners and
order), so every host gets the same image id, and moving an image between hosts is moving bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from agent.lab.layout import BASE_IMAGE

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
INDEX_HTML = b"<html><body><h1>corral/base</h1><p>busybox httpd on Corral</p></body></html>\n"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageBuildError(Exception):
    pass


def find_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.exists() and _is_static(path):
            return path
    raise ImageBuildError(
        "no static busybox found (looked in " + ", ".join(BUSYBOX_CANDIDATES) + "): "
        "install Debian's busybox-static (the README's setup command does)"
    )


def _is_static(path: Path) -> bool:
    """A dynamically linked busybox would not run in an image with no libc: check its ELF header."""
    data = path.read_bytes()
    return data[:4] == b"\x7fELF" and b"ld-linux" not in data[:8192]


def _applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True)
    return sorted({line.strip() for line in out.stdout.splitlines() if line.strip()})


def docker_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


def _layer(busybox: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, 0, 0, 0
            info.uname = info.gname = "root"
            if kind == tarfile.SYMTYPE:
                info.linkname = link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        dirs = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home", "var", "var/www",
                "proc", "sys", "dev"]
        for d in dirs:
            add(d, tarfile.DIRTYPE, 0o755)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        add("bin/busybox", tarfile.REGTYPE, 0o755, busybox.read_bytes())
        for applet in _applets(busybox):
            if applet != "bin/busybox" and applet.split("/")[0] in ("bin", "sbin", "usr"):
                add(applet, tarfile.SYMTYPE, 0o777, link="/bin/busybox")
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
        add("etc/passwd", tarfile.REGTYPE, 0o644, passwd)
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nnogroup:x:65534:\n")
        add("var/www/index.html", tarfile.REGTYPE, 0o644, INDEX_HTML)
    return buf.getvalue()


def _payload_layer(size: int, seed: str, name: str = "payload") -> bytes:
    """A layer of one file, ``/payload``, of ``size`` bytes that do not compress (AES-256 in counter mode,
    keyed by the SHA-256 of ``seed``: the same seed, the same bytes): what makes an image of a given size
    for tests and benchmarks. Incompressible for real, so a registry's gzip'd layer is as big as the
    tarball's and a pull moves as many bytes as a peer-to-peer fetch."""
    key = hashlib.sha256(seed.encode()).digest()
    data = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(size))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o644, "root", "root"
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_base_image(busybox: Path | None = None, tag: str = BASE_IMAGE, payload: int = 0,
                     seed: str = "", extra: int = 0, extra_seed: str = "") -> tuple[bytes, str]:
    """The ``docker save`` tarball of the base image and its image id (``sha256:…``); with ``payload``
    bytes, a second layer holding that much (``/payload``, made from ``seed``): an image of any size;
    with ``extra`` bytes, a third (``/extra``, from ``extra_seed``): the same image with a layer on top,
    as a rebuild makes it."""
    busybox = busybox or find_busybox()
    layers = [_layer(busybox)] + ([_payload_layer(payload, seed or tag)] if payload else [])
    if extra:
        layers.append(_payload_layer(extra, extra_seed or f"{tag} extra", "extra"))
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = {
        "architecture": docker_arch(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"], "Env": [PATH_ENV], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "corral lab: busybox-static rootfs"}]
        + ([{"created": "1970-01-01T00:00:00Z", "created_by": f"corral lab: {payload} bytes of payload"}]
           if payload else [])
        + ([{"created": "1970-01-01T00:00:00Z", "created_by": f"corral lab: {extra} bytes on top"}]
           if extra else []),
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    out = io.BytesIO()
    streams = [(hashlib.sha256(layer).hexdigest(), len(layer), io.BytesIO(layer)) for layer in layers]
    image_id = write_saved_image(out, tag, config_bytes, streams)
    return out.getvalue(), image_id


def write_saved_image(out: BinaryIO, tag: str, config_bytes: bytes,
                      layers: Sequence[tuple[str, int, BinaryIO]]) -> str:
    """Write a ``docker save`` tarball of one image to ``out`` (its config, then each layer as
    ``HEX/layer.tar``, then ``manifest.json``; fixed mtimes, so the same input is the same bytes) and
    return its image id. ``layers`` are (SHA-256 hex, size, stream) each, the stream read ``size`` bytes."""
    image_hex = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{"Config": f"{image_hex}.json", "RepoTags": [tag], "Layers": [f"{d}/layer.tar" for d, _, _ in layers]}]
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, size: int, stream: BinaryIO) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = size, 0, 0o644
            tar.addfile(info, stream)

        add(f"{image_hex}.json", len(config_bytes), io.BytesIO(config_bytes))
        for digest, size, stream in layers:
            add(f"{digest}/layer.tar", size, stream)
        manifest_bytes = json.dumps(manifest).encode()
        add("manifest.json", len(manifest_bytes), io.BytesIO(manifest_bytes))
    return "sha256:" + image_hex


def busybox_available() -> bool:
    try:
        find_busybox()
    except ImageBuildError:
        return False
    return shutil.which("busybox") is not None or any(Path(p).exists() for p in BUSYBOX_CANDIDATES)
