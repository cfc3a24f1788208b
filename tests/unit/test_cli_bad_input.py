"""Bad input to the CLI: one clear line, a non-zero exit, nothing half-made. No lab needed."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.cli import corral


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _netns() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    assert "Traceback" not in text
    return lines[0]


@pytest.mark.parametrize("hosts", ["0", "-1", "33"])
def test_lab_up_rejects_host_counts_out_of_range(hosts: str, tmp_path: Path) -> None:
    before = _netns()
    done = corral("lab", "up", "--hosts", hosts, env={"CORRAL_LAB_ROOT": str(tmp_path / "lab")})
    assert done.returncode != 0
    assert "--hosts must be between 1 and 32" in _one_line(done.stderr)
    assert _netns() == before
    assert not (tmp_path / "lab").exists()


def test_lab_verbs_before_up_say_no_lab(tmp_path: Path) -> None:
    env = {"CORRAL_LAB_ROOT": str(tmp_path / "nolab")}
    for args in (["exec", "h1", "--", "true"], ["kill-agent", "h1"], ["status"], ["heal"]):
        done = corral("lab", *args, env=env)
        assert done.returncode == 1, args
        assert "no lab is up: run `corral lab up` first" in _one_line(done.stderr)
    assert not (tmp_path / "nolab").exists()


def test_lab_down_with_nothing_to_remove_succeeds(tmp_path: Path) -> None:
    if Path("/var/run/netns").exists() and any(n.startswith("corral-") for n in _netns().split()):
        pytest.skip("a lab is up on this machine")
    done = corral("lab", "down", env={"CORRAL_LAB_ROOT": str(tmp_path / "nolab")})
    assert done.returncode == 0, done.stderr
    assert "nothing to remove" in done.stdout


@pytest.mark.parametrize(
    "docker_host, reason",
    [
        ("unix:///nonexistent/docker.sock", "cannot reach Docker Engine at unix:///nonexistent/docker.sock"),
        ("tcp://127.0.0.1:1", "cannot reach Docker Engine at tcp://127.0.0.1:1"),
    ],
)
def test_agent_with_unreachable_engine_exits_with_one_line(docker_host: str, reason: str, tmp_path: Path) -> None:
    done = corral(
        "agent", "--bind", "127.0.0.1", "--api-port", str(_free_port()),
        "--data-dir", str(tmp_path / "data"), "--docker-host", docker_host, "--bootstrap", timeout=30,
    )
    assert done.returncode == 2
    assert reason in _last_line(done.stderr)
    assert "Traceback" not in done.stderr


def test_agent_with_unwritable_data_dir_exits_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = corral("agent", "--bind", "127.0.0.1", "--data-dir", str(blocker / "data"), timeout=30)
    assert done.returncode == 2
    assert f"cannot create data dir {blocker / 'data'}" in _last_line(done.stderr)
    assert "Traceback" not in done.stderr


def test_agent_without_a_cluster_secret_says_how_to_get_one(tmp_path: Path) -> None:
    done = corral("agent", "--bind", "127.0.0.1", "--data-dir", str(tmp_path / "d"), timeout=30)
    assert done.returncode == 2
    assert "start it with --bootstrap or with --join ADDR --token TOKEN" in _last_line(done.stderr)
    old = corral("agent", "--bind", "127.0.0.1", "--data-dir", str(tmp_path / "d"), "--join", "127.0.0.9",
                 "--token", "corral1.abc", timeout=30)
    assert old.returncode == 2 and "corral token create" in _last_line(old.stderr), "old tokens carry the secret"
    bad = corral("agent", "--bind", "127.0.0.1", "--data-dir", str(tmp_path / "d"), "--join", "127.0.0.9",
                 "--token", "corral2.abc", timeout=30)
    assert bad.returncode == 2 and "malformed" in _last_line(bad.stderr)
    alone = corral("agent", "--bind", "127.0.0.1", "--data-dir", str(tmp_path / "d"), "--token",
                   "corral2." + "0" * 16 + "." + "A" * 43 + "." + "0" * 64, timeout=30)
    assert alone.returncode == 2 and "--join" in _last_line(alone.stderr)
    assert not (tmp_path / "d" / "cluster-secret").exists(), "a refused token leaves no secret behind"


def test_agent_rejects_a_bind_that_is_not_an_address(tmp_path: Path) -> None:
    done = corral("agent", "--bind", "not-an-ip", "--data-dir", str(tmp_path), timeout=30)
    assert done.returncode == 2
    assert "'not-an-ip' is not an IP address" in done.stderr


def _last_line(text: str) -> str:
    """The agent logs a line per event before it fails; the error is the last line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert lines, "no output"
    return lines[-1]


def test_lab_up_without_docker_says_how_to_install_it(tmp_path: Path) -> None:
    """With no dockerd on PATH, up explains and installs nothing (it never runs apt behind your back)."""
    (tmp_path / "bin").mkdir()
    for tool in ("nsenter", "iptables", "ip"):  # everything but dockerd
        (tmp_path / "bin" / tool).symlink_to("/bin/true")
    done = corral("lab", "up", env={"PATH": str(tmp_path / "bin"), "CORRAL_LAB_ROOT": str(tmp_path / "lab")})
    assert done.returncode == 1
    line = _one_line(done.stderr)
    assert "Docker Engine is not installed" in line and "apt-get install docker.io" in line
    assert not (tmp_path / "lab").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--health", "https:443"], "'https:443' is not http:PORT[/PATH], tcp:PORT or cmd:COMMAND"),
    (["--health", "tcp:80/x"], "is not http:PORT[/PATH], tcp:PORT or cmd:COMMAND"),
    (["--health", "cmd:"], "is not http:PORT[/PATH], tcp:PORT or cmd:COMMAND"),
    (["--health-retries", "2"], "--health-* and --on-unhealthy need --health"),
])
def test_service_create_refuses_a_bad_health_option_before_asking_any_agent(args: list[str], message: str) -> None:
    done = corral("service", "create", "web-server", "web", "--image", "corral/base", *args,
                  "--host", f"http://127.0.0.1:{_free_port()}")
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_table_cell_with_brackets_is_printed_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    """A reason such as HAProxy's "Binding [/x/haproxy.cfg:20] … [0.0.0.0:8080]" is text, not rich markup
    (it once made `corral ps` die with a MarkupError)."""
    from agent.cli.output import table

    table("t", ["error"], [["Binding [/x/haproxy.cfg:20] for [0.0.0.0:8080] [/bold]"]])
    assert "[/x/haproxy.cfg:20]" in capsys.readouterr().out
