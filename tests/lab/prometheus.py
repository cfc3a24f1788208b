"""A real Prometheus (Debian's ``prometheus``) scraping a lab's agents, for the lab tests.

It runs in the root namespace, listens on loopback, and scrapes every host's API over HTTPS with the
lab's CA and a metrics key in a ``credentials_file``: the scrape config docs/MONITORING.md gives.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from agent.lab import Lab

SCRAPE_INTERVAL = "1s"


def scrape_config(targets: list[str], ca_file: Path, token_file: Path) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                   "evaluation_interval": "15s"},
        "scrape_configs": [{
            "job_name": "corral",
            "scheme": "https",
            "metrics_path": "/metrics",
            "tls_config": {"ca_file": str(ca_file)},
            "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
            "static_configs": [{"targets": targets}],
        }],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query over the HTTP API: the result's vector."""
        with urllib.request.urlopen(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}),
                                    timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as resp:
            return list(json.loads(resp.read())["data"]["activeTargets"])


@contextlib.contextmanager
def running(lab: Lab, token: str) -> Iterator[Prometheus]:
    """Prometheus scraping every host of ``lab`` with ``token``; stopped (and its files gone) after."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus is not installed: run scripts/install.sh"
    work = Path(tempfile.mkdtemp(prefix="corral-prometheus-"))
    token_file = work / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    targets = [h.api_url.removeprefix("https://") for h in lab.hosts()]
    config = work / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(targets, lab.ca_file, token_file)))
    port = _free_port()
    log = work / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Prometheus(f"http://127.0.0.1:{port}", log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
