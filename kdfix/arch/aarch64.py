"""aarch64 (arm64): translation-table walks for 4K/16K/64K granules, the image and linear-map rules, PRSTATUS.

arch-kernels-and-introspection.md §1.1 (VMCOREINFO keys), §1.2 (virtual layout), §1.3 (VA→PA), §1.4 (KASLR),
§1.5 (the walk), §1.6 (what readers take: header phys_base = PHYS_OFFSET), §1.8 (NT_PRSTATUS).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from kdfix.arch.base import MIN_PAGE_SIZE, ArchBasics, QemuTarget, ReadFn
from kdfix.errors import UnsupportedError
from kdfix.format.constants import EM_AARCH64
from kdfix.format.layout import LP64_BE, LP64_LE, Abi, Layout
from kdfix.format.notes import ELF_PRSTATUS_AARCH64
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.units import U64_MASK

NAME = "aarch64"
GRANULES = {4096: 12, 16384: 14, 65536: 16}
DESC_VALID = 1 << 0
DESC_TABLE = 1 << 1  # with VALID: a table (levels above the last) or a page (the last level)
OA_TOP_BIT = 48  # output address bits [47:PAGE_SHIFT] for 48-bit PAs
LPA_HIGH_BITS = 0xF000  # 64K pages with 52-bit PAs: PA[51:48] in descriptor bits [15:12] (§1.5)
LPA_SHIFT = 36
IMAGE_TEXT_OFFSET = 0x10000  # _text = _stext - 0x10000 on 6.1 (§1.1, measured)


def _s64(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


def level_shifts(page_shift: int, va_bits: int) -> tuple[int, ...]:
    """Index shifts from the top level down, e.g. (39, 30, 21, 12) for 4K pages and 48-bit VAs (§1.5)."""
    if page_shift not in GRANULES.values():
        raise ValueError(f"page shift {page_shift} is not a 4K, 16K or 64K granule")
    per_level = page_shift - 3
    if not page_shift < va_bits <= 52:
        raise ValueError(f"VA size {va_bits} out of range")
    levels = -(-(va_bits - page_shift) // per_level)
    return tuple(page_shift + per_level * (levels - 1 - i) for i in range(levels))


def output_address(desc: int, page_shift: int, lpa: bool) -> int:
    """The output address bits of a descriptor: [47:PAGE_SHIFT], plus PA[51:48] from [15:12] with LPA (§1.5)."""
    oa = desc & ((1 << OA_TOP_BIT) - 1) & ~((1 << page_shift) - 1)
    if lpa and page_shift == 16:
        oa |= (desc & LPA_HIGH_BITS) << LPA_SHIFT
    return oa


def translate(
    read: ReadFn, root_paddr: int, vaddr: int, *, page_shift: int = 12, va_bits: int = 48, lpa: bool = False
) -> int | None:
    """Physical address of ``vaddr`` through the tables at ``root_paddr``; None if not mapped (§1.5).

    A table that cannot be read raises the reader's KdfixError.
    """
    shifts = level_shifts(page_shift, va_bits)
    table = root_paddr
    for depth, shift in enumerate(shifts):
        width = (va_bits - shift) if depth == 0 else (page_shift - 3)
        index = (vaddr >> shift) & ((1 << width) - 1)
        (desc,) = struct.unpack("<Q", read(table + 8 * index, 8))
        if not desc & DESC_VALID:
            return None
        last = depth == len(shifts) - 1
        if last or not desc & DESC_TABLE:  # a page, or a block (bits [1:0] = 01) above the last level
            if not last and depth == 0 and len(shifts) == 4:
                return None  # no L0 blocks without LPA2
            size = 1 << shift
            return (output_address(desc, page_shift, lpa) & ~(size - 1)) + (vaddr & (size - 1))
        table = output_address(desc, page_shift, lpa)
    return None  # pragma: no cover - the last level always returns


@dataclass(frozen=True, slots=True)
class Aarch64Space:
    """An arm64 kernel: image at ``VA - kimage_voffset``, linear map at ``VA - PAGE_OFFSET + PHYS_OFFSET``."""

    phys_base: int  # PHYS_OFFSET (memstart_addr), u64 two's complement
    kernel_offset: int | None
    root_paddr: int | None
    kimage_voffset: int
    page_shift: int
    va_bits: int  # VA_BITS (compile time)
    vabits_actual: int  # 64 - TCR_EL1_T1SZ, else VA_BITS
    page_offset: int
    page_end: int
    lpa: bool = False
    mem_section: int | None = None
    arch: str = NAME
    min_page_size: int = MIN_PAGE_SIZE

    def image_paddr(self, vaddr: int) -> int:
        return (vaddr - self.kimage_voffset) & U64_MASK

    def is_linear(self, vaddr: int) -> bool:
        return self.page_offset <= vaddr < self.page_end

    def rule_paddr(self, vaddr: int) -> int | None:
        if self.is_linear(vaddr):
            return (vaddr - self.page_offset + self.phys_base) & U64_MASK
        return None

    def walk(self, read: ReadFn, vaddr: int) -> int | None:
        if self.root_paddr is None:
            return None
        return translate(read, self.root_paddr, vaddr, page_shift=self.page_shift, va_bits=self.vabits_actual,
                         lpa=self.lpa)  # fmt: skip

    def linear_probe(self) -> int | None:
        return self.mem_section if self.mem_section is not None and self.is_linear(self.mem_section) else None

    def describe(self) -> list[str]:
        root = "unknown" if self.root_paddr is None else f"{self.root_paddr:#x}"
        return [
            f"aarch64: PHYS_OFFSET {self.phys_base:#x}, kimage_voffset {self.kimage_voffset:#x}, "
            f"{1 << self.page_shift >> 10} KiB pages, VA_BITS {self.va_bits} (actual {self.vabits_actual}), "
            f"PAGE_OFFSET {self.page_offset:#x}, swapper_pg_dir at PA {root}"
        ]


def virtual_layout(stext: int | None, va_bits: int, vabits_actual: int) -> tuple[int, int]:
    """(PAGE_OFFSET, PAGE_END) for the flipped (≥ 5.4) or the old layout, as makedumpfile decides (§1.2)."""
    page_end = (-(1 << (min(va_bits, 48) - 1))) & U64_MASK
    if stext is None or stext > page_end:
        return (-(1 << vabits_actual)) & U64_MASK, page_end
    return (U64_MASK << (va_bits - 1)) & U64_MASK, 1 << 64


# 64 KiB blocks whatever the guest's page size, phys_base = lowest RAM block or NUMBER(PHYS_OFFSET), no QEMU
# CPU notes, no ELF_MACHINE_UNAME (qemu-dumps.md §3, §7; §1.6 here)
QEMU_TARGET = QemuTarget(block_size=65536, phys_base_key="NUMBER(PHYS_OFFSET)", phys_base_is_ram_start=True)


@dataclass(frozen=True)
class Aarch64(ArchBasics):
    """The aarch64 architecture (its instance is ``ARCH``)."""

    abis: ClassVar[tuple[Abi, Abi]] = (LP64_LE, LP64_BE)
    prstatus_layout: ClassVar[Layout[Any]] = ELF_PRSTATUS_AARCH64
    name: str = NAME
    e_machines: frozenset[int] = frozenset({EM_AARCH64})
    machines: tuple[str, ...] = ("aarch64", "arm64")
    prstatus_size: int = 392
    word_size: int = 8
    qemu: QemuTarget = QEMU_TARGET
    phys_base_meaning: str = "NUMBER(PHYS_OFFSET)"
    detect_methods: tuple[str, ...] = ("vmcoreinfo_note", "vmcoreinfo_scan")
    phys_base_key: str | None = "NUMBER(PHYS_OFFSET)"
    vmcoreinfo_keys: tuple[str, ...] = (
        "NUMBER(kimage_voffset)",
        "NUMBER(PHYS_OFFSET)",
        "NUMBER(TCR_EL1_T1SZ)",
        "NUMBER(KERNELPACMASK)",
    )

    def user_mode(self, regs: dict[str, int]) -> bool | None:
        return None if "pstate" not in regs else regs["pstate"] & 0xF == 0  # PSTATE.M[3:0] = EL0t

    def header_phys_base(self, info: VmcoreInfo) -> int | None:
        value = info.number("PHYS_OFFSET")
        return None if value is None else value & U64_MASK

    def kernel_offset(self, info: VmcoreInfo) -> int | None:
        return info.kernel_offset

    def elf_load_vaddr(self, paddr: int, size: int) -> int | None:
        return None  # readers translate through the kernel's page tables; QEMU's p_vaddr is kept

    def vmcoreinfo_evidence(self, info: VmcoreInfo) -> list[str]:
        names = ("PHYS_OFFSET", "kimage_voffset", "VA_BITS", "TCR_EL1_T1SZ")
        shown = [f"NUMBER({n})={info.get(f'NUMBER({n})')}" for n in names if info.get(f"NUMBER({n})") is not None]
        offset = info.kernel_offset
        if offset is not None:
            shown.append(f"KERNELOFFSET={offset:x}")
        if info.page_size is not None:
            shown.append(f"PAGESIZE={info.page_size}")
        return [" ".join(shown)] if shown else []

    def kernel_space(self, info: VmcoreInfo, *, phys_base: int | None = None) -> Aarch64Space:
        voffset = info.number("kimage_voffset")
        if voffset is None:
            raise UnsupportedError("arm64 VMCOREINFO has no NUMBER(kimage_voffset)", field="NUMBER(kimage_voffset)")
        offset = phys_base if phys_base is not None else self.header_phys_base(info)
        if offset is None:
            raise UnsupportedError("arm64 VMCOREINFO has no NUMBER(PHYS_OFFSET)", field="NUMBER(PHYS_OFFSET)")
        page_size = info.page_size or MIN_PAGE_SIZE
        if page_size not in GRANULES:
            raise UnsupportedError(f"PAGESIZE {page_size} is not a 4K, 16K or 64K granule", field="PAGESIZE")
        va_bits = info.number("VA_BITS") or 48
        t1sz = info.number("TCR_EL1_T1SZ")
        actual = 64 - t1sz if t1sz else va_bits
        if not GRANULES[page_size] < va_bits <= 52 or not GRANULES[page_size] < actual <= 52:
            raise UnsupportedError(f"VA_BITS {va_bits} (actual {actual}) out of range", field="NUMBER(VA_BITS)")
        stext = info.symbol("_stext")
        page_offset, page_end = virtual_layout(stext, va_bits, actual)
        pgd = info.symbol("swapper_pg_dir")
        voffset &= U64_MASK
        return Aarch64Space(
            phys_base=offset & U64_MASK,
            kernel_offset=info.kernel_offset,
            root_paddr=None if pgd is None else (pgd - voffset) & U64_MASK,
            kimage_voffset=voffset,
            page_shift=GRANULES[page_size],
            va_bits=va_bits,
            vabits_actual=actual,
            page_offset=page_offset,
            page_end=page_end,
            lpa=info.number("MAX_PHYSMEM_BITS") == 52,
            mem_section=info.symbol("mem_section"),
        )


def signed_phys_offset(value: int) -> int:
    """PHYS_OFFSET as the kernel's signed view (it wraps below 0 under KASLR, §1.4)."""
    return _s64(value & U64_MASK)


ARCH = Aarch64()
