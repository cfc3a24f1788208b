"""``corral keys list|generate|install|use|remove``."""

from __future__ import annotations

import base64
import secrets

import click

from agent.cli.client import Client
from agent.cli.output import table, url_option


@click.group("keys")
def keys() -> None:
    """Rotate the gossip/Raft keys: install a new key everywhere, use it, remove the old one."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new random key (base64) to install."""
    click.echo(base64.b64encode(secrets.token_bytes(32)).decode())


@keys.command("list")
@url_option
def keys_list(url: str) -> None:
    """Installed key ids, which one seals, and how many live members hold each."""
    body = Client(url).get("/v1/keys")
    table("keys", ["key id", "primary", "members holding it"],
          [[k["id"], "yes" if k["primary"] else "", f"{k['members']}/{body['live_members']}"] for k in body["keys"]])


def _key_action(action: str, doc: str) -> None:
    @keys.command(action, help=doc)
    @click.argument("key")
    @url_option
    def cmd(key: str, url: str) -> None:
        result = Client(url).post("/v1/keys", {"action": action, "key": key})
        click.echo(f"{action} {result['key_id']}: keyring is now {', '.join(result['keys'])} (primary first)")


_key_action("install", "Install KEY on every node (it opens packets sealed with it).")
_key_action("use", "Seal with KEY from now on (install it first).")
_key_action("remove", "Remove KEY (not the primary).")
