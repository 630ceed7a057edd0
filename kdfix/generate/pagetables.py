"""Build kernel page tables into a page store: one radix-table builder, shaped per architecture.

The shapes (index shift and width per level) come from kdfix.arch, the same description the readers walk with:
x86_64 4-level (phys-base-and-kaslr.md §3C), aarch64 4 KiB granule (arch-kernels-and-introspection.md §1.5), i386
PAE (§2.3). The entry bits a builder writes are here, next to the builder.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

PAGE_SIZE = 4096
ENTRIES = 512

# Entry bits (Intel SDM vol. 3 §4.5).
PTE_PRESENT = 1 << 0
PTE_RW = 1 << 1
PTE_ACCESSED = 1 << 5
PTE_DIRTY = 1 << 6
PTE_PSE = 1 << 7
PTE_GLOBAL = 1 << 8
PTE_NX = 1 << 63

TABLE_FLAGS = PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY  # 0x63, _KERNPG_TABLE
KERNEL_TEXT_LARGE = PTE_PRESENT | PTE_ACCESSED | PTE_DIRTY | PTE_PSE | PTE_GLOBAL  # 0x1e1, as measured
KERNEL_DATA_LARGE = KERNEL_TEXT_LARGE | PTE_RW | PTE_NX  # 0x80000000000001e3
KERNEL_RO_4K = PTE_PRESENT | PTE_ACCESSED | PTE_DIRTY | PTE_GLOBAL | PTE_NX

SIZE_2M = 1 << 21
SIZE_1G = 1 << 30


# aarch64 stage-1 descriptors (§1.5): [1:0] = 11 table/page, 01 block; AttrIndx 0 (MT_NORMAL), SH inner (3 << 8),
# AF (bit 10), PXN/UXN (bits 53/54) on data; what arm64's PROT_SECT_NORMAL(_EXEC) carry.
A64_TABLE = 0b11
A64_BLOCK = 0b01
A64_PAGE = 0b11
A64_SH_INNER = 3 << 8
A64_AF = 1 << 10
A64_PXN = 1 << 53
A64_UXN = 1 << 54
A64_KERNEL_TEXT = A64_SH_INNER | A64_AF | A64_UXN
A64_KERNEL_DATA = A64_SH_INNER | A64_AF | A64_UXN | A64_PXN

# i386 PAE (§2.3): a PDPT entry has only P (bits 1-2 and 5-8 are reserved there); PDEs as on x86_64.
PAE_PDPT_PRESENT = PTE_PRESENT
PAE_KERNEL_LARGE = PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY | PTE_PSE | PTE_GLOBAL  # 0x1e3


def table_allocator(start: int, end: int, write: Callable[[int, bytes], None]) -> Callable[[], int]:
    """``alloc()`` for a builder: zeroed table pages handed out upward from paddr ``start``, refused at ``end``."""
    next_table = [start]

    def alloc() -> int:
        paddr = next_table[0]
        if paddr >= end:
            raise ValueError("memory too large for the synthetic page-table area")
        next_table[0] += PAGE_SIZE
        write(paddr, bytes(PAGE_SIZE))
        return paddr

    return alloc


def va_indices(vaddr: int) -> tuple[int, int, int, int]:
    """PGD, PUD, PMD and PTE indices of a 4-level virtual address."""
    return (vaddr >> 39) & 511, (vaddr >> 30) & 511, (vaddr >> 21) & 511, (vaddr >> 12) & 511


class RadixTableBuilder:
    """Fill the tables of one address space: ``levels`` is ``((shift, index_bits), ...)`` from the top down,
    ``table_entry(child_paddr, depth)`` the entry that links a table at ``depth`` to its child, ``alloc()`` the paddr
    of a fresh zeroed table page; entries are 64-bit little-endian."""

    def __init__(
        self,
        root_paddr: int,
        alloc: Callable[[], int],
        write_u64: Callable[[int, int], None],
        levels: Sequence[tuple[int, int]],
        table_entry: Callable[[int, int], int],
    ) -> None:
        self.root_paddr = root_paddr
        self.levels = tuple(levels)
        self._alloc = alloc
        self._write_u64 = write_u64
        self._table_entry = table_entry
        self._tables: dict[tuple[int, ...], int] = {(): root_paddr}

    def indices(self, vaddr: int) -> tuple[int, ...]:
        return tuple((vaddr >> shift) & ((1 << bits) - 1) for shift, bits in self.levels)

    def _table(self, path: tuple[int, ...]) -> int:
        """Paddr of the table reached through the indices ``path``, creating it (and its parent link) on demand."""
        if path in self._tables:
            return self._tables[path]
        parent = self._table(path[:-1])
        child = self._alloc()
        self._write_u64(parent + 8 * path[-1], self._table_entry(child, len(path) - 1))
        self._tables[path] = child
        return child

    def map_leaf(self, vaddr: int, entry: int, size: int) -> None:
        """Write leaf ``entry`` for the ``size``-byte page or block at ``vaddr`` (size = 1 << a level's shift)."""
        depth = next((d for d, (shift, _) in enumerate(self.levels) if 1 << shift == size), None)
        if depth is None or vaddr % size:
            raise ValueError(f"no {size:#x}-byte leaf level for {vaddr:#x}")
        index = self.indices(vaddr)
        self._write_u64(self._table(index[:depth]) + 8 * index[depth], entry)


X86_64_LEVELS = ((39, 9), (30, 9), (21, 9), (12, 9))


class PageTableBuilder(RadixTableBuilder):
    """x86_64 4-level tables (_KERNPG_TABLE links)."""

    def __init__(self, pgd_paddr: int, alloc: Callable[[], int], write_u64: Callable[[int, int], None]) -> None:
        super().__init__(pgd_paddr, alloc, write_u64, X86_64_LEVELS, lambda child, _depth: child | TABLE_FLAGS)
        self.pgd_paddr = pgd_paddr

    def map_2m(self, vaddr: int, paddr: int, flags: int) -> None:
        """Map one 2 MiB page (PMD leaf)."""
        if vaddr % SIZE_2M or paddr % SIZE_2M:
            raise ValueError("2 MiB mapping needs 2 MiB aligned addresses")
        self.map_leaf(vaddr, paddr | flags | PTE_PSE, SIZE_2M)

    def map_4k(self, vaddr: int, paddr: int, flags: int) -> None:
        """Map one 4 KiB page (PTE leaf)."""
        self.map_leaf(vaddr & ~0xFFF, (paddr & ~0xFFF) | flags, PAGE_SIZE)


def aarch64_builder(
    root_paddr: int, alloc: Callable[[], int], write_u64: Callable[[int, int], None], *, va_bits: int = 48
) -> RadixTableBuilder:
    """arm64 tables with the 4 KiB granule; the level shapes are kdfix.arch.aarch64's (§1.5)."""
    from kdfix.arch.aarch64 import level_shifts

    shifts = level_shifts(12, va_bits)
    levels = [(shift, (va_bits - shift) if i == 0 else 9) for i, shift in enumerate(shifts)]
    return RadixTableBuilder(root_paddr, alloc, write_u64, levels, lambda child, _depth: child | A64_TABLE)


def aarch64_block(paddr: int, attrs: int) -> int:
    """A 2 MiB (level 2) or 1 GiB (level 1) block descriptor."""
    return paddr | attrs | A64_BLOCK


def i386_pae_builder(
    pdpt_paddr: int, alloc: Callable[[], int], write_u64: Callable[[int, int], None]
) -> RadixTableBuilder:
    """i386 PAE tables: the 4-entry PDPT at ``pdpt_paddr`` (swapper_pg_dir), PDs, PTs (kdfix.arch.i386)."""
    from kdfix.arch.i386 import PAE_LEVELS

    def link(child: int, depth: int) -> int:
        return child | (PAE_PDPT_PRESENT if depth == 0 else TABLE_FLAGS)

    return RadixTableBuilder(pdpt_paddr, alloc, write_u64, PAE_LEVELS, link)


def pack_u64(value: int) -> bytes:
    return struct.pack("<Q", value)
