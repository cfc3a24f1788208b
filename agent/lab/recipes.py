"""Lab images made from Debian's packages: the recipes, and the pure parts of building them.

No public image registry is reachable from the lab's machine, but Debian's mirrors are. A recipe names
the Debian packages an image holds and how it starts; :mod:`agent.lab.debian` makes it with
``debootstrap --variant=minbase`` (the host's own suite and mirror), strips what a container never
reads, and packs the root filesystem as a one-layer ``docker save`` tarball.

Everything here is pure (no I/O but reading ``web.cgi``, beside this file, once): the recipes, the
cache key (suite, architecture, packages, files, start command and :data:`RECIPE_VERSION`), the host's
suite from ``/etc/os-release`` and its mirror from its apt sources, given as text. A tarball is cached
under its key, so a second build of the same recipe on the same suite is a lookup.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path

RECIPE_VERSION = 1
"""Bump when what a build does changes (strip list, packing, a recipe's files): the old tarballs are
then never reused."""

TAG_PREFIX = "corral-lab/"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

STRIP = (
    "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian", "usr/share/linda",
    "usr/share/bash-completion", "usr/share/common-licenses", "var/lib/apt/lists", "var/cache/apt",
    "var/cache/debconf", "var/log", "debootstrap",
)
"""Directories whose contents a container never reads (emptied, kept as directories). Docs go too,
but each package's ``usr/share/doc/*/copyright`` stays: it is the licence the image carries."""

WEB_CGI = (Path(__file__).resolve().parent / "web.cgi").read_text()
"""The web tier's one page (busybox httpd runs ``/cgi-bin/index.cgi`` for ``/``): see web.cgi."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One lab image: the Debian packages on top of minbase, the files added, how it starts."""

    name: str
    packages: tuple[str, ...]
    cmd: tuple[str, ...]
    summary: str
    exposed: tuple[str, ...] = ()  # "6379/tcp"
    dirs: tuple[str, ...] = ()  # made empty (0755), e.g. a data directory
    files: Mapping[str, tuple[int, str]] = dataclasses.field(default_factory=dict)  # path → (mode, text)
    env: tuple[str, ...] = ()

    @property
    def tag(self) -> str:
        return f"{TAG_PREFIX}{self.name}:latest"


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            name="redis",
            packages=("redis-server", "redis-tools"),
            # no config file: redis-server's built-in defaults, and protected mode off, since the clients
            # are other containers (the lab's overlay), not localhost
            cmd=("redis-server", "--protected-mode", "no", "--dir", "/data"),
            summary="Redis (Debian's redis-server and redis-tools); data in /data",
            exposed=("6379/tcp",),
            dirs=("data",),
        ),
        Recipe(
            name="web",
            packages=("busybox", "redis-tools"),
            cmd=("busybox", "httpd", "-f", "-v", "-p", "80", "-h", "/var/www"),
            summary="busybox httpd with a CGI page that counts and keeps keys in Redis at $REDIS_HOST (redis-cli)",
            exposed=("80/tcp",),
            files={"var/www/cgi-bin/index.cgi": (0o755, WEB_CGI)},
            env=("REDIS_PORT=6379",),
        ),
    )
}


class UnknownRecipe(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no lab image {name!r}: the recipes are {', '.join(sorted(RECIPES))}")


def recipe(name: str) -> Recipe:
    """The recipe called ``name`` (``redis`` or ``corral-lab/redis`` or ``corral-lab/redis:latest``)."""
    short = name.removeprefix(TAG_PREFIX).removesuffix(":latest")
    try:
        return RECIPES[short]
    except KeyError:
        raise UnknownRecipe(name) from None


def cache_key(recipe: Recipe, suite: str, arch: str) -> str:
    """What a tarball is cached under: 16 hex digits of the SHA-256 of everything that shapes it. The
    mirror is left out on purpose: every mirror of a suite serves the same packages."""
    shape = {
        "version": RECIPE_VERSION, "suite": suite, "arch": arch, "packages": sorted(recipe.packages),
        "cmd": list(recipe.cmd), "exposed": list(recipe.exposed), "dirs": list(recipe.dirs),
        "files": {path: [mode, text] for path, (mode, text) in sorted(recipe.files.items())},
        "env": list(recipe.env), "strip": list(STRIP),
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def image_config(recipe: Recipe, arch: str, diff_id: str, suite: str) -> dict[str, object]:
    """The image config of a recipe's one-layer image (``created`` fixed: same layer, same image id)."""
    return {
        "architecture": arch,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Cmd": list(recipe.cmd),
            "Env": [PATH_ENV, *recipe.env],
            "WorkingDir": "/",
            "ExposedPorts": {port: {} for port in recipe.exposed},
            "Labels": {"io.corral.lab.recipe": recipe.name, "io.corral.lab.suite": suite,
                       "io.corral.lab.packages": " ".join(recipe.packages)},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z",
                     "created_by": f"corral lab image build {recipe.name}: debootstrap --variant=minbase "
                                   f"--include={','.join(recipe.packages)} {suite}"}],
    }


def os_release_suite(text: str) -> str:
    """The Debian suite (``bookworm``) an ``/etc/os-release`` names; ValueError when it names none."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"').strip("'")
    codename = values.get("VERSION_CODENAME") or ""
    if not re.fullmatch(r"[a-z]+", codename):
        raise ValueError("/etc/os-release names no VERSION_CODENAME (is this Debian?)")
    return codename


def apt_mirror(sources: Mapping[str, str], suite: str) -> str | None:
    """The first mirror the host's apt sources use for ``suite`` itself (not -security, -updates), from
    files by name: ``*.sources`` in deb822 form, ``*.list`` in one-line form. None if none does."""
    for name, text in sources.items():
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
                if ("deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split()
                        and fields.get("uris")):
                    return fields["uris"].split()[0].rstrip("/")
        elif name.endswith(".list"):
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()  # drop [signed-by=…]
                if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                    return words[1].rstrip("/")
    return None
