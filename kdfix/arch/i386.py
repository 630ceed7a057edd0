"""i386 (x86_32): 2-level and PAE 3-level walks, the lowmem rule at PAGE_OFFSET, and the 144-byte PRSTATUS.

arch-kernels-and-introspection.md §2.1 (VMCOREINFO: no phys_base, no KERNELOFFSET), §2.2 (address space, KASLR
moves PA and VA together), §2.3 (walks), §2.5 (elf_prstatus), §2.6 (the 32-bit KDUMP header i386 tools read).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from kdfix.arch.base import MIN_PAGE_SIZE, NO_VADDR, ArchBasics, QemuTarget, ReadFn
from kdfix.errors import UnsupportedError
from kdfix.format.constants import EM_386
from kdfix.format.layout import I386_BE, I386_LE, Abi, Layout
from kdfix.format.notes import ELF_PRSTATUS_I386
from kdfix.notes.vmcoreinfo import VmcoreInfo

NAME = "i386"
PAGE_OFFSET = 0xC0000000  # VMSPLIT_3G (§2.2)
MAXMEM = 0x38000000  # lowmem ends at 896 MiB (§2.2)
LINK_TEXT = 0xC1000000  # PAGE_OFFSET + CONFIG_PHYSICAL_START (16 MiB); the nokaslr _stext (§2.2, measured)
U32_MASK = 0xFFFFFFFF
PRESENT = 1 << 0
PAGE_SIZE_BIT = 1 << 7
PAE_ADDR = 0x000FFFFFFFFFF000
PAE_ADDR_2M = 0x000FFFFFFFE00000
PAE_KEY = "CONFIG_X86_PAE"
PAE_LEVELS = ((30, 2), (21, 9), (12, 9))  # (index shift, index bits): PDPT, PD, PT (§2.3)


def lowmem_paddr(vaddr: int) -> int:
    """``VA - PAGE_OFFSET``, the direct map of lowmem and the kernel image (§2.2)."""
    return (vaddr - PAGE_OFFSET) & U32_MASK


def translate_2level(read: ReadFn, cr3: int, vaddr: int, *, pse: bool = True) -> int | None:
    """Non-PAE walk: PDE (4 MiB page with PSE, PSE-36 high bits) then PTE (§2.3)."""
    (pde,) = struct.unpack("<I", read((cr3 & 0xFFFFF000) + 4 * (vaddr >> 22 & 0x3FF), 4))
    if not pde & PRESENT:
        return None
    if pse and pde & PAGE_SIZE_BIT:
        high = (pde >> 13 & 0xFF) << 32  # PSE-36: PDE bits [20:13] are PA[39:32]
        return high | (pde & 0xFFC00000) | (vaddr & 0x3FFFFF)
    (pte,) = struct.unpack("<I", read((pde & 0xFFFFF000) + 4 * (vaddr >> 12 & 0x3FF), 4))
    if not pte & PRESENT:
        return None
    return (pte & 0xFFFFF000) | (vaddr & 0xFFF)


def translate_pae(read: ReadFn, cr3: int, vaddr: int) -> int | None:
    """PAE walk: PDPT (4 entries, 32-byte aligned), PD (2 MiB pages), PT (§2.3)."""
    pdpt_index, pd_index, pt_index = (vaddr >> shift & ((1 << bits) - 1) for shift, bits in PAE_LEVELS)
    (pdpte,) = struct.unpack("<Q", read((cr3 & 0xFFFFFFE0) + 8 * pdpt_index, 8))
    if not pdpte & PRESENT:
        return None
    (pde,) = struct.unpack("<Q", read((pdpte & PAE_ADDR) + 8 * pd_index, 8))
    if not pde & PRESENT:
        return None
    if pde & PAGE_SIZE_BIT:
        return (pde & PAE_ADDR_2M) | (vaddr & 0x1FFFFF)
    (pte,) = struct.unpack("<Q", read((pde & PAE_ADDR) + 8 * pt_index, 8))
    if not pte & PRESENT:
        return None
    return (pte & PAE_ADDR) | (vaddr & 0xFFF)


@dataclass(frozen=True, slots=True)
class I386Space:
    """An i386 kernel: image and lowmem at ``VA - 0xC0000000``; phys_base is always 0 (§2.2)."""

    kernel_offset: int | None
    root_paddr: int | None
    pae: bool
    phys_base: int = 0
    arch: str = NAME
    min_page_size: int = MIN_PAGE_SIZE

    def image_paddr(self, vaddr: int) -> int:
        return lowmem_paddr(vaddr)

    def rule_paddr(self, vaddr: int) -> int | None:
        return None  # vmalloc starts right after the end of RAM, which VMCOREINFO does not give: always walk

    def walk(self, read: ReadFn, vaddr: int) -> int | None:
        if self.root_paddr is None:
            return None
        if self.pae:
            return translate_pae(read, self.root_paddr, vaddr & U32_MASK)
        return translate_2level(read, self.root_paddr, vaddr & U32_MASK)

    def linear_probe(self) -> int | None:
        return None

    def describe(self) -> list[str]:
        root = "unknown" if self.root_paddr is None else f"{self.root_paddr:#x}"
        mode = "PAE 3-level" if self.pae else "2-level"
        return [f"i386: {mode} tables at PA {root}, kernel offset {self.kernel_offset or 0:#x}"]


# qemu-system-i386's ELF_MACHINE_UNAME; ELFCLASS64 as soon as a block ends at 4 GiB (qemu-dumps.md §3, §4)
QEMU_TARGET = QemuTarget(block_size=4096, machine_uname="i686", cpu_state_notes=True, elf_class=None)


@dataclass(frozen=True)
class I386(ArchBasics):
    """The i386 architecture (its instance is ``ARCH``)."""

    abis: ClassVar[tuple[Abi, Abi]] = (I386_LE, I386_BE)
    prstatus_layout: ClassVar[Layout[Any]] = ELF_PRSTATUS_I386
    name: str = NAME
    e_machines: frozenset[int] = frozenset({EM_386})
    machines: tuple[str, ...] = ("i686", "i586", "i486", "i386")
    prstatus_size: int = 144
    word_size: int = 4
    qemu: QemuTarget = QEMU_TARGET
    phys_base_meaning: str = "0 (i386 has no phys_base)"
    detect_methods: tuple[str, ...] = ("vmcoreinfo_note", "vmcoreinfo_scan")
    phys_base_key: str | None = None
    vmcoreinfo_keys: tuple[str, ...] = (PAE_KEY,)

    def user_mode(self, regs: dict[str, int]) -> bool | None:
        return None if "cs" not in regs else regs["cs"] & 3 == 3  # CPL 3 (the selector's RPL bits)

    def header_phys_base(self, info: VmcoreInfo) -> int | None:
        return 0

    def kernel_offset(self, info: VmcoreInfo) -> int | None:
        """``_stext`` minus its link address: 32-bit KASLR relocates PA and VA together (§2.2)."""
        stext = info.symbol("_stext")
        if stext is None:
            return None
        return info.kernel_offset if info.kernel_offset is not None else stext - LINK_TEXT

    def elf_load_vaddr(self, paddr: int, size: int) -> int | None:
        """Lowmem ranges at ``PAGE_OFFSET + paddr``, anything reaching 896 MiB none (§2.4)."""
        return PAGE_OFFSET + paddr if paddr + size <= MAXMEM else NO_VADDR

    def vmcoreinfo_evidence(self, info: VmcoreInfo) -> list[str]:
        stext, offset = info.symbol("_stext"), self.kernel_offset(info)
        mode = "PAE" if is_pae(info) else "no CONFIG_X86_PAE (2-level tables)"
        if stext is None or offset is None:
            return [f"{mode}; no SYMBOL(_stext)"]
        return [f"{mode}; SYMBOL(_stext)={stext:x} - link {LINK_TEXT:#x} = kernel offset {offset:#x}"]

    def kernel_space(self, info: VmcoreInfo, *, phys_base: int | None = None) -> I386Space:
        if info.page_size not in (None, MIN_PAGE_SIZE):
            raise UnsupportedError(f"i386 PAGESIZE {info.page_size} is not 4096", field="PAGESIZE")
        pgd = info.symbol("swapper_pg_dir")
        return I386Space(
            kernel_offset=self.kernel_offset(info),
            root_paddr=None if pgd is None else lowmem_paddr(pgd),
            pae=is_pae(info),
        )


def is_pae(info: VmcoreInfo) -> bool:
    """PAE kernels print ``CONFIG_X86_PAE=y`` (§2.1; makedumpfile's STR_CONFIG_X86_PAE)."""
    return (info.get(PAE_KEY) or "").strip() == "y"


ARCH = I386()
