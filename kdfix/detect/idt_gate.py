"""Method D: IDT gate 0 through the cpu-entry-area alias, finished with vmlinux symbols (phys-base-and-kaslr.md §3D)."""

from __future__ import annotations

from kdfix.arch.x86_64 import translate
from kdfix.detect.candidate import Attempt, Candidate, strategy
from kdfix.detect.cr3_walk import iter_qemu_cpu_states, pgd_choices, sme_mask_of
from kdfix.errors import KdfixError
from kdfix.format.constants import START_KERNEL_MAP
from kdfix.format.x86 import GATE_SIZE, gate_handler
from kdfix.units import U64_MASK

METHOD = "idt_gate"
DIVIDE_ERROR_NAMES = ("asm_exc_divide_error", "divide_error")


@strategy(METHOD)
def find_by_idt_gate(run: Attempt) -> Candidate | None:
    """KERNELOFFSET = gate-0 handler - divide_error, phys_base from idt_table's physical address (needs vmlinux)."""
    sme_mask = sme_mask_of(run.model)
    memory = run.memory
    for cpu in iter_qemu_cpu_states(run.model):
        if not cpu.paging or cpu.idt_base == 0:
            continue
        for pgd in pgd_choices(cpu.cr3):
            try:
                idt_pa = translate(memory.read, pgd, cpu.idt_base, levels=cpu.levels, sme_mask=sme_mask)
                if idt_pa is None:
                    continue
                handler = gate_handler(memory.read(idt_pa, GATE_SIZE))
            except KdfixError:
                continue
            evidence = run.evidence
            evidence.append(f"cpu{cpu.cpu} IDTR {cpu.idt_base:#x} → PA {idt_pa:#x}, gate 0 handler {handler:#x}")
            symbols = run.vmlinux_symbols or {}
            divide = next((symbols[n] for n in DIVIDE_ERROR_NAMES if n in symbols), None)
            idt_table = symbols.get("idt_table")
            if divide is None or idt_table is None:
                run.miss(evidence[0] + " (needs vmlinux symbols idt_table and asm_exc_divide_error)")
                return None
            kernel_offset = (handler - divide) & U64_MASK
            phys_base = (idt_pa - (idt_table + kernel_offset - START_KERNEL_MAP)) & U64_MASK
            evidence.append(f"KERNELOFFSET = {handler:#x} - divide_error {divide:#x} = {kernel_offset:#x}")
            return run.candidate(phys_base, kernel_offset)
    run.miss("no vCPU with paging whose IDT base translates")
    return None
