"""detect(): methods recover drawn phys_base/KASLR exactly; foreign data gives no candidate and no exception."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdfix.detect.combine import STRATEGIES, detect
from kdfix.detect.cr3_walk import find_by_cr3_walk
from kdfix.detect.validate import accepted, confirmed, validate_candidate
from kdfix.detect.vmcoreinfo_note import find_by_vmcoreinfo_note
from kdfix.detect.vmcoreinfo_scan import find_by_vmcoreinfo_scan
from kdfix.errors import CodecError
from kdfix.generate.synthetic import SparseMemory, build_linux_image
from kdfix.model import DumpModel
from kdfix.notes.framing import Note
from kdfix.read.memory import DictMemory
from tests.detect.conftest import layouts

MiB = 1 << 20


def test_strategies_table_names_match_functions():
    assert [name for name, _ in STRATEGIES] == [
        "vmcoreinfo_note", "cr3_walk", "vmcoreinfo_scan", "idt_gate", "elf_text_load", "banner"
    ]  # fmt: skip
    for name, func in STRATEGIES:
        assert func.__name__ == f"find_by_{name}"


@given(layouts())
def test_without_vmcoreinfo_scan_and_cr3_each_recover_exactly(layout):
    """With vmcoreinfo_in_notes=False, the scan and the CR3 walk independently give the exact values; high."""
    model, memory, truth = build_linux_image(vmcoreinfo_in_notes=False, **layout)
    expected = (truth.phys_base, truth.kaslr_offset)
    scan = find_by_vmcoreinfo_scan(model, memory)
    walk = find_by_cr3_walk(model, memory)
    assert scan is not None and (scan.phys_base, scan.kernel_offset) == expected
    assert walk is not None and (walk.phys_base, walk.kernel_offset) == expected
    assert find_by_vmcoreinfo_note(model, memory) is None
    result = detect(model, memory)
    assert (result.phys_base, result.kernel_offset) == expected
    assert result.confidence == "high"
    assert result.vmcoreinfo == truth.vmcoreinfo


@settings(max_examples=15)
@given(layouts(max_mib=128))
def test_with_note_all_three_agree(layout):
    model, memory, truth = build_linux_image(vmcoreinfo_in_notes=True, **layout)
    note = find_by_vmcoreinfo_note(model, memory)
    assert note is not None and (note.phys_base, note.kernel_offset) == (truth.phys_base, truth.kaslr_offset)
    result = detect(model, memory, vmlinux_symbols=truth.vmlinux_symbols)
    assert result.method == "vmcoreinfo_note" and result.confidence == "high"
    assert (result.phys_base, result.kernel_offset) == (truth.phys_base, truth.kaslr_offset)
    methods = {c.method for c in result.candidates}
    assert {"vmcoreinfo_note", "cr3_walk", "vmcoreinfo_scan", "idt_gate"} <= methods
    assert any(e.startswith("agreeing methods: vmcoreinfo_note, cr3_walk, vmcoreinfo_scan") for e in result.evidence)


def test_validation_rejects_a_wrong_phys_base():
    """§4 checks: the truth passes; 2 MiB off fails utsname and page-table translation."""
    model, memory, _truth = build_linux_image(memory_size=64 * MiB, phys_base=-8 * MiB, kaslr_offset=6 * MiB)
    cand = find_by_vmcoreinfo_note(model, memory)
    checks = validate_candidate(cand, memory)
    assert confirmed(checks) and all(c.passed is not False for c in checks)
    wrong = dataclasses.replace(cand, phys_base=cand.phys_base + 2 * MiB)
    checks = {c.name: c for c in validate_candidate(wrong, memory)}
    assert checks["utsname"].passed is False and checks["pagetable"].passed is False
    assert not accepted(tuple(checks.values()))
    unaligned = dataclasses.replace(cand, phys_base=cand.phys_base + 4096)
    assert not accepted(validate_candidate(unaligned, memory))
    outside = dataclasses.replace(cand, phys_base=cand.phys_base + (1 << 40))
    checks = {c.name: c for c in validate_candidate(outside, memory)}
    assert checks["utsname"].passed is False and checks["pages_present"].passed is False


def test_header_misparse_does_not_mislead_detect():
    model, memory, truth = build_linux_image(
        memory_size=128 * MiB, phys_base=-0x32200000, kaslr_offset=0x35600000, qemu_header_bug=True
    )
    result = detect(model, memory)
    assert result.phys_base == truth.phys_base and result.confidence == "high"
    assert any("QEMU's hex misparse" in e for e in result.evidence)


def test_conflicting_note_loses_to_memory_evidence():
    """A VMCOREINFO note whose phys_base fails validation is rejected; CR3 and scan decide."""
    model, memory, truth = build_linux_image(memory_size=64 * MiB, phys_base=-8 * MiB)
    bad_text = truth.vmcoreinfo.replace(b"NUMBER(phys_base)=-8388608", b"NUMBER(phys_base)=0")
    bad = dataclasses.replace(model, vmcoreinfo=bad_text, notes=(*model.notes[:-1], Note(b"VMCOREINFO", 0, bad_text)))
    result = detect(bad, memory)
    assert result.phys_base == truth.phys_base and result.method == "cr3_walk"
    assert any("vmcoreinfo_note: rejected" in e for e in result.evidence)


def test_only_cr3_walk_gives_low_confidence():
    model, memory, truth = build_linux_image(memory_size=64 * MiB, vmcoreinfo_in_notes=False)
    pages = {p: memory.page(p) for p in memory.nonzero_pfns}
    del pages[truth.vmcoreinfo_data_paddr // 4096], pages[truth.vmcoreinfo_note_paddr // 4096]
    result = detect(model, SparseMemory(pages, memory.max_pfn, ranges=memory.ranges))
    assert result.phys_base == truth.phys_base and result.confidence == "low" and result.method == "cr3_walk"


@given(st.integers(0, 2**32), st.integers(1, 48), st.booleans())
def test_foreign_memory_yields_nothing_and_never_raises(seed, npages, with_cpu_notes):
    """Random pages (and random QEMU/CORE notes with CR3 inside them): no candidate, no exception."""
    rng = random.Random(seed)
    pages = {rng.randrange(64): rng.randbytes(4096) for _ in range(npages)}
    memory = DictMemory(pages, max_pfn=64)
    notes: tuple[Note, ...] = ()
    if with_cpu_notes:
        desc = bytearray(rng.randbytes(440))
        desc[0:8] = (1).to_bytes(4, "little") + (440).to_bytes(4, "little")
        desc[392:400] = (0x80050033).to_bytes(8, "little")
        desc[416:424] = (rng.choice(sorted(pages)) * 4096).to_bytes(8, "little")
        notes = (Note(b"CORE", 1, rng.randbytes(336)), Note(b"QEMU", 0, bytes(desc)))
    model = DumpModel(notes=notes, max_mapnr=64)
    result = detect(model, memory, vmlinux_symbols={"linux_banner": 0xFFFFFFFF81E000A0})
    assert result.phys_base is None and result.confidence == "none" and result.method == "none"
    assert result.evidence  # every miss has a reason


class FlakyMemory(SparseMemory):
    """Every page read fails to decode: the strategies must report, not raise."""

    def page(self, pfn):
        raise CodecError("corrupt", pfn=pfn)

    def page_head(self, pfn, size):
        raise CodecError("corrupt", pfn=pfn)


def test_undecodable_memory_is_reported_not_raised():
    model, memory, _ = build_linux_image(memory_size=64 * MiB)
    flaky = FlakyMemory({p: memory.page(p) for p in memory.nonzero_pfns}, memory.max_pfn, ranges=memory.ranges)
    result = detect(model, flaky)
    assert result.phys_base is None or result.confidence in ("low", "medium")
    assert any("rejected" in e or "no " in e for e in result.evidence)


@pytest.mark.parametrize("pti", [False, True])
def test_symbols_add_idt_gate_agreement(pti):
    model, memory, truth = build_linux_image(
        memory_size=96 * MiB, phys_base=-20 * MiB, kaslr_offset=24 * MiB, vmcoreinfo_in_notes=False, pti=pti
    )
    result = detect(model, memory, vmlinux_symbols=truth.vmlinux_symbols)
    assert result.phys_base == truth.phys_base and result.confidence == "high"
    assert {"cr3_walk", "vmcoreinfo_scan", "idt_gate", "banner"} <= {c.method for c in result.candidates}
