"""``corral volume ls|inspect|create|rm``, ``corral config ls|inspect|create|rm`` (configs and secrets)
and ``corral settings`` (the host folders services may bind-mount)."""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path

import click

from agent.cli.client import Client
from agent.cli.output import fail, table, url_option

ENV_OPTION = click.option("--env", "environment", default="default", show_default=True, help="the environment")


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


@click.group("volume")
def volume() -> None:
    """Volumes: Docker volumes that live on one host each, recorded by the cluster. A stack's volumes
    (compose's top-level `volumes:`) are made on the host of their first container, and the containers
    that mount them are placed there and nowhere else; `x-corral: {scope: instance}` gives each replica
    its own; `external: true` names one made beforehand with `corral volume create`."""


@volume.command("ls")
@click.option("--env", "environment", default=None, help="only this environment's")
@url_option
def volume_ls(environment: str | None, url: str) -> None:
    """Every volume: its host, scope, stack, state and the services that mount it."""
    rows = Client(url).items("/v1/volumes", environment=environment) if environment else \
        Client(url).items("/v1/volumes")
    table("volumes", ["name", "environment", "scope", "stack", "host", "state", "used by"],
          [[v["name"], v["environment"], v["scope"], v["stack"], v["host"], v["state"], ", ".join(v["used_by"])]
           for v in rows])


@volume.command("inspect")
@click.argument("name")
@ENV_OPTION
@url_option
def volume_inspect(name: str, environment: str, url: str) -> None:
    """Everything the cluster records of volume NAME, as JSON."""
    click.echo(json.dumps(Client(url).get(f"/v1/volumes/{_q(name)}", environment=environment), indent=2))


@volume.command("create")
@click.argument("name")
@ENV_OPTION
@click.option("--on", "host", default=None, help="the host it lives on (default: that of its first container)")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE")
@url_option
def volume_create(name: str, environment: str, host: str | None, labels: tuple[str, ...], url: str) -> None:
    """Create external volume NAME, for compose files that name it `external: true`."""
    body: dict[str, object] = {"name": name, "environment": environment, "labels": list(labels)}
    if host is not None:
        body["host"] = host
    made = Client(url).post("/v1/volumes", body)
    click.echo(f"volume {made['name']} created" + (f" on {made['host']}" if made.get("host") else
                                                   " (on the host of the first container that mounts it)"))


@volume.command("rm")
@click.argument("name")
@ENV_OPTION
@url_option
def volume_rm(name: str, environment: str, url: str) -> None:
    """Remove volume NAME and its data (refused while a service mounts it)."""
    done = Client(url).request("DELETE", f"/v1/volumes/{_q(name)}", query={"environment": environment})
    click.echo(f"volume {name} {'is being removed from its host' if done['state'] == 'removing' else 'removed'}")


@click.group("config")
def config() -> None:
    """Configs and secrets: small files the cluster keeps and mounts read-only into containers. A stack's
    come with `corral stack deploy` (compose's `configs:`, `secrets:` and relative bind mounts such as
    `./nginx.conf:/etc/nginx/nginx.conf`); these commands make and remove an environment's own."""


@config.command("ls")
@url_option
def config_ls(url: str) -> None:
    """Every config and secret: name, stack, size, digest (never a secret's content)."""
    table("configs", ["name", "environment", "kind", "stack", "files", "size", "digest"],
          [[c["name"], c["environment"], "secret" if c["secret"] else "config", c["stack"], len(c["files"]), c["size"],
            c["digest"][:12]] for c in Client(url).items("/v1/configs")])


@config.command("inspect")
@click.argument("name")
@ENV_OPTION
@click.option("--content/--no-content", default=False, help="print a config's files (never a secret's)")
@url_option
def config_inspect(name: str, environment: str, content: bool, url: str) -> None:
    """What the cluster keeps of config or secret NAME."""
    got = Client(url).get(f"/v1/configs/{_q(name)}", environment=environment, content="true" if content else None)
    if content and "content" in got:
        for item in got["content"]:
            click.echo(f"--- {item['path'] or name}")
            click.echo(base64.b64decode(item["data"]).decode(errors="replace"), nl=False)
        return
    click.echo(json.dumps(got, indent=2))


@config.command("create")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--secret", is_flag=True, help="a secret: sealed, never shown back, mounted under /run/secrets")
@ENV_OPTION
@url_option
def config_create(name: str, path: Path, secret: bool, environment: str, url: str) -> None:
    """Create (or replace) config NAME from the file or folder PATH."""
    try:
        files = read_files(path)
    except (OSError, ValueError) as exc:
        raise fail(f"{path}: {exc}") from None
    made = Client(url).post("/v1/configs", {"name": name, "environment": environment, "secret": secret,
                                            "files": files})
    click.echo(f"{'secret' if secret else 'config'} {made['name']} created ({made['size']} bytes)")


@config.command("rm")
@click.argument("name")
@ENV_OPTION
@url_option
def config_rm(name: str, environment: str, url: str) -> None:
    """Remove config or secret NAME (refused while a service mounts it)."""
    Client(url).request("DELETE", f"/v1/configs/{_q(name)}", query={"environment": environment})
    click.echo(f"{name} removed")


MAX_FILES = 256
MAX_BYTES = 512 * 1024


def read_files(path: Path) -> list[dict[str, str]]:
    """A file as one entry with the path ``""``; a folder as its files by relative path (no symlinks
    out of it, at most 256 files and 512 KiB), base64."""
    if path.is_file():
        data = path.read_bytes()
        if len(data) > MAX_BYTES:
            raise ValueError(f"{len(data)} bytes: a config is at most {MAX_BYTES // 1024} KiB (use a volume)")
        return [{"path": "", "data": base64.b64encode(data).decode()}]
    out: list[dict[str, str]] = []
    total = 0
    for item in sorted(path.rglob("*")):
        if item.is_symlink() or not item.is_file():
            continue
        data = item.read_bytes()
        total += len(data)
        if total > MAX_BYTES or len(out) >= MAX_FILES:
            raise ValueError(f"over {MAX_BYTES // 1024} KiB or {MAX_FILES} files: a config is small (use a volume)")
        out.append({"path": item.relative_to(path).as_posix(), "data": base64.b64encode(data).decode()})
    return out


@click.command("settings")
@click.option("--allow-bind-path", "paths", multiple=True, metavar="PATH",
              help="allow services to bind-mount this host folder and all under it (repeat for more; replaces "
                   "the folders allowed before)")
@click.option("--no-bind-paths", is_flag=True, help="allow no bind mounts of host folders (the default)")
@url_option
def settings(paths: tuple[str, ...], no_bind_paths: bool, url: str) -> None:
    """The cluster's settings: print them, or change them (administrators). Today one: the host folders
    services may bind-mount (`- /srv/www:/usr/share/www` in a compose file); none by default."""
    client = Client(url)
    if paths and no_bind_paths:
        raise fail("--allow-bind-path and --no-bind-paths contradict each other")
    got = client.patch("/v1/settings", {"bind_paths": list(paths)}) if paths or no_bind_paths else \
        client.get("/v1/settings")
    click.echo(f"bind paths: {', '.join(got['bind_paths']) or 'none (no bind mounts of host folders)'}")


__all__ = ["config", "read_files", "settings", "volume"]
