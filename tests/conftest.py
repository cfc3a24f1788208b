"""Suite-wide hooks.

A test that fails before it closes an aiosqlite connection leaves that connection's worker thread
running, and it is not a daemon: the interpreter would then wait for it forever after the last
test, and CI would hang instead of reporting the failure (seen once: 20 minutes). At the very end
the suite names any such thread and exits with pytest's own status.
"""

from __future__ import annotations

import os
import sys
import threading

import pytest

_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _status.append(int(exitstatus))


def pytest_unconfigure(config: pytest.Config) -> None:
    left = [t for t in threading.enumerate()
            if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if not left or not _status:
        return
    names = ", ".join(sorted(t.name for t in left))
    print(f"\n{len(left)} non-daemon thread(s) left running by the tests ({names}); exiting without them",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(_status[-1])
