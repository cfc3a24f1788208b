"""``corral exec`` on the real lab, through the node that is NOT the container's host: the real CLI in
a subprocess (the exit code and both output streams of the command; piped input; a command the image
does not have: Docker's message and 127), an interactive shell driven through a pseudo-terminal (its
size, arithmetic, ``exit``, the local terminal restored), a removed container (a clear error), and
every exec in the audit events, once, with its actor."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent.lab import Lab
from tests.cli import corral
from tests.lab.cluster import api, service_running, until
from tests.lab.conftest import fresh_lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from fresh_lab(2)


@pytest.fixture(scope="module")
def target(lab: Lab) -> dict[str, Any]:
    """One running container, and the URL of the other host's agent (the node the CLI asks)."""
    admin = api(lab, "h1")
    admin.post("/v1/stacks", {"name": "shell"})
    service = admin.post("/v1/services", {"stack": "shell", "name": "box", "image": "corral/base", "scale": 1,
                                          "command": "exec sleep 1d"})
    container = until("the container runs", lambda: service_running(lab, "h1", service["id"], 1), timeout=60)[0]
    other = next(h.name for h in lab.hosts() if h.name != container["host"])
    return {**container, "service": service["id"], "via": other, "url": lab.host(other).api_url}


def test_a_command_runs_through_another_node_with_its_exit_code_and_streams(lab: Lab, target: dict[str, Any]) -> None:
    done = corral("exec", "--host", target["url"], target["name"], "--", "sh", "-c", "echo hi; echo oops >&2; exit 3")
    assert (done.returncode, done.stdout, done.stderr) == (3, "hi\n", "oops\n"), done
    piped = corral("exec", "-i", "--host", target["url"], target["id"], "--", "sh", "-c", "tr a-z A-Z",
                   input_text="shouted\n")
    assert (piped.returncode, piped.stdout) == (0, "SHOUTED\n"), piped
    missing = corral("exec", "--host", target["url"], target["name"], "nosuchcommand")
    argv, env = lab.exec_argv(target["host"], ["docker", "exec", target["container_id"], "nosuchcommand"])
    docker = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert missing.returncode == docker.returncode and missing.returncode in (126, 127), (missing, docker)
    assert "nosuchcommand" in missing.stdout + missing.stderr and "not found" in missing.stdout + missing.stderr


def read_until(fd: int, wanted: bytes, timeout: float) -> bytes:
    """What the terminal shows until ``wanted`` appears in it, or EOF (a pty's EIO), or the deadline."""
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side has closed
            break
        if not chunk:
            break
        seen += chunk
    return seen


def test_an_interactive_shell_through_a_pseudo_terminal(target: dict[str, Any]) -> None:
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    before = termios.tcgetattr(secondary)
    process = subprocess.Popen([sys.executable, "-m", "agent", "exec", "-it", "--host", target["url"], target["name"]],
                               stdin=secondary, stdout=secondary, stderr=secondary, start_new_session=True,
                               env=dict(os.environ))
    try:
        assert b"#" in read_until(primary, b"# ", 30), "the shell's prompt"
        os.write(primary, b"stty size; echo $((6*7))\n")
        shown = read_until(primary, b"42", 15)
        assert b"42" in shown and b"33 111" in shown, shown
        # what the shell prints is told from the terminal's echo of what was typed by its arithmetic
        os.write(primary, b"echo $((2+3))started; sleep 60; echo $((3+4))slept\n")
        assert b"5started" in read_until(primary, b"5started", 15)
        os.write(primary, b"\x03")  # Ctrl-C: to the sleep in the container, not to the CLI
        os.write(primary, b"echo $((4+5))back\n")
        shown = read_until(primary, b"9back", 15)
        assert b"9back" in shown and b"7slept" not in shown and process.poll() is None, shown
        os.write(primary, b"exit 0\n")
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        after = termios.tcgetattr(secondary)
        os.close(primary)
        os.close(secondary)
    assert after == before, "the local terminal is as it was (raw mode undone)"


def test_a_removed_container_is_a_clear_error(lab: Lab, target: dict[str, Any]) -> None:
    api(lab, "h1").delete(f"/v1/containers/{target['id']}")
    gone = corral("exec", "--host", target["url"], target["id"], "--", "true")
    assert gone.returncode == 1 and gone.stdout == "", gone
    assert gone.stderr.strip() == f"corral: no container '{target['id']}'", gone.stderr
    # its slot is placed again; the new container answers by its name
    until("the slot runs again", lambda: service_running(lab, "h1", target["service"], 1), timeout=60)


def test_every_exec_is_in_the_audit_events_once_with_its_actor(lab: Lab, target: dict[str, Any]) -> None:
    events = api(lab, "h1").items("/v1/events", audit=1, kind="container.exec")
    ran = [e for e in events if e["refs"]["command"] == "sh -c 'echo hi; echo oops >&2; exit 3'"]
    assert len(ran) == 1, "recorded once, by the node asked (the container's host believes it)"
    event = ran[0]
    assert event["actor"] == "admin" and event["credential"] and event["environment"] == "default"
    assert event["refs"]["instance"] == target["id"] and event["refs"]["host"] == target["host"]
    assert event["source"].endswith(f" via {target['via']}"), event
    shells = [e for e in events if e["refs"]["command"] == "sh" and e["refs"]["tty"] == "1"]
    assert len(shells) == 1 and shells[0]["refs"]["interactive"] == "1"
    assert any(e["refs"]["command"] == "nosuchcommand" for e in events), "an exec that failed is recorded too"
