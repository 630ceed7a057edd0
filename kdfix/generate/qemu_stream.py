"""The page half of QEMU-style generation: enumerate pages as QEMU does, compress them (optionally in worker
processes) and emit QEMU's exact record sequence (qemu-dumps.md §2, §5; kdump-format.md §7, §11).

Own code written from the behaviour described in qemu-dumps.md; nothing here is taken from QEMU.
"""

from __future__ import annotations

import contextlib
import os
import struct
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kdfix.codecs import codec_named
from kdfix.errors import FormatError, WriteError
from kdfix.format.kdump import PAGE_DESC_SIZE
from kdfix.write.sink import FLAT_END_MARKER, FileSink, flat_header, flat_record_header, write_error

UNIT_PAGES = 256  # pages per compression unit (1 MiB with 4 KiB pages)


# --------------------------------------------------------------------------------------------------------------
# Guest-physical blocks and QEMU's page enumeration (qemu-dumps.md §5)


@dataclass(frozen=True, slots=True)
class GuestBlock:
    """One RAM-backed guest-physical block as QEMU walks it (one PT_LOAD of QEMU's own ELF).

    ``src`` locates the block's first byte in the source: a file offset for ELF sources, the guest-physical
    address for sources read through PhysicalMemory. Only the first ``filesz`` bytes come from the source;
    the rest of the block reads as zero (ELF ``p_filesz < p_memsz``).
    """

    paddr: int
    size: int
    src: int
    filesz: int

    @property
    def end(self) -> int:
        return self.paddr + self.size


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes ``[src, src + length)`` of the source land at ``buf_offset`` of a unit buffer."""

    buf_offset: int
    src: int
    length: int


@dataclass(frozen=True, slots=True)
class Unit:
    """A run of consecutive pfns and where their bytes come from; untouched bytes are zero."""

    first_pfn: int
    npages: int
    pieces: tuple[Piece, ...]


def page_runs(blocks: Sequence[GuestBlock], page_size: int) -> list[tuple[int, int, list[GuestBlock]]]:
    """Maximal runs ``(first_pfn, end_pfn, blocks)`` of enumerated pfns.

    Every page touched by a block is enumerated; a page only partly covered is zero-filled and a page
    spanning two adjacent blocks is one page (QEMU >= 7.2 behaviour, qemu-dumps.md §5).
    """
    runs: list[tuple[int, int, list[GuestBlock]]] = []
    prev_end = -1
    for block in blocks:
        if block.size <= 0:
            continue
        if block.paddr < prev_end:
            raise FormatError(f"memory blocks overlap at {block.paddr:#x}", field="PT_LOAD.p_paddr", offset=None)
        prev_end = block.end
        first = block.paddr // page_size
        end = -(-block.end // page_size)
        if runs and first <= runs[-1][1]:
            start, _, members = runs[-1]
            members.append(block)
            runs[-1] = (start, max(end, runs[-1][1]), members)
        else:
            runs.append((first, end, [block]))
    return runs


def iter_units(
    runs: Sequence[tuple[int, int, list[GuestBlock]]], page_size: int, unit_pages: int = UNIT_PAGES
) -> Iterator[Unit]:
    """Cut the runs into units of at most ``unit_pages`` pages, each with the source pieces it needs."""
    for first, end, members in runs:
        for ufirst in range(first, end, unit_pages):
            uend = min(end, ufirst + unit_pages)
            lo, hi = ufirst * page_size, uend * page_size
            pieces = []
            for block in members:
                a = max(lo, block.paddr)
                b = min(hi, block.paddr + min(block.filesz, block.size))
                if a < b:
                    pieces.append(Piece(a - lo, block.src + (a - block.paddr), b - a))
            yield Unit(ufirst, uend - ufirst, tuple(pieces))


# --------------------------------------------------------------------------------------------------------------
# Page sources and compression (runs in the main process or in workers)


class PageSource(Protocol):
    """Reads source bytes for a unit."""

    def read(self, src: int, length: int) -> bytes: ...


class FileRangeSource:
    """Positional reads of a file (an ELF dump: ``src`` is a file offset)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size

    def read(self, src: int, length: int) -> bytes:
        data = os.pread(self._fd, length, src)
        if len(data) != length:
            raise FormatError(
                f"file ends inside a PT_LOAD segment (wanted {length} bytes, got {len(data)})",
                field="PT_LOAD.p_filesz",
                offset=src,
                path=self.path,
            )
        return data

    def read_into(self, view: memoryview, src: int) -> None:
        got = os.preadv(self._fd, [view], src)
        while 0 < got < len(view):  # preadv may return short on huge requests
            more = os.preadv(self._fd, [view[got:]], src + got)
            if more <= 0:
                break
            got += more
        if got != len(view):
            raise FormatError(
                f"file ends inside a PT_LOAD segment (wanted {len(view)} bytes, got {got})",
                field="PT_LOAD.p_filesz",
                offset=src,
                path=self.path,
            )

    def close(self) -> None:
        os.close(self._fd)


class MemorySource:
    """Reads through a PhysicalMemory (``src`` is a guest-physical address)."""

    def __init__(self, memory: object) -> None:
        self.memory = memory

    def read(self, src: int, length: int) -> bytes:
        return self.memory.read(src, length)  # type: ignore[attr-defined,no-any-return]


_SCRATCH: dict[int, bytearray] = {}  # per-process unit buffers, reused (no allocation or page faults per unit)


def fill_unit(source: PageSource, unit: Unit, page_size: int) -> bytes | bytearray:
    """The unit's page bytes: source pieces, zeros elsewhere.

    The result may be a reused buffer: it is valid until the next call in the same process.
    """
    total = unit.npages * page_size
    buf = _SCRATCH.get(total)
    if buf is None:
        buf = _SCRATCH[total] = bytearray(total)
    whole = len(unit.pieces) == 1 and unit.pieces[0].buf_offset == 0 and unit.pieces[0].length == total
    if not whole:
        buf[:] = _zeros(total)
    read_into = getattr(source, "read_into", None)
    view = memoryview(buf)
    for p in unit.pieces:
        if read_into is not None:
            read_into(view[p.buf_offset : p.buf_offset + p.length], p.src)
        else:
            view[p.buf_offset : p.buf_offset + p.length] = source.read(p.src, p.length)
    view.release()
    return buf


_ZEROS: dict[int, bytes] = {}


def _zeros(size: int) -> bytes:
    zeros = _ZEROS.get(size)
    if zeros is None:
        zeros = _ZEROS[size] = bytes(size)
    return zeros


def compress_pages(
    data: bytes | bytearray, npages: int, page_size: int, compress: Callable[[bytes], bytes]
) -> tuple[bytes, bytes]:
    """Compress ``npages`` pages as QEMU does (qemu-dumps.md §5).

    Returns ``(sizes, stored)``: ``sizes`` is an ``array('I')`` as bytes with 0 for an all-zero page (shared
    zero descriptor), the compressed size when smaller than a page, or ``page_size`` for a raw page;
    ``stored`` is the concatenation of the stored bytes of the non-zero pages.
    """
    zero_page = _zeros(page_size)
    if data == _zeros(len(data)):
        return bytes(4 * npages), b""
    sizes = array("I", bytes(4 * npages))
    out: list[bytes] = []
    for i in range(npages):
        page = data[i * page_size : (i + 1) * page_size]
        if page == zero_page:
            continue
        packed = compress(page)
        if len(packed) < page_size:
            out.append(packed)
            sizes[i] = len(packed)
        else:
            out.append(page)
            sizes[i] = page_size
    return sizes.tobytes(), b"".join(out)


def page_compressor(codec: str) -> Callable[[bytes], bytes]:
    """The codec's level-1 page compressor, bound once (no per-page module lookup on the hot path)."""
    if codec == "zlib":
        import functools
        import zlib

        return functools.partial(zlib.compress, level=1)  # compress2(..., Z_BEST_SPEED) as QEMU
    compress = codec_named(codec).compress
    return lambda page: compress(bytes(page))  # python-lzo wants read-only bytes


# Worker-process state: one open source per process, reused for every unit.
_WORKER: dict[str, object] = {}


def _worker_init(kind: str, path: str, codec: str, page_size: int) -> None:
    if kind == "elf":
        _WORKER["source"] = FileRangeSource(path)
    else:
        from kdfix import open_dump  # type: ignore[attr-defined]

        _WORKER["source"] = MemorySource(open_dump(path).memory)
    _WORKER["compress"] = page_compressor(codec)
    _WORKER["page_size"] = page_size


def _worker_unit(unit: Unit) -> tuple[bytes, bytes]:
    page_size: int = _WORKER["page_size"]  # type: ignore[assignment]
    data = fill_unit(_WORKER["source"], unit, page_size)  # type: ignore[arg-type]
    return compress_pages(data, unit.npages, page_size, _WORKER["compress"])  # type: ignore[arg-type]


@dataclass(frozen=True)
class SourceSpec:
    """How a worker process reopens the source: ``kind`` is "elf" (file offsets) or "dump" (kdfix.open_dump)."""

    kind: str
    path: str


def compressed_units(
    units: Iterator[Unit],
    *,
    source: PageSource,
    spec: SourceSpec | None,
    codec: str,
    page_size: int,
    workers: int,
) -> Iterator[tuple[Unit, bytes, bytes]]:
    """Yield ``(unit, sizes, stored)`` in unit order.

    With ``workers = N > 1`` the main process is one of the N compressors and N - 1 helper processes are the
    others: units go to the helpers while they have fewer than three queued each, otherwise the main process
    compresses the unit itself, and results are emitted strictly in unit order as they become ready. At most
    ``8 * N`` units are held, so memory stays flat whatever the dump size; the output does not depend on N.
    """
    compress = page_compressor(codec)

    def inline(unit: Unit) -> tuple[bytes, bytes]:
        return compress_pages(fill_unit(source, unit, page_size), unit.npages, page_size, compress)

    if workers <= 1 or spec is None:
        for unit in units:
            yield (unit, *inline(unit))
        return
    import multiprocessing

    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    helpers = workers - 1
    limit = 8 * workers
    with ctx.Pool(helpers, initializer=_worker_init, initargs=(spec.kind, spec.path, codec, page_size)) as pool:
        pending: deque[tuple[Unit, Any, tuple[bytes, bytes] | None]] = deque()
        queued = 0  # units submitted to helpers and not yet emitted

        def emit_left() -> tuple[Unit, bytes, bytes]:
            nonlocal queued
            unit, async_result, done = pending.popleft()
            if done is None:
                queued -= 1
                done = async_result.get()
            return (unit, *done)

        for unit in units:
            while pending and (pending[0][2] is not None or pending[0][1].ready()):
                yield emit_left()
            if queued < 3 * helpers:
                pending.append((unit, pool.apply_async(_worker_unit, (unit,)), None))
                queued += 1
            else:
                pending.append((unit, None, inline(unit)))
            while len(pending) >= limit:
                yield emit_left()
        while pending:
            yield emit_left()


# --------------------------------------------------------------------------------------------------------------
# Record output: flattened stream or raw positional file (qemu-dumps.md §1-§2)


class RecordOut(Protocol):
    def record(self, file_offset: int, data: bytes | bytearray | memoryview) -> None: ...

    def close(self) -> None: ...


class FlatRecordOut:
    """One flattened record per QEMU write, never coalesced (kdump-format.md §11)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._out = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise write_error(exc, path) from exc
        self.records = 0
        self.size = 0
        self._write(flat_header())

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._out.write(data)
        except OSError as exc:
            raise write_error(exc, self.path) from exc

    def record(self, file_offset: int, data: bytes | bytearray | memoryview) -> None:
        self._write(flat_record_header(file_offset, len(data)))
        self._write(data)
        self.records += 1
        self.size = max(self.size, file_offset + len(data))

    def close(self) -> None:
        self._write(FLAT_END_MARKER)
        try:
            self._out.close()
        except OSError as exc:
            raise write_error(exc, self.path) from exc

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._out.close()


class RawRecordOut:
    """QEMU >= 8.2 ``kdump-raw-*``: the same records written in place (holes stay sparse)."""

    def __init__(self, path: str) -> None:
        self._sink = FileSink(path)
        self.records = 0
        self.size = 0

    def record(self, file_offset: int, data: bytes | bytearray | memoryview) -> None:
        self._sink.write_at(file_offset, data)
        self.records += 1
        self.size = max(self.size, file_offset + len(data))

    def close(self) -> None:
        self._sink.close()

    def abort(self) -> None:
        with contextlib.suppress(WriteError):
            self._sink.close()


# --------------------------------------------------------------------------------------------------------------
# Bitmaps and the two write caches (qemu-dumps.md §2 items 4-6)


def bitmap_chunks(runs: Sequence[tuple[int, int, object]], page_size: int) -> Iterator[tuple[int, bytes]]:
    """Yield ``(chunk_index, chunk bytes)`` for chunks 0 … the chunk holding the last enumerated pfn."""
    if not runs:
        return
    bits = page_size * 8
    last_chunk = (runs[-1][1] - 1) // bits
    ri = 0
    for chunk in range(last_chunk + 1):
        base, top = chunk * bits, (chunk + 1) * bits
        value = 0
        while ri < len(runs) and runs[ri][0] < top:
            a, b = max(runs[ri][0], base), min(runs[ri][1], top)
            if a < b:
                value |= ((1 << (b - a)) - 1) << (a - base)
            if runs[ri][1] <= top:
                ri += 1
            else:
                break
        yield chunk, value.to_bytes(page_size, "little")


class _Cache:
    """A QEMU write cache: flushed as one record *before* an item that would overflow it."""

    __slots__ = ("buf", "capacity", "offset", "out")

    def __init__(self, out: RecordOut, offset: int, capacity: int) -> None:
        self.out = out
        self.offset = offset
        self.capacity = capacity
        self.buf = bytearray()

    def flush(self) -> None:
        if self.buf:
            self.out.record(self.offset, self.buf)
            self.offset += len(self.buf)
            self.buf = bytearray()


class PageEmitter:
    """Descriptor and data caches of ``4 * page_size`` bytes each; the shared zero page comes first."""

    def __init__(self, out: RecordOut, *, data_offset: int, num_dumpable: int, page_size: int, flag: int, order: str):
        cap = 4 * page_size
        self.page_size = page_size
        self.flag = flag
        self._desc = _Cache(out, data_offset, cap)
        self._data = _Cache(out, data_offset + PAGE_DESC_SIZE * num_dumpable, cap)
        self._pack = struct.Struct(f"{order}qIIQ").pack
        zero_at = self._data.offset
        self._zero_desc = self._pack(zero_at, page_size, 0, 0)
        self._data.buf += bytes(page_size)
        self._next_data = zero_at + page_size
        self.pages = 0
        self.zero_pages = 0
        self.raw_pages = 0

    def _zero_run(self, count: int) -> None:
        desc = self._desc
        self.zero_pages += count
        while count:
            room = (desc.capacity - len(desc.buf)) // PAGE_DESC_SIZE
            if room == 0:
                desc.flush()
                continue
            take = min(room, count)
            desc.buf += self._zero_desc * take
            count -= take

    def add(self, sizes_raw: bytes, stored: bytes) -> None:
        """Append one unit's pages (output of :func:`compress_pages`) in pfn order."""
        sizes = array("I")
        sizes.frombytes(sizes_raw)
        n = len(sizes)
        self.pages += n
        if not stored:
            self._zero_run(n)
            return
        desc, data = self._desc, self._data
        cap, ps, flag, pack = desc.capacity, self.page_size, self.flag, self._pack
        pos = 0
        zeros = 0
        for size in sizes:
            if size == 0:
                zeros += 1
                continue
            if zeros:
                self._zero_run(zeros)
                zeros = 0
            if len(data.buf) + size > cap:
                data.flush()
            data.buf += stored[pos : pos + size]
            pos += size
            if size == ps:
                self.raw_pages += 1
                item = pack(self._next_data, ps, 0, 0)
            else:
                item = pack(self._next_data, size, flag, 0)
            self._next_data += size
            if len(desc.buf) + PAGE_DESC_SIZE > cap:
                desc.flush()
            desc.buf += item
        if zeros:
            self._zero_run(zeros)

    def finish(self) -> int:
        """Final flush: descriptors, then data. Returns the end offset of the page data."""
        self._desc.flush()
        self._data.flush()
        return self._next_data
