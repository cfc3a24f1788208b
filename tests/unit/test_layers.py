"""The layers the tree is cut into, enforced (docs/ARCHITECTURE.md, "Layers").

- The pure layer, ``agent/model/``, imports no asyncio, aiohttp, aiodocker, sqlite, socket or time, and
  draws no randomness of its own (no ``random`` at all, no ``os.urandom``, no ``secrets``), neither in
  its own files nor through what it imports; and it imports nothing of the agent but itself.
- The protocol cores (SWIM and its parts, Raft's core, the overlay's sessions, the reconciler's plan)
  import no I/O either; they may name ``random.Random`` (their callers pass one in) but never call the
  module's functions.
- Lower layers never import upper ones: ``mesh`` and ``overlay`` import nothing of ``agent``; the
  model, the cluster view, the leader's loops and the host's workers never import the API, the CLI or
  the process that starts them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
IO = {"asyncio", "aiohttp", "aiodocker", "aiosqlite", "sqlite3", "socket", "time", "threading", "subprocess",
      "selectors", "uvloop", "pyroute2", "urllib", "http"}
RANDOM = {"random", "secrets", "uuid"}
CORES = ["mesh/gossip/swim.py", "mesh/gossip/suspicion.py", "mesh/gossip/broadcasts.py", "mesh/gossip/awareness.py",
         "mesh/gossip/profile.py", "mesh/gossip/wire.py", "mesh/raft/core.py", "mesh/raft/log.py",
         "mesh/raft/progress.py", "mesh/raft/messages.py", "mesh/raft/membership.py", "mesh/raft/config.py",
         "overlay/session.py", "overlay/session_state.py", "overlay/session_messages.py", "overlay/replay.py",
         "overlay/ipam.py", "overlay/chunks.py", "agent/node/plan.py"]
UPPER_OF = {  # package → packages it must not import
    "mesh": ("agent",), "overlay": ("agent",),
    "agent/model": ("agent.cluster", "agent.control", "agent.node", "agent.api", "agent.ui", "agent.cli",
                    "agent.process", "agent.lab", "agent.drill", "agent.errors"),
    "agent/cluster": ("agent.control", "agent.node", "agent.api", "agent.ui", "agent.cli", "agent.process"),
    "agent/control": ("agent.node", "agent.api", "agent.ui", "agent.cli", "agent.process"),
    "agent/node": ("agent.control", "agent.api", "agent.ui", "agent.cli", "agent.process"),
    "agent/api": ("agent.ui", "agent.cli", "agent.process", "agent.lab", "agent.drill"),
    "agent/ui": ("agent.cli", "agent.process", "agent.lab", "agent.drill"),
}


def imports(path: Path) -> list[tuple[str, int]]:
    """Every module a file imports (``from x import y`` counts ``x``), with its line."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno))
    return out


def random_calls(path: Path) -> list[int]:
    """Lines that use the ``random`` module other than to name ``random.Random``, or ``os.urandom``."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
            continue
        if (node.value.id == "random" and node.attr != "Random") or (node.value.id, node.attr) == ("os", "urandom"):
            bad.append(node.lineno)
    return bad


def model_files() -> list[Path]:
    return sorted((ROOT / "agent" / "model").glob("*.py"))


@pytest.mark.parametrize("path", model_files(), ids=lambda p: p.name)
def test_the_model_imports_no_io_and_no_randomness(path: Path) -> None:
    bad = [(m, line) for m, line in imports(path) if m.split(".")[0] in IO | RANDOM | {"os"}]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
    assert not random_calls(path)


def test_importing_the_model_pulls_in_no_io_module() -> None:
    code = ("import sys; before = set(sys.modules)\n"
            "import agent.model, agent.model.placement, agent.model.compose, agent.model.spec\n"
            "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - before})))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                cwd=ROOT).stdout.split())
    assert not loaded & (IO | RANDOM), sorted(loaded & (IO | RANDOM))
    assert "agent" in loaded and not any(m in loaded for m in ("aiohttp", "msgpack_numpy"))


@pytest.mark.parametrize("name", CORES)
def test_protocol_cores_do_no_io_and_draw_no_randomness_themselves(name: str) -> None:
    path = ROOT / name
    bad = [(m, line) for m, line in imports(path) if m.split(".")[0] in IO | {"secrets", "uuid", "os"}]
    assert not bad, f"{name} imports {bad}"
    assert not random_calls(path), f"{name} calls the random module itself at lines {random_calls(path)}"


@pytest.mark.parametrize("package", sorted(UPPER_OF))
def test_lower_layers_never_import_upper_ones(package: str) -> None:
    forbidden = UPPER_OF[package]
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = [(m, line) for m, line in imports(path) if m.startswith(forbidden) or m in forbidden]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
