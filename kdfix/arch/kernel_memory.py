"""KernelMemory: read a dumped kernel's virtual memory through its architecture's rules and page tables."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from kdfix.arch.base import Arch, KernelSpace, Translation
from kdfix.errors import AddressError, KdfixError

if TYPE_CHECKING:
    from kdfix.read.memory import PhysicalMemory

TABLE_CACHE_PAGES = 64
MAX_READ = 64 << 20  # one read() never allocates more than this (callers pass sizes read from the dump)


class KernelMemory:
    """Kernel virtual memory of one dump: ``vtop(vaddr)`` and ``read(vaddr, size)``.

    A VA is translated by the architecture's fixed rule when one covers it exactly (x86_64 kernel image, arm64
    linear map), else by walking the kernel's page tables (swapper_pg_dir / init_top_pgt). Translations are
    cached per 4 KiB page; page-table pages are cached too, so walking many VAs costs few page decodes.
    """

    def __init__(self, arch: Arch, space: KernelSpace, memory: PhysicalMemory) -> None:
        self.arch = arch
        self.space = space
        self.memory = memory
        self._granule = space.min_page_size
        self._vpages: dict[int, int | None] = {}
        self._tables: OrderedDict[int, bytes] = OrderedDict()

    @property
    def phys_base(self) -> int:
        """The value the KDUMP header's phys_base should hold for this kernel."""
        return self.space.phys_base

    def _read_table(self, paddr: int, size: int) -> bytes:
        """Physical read for the walker, served from a small cache of whole pages."""
        ps = self.memory.page_size
        pfn, off = divmod(paddr, ps)
        if off + size > ps:
            return self.memory.read(paddr, size)
        page = self._tables.get(pfn)
        if page is None:
            page = self.memory.read(pfn * ps, ps)
            self._tables[pfn] = page
            if len(self._tables) > TABLE_CACHE_PAGES:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(pfn)
        return page[off : off + size]

    def walk(self, vaddr: int) -> int | None:
        """Physical address of ``vaddr`` by a page-table walk only (no rule); None if unmapped or no tables."""
        return self.space.walk(self._read_table, vaddr)

    def translate(self, vaddr: int) -> Translation | None:
        """How ``vaddr`` translates (rule or walk), or None if it is not mapped. Unreadable tables raise."""
        paddr = self.space.rule_paddr(vaddr)
        if paddr is not None:
            return Translation(vaddr, paddr, "rule")
        paddr = self.walk(vaddr)
        return None if paddr is None else Translation(vaddr, paddr, "walk")

    def try_vtop(self, vaddr: int) -> int | None:
        """Physical address of ``vaddr``, or None if it is not mapped or its page tables are not in the dump."""
        g = self._granule
        page, off = vaddr - vaddr % g, vaddr % g
        if page not in self._vpages:
            try:
                found = self.translate(page)
            except KdfixError:
                found = None
            self._vpages[page] = None if found is None else found.paddr
        base = self._vpages[page]
        return None if base is None else base + off

    def vtop(self, vaddr: int) -> int:
        """Physical address of kernel virtual address ``vaddr``; AddressError if it is not mapped."""
        paddr = self.try_vtop(vaddr)
        if paddr is None:
            raise AddressError(f"kernel virtual address {vaddr:#x} is not mapped ({self.arch.name})", paddr=None)
        return paddr

    def read(self, vaddr: int, size: int) -> bytes:
        """``size`` bytes at kernel virtual address ``vaddr``; AddressError if any page is unmapped or absent."""
        if size < 0 or size > MAX_READ:
            raise AddressError(f"kernel read of {size} bytes at {vaddr:#x} refused (limit {MAX_READ})", paddr=None)
        g = self._granule
        out = bytearray()
        pos, end = vaddr, vaddr + size
        while pos < end:
            take = min(g - pos % g, end - pos)
            out += self.memory.read(self.vtop(pos), take)
            pos += take
        return bytes(out)

    # Every architecture kdfix translates for runs little-endian.
    def read_u32(self, vaddr: int) -> int:
        return int.from_bytes(self.read(vaddr, 4), "little")

    def read_u64(self, vaddr: int) -> int:
        return int.from_bytes(self.read(vaddr, 8), "little")

    def read_ulong(self, vaddr: int) -> int:
        """An ``unsigned long`` of the kernel (4 bytes on 32-bit architectures)."""
        return int.from_bytes(self.read(vaddr, self.arch.word_size), "little")

    def __repr__(self) -> str:
        return f"KernelMemory({self.arch.name}, phys_base={self.space.phys_base:#x})"
