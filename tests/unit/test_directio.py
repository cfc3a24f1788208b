"""agent.node.directio: a spool written and read around the page cache, byte for byte what was given."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.node import directio
from agent.node.directio import ALIGN, BlockReader, BlockWriter

BLOCK = 64 * 1024  # small blocks: many of them in a few hundred KiB


def _takes_direct(path: Path) -> bool:
    try:
        fd = os.open(path / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError:
        return False
    os.close(fd)
    return True


def _cached_bytes(path: Path) -> int:
    """Bytes of ``path`` in the page cache (util-linux's fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def _pieces(data: bytes, rng: random.Random) -> list[bytes]:
    """``data`` cut at random places: pieces of 1 byte to three blocks, as frames and HTTP chunks come."""
    out, at = [], 0
    while at < len(data):
        n = rng.choice([1, 7, 512, 4095, 4096, 4097, BLOCK - 1, BLOCK, BLOCK + 3, 3 * BLOCK])
        out.append(data[at:at + n])
        at += n
    return out


@pytest.mark.parametrize("direct", [True, False])
async def test_a_writer_keeps_every_byte_in_order_whatever_the_pieces(tmp_path: Path, direct: bool) -> None:
    rng = random.Random(5)
    data = rng.randbytes(7 * BLOCK + 1234)  # whole blocks and a tail that is no whole disk block
    seen: list[int] = []
    writer = BlockWriter(tmp_path / "spool", seen.append, direct=direct, block=BLOCK)
    try:
        assert writer.direct is (direct and _takes_direct(tmp_path))
        given = 0
        for piece in _pieces(data, rng):
            await writer.write(piece)
            given += len(piece)
            assert writer.written <= given, "never ahead of what was given"
        await writer.finish()
    finally:
        await writer.close()
    assert (tmp_path / "spool").read_bytes() == data
    assert writer.written == len(data) and seen[-1] == len(data)
    # what a reader may read grows a whole block at a time until the tail: never a byte not yet on file
    assert seen == sorted(seen) and all(n % BLOCK == 0 for n in seen[:-1]) and len(seen) == 8


async def test_a_direct_spool_leaves_nothing_in_the_page_cache_and_a_buffered_one_does(tmp_path: Path) -> None:
    if not _takes_direct(tmp_path) or shutil.which("fincore") is None:
        pytest.skip("this file system takes no O_DIRECT (or util-linux's fincore is missing)")
    data = os.urandom(64 * BLOCK)
    for name, direct in (("direct", True), ("buffered", False)):
        writer = BlockWriter(tmp_path / name, direct=direct, block=BLOCK)
        try:
            for at in range(0, len(data), 100_000):
                await writer.write(data[at:at + 100_000])
            await writer.finish()
        finally:
            await writer.close()
    assert _cached_bytes(tmp_path / "direct") <= ALIGN, "only the tail went through the page cache"
    assert _cached_bytes(tmp_path / "buffered") >= len(data) // 2, "the control: a plain write is cached"
    reader = BlockReader(tmp_path / "direct", block=BLOCK)
    try:
        got, offset = bytearray(), 0
        while piece := await reader.read(offset, len(data)):
            got += piece
            offset += len(piece)
    finally:
        reader.close()
    assert bytes(got) == data and _cached_bytes(tmp_path / "direct") <= ALIGN, "read back around it too"


async def test_a_kept_tarball_is_read_from_the_page_cache_when_there_and_from_the_disk_when_not(
        tmp_path: Path) -> None:
    if not _takes_direct(tmp_path) or shutil.which("fincore") is None:
        pytest.skip("this file system takes no O_DIRECT (or util-linux's fincore is missing)")
    data = os.urandom(32 * BLOCK)
    (tmp_path / "uploaded").write_bytes(data)  # written the ordinary way: in the page cache
    writer = BlockWriter(tmp_path / "fetched", block=BLOCK)
    try:
        await writer.write(data)
        await writer.finish()
    finally:
        await writer.close()
    counts = {}
    for name in ("uploaded", "fetched"):
        reader = BlockReader(tmp_path / name, block=BLOCK, cached_first=True)
        try:
            got, offset = bytearray(), 0
            while piece := await reader.read(offset, len(data)):
                got += piece
                offset += len(piece)
            assert bytes(got) == data, name
            counts[name] = (reader.cached_reads, reader.disk_reads)
        finally:
            reader.close()
    assert counts["uploaded"] == (32, 0), "all of it from the page cache: no thread, no disk"
    assert counts["fetched"][0] == 0 and counts["fetched"][1] >= 32, counts
    assert _cached_bytes(tmp_path / "fetched") <= BLOCK, "a miss brings one block in, no more"


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("offset", [0, 1, ALIGN - 1, ALIGN, BLOCK - 5, BLOCK, 3 * BLOCK + 77])
async def test_a_reader_hands_back_from_any_offset_up_to_its_limit(tmp_path: Path, direct: bool,
                                                                    offset: int) -> None:
    data = random.Random(offset).randbytes(4 * BLOCK + 999)
    (tmp_path / "t").write_bytes(data)
    reader = BlockReader(tmp_path / "t", direct=direct, block=BLOCK)
    try:
        for limit in (len(data), offset + 10, 2 * BLOCK + 3):  # the whole file, a few bytes, a spool half full
            got, at = bytearray(), offset
            while piece := await reader.read(at, limit):
                assert 0 < len(piece) <= BLOCK, "a piece fits a bulk frame"
                got += piece
                at += len(piece)
            assert bytes(got) == data[offset:max(offset, limit)], (limit, len(got))
        assert not await reader.read(len(data), len(data) + 10), "nothing past the end of the file"
    finally:
        reader.close()


async def test_a_reader_follows_a_writer_block_by_block(tmp_path: Path) -> None:
    """A relay: its askers read the spool up to what is on file while it fills."""
    data = os.urandom(5 * BLOCK + 10)
    writer = BlockWriter(tmp_path / "spool", block=BLOCK)
    reader = BlockReader(tmp_path / "spool", block=BLOCK)
    got = bytearray()
    try:
        for at in range(0, len(data), 3000):
            await writer.write(data[at:at + 3000])
            while piece := await reader.read(len(got), writer.written):
                got += piece
        await writer.finish()
        while piece := await reader.read(len(got), writer.written):
            got += piece
    finally:
        reader.close()
        await writer.close()
    assert bytes(got) == data


async def test_a_disk_that_refuses_a_block_is_an_error_at_the_next_write(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    writer = BlockWriter(tmp_path / "spool", block=BLOCK)

    def full(fd: int, view: memoryview) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(directio, "_write_all", full)
    try:
        with pytest.raises(OSError, match="No space left"):
            for _ in range(3):  # the first full block goes off in a thread; its error comes with the next
                await writer.write(bytes(BLOCK))
            await writer.finish()
        assert writer.written == 0, "no block counted as on file"
    finally:
        await writer.close()


def test_a_block_must_be_whole_disk_blocks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 4096"):
        BlockWriter(tmp_path / "x", block=ALIGN + 1)


async def test_a_reader_closed_with_a_read_ahead_in_flight_lets_go_once_it_ends(tmp_path: Path) -> None:
    (tmp_path / "t").write_bytes(os.urandom(4 * BLOCK))
    reader = BlockReader(tmp_path / "t", block=BLOCK)
    piece = await reader.read(0, 4 * BLOCK)
    assert len(piece) == BLOCK and reader._ahead is not None, "the next block is being read"
    read = reader._ahead[3]
    del piece
    reader.close()
    await read  # the read ends in its thread; then the files are closed
    await asyncio.sleep(0)
    for fd in (reader.fd, reader.direct_fd):
        with pytest.raises(OSError):
            os.fstat(fd)


async def test_a_writer_closed_with_a_write_in_flight_lets_go_once_it_ends(tmp_path: Path) -> None:
    """A fetch cancelled mid-way: the block being written keeps its buffer and the file until it is on disk."""
    writer = BlockWriter(tmp_path / "spool", block=BLOCK)
    await writer.write(bytes(BLOCK))  # a whole block: its write goes off in a thread
    write = writer._pending
    assert write is not None and not write.done()
    await writer.close()
    os.fstat(writer.fd)  # still open: the write in flight uses it
    await write
    await asyncio.sleep(0)
    with pytest.raises(OSError):
        os.fstat(writer.fd)
    assert (tmp_path / "spool").stat().st_size == BLOCK
