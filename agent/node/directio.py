"""Tarball files written and read around the page cache (``O_DIRECT``), in aligned blocks, off the event loop.

Why: a page the page cache takes costs the CPU that takes it more than the copy into it (a fresh page,
zeroed, charged, and on a virtual machine faulted in by the hypervisor as well). Measured on the lab's
2-core VM: reading 1 GB cold through the page cache cost 1.35 CPU-s, with ``O_DIRECT`` 0.09, and an
``O_DIRECT`` write of it 0.12; with five engines loading at once, buffered file writes were 38 % of the
agents' CPU, nearly all in the relays' spools (``copy_folio_from_iter_atomic``; ``perf``, docs/IMAGES.md,
"Spools around the page cache"). A relay's spool is written once and read back by its one or two askers
a moment later, straight from the disk.

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
        """Let go of the file and the buffers; a write still in flight (in its thread, after an error or a
        cancel) keeps both until it ends."""
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.add_done_callback(self._closed_after)
        else:
            if pending is not None and not pending.cancelled():
                pending.exception()  # retrieved: it was raised, or nobody waits for it any more
            self._release()

    def _closed_after(self, write: asyncio.Future[None]) -> None:
        if not write.cancelled():
            write.exception()
        self._release()

    def _release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        for buffer in self._buffers:
            with contextlib.suppress(BufferError):  # a view still held: the buffer goes with it
                buffer.close()


class BlockReader:
    """Reads a file at any offset, a block at a time, each piece handed back as a view of one of two buffers
    (good until the next :meth:`read`). With ``cached_first`` (a kept tarball, which may well be in the
    page cache: one just uploaded) bytes the page cache has are copied from it at once (a read that may not
    wait, ``RWF_NOWAIT``; a miss brings that one block in); the others come from the disk around the page
    cache, in a thread, and while the caller sends one block the next is already being read. Call
    :meth:`close` when done."""

    def __init__(self, path: Path, direct: bool = True, block: int = BLOCK, cached_first: bool = False) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        with contextlib.suppress(OSError):  # no readahead: a page-cache miss must not fill the page cache
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_RANDOM)
        try:
            self.direct_fd, self.direct = _open(path, os.O_RDONLY, direct)
        except BaseException:
            os.close(self.fd)
            raise
        self.block = block
        # room for a block that starts before the offset (a disk read begins at a block's edge)
        self._buffers = [mmap.mmap(-1, block + ALIGN), mmap.mmap(-1, block + ALIGN)]
        self._views = [memoryview(b) for b in self._buffers]
        self._next = 0  # the buffer the next read fills
        self._ahead: tuple[int, int, int, asyncio.Future[int]] | None = None  # offset, buffer, limit, the read
        self._nowait = cached_first  # the page cache asked first (unless a kernel says it cannot be asked so)
        self.cached_reads = self.disk_reads = 0

    def _span(self, offset: int, limit: int) -> tuple[int, int]:
        """(start, length) of the disk read that covers ``offset`` up to a block or ``limit``."""
        start = offset - offset % ALIGN if self.direct else offset
        want = min(limit - start, self.block + (offset - start))
        if self.direct:
            want = -(-want // ALIGN) * ALIGN  # a whole number of blocks: a read past the end comes back short
        return start, want

    def _from_disk(self, offset: int, limit: int, index: int) -> asyncio.Future[int]:
        start, want = self._span(offset, limit)
        view = self._views[index]
        self.disk_reads += 1
        return asyncio.get_running_loop().run_in_executor(None, os.preadv, self.direct_fd, [view[:want]], start)

    async def read(self, offset: int, limit: int) -> memoryview:
        """Up to ``block`` bytes from ``offset``, none at or past ``limit`` (the bytes the file is known to
        have): empty at the end."""
        if offset >= limit:
            return self._views[0][:0]
        index = self._next
        self._next = 1 - index
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == offset:
            index, limit = ahead[1], ahead[2]  # only what the file was known to have when it was read
            self._next = 1 - index
            got, start = await ahead[3], self._span(offset, limit)[0]
        else:
            if ahead is not None:  # read ahead for another offset: let it end (it fills a buffer)
                with contextlib.suppress(OSError):
                    await ahead[3]
            view = self._views[index]
            got = self._cached(view[:min(self.block, limit - offset)], offset)
            if got > 0:
                self.cached_reads += 1
                return view[:got]
            start = self._span(offset, limit)[0]
            got = await self._from_disk(offset, limit, index)
        skip = offset - start
        end = min(got, limit - start, skip + self.block)
        if end <= skip:
            return self._views[index][:0]
        following = offset + end - skip
        if following < limit:  # the next block, read while this one is sent
            self._ahead = (following, self._next, limit, self._from_disk(following, limit, self._next))
        return self._views[index][skip:end]

    def _cached(self, view: memoryview, offset: int) -> int:
        """Bytes copied from the page cache into ``view`` (0: not there, or not to be asked)."""
        if not self._nowait:
            return 0
        try:
            return os.preadv(self.fd, [view], offset, os.RWF_NOWAIT)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self._nowait = False  # an older kernel or another file system: the disk every time
            return 0

    def close(self) -> None:
        """Let go of the file and the buffers; a read still in flight (in its thread) keeps both until it ends."""
        if self._ahead is not None:
            self._ahead[3].add_done_callback(self._closed_after)
            self._ahead = None
        else:
            self._release()

    def _closed_after(self, read: asyncio.Future[int]) -> None:
        if not read.cancelled():
            read.exception()  # retrieved: a read nobody waits for any more may fail unseen
        self._release()

    def _release(self) -> None:
        for fd in {self.fd, self.direct_fd}:
            with contextlib.suppress(OSError):
                os.close(fd)
        for view, buffer in zip(self._views, self._buffers, strict=True):
            with contextlib.suppress(BufferError):  # a view still held: the buffer goes with it
                view.release()
                buffer.close()


__all__ = ["ALIGN", "BLOCK", "BlockReader", "BlockWriter"]
