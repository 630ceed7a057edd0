"""Cheap hints that a dump holds more than one kernel: which vCPUs run which kernel image.

A few page-table reads per vCPU, from the dump's CPU notes (arch-kernels-and-introspection.md §3): ``info`` and
``fix`` use them to decide whether the full search of memory for every kernel (kernels.py) is needed at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from kdfix.arch import Arch, KernelSpace, recognise
from kdfix.arch.x86_64 import WalkBudgetExceeded, find_first_mapping
from kdfix.detect.cr3_walk import iter_qemu_cpu_states, pgd_choices
from kdfix.errors import KdfixError
from kdfix.format.constants import START_KERNEL_MAP
from kdfix.model import DumpModel
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.memory import PhysicalMemory
from kdfix.units import U64_MASK

ReadFn = Callable[[int, int], bytes]

# QEMU's arm64 dumps have no TTBR (arch-kernels-and-introspection.md §1.6), so there the roles rest on the core
# header and the reservation alone. The walk itself is the kernel's arch (KernelSpace.walk from another root).


@dataclass(frozen=True, slots=True)
class CpuRoot:
    """The page-table roots a vCPU may be using (with PTI, CR3 may name the user half: both are tried)."""

    cpu: int
    roots: tuple[int, ...]
    levels: int


def cpu_roots(model: DumpModel) -> list[CpuRoot]:
    """The page-table root of every vCPU with paging on, from the dump's CPU notes."""
    return [CpuRoot(c.cpu, tuple(pgd_choices(c.cr3)), c.levels) for c in iter_qemu_cpu_states(model) if c.paging]


def kernel_space(model: DumpModel, info: VmcoreInfo) -> tuple[Arch, KernelSpace] | None:
    """The architecture and address space of the kernel ``info`` describes, or None when they cannot be told."""
    found = recognise(model, info)
    if found is None:
        return None
    try:
        return found.arch, found.arch.kernel_space(info)
    except KdfixError:
        return None


def cpu_runs(read: ReadFn, root: CpuRoot, space: KernelSpace, stext: int) -> bool:
    """True when the tables at ``root`` map the kernel's ``_stext`` to that kernel's own physical ``_stext``."""
    expected = space.image_paddr(stext)
    for pgd in root.roots:
        try:
            moved = replace(space, root_paddr=pgd)  # type: ignore[type-var]
            if moved.walk(read, stext) == expected:
                return True
        except (KdfixError, TypeError):
            continue
    return False


def foreign_cpus(model: DumpModel, memory: PhysicalMemory, vmcoreinfo: bytes) -> list[int] | None:
    """vCPUs whose page tables do not map the kernel ``vmcoreinfo`` describes: they run another kernel.

    Cheap (a few page-table reads per vCPU): ``fix`` and ``info`` use it to decide whether a dump that carries
    VMCOREINFO needs the full search for other kernels. None when the dump has no usable CPU roots.
    """
    info = VmcoreInfo.parse(vmcoreinfo)
    roots, known, stext = cpu_roots(model), kernel_space(model, info), info.symbol("_stext")
    if known is None or stext is None or not roots:
        return None
    return [r.cpu for r in roots if not cpu_runs(memory.read, r, known[1], stext)]


def cpu_image_bases(model: DumpModel, memory: PhysicalMemory) -> set[int]:
    """The distinct phys_base values the vCPUs' page tables imply (first kernel-image mapping, §3C); cheap."""
    bases: set[int] = set()
    for root in cpu_roots(model):
        for pgd in root.roots:
            try:
                m = find_first_mapping(memory.read, pgd, levels=root.levels, skipped=[])
            except (WalkBudgetExceeded, KdfixError):
                continue
            if m is not None:
                bases.add((m.paddr - (m.vaddr - START_KERNEL_MAP)) & U64_MASK)
                break
    return bases


def several_kernels_problem(model: DumpModel, memory: PhysicalMemory) -> str | None:
    """``info``'s problem line when vCPUs hint at another kernel (then every kernel is searched), else None.

    The hint is cheap: vCPUs that do not execute the dump's own VMCOREINFO kernel, or, without VMCOREINFO,
    vCPUs whose page tables map different kernel images. A capture kernel alone on a one-vCPU guest gives no
    hint without VMCOREINFO in the file; ``kdfix detect`` searches memory in any case.
    """
    text = model.vmcoreinfo
    hinted = bool(foreign_cpus(model, memory, text)) if text is not None else len(cpu_image_bases(model, memory)) > 1
    if not hinted:
        return None
    from kdfix.detect.kernels import find_kernels  # the full search, only when hinted

    return find_kernels(model, memory, file_vmcoreinfo=text).problem()
