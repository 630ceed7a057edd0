"""Method F: the kernel-text PT_LOAD of an ELF vmcore (makedumpfile get_phys_base_x86_64, §3F)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kdfix.detect.candidate import Attempt, Candidate, strategy
from kdfix.format.constants import START_KERNEL_MAP
from kdfix.model import DumpModel
from kdfix.read.memory import PhysicalMemory
from kdfix.units import U64_MASK

METHOD = "elf_text_load"


def _segments(model: DumpModel, memory: PhysicalMemory) -> Iterable[Any] | None:
    for owner in (memory, model, getattr(memory, "container", None)):
        for name in ("segments", "load_segments"):
            value = getattr(owner, name, None)
            if value is not None and not callable(value):
                return value
    return None


def _field(segment: Any, name: str) -> int | None:
    """``p_vaddr``/``p_paddr`` of a segment object or mapping (kdfix.read.elf names them ``vaddr``/``paddr``)."""
    for key in (name, name.removeprefix("p_")):
        value = segment.get(key) if isinstance(segment, Mapping) else getattr(segment, key, None)
        if isinstance(value, int):
            return value
    return None


@strategy(METHOD)
def find_by_elf_text_load(run: Attempt) -> Candidate | None:
    """phys_base = p_paddr - (p_vaddr - __START_KERNEL_map) of the first PT_LOAD with a kernel-image p_vaddr."""
    segments = _segments(run.model, run.memory)
    if segments is None:
        run.miss("no ELF PT_LOAD segments exposed (not an ELF vmcore)")
        return None
    for segment in segments:
        vaddr, paddr = _field(segment, "p_vaddr"), _field(segment, "p_paddr")
        if vaddr is None or paddr is None or vaddr < START_KERNEL_MAP:
            continue
        phys_base = (paddr - (vaddr - START_KERNEL_MAP)) & U64_MASK
        run.evidence.append(f"PT_LOAD p_vaddr {vaddr:#x} p_paddr {paddr:#x}")
        return run.candidate(phys_base)
    run.miss("no PT_LOAD with p_vaddr in the kernel image (QEMU ELF without paging?)")
    return None
