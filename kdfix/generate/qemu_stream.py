"""The page half of QEMU-style generation: enumerate pages as QEMU does, compress them (optionally in worker
processes) and emit QEMU's exact record sequence (qemu-dumps.md §2, §5; kdump-format.md §7, §11).

Own code written from the behaviour described in qemu-dumps.md; nothing here is taken from QEMU.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from kdfix.errors import FormatError

# the unit compression machinery, shared with write_kdump (re-exported here)
from kdfix.write.page_cache import DEDUP_CACHE_BYTES, DEDUP_ENTRIES, DEDUP_SLOTS, LocalPageCache, PageCache
from kdfix.write.page_records import PageEmitter, bitmap_chunks
from kdfix.write.page_units import (
    UNIT_PAGES,
    FileRangeSource,
    MemorySource,
    PageSource,
    PfnUnits,
    Piece,
    SourceSpec,
    Unit,
    fill_unit,
)
from kdfix.write.parallel import compressed_units
from kdfix.write.records import FlatRecordOut, RawRecordOut
from kdfix.write.unit_compressor import UnitCompressor, page_compressor

__all__ = [
    "DEDUP_CACHE_BYTES",
    "DEDUP_ENTRIES",
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
