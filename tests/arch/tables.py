"""Test-only page-table builders for aarch64 and i386, written from the reference tables, not from kdfix.arch.

aarch64: arch-kernels-and-introspection.md §1.5 (level n shift = (PAGE_SHIFT-3)*(4-n)+3, descriptor bits [1:0]:
01 block, 11 table/page; output address bits [47:PAGE_SHIFT]). i386: §2.3 (2-level 32-bit entries with PS for
4 MiB pages; PAE: 4-entry PDPT, 512-entry PD/PT, PS for 2 MiB pages).
"""

from __future__ import annotations

import struct

from kdfix.read.memory import DictMemory

# (granule bytes, VA bits) -> number of levels, from the §1.5 table.
AARCH64_LEVELS = {
    (4096, 39): 3,
    (4096, 48): 4,
    (16384, 36): 2,
    (16384, 47): 3,
    (16384, 48): 4,
    (65536, 42): 2,
    (65536, 48): 3,
}
AF = 1 << 10  # access flag, a lower attribute the walk must mask off
UXN_PXN = (1 << 54) | (1 << 53)  # upper attributes
PAGE_SHIFTS = {4096: 12, 16384: 14, 65536: 16}


class PageStore:
    """Physical memory built page by page (``granule`` bytes each), with a bump allocator for tables."""

    def __init__(self, page_size: int = 4096, first_free: int = 0x100000) -> None:
        self.page_size = page_size
        self.pages: dict[int, bytearray] = {}
        self.next_free = first_free

    def alloc(self, size: int) -> int:
        """A zeroed, ``size``-aligned physical range for a table."""
        self.next_free = -(-self.next_free // size) * size
        pa = self.next_free
        self.next_free += size
        for off in range(0, size, self.page_size):
            self.pages.setdefault((pa + off) // self.page_size, bytearray(self.page_size))
        return pa

    def write(self, paddr: int, data: bytes) -> None:
        for i, byte in enumerate(data):
            pfn, off = divmod(paddr + i, self.page_size)
            self.pages.setdefault(pfn, bytearray(self.page_size))[off] = byte

    def read(self, paddr: int, size: int) -> bytes:
        out = bytearray()
        for i in range(size):
            pfn, off = divmod(paddr + i, self.page_size)
            out.append(self.pages[pfn][off] if pfn in self.pages else 0)
        return bytes(out)

    def put_u64(self, paddr: int, value: int) -> None:
        self.write(paddr, struct.pack("<Q", value))

    def put_u32(self, paddr: int, value: int) -> None:
        self.write(paddr, struct.pack("<I", value))

    def get_u64(self, paddr: int) -> int:
        return struct.unpack("<Q", self.read(paddr, 8))[0]

    def memory(self, block_size: int | None = None) -> DictMemory:
        """The store as dump memory in blocks of ``block_size`` (default: its own page size)."""
        bs = block_size or self.page_size
        blocks: dict[int, bytearray] = {}
        for pfn, page in self.pages.items():
            pa = pfn * self.page_size
            block = blocks.setdefault(pa // bs, bytearray(bs))
            block[pa % bs : pa % bs + self.page_size] = page
        return DictMemory({b: bytes(v) for b, v in blocks.items()}, page_size=bs)


class Aarch64Tables:
    """arm64 translation tables for one (granule, VA bits) configuration, rooted at ``root``."""

    def __init__(self, store: PageStore, granule: int = 4096, va_bits: int = 48) -> None:
        self.store, self.granule, self.va_bits = store, granule, va_bits
        self.page_shift = PAGE_SHIFTS[granule]
        self.levels = AARCH64_LEVELS[(granule, va_bits)]
        self.first_level = 4 - self.levels
        self.root = store.alloc(granule)

    def shift(self, level: int) -> int:
        return (self.page_shift - 3) * (4 - level) + 3

    def index(self, va: int, level: int) -> int:
        top = self.va_bits if level == self.first_level else self.shift(level) + self.page_shift - 3
        return (va >> self.shift(level)) & ((1 << (top - self.shift(level))) - 1)

    def map(self, va: int, pa: int, *, leaf_level: int = 3, attrs: int = AF | UXN_PXN) -> None:
        """Map one page (level 3) or one block (level 1 or 2) at ``va`` to ``pa``."""
        table = self.root
        for level in range(self.first_level, leaf_level):
            slot = table + 8 * self.index(va, level)
            desc = self.store.get_u64(slot)
            if desc & 3 != 3:
                nxt = self.store.alloc(self.granule)
                self.store.put_u64(slot, nxt | 3)
                desc = nxt | 3
            table = desc & ((1 << 48) - 1) & ~((1 << self.page_shift) - 1)
        kind = 3 if leaf_level == 3 else 1
        self.store.put_u64(table + 8 * self.index(va, leaf_level), pa | attrs | kind)

    def map_range(self, va: int, pa: int, size: int) -> None:
        for off in range(0, size, self.granule):
            self.map(va + off, pa + off)


class I386Tables:
    """i386 page tables: 2-level (``pae=False``) or PAE 3-level, rooted at ``root`` (the CR3 value)."""

    def __init__(self, store: PageStore, *, pae: bool) -> None:
        self.store, self.pae = store, pae
        self.root = store.alloc(4096)

    def _table(self, slot: int, wide: bool) -> int:
        entry = self.store.get_u64(slot) if wide else struct.unpack("<I", self.store.read(slot, 4))[0]
        if not entry & 1:
            nxt = self.store.alloc(4096)
            if wide:
                self.store.put_u64(slot, nxt | 1)  # PDPTEs carry only P (and reserved bits)
            else:
                self.store.put_u32(slot, nxt | 0x63)
            entry = nxt | 1
        return entry & 0x000FFFFFFFFFF000

    def map(self, va: int, pa: int, *, large: bool = False) -> None:
        """Map a 4 KiB page, or with ``large`` a 2 MiB (PAE) / 4 MiB (2-level, PSE) page."""
        if self.pae:
            pd = self._table(self.root + 8 * (va >> 30 & 3), True)
            slot = pd + 8 * (va >> 21 & 0x1FF)
            if large:
                self.store.put_u64(slot, pa | 0xE3 | (1 << 63))
                return
            entry = self.store.get_u64(slot)
            if not entry & 1:
                pt = self.store.alloc(4096)
                self.store.put_u64(slot, pt | 0x63)
                entry = pt
            self.store.put_u64((entry & 0x000FFFFFFFFFF000) + 8 * (va >> 12 & 0x1FF), pa | 0x63 | (1 << 63))
            return
        slot = self.root + 4 * (va >> 22)
        if large:
            low = pa & 0xFFC00000
            high = (pa >> 32) & 0xFF
            self.store.put_u32(slot, low | high << 13 | 0xE3)
            return
        pt = self._table(slot, False)
        self.store.put_u32(pt + 4 * (va >> 12 & 0x3FF), pa | 0x63)
