"""The page half of QEMU-style generation: enumerate pages as QEMU does, compress them (optionally in worker
processes) and emit QEMU's exact record sequence (qemu-dumps.md §2, §5; kdump-format.md §7, §11).

Own code written from the behaviour described in qemu-dumps.md; nothing here is taken from QEMU.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from kdfix.errors import FormatError
from kdfix.format.kdump import PAGE_DESC, PAGE_DESC_SIZE
from kdfix.format.layout import Abi
from kdfix.write.parallel import (  # the unit compression machinery, shared with write_kdump (re-exported here)
    DEDUP_CACHE_BYTES,
    DEDUP_SLOTS,
    UNIT_PAGES,
    FileRangeSource,
    LocalPageCache,
    MemorySource,
    PageCache,
    PageSource,
    PfnUnits,
    Piece,
    SourceSpec,
    Unit,
    UnitCompressor,
    compressed_units,
    fill_unit,
    page_compressor,
)
from kdfix.write.records import FlatRecordOut, RawRecordOut, RecordOut

__all__ = [
    "DEDUP_CACHE_BYTES",
    "DEDUP_SLOTS",
    "UNIT_PAGES",
    "FileRangeSource",
    "FlatRecordOut",
    "GuestBlock",
    "LocalPageCache",
    "MemorySource",
    "PageCache",
    "PageEmitter",
    "PageSource",
    "Piece",
    "RawRecordOut",
    "SourceSpec",
    "Unit",
    "UnitCompressor",
    "UnitTable",
    "bitmap_chunks",
    "compressed_units",
    "fill_unit",
    "page_compressor",
    "page_runs",
]


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


def _make_unit(ufirst: int, uend: int, members: Sequence[GuestBlock], page_size: int) -> Unit:
    lo, hi = ufirst * page_size, uend * page_size
    pieces = []
    for block in members:
        a = max(lo, block.paddr)
        b = min(hi, block.paddr + min(block.filesz, block.size))
        if a < b:
            pieces.append(Piece(a - lo, block.src + (a - block.paddr), b - a))
    return Unit(ufirst, uend - ufirst, tuple(pieces))


class UnitTable(PfnUnits):
    """The units of the guest's block runs by index, each with the source pieces it needs, built on demand
    (memory stays flat for any guest size)."""

    def __init__(
        self, runs: Sequence[tuple[int, int, list[GuestBlock]]], page_size: int, unit_pages: int = UNIT_PAGES
    ) -> None:
        self.block_runs = list(runs)
        self.page_size = page_size
        self._run_firsts = [first for first, _end, _members in self.block_runs]
        super().__init__([(first, end) for first, end, _members in self.block_runs], self._make, unit_pages)

    def _make(self, ufirst: int, uend: int) -> Unit:
        run = bisect.bisect_right(self._run_firsts, ufirst) - 1
        return _make_unit(ufirst, uend, self.block_runs[run][2], self.page_size)


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

    def __init__(self, out: RecordOut, *, data_offset: int, num_dumpable: int, page_size: int, flag: int, abi: Abi):
        cap = 4 * page_size
        self.page_size = page_size
        self.flag = flag
        self._desc = _Cache(out, data_offset, cap)
        self._data = _Cache(out, data_offset + PAGE_DESC_SIZE * num_dumpable, cap)
        self._pack = PAGE_DESC.bind(abi).struct.pack
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

    def add(self, sizes_raw: bytes | memoryview, stored: bytes | memoryview) -> None:
        """Append one unit's pages (output of :meth:`UnitCompressor.pages`) in pfn order."""
        sizes = array("I")
        sizes.frombytes(sizes_raw)
        n = len(sizes)
        self.pages += n
        if not stored:
            self._zero_run(n)
            return
        desc, data = self._desc, self._data
        cap, ps, flag, pack = desc.capacity, self.page_size, self.flag, self._pack
        stored = memoryview(stored)  # slices below are views, copied once into the cache
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
