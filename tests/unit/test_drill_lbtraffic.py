"""The lb-continuity drill's reading of HAProxy (agent/drill/lbtraffic.py): when a dead backend was last
chosen, from ``show stat`` polled over an admin socket (a stand-in socket here, answering rows as
HAProxy 2.6 writes them)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.drill.lbtraffic import Picks

HEADER = "# pxname,svname,qcur,scur,stot,lbtot,status,addr"


class FakeAdmin:
    """A Unix socket answering every ``show stat`` with the rows set last."""

    def __init__(self, path: Path) -> None:
        self.rows: list[tuple[str, int, str, str]] = []  # (server, lbtot, status, address)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(100)
                lines = [HEADER, "f_80,FRONTEND,,,0,,OPEN,"]
                lines += [f"b_web,{name},0,0,{n},{n},{status},{address}:80" for name, n, status, address in self.rows]
                lines.append("b_web,BACKEND,0,0,0,0,UP,")
                conn.sendall(("\n".join(lines) + "\n").encode())


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[tuple[FakeAdmin, Path]]:
    path = tmp_path / "admin.sock"
    fake = FakeAdmin(path)
    yield fake, path
    fake.sock.close()


def poll(picks: Picks, path: Path) -> float:
    picks._poll("h1", path)
    time.sleep(0.01)  # the next poll's time is later than this one's
    return time.monotonic()


def test_a_dead_backend_chosen_after_it_died_is_seen_and_stops_counting_once_it_is_up_again(
        admin: tuple[FakeAdmin, Path]) -> None:
    fake, path = admin
    picks = Picks(lambda: {"h1": path})
    fake.rows = [("c1_10.42.1.2", 5, "UP", "10.42.1.2"), ("c2_10.42.1.3", 5, "UP", "10.42.1.3")]
    poll(picks, path)
    died = time.monotonic()
    fake.rows = [("c1_10.42.1.2", 6, "UP", "10.42.1.2"), ("c2_10.42.1.3", 9, "UP", "10.42.1.3")]
    chosen = poll(picks, path)  # c1 chosen once more after it died
    fake.rows = [("c1_10.42.1.2", 6, "DOWN", "10.42.1.2"), ("c2_10.42.1.3", 12, "UP", "10.42.1.3")]
    poll(picks, path)
    fake.rows = [("c2_10.42.1.3", 14, "UP", "10.42.1.3")]  # deleted
    poll(picks, path)
    fake.rows = [("c1_10.42.1.2", 3, "UP", "10.42.1.2"), ("c2_10.42.1.3", 15, "UP", "10.42.1.3")]  # back
    poll(picks, path)
    back = time.monotonic()
    fake.rows = [("c1_10.42.1.2", 8, "UP", "10.42.1.2"), ("c2_10.42.1.3", 15, "UP", "10.42.1.3")]
    poll(picks, path)  # chosen again: the new container at that address, not the dead one
    last = picks.last_pick({"10.42.1.2"}, died, time.monotonic())
    assert last is not None and died < last < chosen
    assert [s for _, s in picks.states[("h1", "10.42.1.2")]] == ["UP", "DOWN", "GONE", "UP"]
    assert picks.picked_after({"10.42.1.2"}, died, 0.0, time.monotonic()) == 1
    assert picks.picked_after({"10.42.1.2"}, died, back - died, time.monotonic()) == 0
    assert picks.last_pick({"10.42.1.9"}, died, time.monotonic()) is None


def test_a_backend_never_seen_down_stays_dead_until_the_end_given(admin: tuple[FakeAdmin, Path]) -> None:
    """Without a state change seen, every pick up to ``until`` counts: a dead backend HAProxy kept
    choosing is not forgiven because its address came back unnoticed."""
    fake, path = admin
    picks = Picks(lambda: {"h1": path})
    fake.rows = [("c1_10.42.1.2", 1, "UP", "10.42.1.2")]
    poll(picks, path)
    died = time.monotonic()
    for n in range(2, 5):
        fake.rows = [("c1_10.42.1.2", n, "UP", "10.42.1.2")]
        poll(picks, path)
    assert picks.picked_after({"10.42.1.2"}, died, 0.0, time.monotonic()) == 3
