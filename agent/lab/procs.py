"""Processes, mounts and cgroups of the lab, found from /proc and /sys (never from pid files alone),
and how its daemons are started.

``down`` must work whatever state the lab is in, so it finds what to stop by asking the kernel:
every process whose network namespace is a lab host's, every process in a lab host's container
cgroups, every mount below the lab's directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
MNT_DETACH = 2


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start a daemon in its own session with output to a log; returns its pid (no Popen to reap)."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return os.posix_spawnp(
            argv[0],
            argv,
            dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
                (os.POSIX_SPAWN_CLOSE, log_fd),
            ],
            setsid=True,
        )
    finally:
        os.close(log_fd)


def tail(path: Path, lines: int = 3) -> str:
    """The last lines of a daemon's log, as one line (for an error message)."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def _all_pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def find(match: Callable[[list[str]], bool]) -> set[int]:
    """Processes (not this one, no zombies) whose argv ``match`` accepts."""
    return {pid for pid in _all_pids() if pid != os.getpid() and alive(pid) and match(cmdline(pid))}


def pids_in_netns(netns_path: Path) -> list[int]:
    """Processes whose network namespace is the one bound at ``netns_path``."""
    try:
        target = os.stat(netns_path)
    except OSError:
        return []
    found = []
    for pid in _all_pids():
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev) and pid != os.getpid():
            found.append(pid)
    return found


def netns_id(pid: int) -> tuple[int, int] | None:
    """The identity (inode, device) of a process's network namespace, None if it is gone."""
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return st.st_ino, st.st_dev


def lost_namespace_pids(root: Path) -> set[int]:
    """Processes in network namespaces that lost their name, found by a process naming ``root``.

    A lab host's daemons (dockerd, containerd and its shims, the agent) name paths below the lab's
    directory in their argv. When the namespace's bind mount under /var/run/netns is gone (someone
    ran ``ip netns del``, a crashed ``down``), they still run in it and ``pids_in_netns`` cannot
    find them; this finds every process of such a namespace (the overlay worker, which names no
    path, included). Never the caller's own namespace: a process there that names the lab's files
    (``tail -f`` of a log) is not a lab daemon.
    """
    prefix = str(root).rstrip("/") + "/"
    own = netns_id(os.getpid())
    lost: set[tuple[int, int]] = set()
    members: dict[tuple[int, int], set[int]] = {}
    for pid in _all_pids():
        ns = netns_id(pid)
        if ns is None or ns == own or pid == os.getpid():
            continue
        members.setdefault(ns, set()).add(pid)
        if any(prefix in arg for arg in cmdline(pid)):
            lost.add(ns)
    return {pid for ns in lost for pid in members[ns]}


def cgroup_dirs(name: str) -> list[Path]:
    """Every cgroup directory called ``name`` at the top of any mounted hierarchy (v1 or v2)."""
    dirs: list[Path] = []
    if (CGROUP_ROOT / "cgroup.procs").exists():
        candidates: Iterable[Path] = [CGROUP_ROOT / name]
    else:
        candidates = (hier / name for hier in CGROUP_ROOT.iterdir() if hier.is_dir())
    for path in candidates:
        if path.is_dir():
            dirs.append(path)
    return dirs


def pids_in_cgroup(name: str) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(name):
        for dirpath, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    text = Path(dirpath, "cgroup.procs").read_text()
                    pids.update(int(p) for p in text.split())
    return pids


def remove_cgroups(name: str) -> None:
    """rmdir a lab host's cgroup trees, deepest first (a cgroup dir goes only once it is empty)."""
    for top in cgroup_dirs(name):
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def kill(pids: Iterable[int], sig: signal.Signals = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def state(pid: int) -> str:
    """``running``, ``stopped`` (SIGSTOP), ``zombie`` or ``gone``."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "gone"
    for line in text.splitlines():
        if line.startswith("State:"):
            code = line.split()[1]
            return {"T": "stopped", "t": "stopped", "Z": "zombie", "X": "gone"}.get(code, "running")
    return "running"


def alive(pid: int | None) -> bool:
    return pid is not None and state(pid) in ("running", "stopped")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def rss_bytes(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """Poll until every pid has exited (zombies of ours are reaped); True if they all did."""
    pending = set(pids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            if not alive(pid):
                pending.discard(pid)
        if pending:
            time.sleep(0.05)
    return not pending


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first (the order to unmount them in)."""
    prefix = str(path).rstrip("/")
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def unmount(point: str) -> None:
    """Lazy-unmount (MNT_DETACH), so a busy mount of a killed container still goes."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.umount2(point.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # EINVAL: not a mount point (any more); ENOENT: gone
            raise OSError(err, os.strerror(err), point)
