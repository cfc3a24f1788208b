"""``corral lab image build NAME``: a recipe (:mod:`agent.lab.recipes`) made into a ``docker save``
tarball with debootstrap, cached on this machine.

The build: ``debootstrap --variant=minbase --include=PACKAGES SUITE ROOTFS MIRROR`` (the host's own
suite and apt mirror; the downloaded .debs kept in ``CACHE/debs`` for the next build), then what a
container never reads is stripped (:data:`recipes.STRIP`, docs but their copyright files, device
nodes), the recipe's files are added, GNU tar packs the root filesystem (names sorted, numeric
owners) as the image's one layer, and :func:`image.write_saved_image` wraps it with the image config.

The tarball is kept as ``CACHE/images/NAME-SUITE-KEY.tar`` with a ``.json`` beside it (tag, image id,
size, how long the build took); ``KEY`` is :func:`recipes.cache_key`. A build of a recipe whose
tarball is there is a lookup. Builds of one key take a lock (``flock``), so two at once build once.
``CACHE`` is ``/var/cache/corral-lab`` (``CORRAL_LAB_CACHE`` moves it): shared by every lab id.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from agent.lab import procs, recipes
from agent.lab.image import ImageBuildError, docker_arch, write_saved_image
from agent.lab.recipes import Recipe

CACHE_ENV = "CORRAL_LAB_CACHE"
DEFAULT_CACHE = Path("/var/cache/corral-lab")
DEBOOTSTRAP_TIMEOUT = 1800.0
HASH_CHUNK = 1 << 20

Say = Callable[[str], None]


def _silent(_message: str) -> None:
    pass


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


@dataclasses.dataclass(frozen=True)
class BuiltImage:
    """A recipe's tarball in the cache."""

    recipe: str
    tag: str
    image_id: str
    path: Path
    size: int
    suite: str
    key: str
    cached: bool  # found in the cache (no debootstrap this time)
    build_seconds: float  # what making it took, when it was made


@dataclasses.dataclass(frozen=True)
class Host:
    """What a build takes from this machine: its suite, Debian architecture and mirror."""

    suite: str
    arch: str
    mirror: str


def this_host(mirror: str | None = None) -> Host:
    try:
        suite = recipes.os_release_suite(Path("/etc/os-release").read_text())
    except (OSError, ValueError) as exc:
        raise ImageBuildError(f"cannot tell this machine's Debian suite: {exc}") from exc
    try:
        arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ImageBuildError(f"cannot tell this machine's Debian architecture (dpkg --print-architecture): "
                              f"{exc}") from exc
    if mirror is None:
        sources: dict[str, str] = {}
        for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
            with contextlib.suppress(OSError):
                sources[path.name] = path.read_text()
        mirror = recipes.apt_mirror(sources, suite) or recipes.DEFAULT_MIRROR
    return Host(suite, arch, mirror)


def paths(recipe: Recipe, host: Host, root: Path | None = None) -> tuple[Path, Path]:
    """The cached tarball and its description (.json) for ``recipe`` on ``host``'s suite."""
    root = root or cache_dir()
    stem = f"{recipe.name}-{host.suite}-{recipes.cache_key(recipe, host.suite, host.arch)}"
    return root / "images" / f"{stem}.tar", root / "images" / f"{stem}.json"


def cached(recipe: Recipe, host: Host, root: Path | None = None) -> BuiltImage | None:
    """The recipe's tarball if the cache has it whole (its description is written last)."""
    tarball, described = paths(recipe, host, root)
    try:
        info = json.loads(described.read_text())
        size = tarball.stat().st_size
    except (OSError, ValueError):
        return None
    if size != info.get("size"):
        return None
    return BuiltImage(recipe.name, info["tag"], info["image_id"], tarball, size, info["suite"], info["key"],
                      cached=True, build_seconds=float(info.get("build_seconds", 0.0)))


def build(recipe: Recipe, host: Host | None = None, rebuild: bool = False, say: Say = _silent,
          root: Path | None = None) -> BuiltImage:
    """The recipe's tarball: from the cache, or made now (minutes: debootstrap) and then cached."""
    host = host or this_host()
    root = root or cache_dir()
    tarball, described = paths(recipe, host, root)
    key = recipes.cache_key(recipe, host.suite, host.arch)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with _locked(tarball.with_suffix(".lock")):
        if not rebuild:
            found = cached(recipe, host, root)
            if found is not None:
                say(f"cached: {found.path} ({found.size / 2**20:.1f} MiB, made in {found.build_seconds:.0f} s)")
                return found
        _preflight()
        started = time.monotonic()
        work = root / "build" / f"{tarball.stem}.{os.getpid()}"
        fresh = tarball.with_suffix(".tar.tmp")
        try:
            made = _make(recipe, host, root, work, fresh, say)
        finally:
            _remove_tree(work)
        described.unlink(missing_ok=True)  # what was cached stays until the new tarball is whole
        os.replace(fresh, tarball)
        seconds = time.monotonic() - started
        info = {"tag": recipe.tag, "image_id": made[0], "size": made[1], "suite": host.suite, "arch": host.arch,
                "mirror": host.mirror, "packages": list(recipe.packages), "key": key,
                "recipe_version": recipes.RECIPE_VERSION, "built_at": time.time(), "build_seconds": round(seconds, 1)}
        tmp = described.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, described)
    return BuiltImage(recipe.name, recipe.tag, made[0], tarball, made[1], host.suite, key,
                      cached=False, build_seconds=seconds)


def _preflight() -> None:
    if os.geteuid() != 0:
        raise ImageBuildError("building a lab image needs root (debootstrap): run it as root")
    for tool in ("debootstrap", "tar", "chroot"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            raise ImageBuildError(f"{tool} is not installed: run the README's setup command "
                                  "(scripts/install.sh), or `apt-get install debootstrap`")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _make(recipe: Recipe, host: Host, root: Path, work: Path, tarball: Path, say: Say) -> tuple[str, int]:
    """debootstrap, strip, add the recipe's files, pack into ``tarball``: (image id, tarball size)."""
    _remove_tree(work)  # a crashed build of this pid's number
    rootfs = work / "rootfs"
    rootfs.mkdir(parents=True)
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    argv = [_tool("debootstrap"), "--variant=minbase", f"--include={','.join(recipe.packages)}",
            f"--cache-dir={debs}", f"--arch={host.arch}", host.suite, str(rootfs), host.mirror]
    say(f"debootstrap --variant=minbase --include={','.join(recipe.packages)} {host.suite} from {host.mirror} "
        "(minutes, the first time)")
    log = work / "debootstrap.log"
    with log.open("wb") as out:
        try:
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=DEBOOTSTRAP_TIMEOUT, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        except subprocess.TimeoutExpired:
            raise ImageBuildError(f"debootstrap did not finish within {DEBOOTSTRAP_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        raise ImageBuildError(f"debootstrap failed (exit {done.returncode}): {_why(log, rootfs)}")
    removed = strip(rootfs)
    say(f"stripped {removed / 2**20:.1f} MiB (docs, man pages, locales, apt lists and caches, logs)")
    add_files(recipe, rootfs)
    layer = work / "layer.tar"
    packed = subprocess.run(
        ["tar", "--create", "--file", str(layer), "--directory", str(rootfs), "--sort=name", "--numeric-owner",
         "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*", "."],
        capture_output=True, text=True)
    if packed.returncode != 0:
        raise ImageBuildError(f"tar of the root filesystem failed: {packed.stderr.strip()[-500:]}")
    digest = _sha256(layer)
    config = recipes.image_config(recipe, docker_arch(), "sha256:" + digest, host.suite)
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    with tarball.open("wb") as out, layer.open("rb") as stream:
        image_id = write_saved_image(out, recipe.tag, config_bytes, [(digest, layer.stat().st_size, stream)])
    size = tarball.stat().st_size
    say(f"packed {recipe.tag} ({size / 2**20:.1f} MiB, {image_id[:19]})")
    return image_id, size


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _why(log: Path, rootfs: Path) -> str:
    """The lines of debootstrap's output (and its own log in the target) that say what went wrong."""
    lines: list[str] = []
    for path in (log, rootfs / "debootstrap" / "debootstrap.log"):
        with contextlib.suppress(OSError):
            lines += path.read_text(errors="replace").splitlines()
    telling = [line for line in lines if line.startswith(("E:", "W: Failure", "W: Couldn't"))] or lines[-3:]
    return " | ".join(line.strip() for line in telling[-4:]) or "(no output)"


def strip(rootfs: Path) -> int:
    """Empty what a container never reads (:data:`recipes.STRIP`; docs but copyright files); bytes freed."""
    freed = 0
    for relative in recipes.STRIP:
        top = rootfs / relative
        if top.is_dir() and not top.is_symlink():
            for entry in list(top.iterdir()):
                freed += _remove(entry)
    doc = rootfs / "usr/share/doc"
    if doc.is_dir():
        for package in list(doc.iterdir()):
            if package.is_dir() and not package.is_symlink():
                for entry in list(package.iterdir()):
                    if entry.name != "copyright":
                        freed += _remove(entry)
            elif not (package.is_symlink() or package.name == "copyright"):
                freed += _remove(package)
    return freed


def add_files(recipe: Recipe, rootfs: Path) -> None:
    for directory in recipe.dirs:
        (rootfs / directory).mkdir(mode=0o755, parents=True, exist_ok=True)
    for relative, (mode, text) in recipe.files.items():
        path = rootfs / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)


def _remove(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        size = sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
        shutil.rmtree(path)
        return size
    size = path.lstat().st_size
    path.unlink()
    return size


def _remove_tree(path: Path) -> None:
    """Remove a build directory, unmounting first what debootstrap may have left mounted in it (a
    failed build can leave the target's /proc or /sys mounted)."""
    if not path.exists():
        return
    for point in sorted(procs.mounts_under(path), key=len, reverse=True):
        procs.unmount(point)
    shutil.rmtree(path, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
