"""``corral login|logout|whoami``, ``corral user …``, ``corral apikey …``, ``corral team …``,
``corral env …`` and ``corral api METHOD PATH``: who may do what, from the command line."""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import click

from agent.cli.client import Client, load_sessions, save_session
from agent.cli.output import fail, table, url_option
from mesh import pki

ROLES = click.Choice(["owner", "member", "restricted", "read-only"])


def _password(prompt: str, from_stdin: bool, confirm: bool = False) -> str:
    if from_stdin:
        line = sys.stdin.readline().rstrip("\n")
        if not line:
            raise fail("no password on standard input")
        return line
    if not sys.stdin.isatty():
        raise fail("no terminal to ask for the password on: use --password-stdin")
    return str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm))


def _when(ts: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if isinstance(ts, int | float) else "never"


# ---------------------------------------------------------------------- sessions


def _pin_ca(url: str, fingerprint: str | None) -> str | None:
    """The cluster CA of the agent at an https URL, once its fingerprint is the one given (or, at a
    terminal, the one the user accepts); None for plain HTTP (loopback) or with CORRAL_CACERT set."""
    if not url.startswith("https:") or os.environ.get("CORRAL_CACERT"):
        return None
    blind = ssl.create_default_context()
    blind.check_hostname, blind.verify_mode = False, ssl.CERT_NONE  # only to read the CA, checked below
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/v1/ca", timeout=10, context=blind) as resp:
            body = json.loads(resp.read())
        ca = body["cert"]
        trusted = pki.split_pem(str(body.get("trusted") or ca).encode())
    except (OSError, ValueError, KeyError, pki.PkiError) as exc:
        raise fail(f"cannot read the cluster CA from {url}: {exc}") from None
    seen = pki.fingerprint(ca.encode())
    if fingerprint is not None:
        wanted = fingerprint.lower().replace(":", "")
        # while the CA is rotated, the retiring CA's fingerprint is still good (it vouches for the new one)
        matching = [c for c in trusted if pki.fingerprint(c) == wanted]
        if not matching:
            raise fail(f"the cluster CA at {url} has fingerprint {seen}, not {fingerprint}: not logging in")
        ca = matching[0].decode()
    elif sys.stdin.isatty():
        click.echo(f"the cluster CA at {url} has SHA-256 fingerprint\n  {seen}\n(the bootstrapping agent logged "
                   "it; `corral api GET /v1/ca` on a host you trust shows it)")
        if not click.confirm("trust it?", default=False):
            raise fail("not logging in")
    else:
        raise fail(f"give --ca-fingerprint to trust the cluster CA at {url} (its fingerprint is {seen}: check it "
                   "against the one the bootstrapping agent logged)")
    return str(ca)


@click.command("login")
@click.option("--user", "-u", default="admin", show_default=True)
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@click.option("--ttl", default=None, help="how long the session lasts (12h unless given: 30m, 8h, 7d …)")
@click.option("--ca-fingerprint", default=None,
              help="the SHA-256 fingerprint of the cluster CA to trust (asked at a terminal when not given)")
@url_option
def login(user: str, password_stdin: bool, ttl: str | None, ca_fingerprint: str | None, url: str) -> None:
    """Log in to the cluster at --host: the session (and the cluster CA it pinned) is kept in
    ~/.config/corral/sessions.json (0600)."""
    ca = _pin_ca(url, ca_fingerprint)
    password = _password(f"password for {user}", password_stdin)
    body: dict[str, Any] = {"user": user, "password": password}
    if ttl is not None:
        body["ttl"] = ttl
    client = Client(url, token="")
    if ca is not None:
        client.tls = ssl.create_default_context(cadata=ca)
    session = client.post("/v1/auth/login", body)
    kept = {"token": session["token"], "user": session["user"], "expires": session["expires"]}
    save_session(url, {**kept, "ca": ca} if ca else kept)
    click.echo(f"logged in to {url} as {session['user']} until {_when(session['expires'])}")


@click.command("logout")
@url_option
def logout(url: str) -> None:
    """End the session kept for --host (on every node) and forget it."""
    if url.rstrip("/") not in load_sessions():
        raise fail(f"no session is kept for {url}")
    try:
        Client(url).post("/v1/auth/logout")
    finally:
        save_session(url, None)
    click.echo(f"logged out of {url}")


@click.command("whoami")
@url_option
def whoami(url: str) -> None:
    """The user and credential this CLI acts as, and its roles."""
    me = Client(url).get("/v1/auth/whoami")
    key = me["key"]
    kind = "session" if key["session"] else f"API key {key['id']}"
    scope = f", environment {key['environment']} only" if key.get("environment") else ""
    cap = f", at most {key['role']}" if key.get("role") else ""
    click.echo(f"{me['user']}{' (administrator)' if me['admin'] else ''} with a {kind}{scope}{cap}, "
               f"expires {_when(key['expires'])}")
    for env, role in sorted(me["roles"].items()):
        click.echo(f"  {env}: {role}")
    if me["teams"]:
        click.echo(f"  teams: {', '.join(me['teams'])}")


# ---------------------------------------------------------------------- users


@click.group("user")
def user() -> None:
    """Users (administrators only, but for one's own password)."""


@user.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="a cluster administrator")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@url_option
def user_create(name: str, admin: bool, password_stdin: bool, url: str) -> None:
    """Create user NAME (asks for its password)."""
    password = _password(f"password for {name}", password_stdin, confirm=True)
    made = Client(url).post("/v1/users", {"name": name, "password": password, "admin": admin})
    click.echo(f"user {made['name']} created{' (administrator)' if made['admin'] else ''}")


@user.command("ls")
@url_option
def user_ls(url: str) -> None:
    rows = [[u["name"], "yes" if u["admin"] else "", u["keys"]] for u in Client(url).items("/v1/users")]
    table("users", ["name", "admin", "keys"], rows)


@user.command("rm")
@click.argument("name")
@url_option
def user_rm(name: str, url: str) -> None:
    """Remove user NAME: its keys and sessions end at once, on every node."""
    Client(url).delete(f"/v1/users/{name}")
    click.echo(f"user {name} removed")


@user.command("passwd")
@click.argument("name", required=False)
@click.option("--password-stdin", is_flag=True, help="read the current and the new password, a line each")
@url_option
def user_passwd(name: str | None, password_stdin: bool, url: str) -> None:
    """Change NAME's password (default: one's own; an administrator needs no current password for
    others). The user's login sessions end."""
    client = Client(url)
    me = client.get("/v1/auth/whoami")
    name = name or me["user"]
    body: dict[str, Any] = {}
    if not me["admin"]:
        body["current_password"] = _password("current password", password_stdin)
    body["password"] = _password(f"new password for {name}", password_stdin, confirm=not password_stdin)
    client.patch(f"/v1/users/{name}", body)
    click.echo(f"password of {name} changed")


# ---------------------------------------------------------------------- API keys


@click.group("apikey")
def apikey() -> None:
    """API keys for scripts: one's own (an administrator: anyone's)."""


@apikey.command("create")
@click.option("--description", "-d", default="", help="what the key is for")
@click.option("--env", "environment", default=None, help="act in this environment only")
@click.option("--role", type=ROLES, default=None, help="act with at most this role")
@click.option("--ttl", default="90d", show_default=True, help="expiry (30m, 12h, 90d…); 'never' for none")
@click.option("--user", default=None, help="for another user (administrators)")
@click.option("--metrics", is_flag=True, help="a scrape token: it can only GET /metrics (administrators; "
              "docs/MONITORING.md)")
@url_option
def apikey_create(description: str, environment: str | None, role: str | None, ttl: str, user: str | None,
                  metrics: bool, url: str) -> None:
    """Make an API key; its token is printed once (use it as CORRAL_TOKEN, or, with --metrics, as
    Prometheus' credentials_file)."""
    body: dict[str, Any] = {"description": description, "environment": environment, "role": role,
                            "ttl": None if ttl == "never" else ttl}
    if metrics:
        body["metrics"] = True
    if user:
        body["user"] = user
    made = Client(url).post("/v1/apikeys", body)
    click.echo(f"API key {made['id']} for {made['owner']}, expires {_when(made['expires'])}", err=True)
    click.echo(made["token"])


@apikey.command("ls")
@click.option("--user", default=None, help="another user's (administrators)")
@url_option
def apikey_ls(user: str | None, url: str) -> None:
    rows = [[k["id"], k["owner"], "session" if k["session"] else "metrics" if k.get("metrics") else "key",
             k["description"], k["environment"] or "all",
             k["role"] or "-", _when(k["expires"])] for k in Client(url).items("/v1/apikeys", user=user)]
    table("API keys", ["id", "owner", "kind", "description", "environment", "role", "expires"], rows)


@apikey.command("revoke")
@click.argument("key_id")
@url_option
def apikey_revoke(key_id: str, url: str) -> None:
    """Revoke key KEY_ID (or end a session): refused by every node as soon as it has applied it."""
    Client(url).delete(f"/v1/apikeys/{key_id}")
    click.echo(f"key {key_id} revoked")


# ---------------------------------------------------------------------- teams


@click.group("team")
def team() -> None:
    """Teams: groups of users that hold roles together (administrators)."""


@team.command("create")
@click.argument("name")
@click.argument("members", nargs=-1)
@url_option
def team_create(name: str, members: tuple[str, ...], url: str) -> None:
    Client(url).post("/v1/teams", {"name": name, "members": list(members)})
    click.echo(f"team {name} created: {', '.join(members) or 'no members'}")


@team.command("set")
@click.argument("name")
@click.argument("members", nargs=-1)
@url_option
def team_set(name: str, members: tuple[str, ...], url: str) -> None:
    """Replace team NAME's members."""
    Client(url).put(f"/v1/teams/{name}", {"members": list(members)})
    click.echo(f"team {name}: {', '.join(members) or 'no members'}")


@team.command("ls")
@url_option
def team_ls(url: str) -> None:
    table("teams", ["name", "members"], [[t["name"], ", ".join(t["members"])] for t in Client(url).items("/v1/teams")])


@team.command("rm")
@click.argument("name")
@url_option
def team_rm(name: str, url: str) -> None:
    Client(url).delete(f"/v1/teams/{name}")
    click.echo(f"team {name} removed")


# ---------------------------------------------------------------------- environments


@click.group("env")
def env() -> None:
    """Environments, and who holds which role in them."""


@env.command("create")
@click.argument("name")
@url_option
def env_create(name: str, url: str) -> None:
    """Create environment NAME (administrators)."""
    Client(url).post("/v1/environments", {"name": name})
    click.echo(f"environment {name} created")


@env.command("ls")
@url_option
def env_ls(url: str) -> None:
    rows = [[e["name"], e["role"]] for e in Client(url).items("/v1/environments")]
    table("environments", ["name", "your role"], rows)


@env.command("show")
@click.argument("name")
@url_option
def env_show(name: str, url: str) -> None:
    e = Client(url).get(f"/v1/environments/{name}")
    table(f"environment {name} (your role: {e['role']})", ["member", "role"], [[s, r] for s, r in e["members"].items()])


def _subject(user: str | None, team_: str | None) -> str:
    if bool(user) == bool(team_):
        raise fail("name one of --user or --team")
    return f"user:{user}" if user else f"team:{team_}"


@env.command("grant")
@click.argument("name")
@click.argument("role", type=ROLES)
@click.option("--user", default=None)
@click.option("--team", "team_", default=None)
@url_option
def env_grant(name: str, role: str, user: str | None, team_: str | None, url: str) -> None:
    """Give --user or --team ROLE in environment NAME (its owners, administrators)."""
    subject = _subject(user, team_)
    Client(url).put(f"/v1/environments/{name}/members/{subject}", {"role": role})
    click.echo(f"{subject} is {role} in {name}")


@env.command("revoke")
@click.argument("name")
@click.option("--user", default=None)
@click.option("--team", "team_", default=None)
@url_option
def env_revoke(name: str, user: str | None, team_: str | None, url: str) -> None:
    """Take --user's or --team's role in environment NAME away."""
    subject = _subject(user, team_)
    Client(url).delete(f"/v1/environments/{name}/members/{subject}")
    click.echo(f"{subject} has no role in {name} now")


# ---------------------------------------------------------------------- join tokens and the CA


@click.group("token")
def token() -> None:
    """Join tokens: what a new host needs to join (administrators)."""


@token.command("create")
@click.option("--ttl", default="24h", show_default=True, help="how long it may be used (1h, 24h, 7d…)")
@click.option("--uses", type=click.IntRange(1, 10_000), default=None, help="how many hosts may join with it "
              "(--uses 1: single use; default: any number until it expires)")
@click.option("--description", "-d", default="")
@click.option("--env", "environment", default="default", show_default=True,
              help="the environment the hosts that join with it belong to")
@url_option
def token_create(ttl: str, uses: int | None, description: str, environment: str, url: str) -> None:
    """Make a join token; printed once (`corral agent --join ADDR --token TOKEN` on the new host)."""
    made = Client(url).post("/v1/jointokens", {"ttl": ttl, "uses": uses, "description": description,
                                               "environment": environment})
    left = f"{made['uses_left']} host(s)" if made["uses_left"] else "any number of hosts"
    click.echo(f"join token {made['id']} for {left}, until {_when(made['expires'])}", err=True)
    click.echo(made["token"])


@token.command("ls")
@url_option
def token_ls(url: str) -> None:
    rows = [[t["id"], t["environment"], t["description"], t["uses_left"] or "any", _when(t["expires"])]
            for t in Client(url).items("/v1/jointokens")]
    table("join tokens", ["id", "environment", "description", "uses left", "expires"], rows)


@token.command("revoke")
@click.argument("token_id")
@url_option
def token_revoke(token_id: str, url: str) -> None:
    Client(url).delete(f"/v1/jointokens/{token_id}")
    click.echo(f"join token {token_id} revoked")


@click.group("ca", invoke_without_command=True)
@url_option
@click.pass_context
def ca(ctx: click.Context, url: str) -> None:
    """The cluster CA: with no command, its SHA-256 fingerprint (on stderr) and its certificate (for
    CORRAL_CACERT: ``corral ca > ca.pem``); ``rotate`` replaces it without downtime."""
    if ctx.invoked_subcommand is not None:
        return
    body = Client(url).get("/v1/ca")
    click.echo(f"fingerprint {body['fingerprint']}", err=True)
    if body.get("rotating"):
        click.echo(f"rotating: {body['retiring']} is retiring (`corral ca rotate --finish`)", err=True)
    click.echo(body["cert"], nl=False)


def _ca_hosts_table(hosts: list[dict[str, Any]], current: str) -> None:
    rows = [[h["host"], "new" if h.get("current") else ("old" if h.get("ca") else "?"),
             (h.get("ca") or "")[:16], h.get("error") or ""] for h in hosts]
    table(f"hosts (CA {current[:16]})", ["HOST", "CA", "FINGERPRINT", "PROBLEM"], rows)


@ca.command("hosts")
@url_option
def ca_hosts(url: str) -> None:
    """Which CA issued the certificate each live host shows (during a rotation: who has the new one)."""
    body = Client(url).get("/v1/ca/hosts")
    _ca_hosts_table(body["hosts"], body["fingerprint"])


@ca.command("rotate")
@click.option("--begin-only", is_flag=True, help="only begin: a new CA signs, both are trusted until --finish")
@click.option("--finish", "finish_only", is_flag=True, help="only finish a rotation begun before: retire the old CA")
@click.option("--force", is_flag=True, help="finish even if a live host still shows a certificate of the old CA")
@click.option("--wait", default=60.0, show_default=True, help="seconds to wait for every host's new certificate")
@url_option
def ca_rotate(begin_only: bool, finish_only: bool, force: bool, wait: float, url: str) -> None:
    """Replace the cluster CA without downtime: begin (a new CA, cross-signed by the old one, signs;
    every node re-issues its certificate and trusts both), wait until every live host shows a
    certificate of the new CA, finish (the old CA is trusted no more) and re-pin this CLI's session.
    Other clients need the new CA afterwards: ``corral ca > ca.pem``, or ``corral login`` again."""
    if begin_only and finish_only:
        raise fail("--begin-only and --finish are the two halves: give one of them, or neither for both")
    client = Client(url)
    if not finish_only:
        begun = client.post("/v1/ca/rotate", None)
        click.echo(f"rotation begun: CA {begun['fingerprint']} signs; {begun['retiring']} is retiring")
        if begin_only:
            click.echo("finish with `corral ca rotate --finish` once `corral ca hosts` shows every host on the new CA")
            return
    deadline = time.monotonic() + wait
    while not force:
        status = client.get("/v1/ca/hosts")
        if all(h.get("current") for h in status["hosts"]):
            break
        if time.monotonic() > deadline:
            _ca_hosts_table(status["hosts"], status["fingerprint"])
            raise fail(f"not every live host shows a certificate of the new CA after {wait:g} s: the rotation is "
                       "begun, not finished (both CAs are trusted); `corral ca rotate --finish [--force]` later")
        time.sleep(0.5)
    done = client.post("/v1/ca/finish", {"force": force})
    session = load_sessions().get(url.rstrip("/"))
    if session and session.get("ca"):
        save_session(url, {**session, "ca": done["cert"]})
        note = "; this CLI's session now trusts the new CA"
    else:
        note = "; clients need the new CA now (`corral ca > ca.pem` for CORRAL_CACERT)"
    click.echo(f"rotation finished: CA {done['fingerprint']} (generation {done['generation']}) is the only one "
               f"trusted{note}")


# ---------------------------------------------------------------------- any call


@click.command("api")
@click.argument("method", type=click.Choice(["GET", "POST", "PUT", "PATCH", "DELETE"], case_sensitive=False))
@click.argument("path")
@click.option("--data", "-d", default=None, help="a JSON body (@FILE reads it from a file, @- from stdin)")
@url_option
def api(method: str, path: str, data: str | None, url: str) -> None:
    """Any API call, authenticated as the other commands are; prints the JSON answer
    (``corral api GET /v1/raft``, ``corral api POST /v1/stacks -d '{"name": "web"}'``)."""
    body: Any = None
    if data is not None:
        text = sys.stdin.read() if data == "@-" else (Path(data[1:]).read_text() if data.startswith("@") else data)
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise fail(f"--data is not JSON: {exc}") from None
    if not path.startswith("/"):
        raise fail("PATH starts with / (for example /v1/hosts)")
    click.echo(json.dumps(Client(url).request(method.upper(), path, body), indent=2))


__all__ = ["api", "apikey", "ca", "env", "login", "logout", "team", "token", "user", "whoami"]
