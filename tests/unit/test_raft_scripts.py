"""Cluster scenarios as text scripts with golden transcripts (after etcd-io/raft's interaction tests).

Each ``raft_scripts/*.txt`` holds commands (``$ ...``) each followed by the output it must produce.
Run with ``RAFT_REWRITE=1`` to regenerate the outputs after an intended change, then read the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mesh.raft.core import NotLeader, Rejected
from mesh.raft.messages import ConfChangeOp
from tests.unit.raft_cluster import Cluster, cfg

SCRIPTS = sorted((Path(__file__).parent / "raft_scripts").glob("*.txt"))


class Interpreter:
    def __init__(self) -> None:
        self.c: Cluster | None = None

    @property
    def cluster(self) -> Cluster:
        assert self.c is not None, "start with: cluster N"
        return self.c

    def run(self, line: str) -> list[str]:
        cmd, *args = line.split()
        return getattr(self, "do_" + cmd.replace("-", "_"))(*args)  # type: ignore[no-any-return]

    def do_cluster(self, n: str, *opts: str) -> list[str]:
        kw = dict(o.split("=") for o in opts)
        learners = int(kw.pop("learners", "0"))
        seed = int(kw.pop("seed", "0"))
        config = cfg(**{k: (v == "true" if v in ("true", "false") else int(v)) for k, v in kw.items()})
        self.c = Cluster(int(n), learners=learners, seed=seed, config=config)
        return []

    def do_elect(self, nid: str) -> list[str]:
        self.cluster.elect(nid)
        return []

    def do_put(self, nid: str, key: str, value: str) -> list[str]:
        import msgpack
        res = self.cluster.nodes[nid].propose(msgpack.packb([0, 0, "put", key, value, None]))
        self.cluster.stabilize()
        return [f"index={res}" if isinstance(res, int) else repr(res)]

    def do_fill(self, nid: str, count: str) -> list[str]:
        for i in range(int(count)):
            self.do_put(nid, f"k{i}", str(i))
        return []

    def do_conf(self, nid: str, op: str, node: str) -> list[str]:
        res = self.cluster.nodes[nid].propose_conf_change(ConfChangeOp[op.upper()], node)
        self.cluster.stabilize()
        return [f"index={res}" if isinstance(res, int) else repr(res)]

    def do_transfer(self, nid: str, to: str) -> list[str]:
        res = self.cluster.nodes[nid].transfer_leadership(to)
        self.cluster.stabilize()
        return [] if res is None else [repr(res)]

    def do_read(self, nid: str, ctx: str) -> list[str]:
        res = self.cluster.nodes[nid].read_index(ctx.encode())
        self.cluster.stabilize()
        return [repr(res)] if isinstance(res, NotLeader | Rejected) else []

    def do_reads(self, nid: str) -> list[str]:
        return [f"{r.context.decode()} at index {r.index}" for r in self.cluster.reads[nid]] or ["(none)"]

    def do_tick(self, n: str, *nodes: str) -> list[str]:
        self.cluster.tick(int(n), only=list(nodes) or None)
        return []

    def do_isolate(self, nid: str) -> list[str]:
        self.cluster.isolate(nid)
        return []

    def do_heal(self) -> list[str]:
        self.cluster.heal()
        return []

    def do_crash(self, nid: str) -> list[str]:
        self.cluster.crash(nid)
        return []

    def do_restart(self, nid: str) -> list[str]:
        self.cluster.restart(nid)
        return []

    def do_kv(self, nid: str) -> list[str]:
        data = self.cluster.sm[nid].data
        return [" ".join(f"{k}={v}" for k, v in sorted(data.items())) or "(empty)"]

    def do_status(self) -> list[str]:
        out = []
        for nid in self.cluster.ids:
            n = self.cluster.nodes[nid]
            state = n.role.name.lower() if nid in self.cluster.alive else "down"
            out.append(f"{nid}: {state} term={n.term} leader={n.leader or '-'} commit={n.commit} "
                       f"applied={n.applied} last={n.last_index} snap={n.snapshot_index} "
                       f"voters={','.join(sorted(n.voters)) or '-'} learners={','.join(sorted(n.learners)) or '-'}")
        return out


def transcript(text: str) -> str:
    interp = Interpreter()
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("#") or (not line.strip() and out and out[-1] == ""):
            out.append(line)
        elif line.startswith("$ "):
            out.append(line)
            out.extend(interp.run(line[2:]))
        elif not line.strip():
            out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_script(path: Path) -> None:
    text = path.read_text()
    got = transcript(text)
    if os.environ.get("RAFT_REWRITE"):
        path.write_text(got)
    assert got == text


def test_there_are_scripts() -> None:
    assert len(SCRIPTS) >= 3
