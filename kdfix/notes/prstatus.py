"""Typed view of NT_PRSTATUS notes: x86_64 (336 B) and i386 (144 B) elf_prstatus (notes-and-vmcoreinfo.md §2)."""

from __future__ import annotations

from typing import Any

from kdfix.errors import FormatError
from kdfix.format.layout import I386_BE, I386_LE, LP64_BE, LP64_LE, Abi
from kdfix.format.notes import ELF_PRSTATUS_I386, ELF_PRSTATUS_X86_64

PRSTATUS_X86_64_SIZE = 336
PRSTATUS_I386_SIZE = 144


def prstatus_layout(size: int, abi: Abi) -> Any:
    """The bound elf_prstatus layout for a desc of ``size`` bytes, in ``abi``'s byte order."""
    little = abi.byte_order == "<"
    if size == PRSTATUS_X86_64_SIZE:
        return ELF_PRSTATUS_X86_64.bind(LP64_LE if little else LP64_BE)
    if size == PRSTATUS_I386_SIZE:
        return ELF_PRSTATUS_I386.bind(I386_LE if little else I386_BE)
    raise FormatError(
        f"NT_PRSTATUS desc of {size} bytes is neither x86_64 ({PRSTATUS_X86_64_SIZE}) nor i386 ({PRSTATUS_I386_SIZE})",
        field="note.n_descsz",
    )


def parse_prstatus(desc: bytes, abi: Abi) -> Any:
    """Decode an NT_PRSTATUS desc; the layout (x86_64 or i386) is chosen by its size."""
    return prstatus_layout(len(desc), abi).unpack(desc, what="elf_prstatus")


def prstatus_registers(record: Any) -> dict[str, int]:
    """The general registers of a decoded prstatus, in pr_reg order."""
    regs = record.pr_reg
    return {name: getattr(regs, name) for name in regs.__dataclass_fields__}


def is_x86_64(record: Any) -> bool:
    return hasattr(record.pr_reg, "rip")
