"""`corral drill`: every drill, run as a user would, on a 4-host lab (3 managers and a worker).

One run of the command for every drill (the lossy-network drill shortened to 20 s so the suite
stays within its budget; `corral drill` itself defaults to the issue's 60 s). Each drill is a test
case reading the command's JSON, so a failure names the drill and its reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.drill.drills import ALL
from agent.lab import Lab


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    out = tmp_path_factory.mktemp("drill") / "drills.json"
    lab = Lab()
    if lab.leftovers():
        lab.down()
    try:
        proc = subprocess.run([sys.executable, "-m", "agent", "drill", "--hosts", "4", "--fresh", "--seed", "7",
                               "--lossy-seconds", "20", "--json", str(out)],
                              capture_output=True, text=True, timeout=1800)
        print(proc.stdout[-6000:])
        print(proc.stderr[-3000:])
        assert out.exists(), f"no JSON report (exit {proc.returncode}): {proc.stderr[-2000:]}"
        body: dict[str, Any] = json.loads(Path(out).read_text())
        body["exit_code"] = proc.returncode
        yield body
    finally:
        Lab().down()


@pytest.mark.timeout(1900)  # the first one waits for the whole run (the module's fixture): ~10-14 min
@pytest.mark.parametrize("name", ALL)
def test_drill_passes(report: dict[str, Any], name: str) -> None:
    result = next(d for d in report["drills"] if d["name"] == name)
    assert result["verdict"] == "PASS", f"{name}: {result['reason']}\n{json.dumps(result, indent=1)}"
    assert result["figures"]["business_sent"] > 0, "the business probe sent nothing: it measured nothing"
    assert result["figures"].get("overlay_sent", 0) > 0, "the overlay probe (on by default) sent nothing"


def test_lb_continuity_measured_every_phase(report: dict[str, Any]) -> None:
    """Its verdict is only as good as its figures: every phase sent requests through the load balancers,
    and each fault's dead backends were watched in HAProxy's own counters."""
    figures = next(d for d in report["drills"] if d["name"] == "lb-continuity")["figures"]
    phases = figures["phases"]
    assert [p.split()[0] for p in phases] == ["steady", "scale", "scale", "docker", "stop-host", "stop-host"], phases
    assert all(p["sent"] > 50 for p in phases.values()), phases
    faults = [p for p in phases.values() if "in_flight_at_fault" in p]
    assert len(faults) == 3 and all("dead_backend_chosen_after_1s" in p for p in faults), phases
    assert figures["failovers"] >= 2, "the stopped load balancer's clients (two) failed over"


def test_exit_code_says_whether_all_passed(report: dict[str, Any]) -> None:
    all_passed = all(d["verdict"] == "PASS" for d in report["drills"])
    assert (report["exit_code"] == 0) == all_passed


def test_unknown_drill_is_refused() -> None:
    proc = subprocess.run([sys.executable, "-m", "agent", "drill", "no-such-drill"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "unknown drill 'no-such-drill'" in proc.stderr
