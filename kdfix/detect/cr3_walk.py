"""Method C: walk each vCPU's CR3 from the QEMU notes to the first kernel-image mapping (phys-base-and-kaslr.md §3C)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from kdfix.arch.x86_64 import CR0_PG, CR4_LA57, WalkBudgetExceeded, find_first_mapping
from kdfix.detect.candidate import Attempt, Candidate, strategy
from kdfix.errors import KdfixError
from kdfix.format.constants import DEFAULT_LINK_TEXT, NOTE_NAME_QEMU, START_KERNEL_MAP
from kdfix.format.layout import LP64_LE
from kdfix.format.notes import QEMU_CPU_STATE, QEMU_CPU_STATE_SIZES
from kdfix.model import DumpModel
from kdfix.read.memory import PhysicalMemory
from kdfix.units import U64_MASK

METHOD = "cr3_walk"
KERNEL_IMAGE_MAX = 1 << 30


@dataclass(frozen=True, slots=True)
class CpuState:
    """The control registers and IDT base of one vCPU, from its QEMU note."""

    cpu: int
    cr0: int
    cr3: int
    cr4: int
    idt_base: int
    rip: int

    @property
    def paging(self) -> bool:
        """Paging is on (CR0.PG) and CR3 is set."""
        return self.cr3 != 0 and bool(self.cr0 & CR0_PG)

    @property
    def levels(self) -> int:
        """Page-table levels: 5 with CR4.LA57, else 4."""
        return 5 if self.cr4 & CR4_LA57 else 4


def iter_qemu_cpu_states(model: DumpModel) -> Iterator[CpuState]:
    """Yield each QEMU note's registers, in note order; notes of unknown size are skipped."""
    sizes = {size: version for version, size in QEMU_CPU_STATE_SIZES.items()}
    cpu = 0
    for note in model.notes:
        if not note.name.startswith(NOTE_NAME_QEMU) or note.type != 0:
            continue
        version = sizes.get(len(note.desc))
        if version is None:
            continue
        try:
            state = QEMU_CPU_STATE.bind(LP64_LE, version).unpack(note.desc)
        except KdfixError:
            continue
        yield CpuState(cpu, state.cr0, state.cr3, state.cr4, state.idt.base, state.rip)
        cpu += 1


def sme_mask_of(model: DumpModel) -> int:
    """VMCOREINFO's NUMBER(sme_mask), or 0 (page-table entries carry it on SME guests)."""
    info = model.parsed_vmcoreinfo()
    return (info.number("sme_mask") if info is not None else None) or 0


def pgd_choices(cr3: int) -> list[int]:
    """``cr3 & ~0xFFF`` first, then with bit 12 cleared (the kernel half of a PTI pair)."""
    first = cr3 & ~0xFFF & U64_MASK
    second = first & ~0x1000
    return [first] if first == second else [first, second]


def _walk_cpu(memory: PhysicalMemory, cpu: CpuState, sme_mask: int, evidence: list[str]) -> tuple[int, int] | None:
    """(runtime _text VA, its PA) for one vCPU, or None."""
    levels = cpu.levels
    for pgd in pgd_choices(cpu.cr3):
        skipped: list[str] = []
        try:
            mapping = find_first_mapping(memory.read, pgd, levels=levels, sme_mask=sme_mask, skipped=skipped)
        except WalkBudgetExceeded as exc:
            evidence.append(f"cpu{cpu.cpu} PGD {pgd:#x}: {exc}")
            continue
        if mapping is None or mapping.vaddr - START_KERNEL_MAP >= KERNEL_IMAGE_MAX:
            evidence.append(f"cpu{cpu.cpu} PGD {pgd:#x} ({levels}-level): no kernel-image mapping")
            continue
        phys_base = (mapping.paddr - (mapping.vaddr - START_KERNEL_MAP)) & U64_MASK
        if phys_base % (1 << 21):
            evidence.append(f"cpu{cpu.cpu} PGD {pgd:#x}: first mapping gives unaligned phys_base {phys_base:#x}")
            continue
        evidence.append(
            f"cpu{cpu.cpu} CR3={cpu.cr3:#x} PGD {pgd:#x} ({levels}-level): _text {mapping.vaddr:#x} → "
            f"PA {mapping.paddr:#x} ({mapping.size >> 10} KiB page, entry {mapping.entry:#x})"
        )
        return mapping.vaddr, mapping.paddr
    return None


@strategy(METHOD)
def find_by_cr3_walk(run: Attempt) -> Candidate | None:
    """phys_base and KERNELOFFSET from the lowest kernel-image mapping seen by the vCPUs' page tables."""
    sme_mask = sme_mask_of(run.model)
    evidence = run.evidence
    results: list[tuple[int, int]] = []
    cpus = list(iter_qemu_cpu_states(run.model))
    if not cpus:
        run.miss("no QEMU CPU notes")
        return None
    for cpu in cpus:
        if not cpu.paging:
            evidence.append(f"cpu{cpu.cpu}: paging off or CR3 0 (CR0={cpu.cr0:#x}, CR3={cpu.cr3:#x})")
            continue
        found = _walk_cpu(run.memory, cpu, sme_mask, evidence)
        if found is not None:
            results.append(found)
    if not results:
        run.miss("no vCPU page table maps the kernel image", details=evidence)
        return None
    derived = [((pa - (va - START_KERNEL_MAP)) & U64_MASK, va) for va, pa in results]
    (phys_base, text_vaddr), votes = Counter(derived).most_common(1)[0]
    if votes != len(derived):
        evidence.append(f"vCPUs disagree: {len(set(derived))} distinct results; {votes} of {len(derived)} agree")
    else:
        evidence.append(f"{votes} vCPU(s) agree")
    offset = text_vaddr - DEFAULT_LINK_TEXT
    kernel_offset = offset if 0 <= offset < KERNEL_IMAGE_MAX else None
    return run.candidate(phys_base, kernel_offset)
