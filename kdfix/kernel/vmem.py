"""Kernel virtual memory for the readers of kdfix.kernel: one ``read(vaddr, size)`` seam over physical memory.

The parsers (printk, kallsyms, pages) take a :class:`KernelMemory` — or anything with the same ``read`` — so
they are pure and testable on synthetic bytes.  Translation itself belongs to the architecture layer; until it
offers ``kernel_reader`` the x86_64 rule below (the kernel's own page tables, phys-base-and-kaslr.md §3C)
stands in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from kdfix.detect.paging import translate
from kdfix.errors import AddressError, KdfixError, UnsupportedError
from kdfix.format.constants import START_KERNEL_MAP
from kdfix.format.layout import Abi
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.memory import PhysicalMemory
from kdfix.units import U64_MASK

VirtToPhys = Callable[[int], "int | None"]
Endian = Literal["little", "big"]


class VirtualReader(Protocol):
    """Reads kernel virtual memory; raises AddressError for an address that is unmapped or not in the dump."""

    def read(self, vaddr: int, size: int) -> bytes: ...


class KernelMemory:
    """Kernel virtual memory: ``read`` and word helpers over a page translation and physical memory.

    ``vtop`` maps a virtual address to a physical one (None: unmapped); translations are cached per page.
    """

    def __init__(self, memory: PhysicalMemory, vtop: VirtToPhys, abi: Abi) -> None:
        self.memory = memory
        self.abi = abi
        self.page_size = memory.page_size
        self._vtop = vtop
        self._pages: dict[int, int | None] = {}

    @property
    def word_size(self) -> int:
        return self.abi.word_size

    @property
    def endian(self) -> Endian:
        return "little" if self.abi.byte_order == "<" else "big"

    def vtop(self, vaddr: int) -> int | None:
        """The physical address of ``vaddr``, or None if the kernel does not map it."""
        base = vaddr - vaddr % self.page_size
        if base not in self._pages:
            try:
                self._pages[base] = self._vtop(base)
            except KdfixError:  # a page table that is not in the dump
                self._pages[base] = None
        paddr = self._pages[base]
        return None if paddr is None else paddr + vaddr % self.page_size

    def read(self, vaddr: int, size: int) -> bytes:
        """``size`` bytes at ``vaddr``; AddressError naming the first address that cannot be read."""
        out = bytearray()
        pos, end = vaddr, vaddr + size
        while pos < end:
            take = min(self.page_size - pos % self.page_size, end - pos)
            paddr = self.vtop(pos)
            if paddr is None:
                raise AddressError(f"kernel address {pos:#x} is not mapped", paddr=None)
            try:
                out += self.memory.read(paddr, take)
            except AddressError as exc:
                raise AddressError(f"kernel address {pos:#x} (physical {paddr:#x}) is not in the dump",
                                   paddr=paddr) from exc  # fmt: skip
            pos += take
        return bytes(out)

    def uint(self, vaddr: int, size: int) -> int:
        return int.from_bytes(self.read(vaddr, size), self.endian)

    def word(self, vaddr: int) -> int:
        """An ``unsigned long`` at ``vaddr``."""
        return self.uint(vaddr, self.abi.word_size)


def _x86_64_vtop(memory: PhysicalMemory, info: VmcoreInfo) -> VirtToPhys:
    """x86_64: walk the kernel's own page tables from ``init_top_pgt`` (phys-base-and-kaslr.md §1, §3C)."""
    phys_base = info.phys_base
    pgd = info.symbol("init_top_pgt") or info.symbol("swapper_pg_dir")
    if phys_base is None or pgd is None:
        raise UnsupportedError("VMCOREINFO lacks NUMBER(phys_base) or SYMBOL(init_top_pgt): cannot read kernel memory")
    pgd_paddr = (pgd - START_KERNEL_MAP + phys_base) & U64_MASK
    levels = 5 if info.number("pgtable_l5_enabled") == 1 else 4
    sme_mask = info.number("sme_mask") or 0

    def read_phys(paddr: int, size: int) -> bytes:
        return memory.read(paddr, size)

    return lambda vaddr: translate(read_phys, pgd_paddr, vaddr, levels=levels, sme_mask=sme_mask)


def kernel_memory(memory: PhysicalMemory, info: VmcoreInfo, abi: Abi) -> KernelMemory:
    """Kernel virtual memory of a dump whose kernel described itself in ``info``."""
    if abi.word_size != 8 or abi.byte_order != "<" or "SYMBOL(init_top_pgt)" not in info:
        raise UnsupportedError("reading kernel virtual memory is implemented for x86_64 dumps only")
    return KernelMemory(memory, _x86_64_vtop(memory, info), abi)
