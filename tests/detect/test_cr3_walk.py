"""Method C: CR3 walks from QEMU notes (phys-base-and-kaslr.md §3C), PTI retry, disagreeing and unusable vCPUs."""

from __future__ import annotations

import dataclasses

from kdfix.detect.cr3_walk import find_by_cr3_walk, iter_qemu_cpu_states, pgd_choices
from kdfix.format.layout import LP64_LE
from kdfix.format.notes import QEMU_CPU_STATE
from kdfix.generate.synthetic import build_linux_image
from kdfix.notes.framing import Note

MiB = 1 << 20


def _with_states(model, change):
    """Rewrite each QEMU note through ``change(cpu_index, state) -> state``."""
    bound = QEMU_CPU_STATE.bind(LP64_LE, 1)
    notes, cpu = [], 0
    for note in model.notes:
        if note.name == b"QEMU":
            note = Note(note.name, note.type, bound.pack(change(cpu, bound.unpack(note.desc))))
            cpu += 1
        notes.append(note)
    return dataclasses.replace(model, notes=tuple(notes))


def test_pgd_choices():
    assert pgd_choices(0x2308000) == [0x2308000]
    assert pgd_choices(0x2309801) == [0x2309000, 0x2308000]


def test_walk_recovers_measured_values_on_every_cpu():
    model, memory, _truth = build_linux_image(
        memory_size=128 * MiB, cpus=2, phys_base=-0x32200000, kaslr_offset=0x35600000, vmcoreinfo_in_notes=False
    )
    cand = find_by_cr3_walk(model, memory)
    assert cand is not None
    assert (cand.phys_base, cand.kernel_offset) == (0xFFFFFFFFCDE00000, 0x35600000)
    assert sum("_text 0xffffffffb6600000 → PA 0x4400000" in e for e in cand.evidence) == 2
    assert "2 vCPU(s) agree" in cand.evidence


def test_pti_user_cr3_is_retried_with_bit_12_cleared():
    model, memory, truth = build_linux_image(memory_size=64 * MiB, phys_base=-4 * MiB, kaslr_offset=8 * MiB, pti=True)
    states = list(iter_qemu_cpu_states(model))
    assert states[0].cr3 & 0x1000 and states[0].cr4 & (1 << 17)
    cand = find_by_cr3_walk(model, memory)
    assert cand is not None and (cand.phys_base, cand.kernel_offset) == (truth.phys_base, truth.kaslr_offset)
    assert any("no kernel-image mapping" in e for e in cand.evidence)


def test_cpus_without_paging_are_skipped_and_disagreement_reported():
    model, memory, truth = build_linux_image(memory_size=64 * MiB, cpus=3)
    real_mode = _with_states(model, lambda cpu, s: dataclasses.replace(s, cr0=0x10) if cpu == 0 else s)
    cand = find_by_cr3_walk(real_mode, memory)
    assert cand is not None and cand.phys_base == truth.phys_base
    assert any("paging off" in e for e in cand.evidence)
    none_usable = _with_states(model, lambda cpu, s: dataclasses.replace(s, cr3=0))
    log: list[str] = []
    assert find_by_cr3_walk(none_usable, memory, log=log) is None
    assert log[-1].endswith("no vCPU page table maps the kernel image")


def test_no_qemu_notes_is_a_miss():
    model, memory, _ = build_linux_image(memory_size=64 * MiB)
    bare = dataclasses.replace(model, notes=tuple(n for n in model.notes if n.name != b"QEMU"))
    log: list[str] = []
    assert find_by_cr3_walk(bare, memory, log=log) is None and "no QEMU CPU notes" in log[0]
    short = dataclasses.replace(model, notes=(Note(b"QEMU", 0, b"\1" * 100),))
    assert find_by_cr3_walk(short, memory) is None
