"""32-bit ARM: recognised and its 148-byte NT_PRSTATUS decoded; kernel address translation is not implemented.

arch-kernels-and-introspection.md §2.5 (elf_prstatus, ARM32 "pad" ABI), §2.6 (its KDUMP header ABI).
"""

from __future__ import annotations

from dataclasses import dataclass

from kdfix.arch.base import KernelSpace
from kdfix.errors import UnsupportedError
from kdfix.format.constants import EM_ARM
from kdfix.format.layout import ARM32_BE, ARM32_LE, Abi, BoundLayout
from kdfix.format.notes import ELF_PRSTATUS_ARM
from kdfix.notes.vmcoreinfo import VmcoreInfo

NAME = "arm"


@dataclass(frozen=True)
class Arm:
    """The 32-bit ARM architecture (its instance is ``ARCH``): notes only."""

    name: str = NAME
    e_machines: frozenset[int] = frozenset({EM_ARM})
    machines: tuple[str, ...] = ("armv7l", "armv6l", "armv5tel", "arm")
    prstatus_size: int = 148
    word_size: int = 4
    qemu_block_size: int = 4096
    phys_base_meaning: str = "PHYS_OFFSET"
    detect_methods: tuple[str, ...] = ()
    phys_base_key: str | None = None
    vmcoreinfo_keys: tuple[str, ...] = ()

    def kdump_abi(self, byte_order: str = "<") -> Abi:
        return ARM32_LE if byte_order == "<" else ARM32_BE

    def prstatus(self, byte_order: str = "<") -> BoundLayout:
        return ELF_PRSTATUS_ARM.bind(self.kdump_abi(byte_order))

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
