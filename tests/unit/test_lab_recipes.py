"""The pure parts of the lab's images from Debian packages: recipes, cache key, the host's suite and
mirror, the strip step; and the web tier's CGI page, run by this machine's /bin/sh (dash, as in the
image) against a stand-in redis-cli that keeps keys in files (the lab test uses the real Redis)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.lab import debian, recipes
from agent.lab.recipes import RECIPES, Recipe


def test_a_recipe_is_found_by_name_or_tag_and_an_unknown_one_names_the_known() -> None:
    assert recipes.recipe("redis") is RECIPES["redis"]
    assert recipes.recipe("corral-lab/web:latest") is RECIPES["web"]
    assert recipes.recipe("corral-lab/web") is RECIPES["web"]
    with pytest.raises(recipes.UnknownRecipe, match=r"no lab image 'postgres': the recipes are redis, web"):
        recipes.recipe("postgres")


def test_the_recipes_hold_the_packages_they_promise() -> None:
    assert {"redis-server", "redis-tools"} <= set(RECIPES["redis"].packages)
    assert RECIPES["redis"].cmd[0] == "redis-server" and "6379/tcp" in RECIPES["redis"].exposed
    assert {"busybox", "redis-tools"} <= set(RECIPES["web"].packages)
    assert RECIPES["web"].files["var/www/cgi-bin/index.cgi"][0] == 0o755
    assert RECIPES["web"].tag == "corral-lab/web:latest"


def test_the_cache_key_changes_with_everything_that_shapes_the_tarball(monkeypatch: pytest.MonkeyPatch) -> None:
    redis = RECIPES["redis"]
    key = recipes.cache_key(redis, "bookworm", "amd64")
    assert key == recipes.cache_key(redis, "bookworm", "amd64") and len(key) == 16
    # the order packages are named in does not matter; which packages, suite, architecture do
    assert recipes.cache_key(dataclasses.replace(redis, packages=redis.packages[::-1]), "bookworm", "amd64") == key
    others = {
        recipes.cache_key(redis, "trixie", "amd64"),
        recipes.cache_key(redis, "bookworm", "arm64"),
        recipes.cache_key(dataclasses.replace(redis, packages=(*redis.packages, "procps")), "bookworm", "amd64"),
        recipes.cache_key(dataclasses.replace(redis, cmd=("redis-server",)), "bookworm", "amd64"),
        recipes.cache_key(RECIPES["web"], "bookworm", "amd64"),
    }
    assert key not in others and len(others) == 5
    monkeypatch.setattr(recipes, "RECIPE_VERSION", recipes.RECIPE_VERSION + 1)
    assert recipes.cache_key(redis, "bookworm", "amd64") != key


def test_the_cached_tarball_is_named_by_recipe_suite_and_key(tmp_path: Path) -> None:
    host = debian.Host("bookworm", "amd64", "http://deb.debian.org/debian")
    tarball, described = debian.paths(RECIPES["web"], host, tmp_path)
    key = recipes.cache_key(RECIPES["web"], "bookworm", "amd64")
    assert tarball == tmp_path / "images" / f"web-bookworm-{key}.tar"
    assert described == tarball.with_suffix(".json")
    assert debian.cached(RECIPES["web"], host, tmp_path) is None  # nothing there
    tarball.parent.mkdir(parents=True)
    tarball.write_bytes(b"x" * 10)
    described.write_text('{"tag": "corral-lab/web:latest", "image_id": "sha256:ab", "size": 11, '
                         '"suite": "bookworm", "key": "k"}')
    assert debian.cached(RECIPES["web"], host, tmp_path) is None  # a tarball cut short is not a hit
    tarball.write_bytes(b"x" * 11)
    hit = debian.cached(RECIPES["web"], host, tmp_path)
    assert hit is not None and hit.cached and hit.image_id == "sha256:ab" and hit.size == 11


def test_the_suite_comes_from_os_release() -> None:
    text = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\nID=debian\n'
    assert recipes.os_release_suite(text) == "bookworm"
    with pytest.raises(ValueError, match="VERSION_CODENAME"):
        recipes.os_release_suite('NAME="Some Linux"\nID=other\n')


def test_the_mirror_is_the_one_apt_uses_for_the_suite_itself() -> None:
    deb822 = (
        "Types: deb\nURIs: http://security.debian.org/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb deb-src\n# a comment\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    assert recipes.apt_mirror({"debian.sources": deb822}, "bookworm") == "http://mirror.example/debian"
    one_line = ("# deb http://old.example/debian bookworm main\n"
                "deb [signed-by=/usr/share/keyrings/k.gpg] http://ftp.example/debian bookworm main contrib\n")
    assert recipes.apt_mirror({"sources.list": one_line}, "bookworm") == "http://ftp.example/debian"
    assert recipes.apt_mirror({"sources.list": one_line}, "trixie") is None
    assert recipes.apt_mirror({"other.list.disabled": one_line}, "bookworm") is None


def test_the_image_config_starts_the_recipe_and_says_what_it_holds() -> None:
    config = recipes.image_config(RECIPES["web"], "amd64", "sha256:" + "0" * 64, "bookworm")
    inner = config["config"]
    assert isinstance(inner, dict)
    assert inner["Cmd"] == ["busybox", "httpd", "-f", "-v", "-p", "80", "-h", "/var/www"]
    assert inner["ExposedPorts"] == {"80/tcp": {}}
    assert "REDIS_PORT=6379" in inner["Env"]
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}


def test_strip_empties_docs_and_lists_but_keeps_copyright_files(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    for path, data in {
        "usr/share/doc/redis-server/copyright": b"BSD",
        "usr/share/doc/redis-server/changelog.Debian.gz": b"x" * 100,
        "usr/share/man/man1/redis-server.1.gz": b"x" * 50,
        "usr/share/locale/de/LC_MESSAGES/apt.mo": b"x" * 30,
        "var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease": b"x" * 20,
        "usr/bin/redis-server": b"ELF",
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    assert debian.strip(root) == 200
    assert (root / "usr/share/doc/redis-server/copyright").read_bytes() == b"BSD"
    assert not (root / "usr/share/doc/redis-server/changelog.Debian.gz").exists()
    assert list((root / "usr/share/man").iterdir()) == [] and list((root / "var/lib/apt/lists").iterdir()) == []
    assert (root / "usr/bin/redis-server").exists()
    debian.add_files(RECIPES["web"], root)
    cgi = root / "var/www/cgi-bin/index.cgi"
    assert cgi.read_text() == recipes.WEB_CGI and os.stat(cgi).st_mode & 0o777 == 0o755


# ---------------------------------------------------------------------- the web tier's page

FAKE_REDIS_CLI = r"""#!/bin/sh
# redis-cli -h HOST -p PORT COMMAND ARGS…, keys as files in $STORE; "down" as host: cannot connect
[ "$2" = down ] && { echo "Could not connect to Redis at down:$4: Connection refused" >&2; exit 1; }
echo "$*" >> "$STORE/calls"
shift 4
case "$1" in
    SET) printf '%s' "$3" > "$STORE/k.$2"; echo OK ;;
    EXISTS) [ -f "$STORE/k.$2" ] && echo 1 || echo 0 ;;
    GET) cat "$STORE/k.$2"; echo ;;
    INCR) n=$(cat "$STORE/k.$2" 2>/dev/null || echo 0); n=$((n + 1)); printf '%s' "$n" > "$STORE/k.$2"; echo "$n" ;;
    *) echo "ERR unknown command '$1'"; exit 1 ;;
esac
"""


Page = Callable[..., tuple[str, str, Path]]  # (query, host=…) -> (status line, body, the store)


@pytest.fixture
def page(tmp_path: Path) -> Page:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("the CGI test needs busybox (scripts/install.sh installs busybox-static)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "redis-cli").write_text(FAKE_REDIS_CLI)
    (bin_dir / "redis-cli").chmod(0o755)
    (bin_dir / "busybox").symlink_to(busybox)
    store = tmp_path / "store"
    store.mkdir()
    script = tmp_path / "index.cgi"
    script.write_text(recipes.WEB_CGI)

    def run(query: str, host: str | None = "db.example") -> tuple[str, str, Path]:
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "QUERY_STRING": query, "REQUEST_METHOD": "GET",
               "STORE": str(store), "CORRAL_CONTAINER": "two-tier-web-1", "REDIS_PORT": "6379"}
        if host is not None:
            env["REDIS_HOST"] = host
        out = subprocess.run(["/bin/sh", str(script)], env=env, capture_output=True, timeout=10).stdout.decode()
        head, _, body = out.partition("\r\n\r\n")
        return head.split("\r\n")[0], body, store

    return run


def test_the_page_counts_sets_and_gets_through_redis_cli(page: Page) -> None:
    run = page
    assert run("")[:2] == ("HTTP/1.0 200 OK", "hits 1\nserved by two-tier-web-1\n")
    assert run("")[1].startswith("hits 2\n")
    stored = run("set=greeting&value=hello+world%21%20%26%3D")
    assert stored[:2] == ("HTTP/1.0 200 OK", "ok\nserved by two-tier-web-1\n")
    assert run("get=greeting")[:2] == ("HTTP/1.0 200 OK", "hello world! &=\nserved by two-tier-web-1\n")
    status, body, store = run("get=missing")
    assert status == "HTTP/1.0 404 Not Found" and body.startswith("no key missing\n")
    calls = (store / "calls").read_text().splitlines()
    assert calls[0] == "-h db.example -p 6379 INCR hits"
    assert "-h db.example -p 6379 SET greeting hello world! &=" in calls


def test_the_page_refuses_bad_keys_and_says_when_redis_cannot_be_reached(page: Page) -> None:
    run = page
    for bad in ("set=a%20b&value=1", "get=", "get=" + "k" * 101, "set=%24%28reboot%29&value=x"):
        status, body, store = run(bad)
        assert status == "HTTP/1.0 400 Bad Request", bad
        assert body.startswith("bad key")
    assert not (store / "calls").exists()  # a refused key never reaches redis
    status, body, _ = run("", host="down")
    assert status == "HTTP/1.0 502 Bad Gateway"
    assert body.startswith("redis at down:6379: Could not connect to Redis at down:6379: Connection refused\n")
    status, body, _ = run("get=x", host=None)
    assert status == "HTTP/1.0 502 Bad Gateway" and body.startswith("REDIS_HOST is not set")


def test_a_recipe_adds_its_data_directory(tmp_path: Path) -> None:
    debian.add_files(Recipe("t", ("p",), ("c",), "s", dirs=("data",)), tmp_path)
    assert (tmp_path / "data").is_dir()
