"""``corral stack create|ls|rm|deploy``."""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import click

from agent.cli.client import Client
from agent.cli.output import console, fail, table, url_option
from agent.model import compose


@click.group("stack")
def stack() -> None:
    """Stacks of services."""


@stack.command("create")
@click.argument("name")
@url_option
def stack_create(name: str, url: str) -> None:
    """Create an empty stack NAME."""
    made = Client(url).post("/v1/stacks", {"name": name})
    click.echo(f"stack {made['name']} created ({made['id']})")


@stack.command("ls")
@url_option
def stack_ls(url: str) -> None:
    """The stacks, with their environment and number of services."""
    table("stacks", ["id", "name", "environment", "services"],
          [[s["id"], s["name"], s["environment"], len(s["services"])] for s in Client(url).items("/v1/stacks")])


@stack.command("rm")
@click.argument("name")
@url_option
def stack_rm(name: str, url: str) -> None:
    """Remove stack NAME (an id or a name) with its services and containers."""
    Client(url).delete(f"/v1/stacks/{name}")
    click.echo(f"stack {name} removed")


@stack.command("deploy")
@click.option("-f", "--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.argument("name", required=False)
@url_option
@click.option("--wait/--no-wait", default=True, help="wait until every container runs")
@click.option("--env-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="variables for ${VAR} in the file, instead of the .env beside it")
@click.option("--profile", "profiles", multiple=True, help="deploy the services of this profile too (repeatable)")
def stack_deploy(path: Path, name: str | None, url: str, wait: bool, env_file: Path | None,
                 profiles: tuple[str, ...]) -> None:
    """Create or update stack NAME from a compose file (like `docker stack deploy -c FILE NAME`; NAME
    defaults to the file's top-level `name:`). Every key of the file that Corral does not apply is
    printed as a warning (docs/COMPOSE.md). A service with `build:` is built first: its folder goes to
    the answering host, which builds it; the image is tagged by its content (a changed folder is a new
    tag, which rolls the service) and reaches the other hosts peer to peer."""
    parsed = read_compose(path, env_file, profiles)
    name = stack_name(parsed, name)
    print_warnings(parsed)
    services = parsed.services
    client = Client(url)
    for svc, build in parsed.builds.items():
        services[svc] = {**services[svc], "image": _built(client, path.parent, name, svc, build)}
    stacks = {s["name"]: s for s in client.items("/v1/stacks")}
    if name not in stacks:
        stacks[name] = client.post("/v1/stacks", {"name": name})
    existing = {s["name"]: s for s in client.items("/v1/services", stack=stacks[name]["id"])}
    ids = [_deploy_service(client, stacks[name]["id"], name, svc, spec, existing.get(svc))
           for svc, spec in services.items()]
    if wait:
        for sid in ids:
            converge(client, sid)


def read_compose(path: Path, env_file: Path | None = None, profiles: tuple[str, ...] = ()) -> compose.Compose:
    """The compose file, read with this shell's environment, the files beside it and the profiles asked for."""
    folder = path.parent

    def read(relative: str) -> str | None:
        file = Path(relative) if Path(relative).is_absolute() else folder / relative
        try:
            return file.read_text() if file.is_file() else None
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(f"{relative}: {exc}") from None

    try:
        return compose.parse(path.read_text(), environ=os.environ, read=read, profiles=profiles,
                             env_file=str(env_file.resolve()) if env_file is not None else None)
    except compose.ComposeError as exc:
        raise fail(f"{path}: {exc}") from None


def stack_name(parsed: compose.Compose, given: str | None) -> str:
    """The stack's name: the one given, else the file's ``name:``."""
    if given is None:
        if parsed.name is None:
            raise fail("give the stack's NAME (the file has no top-level name:)")
        return parsed.name
    if parsed.name is not None and parsed.name != given:
        parsed.warnings.insert(0, f"name: {parsed.name}: the stack's name given, {given}, is used")
    return given


def print_warnings(parsed: compose.Compose) -> None:
    for warning in parsed.warnings:
        click.echo(f"warning: {warning}", err=True)


def _built(client: Client, folder: Path, stack_name: str, service: str, build: compose.Build) -> str:
    """The tag of the service's built image: built by the answering host unless the catalog has it."""
    context = (folder / build.context).resolve()
    if not context.is_dir():
        raise fail(f"services.{service}.build: {context} is not a folder")
    try:
        data = build_context(context)
    except (OSError, ValueError) as exc:
        raise fail(f"services.{service}.build: {exc}") from None
    digest = hashlib.sha256(data + build.dockerfile.encode() + json.dumps(dict(build.args), sort_keys=True).encode())
    tag = f"corral-build/{stack_name}-{service}:{digest.hexdigest()[:12]}"
    if any(tag in image["tags"] for image in client.items("/v1/images")):
        click.echo(f"service {stack_name}/{service}: {tag} is built already")
        return tag
    click.echo(f"service {stack_name}/{service}: building {context} ({len(data) // 1024} KiB) as {tag}")
    made = client.upload("/v1/builds", data, len(data), query={
        "tag": tag, "dockerfile": build.dockerfile, "args": json.dumps(dict(build.args))})
    click.echo(f"service {stack_name}/{service}: built {made['id'][:19]} on {', '.join(made['holders'])}")
    return tag


MAX_CONTEXT = 256 * 2**20


def build_context(folder: Path) -> bytes:
    """The folder as a tar, the same bytes for the same files (names sorted, times and owners zeroed):
    what is hashed into the image's tag. ``.dockerignore`` patterns (``fnmatch``, no ``!``) leave files out."""
    ignore_file = folder / ".dockerignore"
    patterns = [p.strip().rstrip("/") for p in ignore_file.read_text().splitlines()
                if p.strip() and not p.startswith("#")] if ignore_file.exists() else []

    def ignored(rel: str) -> bool:
        return any(fnmatch.fnmatch(rel, p) or rel.startswith(p + "/") for p in patterns)

    out = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix()
            if ignored(rel) or not (path.is_file() or path.is_dir()) or path.is_symlink():
                continue
            info = tar.gettarinfo(str(path), arcname=rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_file():
                total += info.size
                if total > MAX_CONTEXT:
                    raise ValueError(f"the build context is over {MAX_CONTEXT // 2**20} MiB: leave files out "
                                     "with .dockerignore")
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return out.getvalue()


def _deploy_service(client: Client, stack_id: str, stack_name: str, name: str, spec: dict[str, Any],
                    existing: dict[str, Any] | None) -> str:
    if existing is not None:
        client.request("PATCH", f"/v1/services/{existing['id']}", spec)
        click.echo(f"service {stack_name}/{name} updated")
        return str(existing["id"])
    made = client.post("/v1/services", {"stack": stack_id, "name": name, **spec})
    click.echo(f"service {stack_name}/{name} created, scale {spec['scale']}")
    return str(made["id"])


def converge(client: Client, service_id: str, timeout: float = 120.0) -> None:
    """Progress while a service converges: running / wanted, until equal or the time is up."""
    deadline = time.monotonic() + timeout
    with console.status("converging") as status:
        while True:
            svc = client.get(f"/v1/services/{service_id}")
            status.update(f"{svc['stack_name']}/{svc['name']}: {svc['running']}/{svc['scale']} running")
            if svc["running"] == svc["scale"]:
                console.print(f"{svc['stack_name']}/{svc['name']}: {svc['running']}/{svc['scale']} running")
                return
            if svc.get("unplaced"):
                console.print(f"{svc['stack_name']}/{svc['name']}: {svc['unplaced'][0][1]}")
            if time.monotonic() > deadline:
                raise fail(f"{svc['name']} has {svc['running']}/{svc['scale']} running after {timeout:g} s")
            time.sleep(0.5)
