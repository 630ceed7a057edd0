"""Build x86_64 4-level kernel page tables into a page store (phys-base-and-kaslr.md §3C for the shapes)."""

from __future__ import annotations

import struct
from collections.abc import Callable

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


def va_indices(vaddr: int) -> tuple[int, int, int, int]:
    """PGD, PUD, PMD and PTE indices of a 4-level virtual address."""
    return (vaddr >> 39) & 511, (vaddr >> 30) & 511, (vaddr >> 21) & 511, (vaddr >> 12) & 511


class PageTableBuilder:
    """Fill 4-level tables; ``alloc()`` returns the paddr of a fresh zeroed table page."""

    def __init__(self, pgd_paddr: int, alloc: Callable[[], int], write_u64: Callable[[int, int], None]) -> None:
        self.pgd_paddr = pgd_paddr
        self._alloc = alloc
        self._write_u64 = write_u64
        self._tables: dict[tuple[int, ...], int] = {(): pgd_paddr}

    def _table(self, path: tuple[int, ...]) -> int:
        """Paddr of the table reached through the indices ``path``, creating it (and its parent link) on demand."""
        if path in self._tables:
            return self._tables[path]
        parent = self._table(path[:-1])
        child = self._alloc()
        self._write_u64(parent + 8 * path[-1], child | TABLE_FLAGS)
        self._tables[path] = child
        return child

    def map_2m(self, vaddr: int, paddr: int, flags: int) -> None:
        """Map one 2 MiB page (PMD leaf)."""
        if vaddr % SIZE_2M or paddr % SIZE_2M:
            raise ValueError("2 MiB mapping needs 2 MiB aligned addresses")
        pgd, pud, pmd, _ = va_indices(vaddr)
        table = self._table((pgd, pud))
        self._write_u64(table + 8 * pmd, paddr | flags | PTE_PSE)

    def map_4k(self, vaddr: int, paddr: int, flags: int) -> None:
        """Map one 4 KiB page (PTE leaf)."""
        pgd, pud, pmd, pte = va_indices(vaddr)
        table = self._table((pgd, pud, pmd))
        self._write_u64(table + 8 * pte, (paddr & ~0xFFF) | flags)


def pack_u64(value: int) -> bytes:
    return struct.pack("<Q", value)
