"""32-bit ARM: recognised and its 148-byte NT_PRSTATUS decoded; kernel address translation is not implemented.

arch-kernels-and-introspection.md §2.5 (elf_prstatus, ARM32 "pad" ABI), §2.6 (its KDUMP header ABI).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from kdfix.arch.base import ArchBasics, KernelSpace, QemuTarget
from kdfix.errors import UnsupportedError
from kdfix.format.constants import EM_ARM
from kdfix.format.layout import ARM32_BE, ARM32_LE, Abi, Layout
from kdfix.format.notes import ELF_PRSTATUS_ARM
from kdfix.notes.vmcoreinfo import VmcoreInfo

NAME = "arm"


# 4 KiB blocks, ELFCLASS32 (so the 32-bit kdump headers), phys_base = lowest RAM block (qemu-dumps.md §3)
QEMU_TARGET = QemuTarget(block_size=4096, phys_base_is_ram_start=True, elf_class=32)


@dataclass(frozen=True)
class Arm(ArchBasics):
    """The 32-bit ARM architecture (its instance is ``ARCH``): notes only."""

    abis: ClassVar[tuple[Abi, Abi]] = (ARM32_LE, ARM32_BE)
    prstatus_layout: ClassVar[Layout[Any]] = ELF_PRSTATUS_ARM
    name: str = NAME
    e_machines: frozenset[int] = frozenset({EM_ARM})
    machines: tuple[str, ...] = ("armv7l", "armv6l", "armv5tel", "arm")
    prstatus_size: int = 148
    word_size: int = 4
    qemu: QemuTarget = QEMU_TARGET
    phys_base_meaning: str = "PHYS_OFFSET"
    detect_methods: tuple[str, ...] = ()
    phys_base_key: str | None = None
    vmcoreinfo_keys: tuple[str, ...] = ()

    def user_mode(self, regs: dict[str, int]) -> bool | None:
        return None if "cpsr" not in regs else regs["cpsr"] & 0x1F == 0x10  # CPSR.M = USR

    def header_phys_base(self, info: VmcoreInfo) -> int | None:
        return None

    def kernel_offset(self, info: VmcoreInfo) -> int | None:
        return info.kernel_offset

    def elf_load_vaddr(self, paddr: int, size: int) -> int | None:
        return None  # readers translate through the kernel's page tables; QEMU's p_vaddr is kept

    def vmcoreinfo_evidence(self, info: VmcoreInfo) -> list[str]:
        return []

    def kernel_space(self, info: VmcoreInfo, *, phys_base: int | None = None) -> KernelSpace:
        raise UnsupportedError("kernel address translation is not implemented for 32-bit ARM", field="arch")


ARCH = Arm()
