"""The same service with its data path in the agent's process: a thread, or the agent's own loop.

Process mode is covered by ``test_overlay_datapath.py``; here each other mode must carry ICMP and TCP
between two hosts' containers and clean up after itself.
"""

from __future__ import annotations

import pytest

from bench.overlay_lab import OverlayLab, sh, tool, tool_bg, tool_result

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("mode", ["thread", "loop"])
def test_mode_carries_traffic_and_cleans_up(mode: str) -> None:
    lab = OverlayLab(mode=mode, agent_load=0.2)
    try:
        lab.up("ab")
        lab.write_peers("ab")
        lab.start("a")
        lab.start("b")
        lab.wait_mesh_up("ab")
        st = lab.status("a")
        assert st["mode"] == mode and st["datapath_pid"] == st["runner_pid"]  # in the agent's own process
        assert tool("ovt-ac", "ping", "10.42.2.2", "-c", "3", "-i", "0.05")["received"] == 3
        server = tool_bg("ovt-bc", "tcp-serve", "5010")
        sent = tool("ovt-ac", "tcp-send", "10.42.2.2", "5010", "mode-test", "--repeat", "50000")
        assert sent["echoed_ok"] and tool_result(server)["from"] == "10.42.1.2"
        lab.stop("a")
        assert "corral-overlay" not in sh("iptables", "-S", ns="ovt-a").stdout
        assert "10.42.0.0/16" not in sh("ip", "route", ns="ovt-a").stdout
    finally:
        lab.down()
    assert not lab.leftovers()
