"""x86_64: 4/5-level page walks, the kernel-image rule with phys_base, and its NT_PRSTATUS.

phys-base-and-kaslr.md §1 (phys_base, __START_KERNEL_map), §3C (the walk and crash's ``find_kernel_start``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from kdfix.arch.base import MIN_PAGE_SIZE, ArchBasics, PageMapping, QemuTarget, ReadFn, WalkBudgetExceeded
from kdfix.errors import KdfixError, UnsupportedError
from kdfix.format.constants import DEFAULT_LINK_TEXT, EM_X86_64, START_KERNEL_MAP
from kdfix.format.layout import LP64_BE, LP64_LE, Abi, Layout
from kdfix.format.notes import ELF_PRSTATUS_X86_64
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.units import U64_MASK, to_s64

NAME = "x86_64"
PRESENT = 1 << 0
PAGE_SIZE_BIT = 1 << 7
ADDR_4K = 0x000FFFFFFFFFF000  # architectural bits 51:12 (NX bit 63 dropped)
ADDR_2M = 0x000FFFFFFFE00000
ADDR_1G = 0x000FFFFFC0000000
CR4_LA57 = 1 << 12
CR0_PG = 1 << 31
KERNEL_IMAGE_MAX = 1 << 30  # KERNEL_IMAGE_SIZE with KASLR configured (phys-base-and-kaslr.md §1)
_TABLE = struct.Struct("<512Q")

__all__ = [
    "ADDR_1G",
    "ADDR_2M",
    "ADDR_4K",
    "ARCH",
    "CR0_PG",
    "CR4_LA57",
    "X86_64",
    "PageMapping",
    "WalkBudgetExceeded",
    "X86_64Space",
    "canonical",
    "find_first_mapping",
    "kphys",
    "level_shifts",
    "translate",
]


def kphys(vaddr: int, phys_base: int) -> int:
    """Kernel-image translation ``(va - __START_KERNEL_map + phys_base) mod 2^64`` (phys-base-and-kaslr.md §1)."""
    return (vaddr - START_KERNEL_MAP + phys_base) & U64_MASK


def level_shifts(levels: int) -> tuple[int, ...]:
    """Index shifts from the top level down: (39, 30, 21, 12) or (48, 39, 30, 21, 12)."""
    if levels not in (4, 5):
        raise ValueError(f"paging levels must be 4 or 5, got {levels}")
    return (48, 39, 30, 21, 12)[5 - levels :]


def canonical(vaddr: int, levels: int) -> int:
    """Sign-extend a virtual address from bit 47 (4-level) or 56 (5-level)."""
    top = 47 if levels == 4 else 56
    vaddr &= (1 << (top + 1)) - 1
    return vaddr | (((1 << 64) - 1) ^ ((1 << (top + 1)) - 1)) if vaddr >> top & 1 else vaddr


def _leaf(entry: int, shift: int, sme_mask: int) -> tuple[int, int] | None:
    """(paddr, size) if ``entry`` at the level of ``shift`` is a leaf, else None."""
    if shift == 12:
        return entry & ADDR_4K & ~sme_mask, 1 << 12
    if shift in (21, 30) and entry & PAGE_SIZE_BIT:
        mask = ADDR_2M if shift == 21 else ADDR_1G
        return entry & mask & ~sme_mask, 1 << shift
    return None


def translate(read: ReadFn, pgd_paddr: int, vaddr: int, *, levels: int = 4, sme_mask: int = 0) -> int | None:
    """Physical address of ``vaddr`` through the tables at ``pgd_paddr``; None if not mapped.

    A table that cannot be read raises the reader's KdfixError.
    """
    table = pgd_paddr & ADDR_4K
    for shift in level_shifts(levels):
        index = (vaddr >> shift) & 511
        (entry,) = struct.unpack("<Q", read(table + 8 * index, 8))
        if not entry & PRESENT:
            return None
        leaf = _leaf(entry, shift, sme_mask)
        if leaf is not None:
            paddr, size = leaf
            return paddr + (vaddr & (size - 1))
        table = entry & ADDR_4K & ~sme_mask
    return None  # pragma: no cover - the 4K level always returns


def find_first_mapping(
    read: ReadFn,
    pgd_paddr: int,
    start_vaddr: int = START_KERNEL_MAP,
    *,
    levels: int = 4,
    sme_mask: int = 0,
    max_tables: int = 2048,
    skipped: list[str] | None = None,
) -> PageMapping | None:
    """The lowest mapped page at or above ``start_vaddr`` (crash ``find_kernel_start``, with backtracking).

    At each level the scan starts at ``start_vaddr``'s index while still on its path and at 0 once past it.
    Unreadable tables are skipped (noted in ``skipped``); more than ``max_tables`` reads raises WalkBudgetExceeded.
    """
    shifts = level_shifts(levels)
    reads = 0

    def walk(table: int, depth: int, prefix: int, on_start_path: bool) -> PageMapping | None:
        nonlocal reads
        reads += 1
        if reads > max_tables:
            raise WalkBudgetExceeded(f"more than {max_tables} page tables read")
        try:
            raw = read(table, 4096)
        except KdfixError as exc:
            if skipped is not None:
                skipped.append(f"table at {table:#x} unreadable: {exc.message}")
            return None
        entries = _TABLE.unpack(raw)
        shift = shifts[depth]
        first = (start_vaddr >> shift) & 511 if on_start_path else 0
        for index in range(first, 512):
            entry = entries[index]
            if not entry & PRESENT:
                continue
            vaddr = prefix | index << shift
            leaf = _leaf(entry, shift, sme_mask)
            if leaf is not None:
                return PageMapping(canonical(vaddr, levels), leaf[0], leaf[1], entry)
            if depth + 1 < len(shifts):
                found = walk(entry & ADDR_4K & ~sme_mask, depth + 1, vaddr, on_start_path and index == first)
                if found is not None:
                    return found
        return None

    return walk(pgd_paddr & ADDR_4K, 0, 0, True)


@dataclass(frozen=True, slots=True)
class X86_64Space:
    """An x86_64 kernel: image at ``__START_KERNEL_map`` shifted by phys_base; everything else by a walk."""

    phys_base: int
    kernel_offset: int | None
    root_paddr: int | None
    levels: int = 4
    sme_mask: int = 0
    image_size: int = KERNEL_IMAGE_MAX
    arch: str = NAME
    min_page_size: int = MIN_PAGE_SIZE

    def image_paddr(self, vaddr: int) -> int:
        return kphys(vaddr, self.phys_base)

    def rule_paddr(self, vaddr: int) -> int | None:
        if START_KERNEL_MAP <= vaddr < START_KERNEL_MAP + self.image_size:
            return self.image_paddr(vaddr)
        return None

    def walk(self, read: ReadFn, vaddr: int) -> int | None:
        if self.root_paddr is None:
            return None
        return translate(read, self.root_paddr, vaddr, levels=self.levels, sme_mask=self.sme_mask)

    def linear_probe(self) -> int | None:
        return None  # page_offset_base is randomised and not in VMCOREINFO: no fixed linear rule to check

    def describe(self) -> list[str]:
        root = "unknown" if self.root_paddr is None else f"{self.root_paddr:#x}"
        return [f"x86_64: phys_base {self.phys_base:#x}, {self.levels}-level tables at PA {root}"]


# the guest's NUMBER(phys_base) is parsed base 16 (QEMU's bug, qemu-dumps.md §6.1)
# and a first vCPU not in long mode makes the dump EM_386 (qemu-dumps.md §4)
QEMU_TARGET = QemuTarget(
    block_size=4096,
    machine_uname="x86_64",
    also_dumps=("i386",),
    phys_base_key="NUMBER(phys_base)",
    cpu_state_notes=True,
)


@dataclass(frozen=True)
class X86_64(ArchBasics):
    """The x86_64 architecture (its instance is ``ARCH``)."""

    abis: ClassVar[tuple[Abi, Abi]] = (LP64_LE, LP64_BE)
    prstatus_layout: ClassVar[Layout[Any]] = ELF_PRSTATUS_X86_64
    name: str = NAME
    e_machines: frozenset[int] = frozenset({EM_X86_64})
    machines: tuple[str, ...] = ("x86_64",)
    prstatus_size: int = 336
    word_size: int = 8
    qemu: QemuTarget = QEMU_TARGET
    phys_base_meaning: str = "NUMBER(phys_base)"
    detect_methods: tuple[str, ...] = (
        "vmcoreinfo_note",
        "cr3_walk",
        "vmcoreinfo_scan",
        "idt_gate",
        "elf_text_load",
        "banner",
    )
    phys_base_key: str | None = "NUMBER(phys_base)"
    vmcoreinfo_keys: tuple[str, ...] = (
        "NUMBER(phys_base)",
        "SYMBOL(phys_base)",
        "SYMBOL(init_top_pgt)",
        "NUMBER(pgtable_l5_enabled)",
        "NUMBER(KERNEL_IMAGE_SIZE)",
    )
    link_text: int = DEFAULT_LINK_TEXT

    def user_mode(self, regs: dict[str, int]) -> bool | None:
        return None if "cs" not in regs else regs["cs"] & 3 == 3  # CPL 3 (the selector's RPL bits)

    def header_phys_base(self, info: VmcoreInfo) -> int | None:
        return info.phys_base

    def kernel_offset(self, info: VmcoreInfo) -> int | None:
        return info.kernel_offset

    def elf_load_vaddr(self, paddr: int, size: int) -> int | None:
        return None  # readers translate through the kernel's page tables; QEMU's p_vaddr is kept

    def vmcoreinfo_evidence(self, info: VmcoreInfo) -> list[str]:
        lines = []
        pb = info.phys_base
        if pb is not None:
            lines.append(f"NUMBER(phys_base)={to_s64(pb)} → {pb:#x}")
        offset, stext = info.kernel_offset, info.symbol("_stext")
        if offset is not None:
            lines.append(f"KERNELOFFSET={offset:x}")
            if stext is not None:
                link = (stext - offset) & U64_MASK
                what = "default link address" if link == self.link_text else f"not the default {self.link_text:#x}"
                lines.append(f"SYMBOL(_stext) - KERNELOFFSET = {link:#x} ({what})")
        return lines

    def kernel_space(self, info: VmcoreInfo, *, phys_base: int | None = None) -> X86_64Space:
        pb = phys_base if phys_base is not None else info.phys_base
        if pb is None:
            raise UnsupportedError("VMCOREINFO has no NUMBER(phys_base) (kernel < 4.10): give a phys_base",
                                   field="NUMBER(phys_base)")  # fmt: skip
        pgd = info.symbol("init_top_pgt") or info.symbol("swapper_pg_dir")
        size = info.number("KERNEL_IMAGE_SIZE") or KERNEL_IMAGE_MAX
        return X86_64Space(
            phys_base=pb & U64_MASK,
            kernel_offset=info.kernel_offset,
            root_paddr=None if pgd is None else kphys(pgd, pb),
            levels=5 if info.number("pgtable_l5_enabled") == 1 else 4,
            sme_mask=info.number("sme_mask") or 0,
            image_size=min(size, KERNEL_IMAGE_MAX) if size > 0 else KERNEL_IMAGE_MAX,
        )


ARCH = X86_64()
