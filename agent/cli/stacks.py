"""``corral stack create|ls|rm|deploy``."""

from __future__ import annotations

import base64
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
from agent.cli.upgrades import watch as watch_upgrade
from agent.cli.volumes import read_files
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
@click.option("--volumes", is_flag=True, help="remove its volumes too, and their data (kept otherwise, for the "
              "next deploy of a stack of that name)")
@url_option
def stack_rm(name: str, volumes: bool, url: str) -> None:
    """Remove stack NAME (an id or a name) with its services, containers and configs."""
    Client(url).request("DELETE", f"/v1/stacks/{name}", query={"volumes": "true"} if volumes else None)
    click.echo(f"stack {name} removed" + (" with its volumes" if volumes else ""))


@stack.command("deploy")
@click.option("-f", "--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.argument("name", required=False)
@url_option
@click.option("--env", "environment", default="default", show_default=True, help="the stack's environment")
@click.option("--dry-run", is_flag=True, help="check the whole file against the server and print what would be "
              "created, changed and ignored; change nothing (exit status 1 only on errors)")
@click.option("--prune", is_flag=True, help="remove the stack's services the file no longer names")
@click.option("--wait/--no-wait", default=True, help="wait until every container runs")
@click.option("--env-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="variables for ${VAR} in the file, instead of the .env beside it")
@click.option("--profile", "profiles", multiple=True, help="deploy the services of this profile too (repeatable)")
def stack_deploy(path: Path, name: str | None, url: str, environment: str, dry_run: bool, prune: bool, wait: bool,
                 env_file: Path | None, profiles: tuple[str, ...]) -> None:
    """Create or update stack NAME from a compose file (like `docker stack deploy -c FILE NAME`; NAME
    defaults to the file's top-level `name:`), whole: every service, config and secret is checked
    first, and nothing changes unless all of it is right. Every key of the file that Corral does not
    apply is printed as a warning (docs/COMPOSE.md). The file's relative bind mounts
    (`./nginx.conf:/etc/nginx/nginx.conf`), `configs:` and `secrets:` are read here and shipped with the
    stack; a relative folder that is missing or empty is a stack volume instead. A service with `build:`
    is built first: its folder goes to the answering host, which builds it; the image is tagged by its
    content (a changed folder is a new tag, which rolls the service) and reaches the other hosts peer to
    peer (a dry run builds nothing)."""
    parsed = read_compose(path, env_file, profiles)
    name = stack_name(parsed, name)
    print_warnings(parsed)
    services = parsed.services
    client = Client(url)
    for svc, build in parsed.builds.items():
        services[svc] = {**services[svc], "image": "corral-build/dry-run:latest" if dry_run
                         else _built(client, path.parent, name, svc, build)}
    configs = ship_configs(parsed, path.parent, services)
    body: dict[str, Any] = {"environment": environment, "services": services, "configs": configs, "prune": prune}
    before = {} if dry_run else _upgrades_of(client, name, environment)
    plan = client.request("POST", f"/v1/stacks/{name}/deploy", body, query={"dry_run": "true"} if dry_run else None)
    _print_plan(plan, name)
    if dry_run or not wait:
        return
    stack_id = plan["stack_view"]["id"]
    code = 0
    for made in client.items("/v1/services", stack=stack_id):
        if made["name"] not in services:
            continue
        current = client.get(f"/v1/services/{made['id']}/upgrade").get("current")
        if current is not None and current["id"] != before.get(made["id"]):
            # what shapes its containers changed: the deploy started an upgrade (the file's update_config)
            code = max(code, watch_upgrade(client, made["id"], current["id"], f"{name}/{made['name']}"))
        else:
            converge(client, made["id"])
    if code:
        raise SystemExit(code)


def _upgrades_of(client: Client, name: str, environment: str) -> dict[str, str | None]:
    """The current upgrade of every service of stack ``name`` (none when the stack is new)."""
    stack = next((s for s in client.items("/v1/stacks") if s["name"] == name and s["environment"] == environment),
                 None)
    if stack is None:
        return {}
    out: dict[str, str | None] = {}
    for svc in client.items("/v1/services", stack=stack["id"]):
        current = client.get(f"/v1/services/{svc['id']}/upgrade").get("current")
        out[svc["id"]] = current["id"] if current else None
    return out


def ship_configs(parsed: compose.Compose, folder: Path, services: dict[str, dict[str, object]]
                 ) -> dict[str, dict[str, object]]:
    """The file's configs and secrets as the deploy request carries them, read from the compose file's
    folder (or given inline); external ones are left to the server (made beforehand with `corral config
    create`). A relative bind mount whose folder is missing or empty becomes a stack volume instead (its
    mounts in ``services`` change to say so), as docker compose would give it an empty folder."""
    out: dict[str, dict[str, object]] = {}
    for name, source in sorted(parsed.configs.items()):
        if source.external:
            continue
        if source.content is not None:
            out[name] = {"secret": source.secret, "files": [
                {"path": "", "data": base64.b64encode(source.content.encode()).decode()}]}
            continue
        assert source.path is not None
        target = folder / source.path
        if source.from_bind and (not target.exists() or (target.is_dir() and not any(target.iterdir()))):
            _to_volume(services, name)
            click.echo(f"{source.path}: {'missing' if not target.exists() else 'an empty folder'}: a stack volume "
                       f"{name} instead", err=True)
            continue
        try:
            files = read_files(target)
        except FileNotFoundError:
            raise fail(f"{'secrets' if source.secret else 'configs'}.{name}: {target} does not exist") from None
        except (OSError, ValueError) as exc:
            raise fail(f"{source.path}: {exc}") from None
        if not files:
            raise fail(f"{source.path}: a folder with no files in it")
        out[name] = {"secret": source.secret, "files": files}
    return out


def _to_volume(services: dict[str, dict[str, object]], name: str) -> None:
    for spec in services.values():
        mounts = spec.get("mounts")
        if not isinstance(mounts, list):
            continue
        spec["mounts"] = [{"type": "volume", "source": name, "target": m["target"], "scope": "stack"}
                          if isinstance(m, dict) and m.get("type") == "config" and m.get("source") == name else m
                          for m in mounts]


def _print_plan(plan: dict[str, Any], name: str) -> None:
    would = "would be " if plan.get("dry_run") else ""
    if not plan["exists"]:
        click.echo(f"stack {name} {would}created")
    for verb in ("created", "changed", "unchanged", "removed"):
        for svc in plan["services"][verb]:
            click.echo(f"service {name}/{svc} {would if verb != 'unchanged' else ''}{verb}")
    for verb in ("created", "changed"):
        for conf in plan["configs"][verb]:
            click.echo(f"config {name}_{conf} {would}{verb}")
    for vol in plan["volumes"]["created"]:
        click.echo(f"volume {vol} {'would be made' if would else 'will be made'} on the host of its first container")


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
