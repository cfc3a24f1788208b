"""Tarball files written and read around the page cache (``O_DIRECT``), in aligned blocks, off the event loop.

Why: a page the page cache takes costs the CPU that takes it more than the copy into it (a fresh page,
zeroed, charged, and on a virtual machine faulted in by the hypervisor as well). Measured on the lab's
2-core VM: a buffered write of 1 GB cost 1.35 CPU-s where ``O_DIRECT`` cost 0.12; with five engines
loading at once, a relay's buffered spool was 38 % of its agent's CPU, all of it in
``copy_folio_from_iter_atomic`` (``perf``, docs/IMAGES.md, "Spools around the page cache"). A relay's
spool is written once and read back by its one or two askers a moment later, straight from the disk.

The disk wants aligned blocks: a :class:`BlockWriter` gathers what comes into one of two page-aligned
buffers and writes each whole block in a thread while the other fills (the receiver never waits on the
disk unless it is two blocks ahead); only the last partial block goes through the page cache. A
:class:`BlockReader` reads aligned blocks in a thread and hands back the part asked for. Where the file
system takes no ``O_DIRECT`` (tmpfs on older kernels), both fall back to plain reads and writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import mmap
import os
from collections.abc import Callable
from pathlib import Path

ALIGN = 4096
"""What ``O_DIRECT`` wants of an offset, a length and a buffer's address (every Linux disk's block)."""
BLOCK = 1 << 20
"""Bytes per write and per read."""


def _open(path: Path, flags: int, direct: bool) -> tuple[int, bool]:
    """An fd of ``path`` with ``O_DIRECT`` if asked and the file system takes it; whether it has it."""
    if direct and hasattr(os, "O_DIRECT"):
        try:
            return os.open(path, flags | os.O_DIRECT, 0o644), True
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: this file system has no O_DIRECT
                raise
    return os.open(path, flags, 0o644), False


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "the disk took none of the bytes written")
        view = view[written:]


class BlockWriter:
    """Appends to a new file (truncated), ``BLOCK`` bytes at a time around the page cache.

    ``written``: the bytes in the file (what a reader may read); ``on_written`` is called with it each
    time it grows. Call :meth:`finish` once everything was given (the tail goes in), :meth:`close` always.
    """

    def __init__(self, path: Path, on_written: Callable[[int], None] | None = None,
                 direct: bool = True, block: int = BLOCK) -> None:
        if block % ALIGN:
            raise ValueError(f"a block of {block} bytes is not a multiple of {ALIGN}")
        self.fd, self.direct = _open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, direct)
        self.block = block
        self._buffers = [mmap.mmap(-1, block), mmap.mmap(-1, block)]  # page-aligned, as O_DIRECT wants
        self._current = 0
        self._fill = 0
        self._pending: asyncio.Future[None] | None = None
        self._on_written = on_written
        self.written = 0

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            buffer = self._buffers[self._current]
            n = min(len(view), self.block - self._fill)
            buffer[self._fill:self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == self.block:
                await self._flush()

    async def _flush(self) -> None:
        """The current buffer's whole block to the disk (in a thread), once the other one's write is done."""
        await self._settle()
        size, buffer = self._fill, memoryview(self._buffers[self._current])[:self._fill]
        self._current, self._fill = 1 - self._current, 0
        self._pending = asyncio.get_running_loop().run_in_executor(None, _write_all, self.fd, buffer)
        self._pending.add_done_callback(lambda f: None if f.cancelled() or f.exception() else self._grew(size))

    def _grew(self, size: int) -> None:
        self.written += size
        if self._on_written is not None:
            self._on_written(self.written)

    async def _settle(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending

    async def finish(self) -> None:
        """Everything given is in the file: whole blocks around the page cache, the last few bytes through it."""
        await self._settle()
        buffer = memoryview(self._buffers[self._current])[:self._fill]
        whole = self._fill - self._fill % ALIGN if self.direct else self._fill
        await asyncio.to_thread(self._finish, buffer, whole)
        size, self._fill = self._fill, 0
        self._grew(size)

    def _finish(self, buffer: memoryview, whole: int) -> None:
        if whole:
            _write_all(self.fd, buffer[:whole])
        if len(buffer) > whole:  # O_DIRECT takes no partial block: the tail goes the ordinary way
            fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
            _write_all(self.fd, buffer[whole:])

    async def close(self) -> None:
        """Let go of the file and the buffers (after a write in flight has ended: it uses one)."""
        with contextlib.suppress(BaseException):
            await self._settle()
        with contextlib.suppress(OSError):
            os.close(self.fd)
        for buffer in self._buffers:
            with contextlib.suppress(BufferError):  # a view still held: the buffer goes with it
                buffer.close()


class BlockReader:
    """Reads a file at any offset around the page cache: aligned blocks from the disk, the asked part handed
    back as a view of one buffer (good until the next :meth:`read`). Call :meth:`close` when done."""

    def __init__(self, path: Path, direct: bool = True, block: int = BLOCK) -> None:
        self.fd, self.direct = _open(path, os.O_RDONLY, direct)
        self.block = block
        self._buffer = mmap.mmap(-1, block + ALIGN)  # room for a block that starts before the offset
        self._view = memoryview(self._buffer)

    async def read(self, offset: int, limit: int) -> memoryview:
        """Up to ``block`` bytes from ``offset``, none at or past ``limit`` (the bytes the file is known to
        have): empty at the end."""
        if offset >= limit:
            return self._view[:0]
        start = offset - offset % ALIGN if self.direct else offset
        want = min(limit - start, self.block + (offset - start))
        if self.direct:
            want = -(-want // ALIGN) * ALIGN  # a whole number of blocks: a read past the end comes back short
        got = await asyncio.to_thread(os.preadv, self.fd, [self._view[:want]], start)
        skip = offset - start
        end = min(got, limit - start, skip + self.block)
        return self._view[skip:end] if end > skip else self._view[:0]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(BufferError):  # a view still held: the buffer goes with it
            self._view.release()
            self._buffer.close()


__all__ = ["ALIGN", "BLOCK", "BlockReader", "BlockWriter"]
