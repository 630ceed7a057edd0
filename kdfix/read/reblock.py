"""ReblockedMemory: a dump's physical memory served in smaller pages than its blocks.

QEMU dumps aarch64 guests in 64 KiB blocks whatever the kernel's page size; libkdumpfile and makedumpfile take
the page size from ``block_size`` (arch-kernels-and-introspection.md §1.6), so a fix rewrites such a dump in
the kernel's pages. Physical reads are the same at any block size; only pfns and bitmaps change.
"""

from __future__ import annotations

from collections.abc import Iterator

from kdfix.errors import AddressError
from kdfix.format.bitmap import Bitmap
from kdfix.read.memory import HeldPages, PhysicalMemory
from kdfix.units import ceil_div


def _expand(bitmap: Bitmap, ratio: int, nbits: int) -> Bitmap:
    return Bitmap.from_pfns((pfn * ratio + i for pfn in bitmap.iter_set() for i in range(ratio)), nbits)


class ReblockedMemory(HeldPages):
    """PhysicalMemory over ``source`` in pages of ``page_size`` bytes (a divisor of the source's block size).

    A page is present when its block is; pages of a block are sliced from one decode of it.
    """

    def __init__(self, source: PhysicalMemory, page_size: int) -> None:
        if page_size <= 0 or source.page_size % page_size:
            raise ValueError(f"page size {page_size} does not divide the block size {source.page_size}")
        self.source = source
        self.page_size = page_size
        self.ratio = source.page_size // page_size
        self.max_pfn = source.max_pfn * self.ratio
        self._valid: Bitmap | None = None
        self._dumped: Bitmap | None = None
        self._block: tuple[int, bytes] | None = None

    @property
    def valid(self) -> Bitmap:
        if self._valid is None:
            self._valid = _expand(self.source.valid, self.ratio, self.max_pfn)
        return self._valid

    @property
    def dumped(self) -> Bitmap:
        if self._dumped is None:
            self._dumped = _expand(self.source.dumped, self.ratio, self.max_pfn)
        return self._dumped

    def present(self, pfn: int) -> bool:
        return self.source.present(pfn // self.ratio)

    def _block_bytes(self, block: int) -> bytes:
        if self._block is None or self._block[0] != block:
            self._block = (block, self.source.page(block))
        return self._block[1]

    def page(self, pfn: int) -> bytes:
        block, index = divmod(pfn, self.ratio)
        if not self.source.present(block):
            raise AddressError(f"pfn {pfn:#x} is not in the dump", paddr=pfn * self.page_size)
        data = self._block_bytes(block)
        return data[index * self.page_size : (index + 1) * self.page_size]

    def iter_pages(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[tuple[int, bytes]]:
        first_block = start_pfn // self.ratio
        end_block = None if end_pfn is None else ceil_div(end_pfn, self.ratio)
        ps = self.page_size
        for block, data in self.source.iter_pages(first_block, end_block):
            for index in range(self.ratio):
                pfn = block * self.ratio + index
                if pfn >= start_pfn and (end_pfn is None or pfn < end_pfn):
                    yield pfn, data[index * ps : (index + 1) * ps]

    def read(self, paddr: int, size: int, *, zero_fill: bool = False) -> bytes:
        return self.source.read(paddr, size, zero_fill=zero_fill)  # physical bytes do not depend on the blocking
