"""detect on aarch64 and i386 dumps laid out as QEMU writes them (synthetic guests of tests/arch/guests.py).

arch-kernels-and-introspection.md §1.6 (the note at a 4 KiB page inside a 64 KiB block; PHYS_OFFSET is the header
value), §1.3 (a linear-map VA checks PHYS_OFFSET), §2.1-§2.2 (i386: no phys_base, kernel offset from _stext).
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdfix.detect.candidate import Candidate
from kdfix.detect.combine import detect
from kdfix.detect.validate import accepted, validate_candidate
from kdfix.read.memory import DictMemory
from tests.arch.guests import aarch64_guest, i386_guest


@settings(max_examples=8, deadline=None)
@given(st.booleans(), st.integers(0, 10_000))
def test_aarch64_note_inside_64k_blocks(kaslr, seed):
    """The scan finds the note at a 4 KiB page that is not a block head and reports PHYS_OFFSET, validated."""
    model, memory, truth = aarch64_guest(kaslr=kaslr, seed=seed)
    assert truth.note_paddr % memory.page_size != 0
    result = detect(model, memory)
    assert (result.arch, result.phys_base, result.kernel_offset) == ("aarch64", truth.phys_base, truth.kernel_offset)
    assert result.vmcoreinfo is not None and result.vmcoreinfo.startswith(truth.vmcoreinfo)
    text = " | ".join(result.evidence)
    assert "pagetable: pass" in text and "linear_map: pass" in text
    assert "not a method for aarch64" in text  # the x86_64 methods did not run


def test_aarch64_text_copy_is_the_fallback_without_the_note():
    """No note buffer in memory: the kernel's vmcoreinfo_data text page (OSRELEASE= at a page head) still tells."""
    model, memory, truth = aarch64_guest(kaslr=True, seed=3)
    pages = {pfn: bytearray(memory.page(pfn)) for pfn in memory.dumped.iter_set()}
    block, off = divmod(truth.note_paddr, memory.page_size)
    pages[block][off : off + 4096] = bytes(4096)  # the note is gone
    text_pa = truth.note_paddr + 0x5000
    tb, to = divmod(text_pa, memory.page_size)
    pages.setdefault(tb, bytearray(memory.page_size))[to : to + len(truth.vmcoreinfo)] = truth.vmcoreinfo
    memory2 = DictMemory({p: bytes(v) for p, v in pages.items()}, page_size=memory.page_size)
    result = detect(model, memory2)
    assert result.phys_base == truth.phys_base and result.method == "vmcoreinfo_scan"
    assert any(f"text page {text_pa:#x}" in e for e in result.evidence)


def test_aarch64_ram_base_is_rejected_under_kaslr():
    """QEMU's header value (the RAM base) is wrong under KASLR: the linear-map walk refutes it (§1.4)."""
    _model, memory, truth = aarch64_guest(kaslr=True, seed=11)
    wrong = Candidate("header", 0x40000000, truth.kernel_offset, truth.vmcoreinfo, arch="aarch64")
    checks = {c.name: c for c in validate_candidate(wrong, memory)}
    assert checks["linear_map"].passed is False and not accepted(tuple(checks.values()))
    right = dataclasses.replace(wrong, phys_base=truth.phys_base)
    assert accepted(validate_candidate(right, memory))


def test_aarch64_note_in_the_dump():
    """With -device vmcoreinfo the note is in the file: two methods agree, high confidence."""
    model, memory, truth = aarch64_guest(kaslr=True, seed=2, note_in_dump=True)
    result = detect(model, memory)
    assert result.phys_base == truth.phys_base and result.confidence == "high"


@pytest.mark.parametrize("pae", [True, False])
@pytest.mark.parametrize("kaslr", [True, False])
def test_i386_phys_base_zero_and_offset_from_stext(pae, kaslr):
    model, memory, truth = i386_guest(kaslr=kaslr, pae=pae, seed=7)
    result = detect(model, memory)
    assert (result.arch, result.phys_base, result.kernel_offset) == ("i386", 0, truth.kernel_offset)
    assert any("pagetable: pass" in e and "i386 walk" in e for e in result.evidence)


def test_unknown_architecture_runs_only_generic_methods():
    """Nothing tells the architecture and memory holds nothing: no x86_64 method is tried, detect finds nothing."""
    from kdfix.model import DumpModel

    result = detect(DumpModel(max_mapnr=4), DictMemory({0: bytes(4096)}))
    assert not result.found and result.arch is None
    assert any("architecture is unknown" in e for e in result.evidence)
