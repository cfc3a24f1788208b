"""``corral registry`` (credentials for a registry) and ``corral image`` (the images the cluster
distributes itself, peer to peer)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import click

from agent.cli.client import Client
from agent.cli.output import fail, table, url_option

CHUNK = 1 << 20


def _mib(size: object) -> str:
    return f"{int(size) / 2**20:.1f} MiB" if isinstance(size, int) else "?"


@click.group("registry")
def registry() -> None:
    """Registries' credentials: kept sealed in the cluster, passed to Docker for each pull (administrators)."""


@registry.command("add")
@click.argument("host")
@click.option("--username", "-u", required=True)
@click.option("--password-stdin", is_flag=True, help="read the password from standard input (else: a prompt)")
@url_option
def registry_add(host: str, username: str, password_stdin: bool, url: str) -> None:
    """Keep the credentials of registry HOST[:PORT] (as image references begin: registry.example:5000)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = click.prompt(f"password of {username} at {host}", hide_input=True)
    else:
        raise fail("give --password-stdin to read the password from standard input")
    if not password:
        raise fail("the password is empty")
    made = Client(url).post("/v1/registries", {"host": host, "username": username, "password": password})
    click.echo(f"registry {made['host']}: credentials of {made['username']} kept (the password is never shown)")


@registry.command("ls")
@url_option
def registry_ls(url: str) -> None:
    rows = [[r["host"], r["username"]] for r in Client(url).items("/v1/registries")]
    table("registries", ["host", "username"], rows)


@registry.command("rm")
@click.argument("host")
@url_option
def registry_rm(host: str, url: str) -> None:
    Client(url).delete(f"/v1/registries/{host}")
    click.echo(f"registry {host}: credentials removed")


@click.group("image")
def image() -> None:
    """Images the cluster moves itself: loaded on one host, fetched from peers by the hosts that need them."""


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


@image.command("load")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@url_option
def image_load(file: Path, url: str) -> None:
    """Load a `docker save` tarball (FILE, or - for standard input) into the cluster: the host answering
    takes it; a host placed a container of it later fetches it from a peer that holds it."""
    client = Client(url)
    if str(file) == "-":
        answer = client.upload("/v1/images", _chunks(sys.stdin.buffer), None)
    else:
        try:
            size = os.stat(file).st_size
            with file.open("rb") as stream:
                answer = client.upload("/v1/images", stream, size)
        except OSError as exc:
            raise fail(f"cannot read {file}: {exc.strerror or exc}") from None
    tags = ", ".join(answer["tags"]) or "(no tag)"
    click.echo(f"image {tags} {answer['id'][:19]} ({_mib(answer['size'])}) is in the cluster, held by "
               f"{', '.join(answer['holders'])}")


@image.command("ls")
@url_option
def image_ls(url: str) -> None:
    """The catalog: each image, its size, and the hosts that hold it."""
    rows = [[", ".join(i["tags"]) or "-", i["id"][7:19], _mib(i["size"]), i["source"], ", ".join(i["holders"]) or "-"]
            for i in Client(url).items("/v1/images")]
    table("images", ["tags", "id", "size", "source", "held by"], rows)


@image.command("fetch")
@click.argument("image_ref")
@url_option
def image_fetch(image_ref: str, url: str) -> None:
    """Make the answering host (--host) hold a catalog image now: its tarball fetched from its peers, kept
    (it becomes a holder, whatever it had of the image already)."""
    done = Client(url).post(f"/v1/images/{_catalog_id(Client(url), image_ref)}/fetch")
    click.echo(f"{done['host']} holds {done['image'][:19]} ({done['detail']})")


def _catalog_id(client: Client, image_ref: str) -> str:
    found = [i["id"] for i in client.items("/v1/images") if image_ref in (i["id"], *i["tags"])
             or f"{image_ref}:latest" in i["tags"] or i["id"].removeprefix("sha256:").startswith(image_ref)]
    if len(found) != 1:
        raise fail(f"no image {image_ref} in the catalog" if not found else f"{image_ref} names {len(found)} images")
    return str(found[0])


@image.command("rm")
@click.argument("image_ref")
@url_option
def image_rm(image_ref: str, url: str) -> None:
    """Take an image (a tag or its id) out of the catalog; the engines keep what they loaded."""
    client = Client(url)
    done = client.delete(f"/v1/images/{_catalog_id(client, image_ref)}")
    click.echo(f"image {done['removed'][:19]} removed from the catalog")


@image.command("transfers")
@url_option
def image_transfers(url: str) -> None:
    """What the answering host's image manager does: pulls and peer fetches, and what it sends to whom
    (tarballs, and the layers a peer's delta asks for)."""
    status = Client(url).get("/v1/host/images")
    rows = [[j["image"], j["source"], j["state"], j["attempts"], j["detail"], ", ".join(j["resumed"]) or "-",
             _steps(j.get("timeline") or {})] for j in status["jobs"]]
    table("image jobs", ["image", "source", "state", "attempts", "detail", "resumed at", "steps (s after start)"],
          rows)
    click.echo(f"sent {_mib(status['served_bytes'])}, received {_mib(status['received_bytes'])}, "
               f"{status['redirects']} redirects, {status['resumes']} resumes")
    if "delta_loads" in status:  # an older agent has no deltas
        click.echo(f"deltas (only the missing layers): {status['delta_loads']} loaded, {_mib(status['delta_bytes'])} "
                   f"moved, {status['delta_failures']} broke off; {status['leaf_fetches']} fetches kept no copy "
                   f"(relayed to this host); {_mib(status['blob_served_bytes'])} of blobs sent to peers")


def _steps(timeline: dict[str, float]) -> str:
    """``first_byte 0.2, received 3.1, loaded 7.4, kept 9.0``: a job's steps after its start."""
    start = timeline.get("started")
    if start is None:
        return "-"
    return ", ".join(f"{step} {at - start:.1f}" for step, at in sorted(timeline.items(), key=lambda i: i[1])
                     if step != "started") or "-"


__all__ = ["image", "registry"]
