"""Every command that talks to the API, against an API that answers 400, 404 or 503 (or is not there):
one line on stderr saying what the API said, exit status 1, never a traceback."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli.main import cli

KEY = "A" * 43 + "="
COMPOSE = "services:\n  web:\n    image: corral/base\n"
COMMANDS = [
    ["hosts"],
    ["stack", "create", "web"], ["stack", "ls"], ["stack", "rm", "web"], ["stack", "deploy", "-f", "FILE", "web"],
    ["service", "create", "web", "nginx", "--image", "corral/base"], ["service", "ls"],
    ["service", "inspect", "web/nginx"], ["service", "inspect", "sv3"], ["service", "scale", "sv3", "3"],
    ["service", "stop", "sv3"], ["service", "start", "sv3"], ["service", "restart", "sv3"], ["service", "rm", "sv3"],
    ["service", "update", "sv3", "--image", "corral/base:v2"], ["service", "update", "sv3", "--now", "--scale", "2"],
    ["ps"], ["ps", "--stack", "web"], ["events"], ["events", "-f"], ["logs", "nosuch"], ["logs", "-f", "nosuch"],
    ["keys", "list"], ["keys", "install", KEY], ["keys", "use", KEY], ["keys", "remove", KEY],
]
ANSWERS = {400: ("bad_request", "scale: must be a whole number from 0 to 1000"),
           404: ("not_found", "no container 'nosuch'"),
           503: ("no_leader", "no leader is elected (or known to this node): writes cannot be accepted now")}


class Answering(http.server.BaseHTTPRequestHandler):
    """Answers every request with the status and JSON error body the server was made with."""

    status = 400

    def _answer(self) -> None:
        code, message = ANSWERS[self.status]
        body = json.dumps({"error": code, "message": message}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(params=sorted(ANSWERS), scope="module")
def api(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    handler = type("Handler", (Answering,), {"status": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", int(request.param)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run(args: list[str], url: str, tmp_path: Path) -> tuple[int, str, str]:
    compose = tmp_path / "stack.yml"
    compose.write_text(COMPOSE)
    argv = [str(compose) if a == "FILE" else a for a in args] + ["--host", url]
    result = CliRunner().invoke(cli, argv, catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_an_api_error_is_one_line_and_exit_1(args: list[str], api: tuple[str, int], tmp_path: Path) -> None:
    url, status = api
    code, out, err = run(args, url, tmp_path)
    assert code == 1, (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"corral: {ANSWERS[status][1]}"], err
    assert "Traceback" not in out + err


@pytest.mark.parametrize("args", [["hosts"], ["logs", "nosuch"], ["events", "-f"], ["stack", "create", "web"]],
                         ids=" ".join)
def test_no_agent_at_the_address_is_one_line_and_exit_1(args: list[str], tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _out, err = run(args, f"http://127.0.0.1:{port}", tmp_path)
    assert code == 1 and err.startswith(f"corral: cannot reach the Corral API at http://127.0.0.1:{port}"), err
    assert len(err.strip().splitlines()) == 1


def test_a_compose_file_the_reader_refuses_is_one_line_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("services: {web: {image: x, volumes: [a]}}\n")
    result = CliRunner().invoke(cli, ["stack", "deploy", "-f", str(bad), "web", "--host", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and result.stderr.strip() == (
        f"corral: {bad}: services.web.volumes[0]: a: a target is an absolute path in the container (line 1)")
