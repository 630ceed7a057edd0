"""Typed view of NT_PRSTATUS notes, laid out per architecture (kdfix.arch; notes-and-vmcoreinfo.md §2,
arch-kernels-and-introspection.md §1.8, §2.5): the desc size tells which."""

from __future__ import annotations

from typing import Any

from kdfix.errors import FormatError
from kdfix.format.layout import Abi


def prstatus_layout(size: int, abi: Abi) -> Any:
    """The bound elf_prstatus layout of the architecture whose NT_PRSTATUS is ``size`` bytes (kdfix.arch)."""
    from kdfix.arch import ARCHES

    for arch in ARCHES.values():
        if arch.prstatus_size == size:
            return arch.prstatus(abi.byte_order)
    known = ", ".join(f"{a.name} {a.prstatus_size}" for a in ARCHES.values())
    raise FormatError(f"NT_PRSTATUS desc of {size} bytes matches no known architecture ({known})",
                      field="note.n_descsz")  # fmt: skip


def parse_prstatus(desc: bytes, abi: Abi) -> Any:
    """Decode an NT_PRSTATUS desc; its size picks the architecture's layout."""
    return prstatus_layout(len(desc), abi).unpack(desc, what="elf_prstatus")


def prstatus_registers(record: Any) -> dict[str, int]:
    """The general registers of a decoded prstatus, in pr_reg order."""
    regs = record.pr_reg
    return {name: getattr(regs, name) for name in regs.__dataclass_fields__}


def prstatus_arch(desc: bytes) -> str | None:
    """The architecture whose NT_PRSTATUS has this desc's size, or None."""
    from kdfix.arch import ARCHES

    return next((a.name for a in ARCHES.values() if a.prstatus_size == len(desc)), None)
