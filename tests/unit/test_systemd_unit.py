"""``corral agent --print-systemd-unit``: a unit that runs the same agent, with no secret in it."""

from __future__ import annotations

from tests.cli import corral


def test_the_unit_runs_the_same_agent_and_keeps_the_token_out() -> None:
    done = corral("agent", "--bind", "10.0.0.5", "--join", "10.0.0.4", "--token", "corral2.secret-stuff", "--manager",
                  "--label", "zone=a", "--print-systemd-unit", timeout=30)
    assert done.returncode == 0, done.stderr
    unit = done.stdout
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_line.endswith("corral agent --bind 10.0.0.5 --join 10.0.0.4 --manager --label zone=a")
    assert "secret-stuff" not in unit, "the join token goes in /etc/corral/agent.env, never in the unit"
    assert "EnvironmentFile=-/etc/corral/agent.env" in unit and "Restart=always" in unit
    assert "WantedBy=multi-user.target" in unit and "Requires=docker.service" in unit
