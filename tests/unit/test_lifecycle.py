"""One lifecycle: the agent's stages start in order and stop in reverse, each exactly once, also when one
fails halfway — nothing leaks: no thread (aiosqlite's), no task, no socket, no TUN, no worker process.

Each case runs a real agent (fake Docker only) in a network namespace of its own
(``tests/unit/lifecycle_probe.py``), with one stage failing as it starts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.process.agent import Agent
from agent.process.config import AgentConfig

STAGES = [name for name, _ in Agent(AgentConfig(bind="127.0.0.1")).stages]
ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="needs root and unshare (a network namespace per case)")


def probe(stage: str, tmp_path: Path) -> dict[str, object]:
    done = subprocess.run(["unshare", "--net", sys.executable, "-m", "tests.unit.lifecycle_probe", stage,
                           str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_stages_are_every_resource_in_order() -> None:
    assert STAGES == ["data dir", "secret", "docker", "http client", "gossip", "raft", "leader", "admin", "certificate",
                      "images", "reconciler", "load balancers", "history", "keyring", "overlay", "dns", "health",
                      "http"]


@pytest.mark.parametrize("stage", [*STAGES, "none"])
def test_a_failed_stage_stops_the_started_ones_and_leaks_nothing(stage: str, tmp_path: Path) -> None:
    result = probe(stage, tmp_path)
    stages = [s for s in result["stages"] if s not in ("overlay up", "dns up")]  # type: ignore[union-attr]
    if stage == "none":
        assert result["error"] is None and stages == STAGES
    else:
        assert result["error"] == f"failing stage {stage}"
        assert stages == STAGES[:STAGES.index(stage) + 1], "no stage after the failing one starts"
    if stage == "none" or STAGES.index(stage) > STAGES.index("overlay"):
        assert "overlay up" in result["stages"], "the overlay (TUN + worker) was really up before the failure"  # type: ignore[operator]
    if stage == "none" or STAGES.index(stage) > STAGES.index("dns"):
        assert "dns up" in result["stages"], "the DNS server was really listening before the failure"  # type: ignore[operator]
    before, after = result["before"], result["after"]
    assert isinstance(before, dict) and isinstance(after, dict)
    assert after["threads"] == before["threads"], "no thread left (aiosqlite's, to_thread's workers aside)"
    assert after["sockets"] == before["sockets"], "no socket left open"
    assert after["tun"] is False, "no TUN left"
    assert after["children"] == [], "no overlay worker (or other child) left"
    assert result["tasks"] == [], "no task left"
