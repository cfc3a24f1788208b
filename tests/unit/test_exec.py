"""``corral exec``: the websocket's framing, the command's rules, the state machine's record of an exec,
and the route on the real app over an in-memory cluster (a fake engine's programs): output and exit
codes, input and its end, resizes, errors before and after the upgrade, the forward from a node that
is not the container's host, and the CLI's own client against it."""

from __future__ import annotations

import io
import json
import os
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from agent.api import exec_wire as wire
from agent.cli import execs as cli_exec
from agent.cli.client import ApiError, Client
from agent.cli.main import cli
from agent.model.commands import (
    EXEC_MAX_ARGS,
    Actor,
    ContainerExec,
    InstanceStatus,
    PlacementsCommit,
    decode_entry,
    encode,
    exec_command_problem,
)
from agent.model.entities import EventKind, Status
from agent.model.errors import CommandError, ErrorCode
from mesh import pki
from mesh.waiting import until_async
from tests.unit.fakes import Harness, harness_ca, running_api, running_pair

# ---------------------------------------------------------------------- the framing, pure


def test_binary_frames_name_their_stream() -> None:
    assert wire.frame(wire.STDIN, b"ls\n") == b"\x00ls\n"
    assert wire.unframe(b"\x02oops", (wire.STDOUT, wire.STDERR)) == (2, b"oops")
    assert wire.unframe(b"\x01", (wire.STDOUT,)) == (1, b""), "an empty write is still a frame"
    with pytest.raises(wire.ProtocolError, match="empty"):
        wire.unframe(b"", (wire.STDIN,))
    with pytest.raises(wire.ProtocolError, match="stream 1"):
        wire.unframe(b"\x01input", (wire.STDIN,))


def test_control_messages_both_ways() -> None:
    assert wire.client_control(wire.resize(80, 24)) == wire.Resize(80, 24)
    assert wire.client_control(wire.input_end()) == wire.InputEnd()
    assert wire.server_control(wire.exited(3)) == wire.Exited(3)
    assert wire.server_control(wire.exited(None)) == wire.Exited(None)
    assert wire.server_control(wire.failed("engine gone")) == wire.Failed("engine gone")
    for bad, reason in [("not json", "JSON object"), ("[80, 24]", "one key"), ('{"resize": [80]}', "COLS, ROWS"),
                        ('{"resize": [0, 24]}', "from 1"), ('{"resize": [80.5, 24]}', "whole"),
                        ('{"resize": [true, 24]}', "whole"), ('{"eof": false}', "unknown"),
                        ('{"resize": [80, 24], "eof": true}', "one key"), ('{"kill": 9}', "unknown")]:
        with pytest.raises(wire.ProtocolError, match=reason):
            wire.client_control(bad)
    for bad in ('{"exit": "3"}', '{"exit": 1.5}', '{"error": 3}', '{"hello": 1}'):
        with pytest.raises(wire.ProtocolError):
            wire.server_control(bad)


def test_the_command_goes_as_one_cmd_per_argument() -> None:
    assert wire.query(["sh", "-c", "echo hi; exit 3"], tty=False, interactive=True) == [
        ("cmd", "sh"), ("cmd", "-c"), ("cmd", "echo hi; exit 3"), ("tty", "0"), ("interactive", "1")]
    assert wire.query(["echo", ""], True, False)[:2] == [("cmd", "echo"), ("cmd", "")], "an empty argument is one"
    for bad in ([], [""], ["x"] * (EXEC_MAX_ARGS + 1), ["echo", "x" * 513], ["echo", "a\x00b"], ["x" * 500] * 9):
        with pytest.raises(ValueError):
            wire.query(bad, False, False)
    assert exec_command_problem(("sh",)) is None


# ---------------------------------------------------------------------- the state machine records it


def test_an_exec_is_authorized_and_recorded_when_applied() -> None:
    from tests.unit.test_access import _state_with_users

    state = _state_with_users()
    from agent.model.commands import HostMove, HostRegister, RoleSet, ServiceCreate, StackCreate
    from agent.model.policy import Role

    state.execute(HostRegister("h2", "10.0.0.2", {}, 2.0, 2**31, "ab" * 32), 5)
    state.execute(HostMove("h2", "dev"), 6)
    state.execute(StackCreate("web", "dev"), 6)
    stack = next(iter(state.stacks))
    state.execute(ServiceCreate(stack, "nginx", {"image": "corral/base", "scale": 1}), 7)
    service = next(iter(state.services))
    inst = state.execute(PlacementsCommit(service, ((1, "h2"),)), 8).placed[0]
    alice = Actor("alice", "a" * 16, "h1", "10.0.0.5", at=50.0)
    cmd = ContainerExec(inst, ("sh", "-c", "echo hi; exit 3"), tty=True)
    assert decode_entry(encode(cmd, alice)) == (cmd, alice), "it travels in a Raft entry like any command"
    with pytest.raises(CommandError) as err:
        state.execute(cmd, 9, alice)
    assert err.value.code is ErrorCode.FORBIDDEN, "read-only in dev: may not exec"
    state.execute(RoleSet("dev", "user:alice", Role.RESTRICTED), 10)
    before = {k: v for k, v in state.instances.items()}
    state.execute(cmd, 11, alice)
    event = state.events[-1]
    assert event.kind is EventKind.CONTAINER_EXEC and event.index == 11
    assert (event.actor, event.credential, event.source, event.environment) == ("alice", "a" * 16,
                                                                                "10.0.0.5 via h1", "dev")
    assert event.refs == {"instance": inst, "host": "h2", "command": "sh -c 'echo hi; exit 3'", "tty": "1",
                          "interactive": "0"}
    assert "alice" in event.message and "web-nginx-1" in event.message
    assert state.instances == before, "an exec changes nothing but the events"
    with pytest.raises(CommandError) as err:
        state.execute(ContainerExec("nosuch", ("sh",)), 12, alice)
    assert err.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(CommandError) as err:
        state.execute(ContainerExec(inst, ("",)), 12, alice)
    assert err.value.code is ErrorCode.BAD_REQUEST and err.value.field == "cmd"
    with pytest.raises(CommandError, match="user's"):
        state.execute(cmd, 12)


# ---------------------------------------------------------------------- the route, on the real app


async def running_container(h: Harness, host: str = "h1", state: str = "running",
                            tls: ssl.SSLContext | None = None) -> str:
    """A container of service web/nginx placed on ``host`` and running in ``h``'s fake engine."""
    connector = aiohttp.TCPConnector(ssl=tls if tls is not None else True)
    async with aiohttp.ClientSession(headers=h.auth, connector=connector) as s:
        async with s.post(h.url + "/v1/stacks", json={"name": "web"}) as resp:
            assert resp.status == 201, await resp.text()
        async with s.post(h.url + "/v1/services", json={"stack": "web", "name": "nginx", "image": "corral/base"}) \
                as resp:
            assert resp.status == 201, await resp.text()
            service = await resp.json()
    inst = (await h.replica.write(PlacementsCommit(service["id"], ((1, host),)))).placed[0]
    cid = await h.engine.containers.create("web-nginx-1", {"Image": "corral/base", "Labels": {"corral.instance": inst}})
    h.engine.containers_by_id[cid].state = state
    await h.replica.write(InstanceStatus(inst, host, Status.RUNNING, container_id=cid))
    return inst


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with running_api() as h:
        yield h


async def exec_ws(url: str, token: str, container: str, cmd: list[str], tty: bool = False,
                  interactive: bool = False, send: list[bytes | str] = ()) -> tuple[dict[int, bytes], list[Any]]:
    """Output by stream and the control messages of one exec, sending ``send`` first."""
    out: dict[int, bytes] = {1: b"", 2: b""}
    controls: list[Any] = []
    async with aiohttp.ClientSession(middlewares=(wire.refused_upgrades,)) as s, \
            s.ws_connect(f"{url}/v1/containers/{container}/exec", params=wire.query(cmd, tty, interactive),
                         headers={"Authorization": f"Bearer {token}"}) as ws:
        for item in send:
            await (ws.send_bytes(item) if isinstance(item, bytes) else ws.send_str(item))
        async for message in ws:
            if message.type is aiohttp.WSMsgType.BINARY:
                stream, data = wire.unframe(message.data, (1, 2))
                out[stream] += data
            elif message.type is aiohttp.WSMsgType.TEXT:
                controls.append(wire.server_control(message.data))
    return out, controls


async def test_output_streams_and_the_exit_code(harness: Harness) -> None:
    inst = await running_container(harness)
    out, controls = await exec_ws(harness.url, harness.token, inst, ["echo", "hi", "there"])
    assert out == {1: b"hi there\n", 2: b""} and controls == [wire.Exited(0)]
    out, controls = await exec_ws(harness.url, harness.token, "web-nginx-1", ["warn", "careful"])
    assert out == {1: b"", 2: b"careful\n"} and controls == [wire.Exited(1)], "stderr apart, by name too"
    out, controls = await exec_ws(harness.url, harness.token, inst, ["warn", "merged"], tty=True)
    assert out == {1: b"merged\n", 2: b""}, "a terminal merges the two, as Docker's does"
    assert (await exec_ws(harness.url, harness.token, inst, ["exitwith", "3"]))[1] == [wire.Exited(3)]
    out, controls = await exec_ws(harness.url, harness.token, inst, ["nosuchprogram"])
    assert b'"nosuchprogram": executable file not found' in out[1] and controls == [wire.Exited(127)]


async def test_input_its_end_and_resizes(harness: Harness) -> None:
    inst = await running_container(harness)
    out, controls = await exec_ws(harness.url, harness.token, inst, ["cat"], tty=True, interactive=True,
                                  send=[wire.resize(120, 40), wire.frame(wire.STDIN, b"echo $((6*7))\n"),
                                        wire.resize(100, 30), wire.input_end()])
    assert out[1] == b"echo $((6*7))\n" and controls == [wire.Exited(0)]
    session = harness.engine.execs[-1]
    assert session.resizes == [(120, 40), (100, 30)] and session.tty and session.stdin
    await until_async("the exec's stream is closed", lambda: session.closed, 5)
    assert session.cmd == ("cat",)


async def test_a_client_that_breaks_the_protocol_is_told_why(harness: Harness) -> None:
    inst = await running_container(harness)
    for send, reason in [([wire.frame(wire.STDOUT, b"x")], "stream 1"), (['{"resize": "big"}'], "resize is"),
                         ([wire.frame(wire.STDIN, b"x")], "without interactive")]:
        _, controls = await exec_ws(harness.url, harness.token, inst, ["cat"], interactive="without" not in reason,
                                    send=send)
        assert len(controls) == 1 and isinstance(controls[0], wire.Failed) and reason in controls[0].message, controls
        await until_async("the exec's stream is closed with the websocket", lambda: harness.engine.execs[-1].closed, 5)


async def test_errors_before_the_upgrade_are_json_with_their_status(harness: Harness) -> None:
    inst = await running_container(harness)
    auth = {"Authorization": f"Bearer {harness.token}"}
    async with aiohttp.ClientSession(headers=auth) as s:
        async with s.get(f"{harness.url}/v1/containers/{inst}/exec?cmd=sh") as resp:
            body = await resp.json()
            assert resp.status == 400 and body["details"]["field"] == "upgrade" and "websocket" in body["message"]
        async with s.get(f"{harness.url}/v1/containers/{inst}/exec?tty=maybe") as resp:
            assert resp.status == 400 and (await resp.json())["details"]["field"] == "tty"
    cases = [("nosuch", ["sh"], 404, "no container 'nosuch'"), (inst, [""], 400, "needs a command")]
    for container, cmd, status, text in cases:
        async with aiohttp.ClientSession(middlewares=(wire.refused_upgrades,)) as s:
            with pytest.raises(wire.UpgradeRefused) as err:
                params = [("cmd", c) for c in cmd]
                await s.ws_connect(f"{harness.url}/v1/containers/{container}/exec", params=params, headers=auth)
        assert err.value.status == status and text in err.value.error()[1], (err.value.status, err.value.body)
    before = len(harness.engine.execs)
    harness.engine.containers_by_id[harness.replica.state.instances[inst].container_id].state = "exited"
    with pytest.raises(ApiError) as api_err:
        await cli_exec.run(Client(harness.url, token=harness.token), inst, wire.query(["sh"], False, False),
                           False, False, stdout=io.BytesIO())
    assert api_err.value.status == 409 and "not running" in api_err.value.message
    assert len(harness.engine.execs) == before


async def test_every_exec_is_in_the_audit_events(harness: Harness) -> None:
    inst = await running_container(harness)
    await exec_ws(harness.url, harness.token, inst, ["exitwith", "5"], interactive=True)
    async with aiohttp.ClientSession() as s, s.ws_connect(
            f"{harness.url}/v1/containers/{inst}/exec?cmd=true",
            headers={**harness.auth, wire.AUDITED: str(harness.replica.applied_index)}) as ws:
        assert [m.data async for m in ws] == [wire.exited(0)]
    assert [e.refs["command"] for e in harness.replica.state.events if e.kind is EventKind.CONTAINER_EXEC] == [
        "exitwith 5", "true"], "a client's claim that the exec is recorded is not believed: it is recorded"
    async with aiohttp.ClientSession(headers=harness.auth) as s, \
            s.get(f"{harness.url}/v1/events?audit=1&kind=container.exec") as resp:
        items = (await resp.json())["items"]
    assert len(items) == 2, items
    event = items[0]
    assert event["actor"] == "admin" and event["refs"]["command"] == "exitwith 5" and event["refs"]["instance"] == inst
    assert event["environment"] == "default" and event["refs"]["interactive"] == "1"


async def test_the_node_asked_relays_to_the_containers_host() -> None:
    async with running_pair() as (h1, h2):
        inst = await running_container(h1, host="h1")
        await h2.replica.wait_applied(h1.replica.applied_index, 5)
        out, controls = await exec_ws(h2.url, h2.token, inst, ["echo", "from", "h1"])
        assert out[1] == b"from h1\n" and controls == [wire.Exited(0)]
        assert h1.engine.execs and not h2.engine.execs, "run by the container's host's engine"
        out, controls = await exec_ws(h2.url, h2.token, inst, ["cat"], tty=True, interactive=True,
                                      send=[wire.resize(90, 20), wire.frame(wire.STDIN, b"typed"), wire.input_end()])
        assert out[1] == b"typed" and controls == [wire.Exited(0)] and h1.engine.execs[-1].resizes == [(90, 20)]
        h1.engine.containers_by_id[h1.replica.state.instances[inst].container_id].state = "exited"
        async with aiohttp.ClientSession(middlewares=(wire.refused_upgrades,)) as s:
            with pytest.raises(wire.UpgradeRefused) as err:
                await s.ws_connect(f"{h2.url}/v1/containers/{inst}/exec", headers=h2.auth)
        assert err.value.status == 409 and "not running" in err.value.error()[1], "the host's refusal, relayed"
        events = [e for e in h1.replica.state.events if e.kind is EventKind.CONTAINER_EXEC]
        assert events and all(e.actor == "admin" for e in events)
        assert any(e.source and e.source.endswith("via h2") for e in events), "recorded by the node asked"


# ---------------------------------------------------------------------- the CLI's client


async def test_the_cli_client_returns_the_commands_exit_code(harness: Harness, tmp_path: Any) -> None:
    inst = await running_container(harness)
    client = Client(harness.url, token=harness.token)
    out, err = io.BytesIO(), io.BytesIO()
    code = await cli_exec.run(client, inst, wire.query(["warn", "x"], False, False), False, False,
                              stdout=out, stderr=err)
    assert (code, out.getvalue(), err.getvalue()) == (1, b"", b"x\n")
    data = tmp_path / "input"
    data.write_bytes(b"a file's bytes\n" * 10_000)
    with data.open("rb") as stdin:
        code = await cli_exec.run(client, inst, wire.query(["cat"], False, True), False, True, stdin=stdin,
                                  stdout=out)
    assert code == 0 and out.getvalue() == b"a file's bytes\n" * 10_000, "a file as input, all of it, then its end"
    read, write = os.pipe()
    os.write(write, b"through a pipe")
    os.close(write)
    out = io.BytesIO()
    with os.fdopen(read, "rb") as stdin:
        code = await cli_exec.run(client, inst, wire.query(["cat"], False, True), False, True, stdin=stdin, stdout=out)
    assert code == 0 and out.getvalue() == b"through a pipe"
    with pytest.raises(ApiError) as api_err:
        await cli_exec.run(client, "ghost", wire.query(["sh"], False, False), False, False)
    assert api_err.value.status == 404 and "ghost" in api_err.value.message
    with pytest.raises(ApiError) as api_err:
        await cli_exec.run(Client(harness.url, token="crl_" + "0" * 16 + "_" + "A" * 43), inst,
                           wire.query(["sh"], False, False), False, False)
    assert api_err.value.status == 401 and "corral login" in api_err.value.message


def test_the_cli_refuses_bad_arguments_before_it_calls_anything() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["exec", "--host", "http://127.0.0.1:9", "c1", "--", ""])
    assert result.exit_code == 2 and "needs a command" in result.output
    result = runner.invoke(cli, ["exec", "-it", "--host", "http://127.0.0.1:9", "c1"], input="")
    assert result.exit_code == 1 and "not a terminal" in result.output
    result = runner.invoke(cli, ["exec", "--host", "http://127.0.0.1:9", "c1", "--", "true"])
    assert result.exit_code == 1 and "cannot reach the Corral API" in result.output
    help_text = runner.invoke(cli, ["exec", "--help"]).output
    assert "-i, --interactive" in help_text and "-t, --tty" in help_text and "exit status" in help_text


def test_the_docs_describe_the_protocol_the_code_speaks() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "EXEC.md").read_text()
    for literal in (wire.resize(80, 24), wire.input_end(), wire.exited(3), json.dumps({"error": "TEXT"}),
                    "`0`", "`1`", "`2`", "cmd=sh&cmd=-c", "container.exec"):
        assert literal in text, literal


# ---------------------------------------------------------------------- the host believes a node's record, only


def _node_tls(tmp_path: Any) -> tuple[ssl.SSLContext, ssl.SSLContext, ssl.SSLContext]:
    """(server, a node's client with its certificate, a client with none) over the harness CA."""
    ca_pem, ca_key = harness_ca()
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    for name in ("h1", "h2"):
        key = pki.new_key()
        issued = pki.sign(ca_pem, ca_key, pki.make_csr(name, key), name, "manager", ["127.0.0.1"], time.time())
        (tmp_path / f"{name}.pem").write_bytes(issued.cert_pem)
        (tmp_path / f"{name}-key.pem").write_bytes(pki.key_pem(key))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.verify_mode = ssl.CERT_OPTIONAL
    server.load_cert_chain(tmp_path / "h1.pem", tmp_path / "h1-key.pem")
    server.load_verify_locations(cafile=str(tmp_path / "ca.pem"))
    node = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    node.check_hostname = False
    node.load_cert_chain(tmp_path / "h2.pem", tmp_path / "h2-key.pem")
    user = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    user.check_hostname = False
    return server, node, user


async def test_the_host_believes_an_audit_record_only_from_a_node_and_only_of_this_exec(tmp_path: Any) -> None:
    server, node, user = _node_tls(tmp_path)
    async with running_api(ssl_context=server) as h:
        inst = await running_container(h, tls=user)

        async def attempt(ctx: ssl.SSLContext, cmd: str, index: int) -> int | str:
            async with aiohttp.ClientSession(middlewares=(wire.refused_upgrades,)) as s:
                try:
                    async with s.ws_connect(f"{h.url}/v1/containers/{inst}/exec?cmd={cmd}", ssl=ctx,
                                            headers={**h.auth, wire.AUDITED: str(index)}) as ws:
                        return [m.data async for m in ws][-1]
                except wire.UpgradeRefused as exc:
                    return exc.status

        def recorded() -> list[str]:
            return [e.refs["command"] for e in h.replica.state.events if e.kind is EventKind.CONTAINER_EXEC]

        assert await attempt(user, "true", h.replica.applied_index) == wire.exited(0)
        assert recorded() == ["true"], "a caller without a node certificate: the host records the exec itself"
        index = next(e.index for e in h.replica.state.events if e.kind is EventKind.CONTAINER_EXEC)
        assert await attempt(node, "true", index) == wire.exited(0)
        assert recorded() == ["true"], "a node's record of this very exec is believed: recorded once"
        assert await attempt(node, "echo", index) == 403, "a record of another command is not this exec's"
        assert await attempt(node, "true", index - 1) == 403, "nor an index that is not this exec's record"
        assert recorded() == ["true"] and len(h.engine.execs) == 2, "a refused exec runs nothing"
