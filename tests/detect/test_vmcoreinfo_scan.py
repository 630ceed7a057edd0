"""Method B: page-head scan for the kernel's VMCOREINFO, live copy chosen by validation (phys-base-and-kaslr.md §3B)."""

from __future__ import annotations

import struct

from kdfix.detect.vmcoreinfo_scan import find_by_vmcoreinfo_scan, iter_vmcoreinfo_pages, match_head
from kdfix.generate.synthetic import SparseMemory, build_linux_image
from kdfix.read.memory import DictMemory
from kdfix.units import to_u64

MiB = 1 << 20


def _with_pages(memory: SparseMemory, extra: dict[int, bytes]) -> SparseMemory:
    pages = {p: memory.page(p) for p in memory.nonzero_pfns} | extra
    return SparseMemory(pages, memory.max_pfn, ranges=memory.ranges)


def test_match_head_forms():
    assert match_head(b"OSRELEASE=6.1\n" + bytes(10), 4096) == "text"
    note = struct.pack("<III", 11, 100, 0) + b"VMCOREINFO\0\0"
    assert match_head(note, 4096) == "note"
    assert match_head(struct.pack("<III", 11, 0, 0) + b"VMCOREINFO\0\0", 4096) is None  # empty desc
    assert match_head(struct.pack("<III", 11, 5000, 0) + b"VMCOREINFO\0\0", 4096) is None  # desc > page
    assert match_head(struct.pack("<III", 11, 100, 1) + b"VMCOREINFO\0\0", 4096) is None  # wrong type
    assert match_head(bytes(24), 4096) is None


def test_scan_finds_both_forms_and_recovers_exact_values():
    model, memory, truth = build_linux_image(
        memory_size=96 * MiB, phys_base=-0x32200000, kaslr_offset=0x35600000, vmcoreinfo_in_notes=False
    )
    hits = list(iter_vmcoreinfo_pages(memory))
    assert {(h.pfn * 4096, h.form) for h in hits} == {
        (truth.vmcoreinfo_data_paddr, "text"),
        (truth.vmcoreinfo_note_paddr, "note"),
    }
    assert all(h.text == truth.vmcoreinfo for h in hits)
    cand = find_by_vmcoreinfo_scan(model, memory)
    assert cand is not None
    assert (cand.phys_base, cand.kernel_offset, cand.vmcoreinfo) == (
        truth.phys_base,
        truth.kaslr_offset,
        truth.vmcoreinfo,
    )


def test_stale_copy_before_the_live_one_is_ignored():
    """A VMCOREINFO from an earlier kernel (other phys_base/KASLR) on a lower page fails validation and is skipped."""
    model, memory, truth = build_linux_image(memory_size=96 * MiB, phys_base=-16 * MiB, vmcoreinfo_in_notes=False)
    stale = truth.vmcoreinfo.replace(b"NUMBER(phys_base)=-16777216", b"NUMBER(phys_base)=2097152")
    assert stale != truth.vmcoreinfo
    memory = _with_pages(memory, {0x101: stale.ljust(4096, b"\0")})
    assert next(iter_vmcoreinfo_pages(memory)).pfn == 0x101
    log: list[str] = []
    cand = find_by_vmcoreinfo_scan(model, memory, log=log)
    assert cand is not None and cand.phys_base == truth.phys_base
    assert any("stale or foreign copy" in line for line in cand.evidence)


def test_note_descsz_beyond_memory_and_garbage_are_skipped():
    model, memory, _ = build_linux_image(memory_size=64 * MiB, vmcoreinfo_in_notes=False)
    last = memory.max_pfn - 1
    bad_note = struct.pack("<III", 11, 4000, 0) + b"VMCOREINFO\0\0" + b"x" * 100
    garbage = b"OSRELEASE=\xff\xfe\n" + bytes(100)
    memory = _with_pages(memory, {last: bad_note.ljust(4096, b"\1"), 0x102: garbage.ljust(4096, b"\0")})
    cand = find_by_vmcoreinfo_scan(model, memory)
    assert cand is not None and cand.phys_base == to_u64(0)


def test_no_vmcoreinfo_in_memory_is_a_miss_with_reason():
    log: list[str] = []
    memory = DictMemory({i: bytes([i]) * 4096 for i in range(1, 9)})
    assert find_by_vmcoreinfo_scan(build_linux_image(memory_size=64 * MiB)[0], memory, log=log) is None
    assert "no page starts with" in log[0]


def test_page_head_and_is_zero_page_are_used_when_offered():
    """The scan asks page_head for heads and never decodes zero pages (SparseMemory offers both)."""
    _model, memory, _truth = build_linux_image(memory_size=64 * MiB, vmcoreinfo_in_notes=False)
    calls = {"page": 0, "head": 0}

    class Counting(SparseMemory):
        def page(self, pfn):
            calls["page"] += 1
            return super().page(pfn)

        def page_head(self, pfn, size):
            calls["head"] += 1
            return super().page_head(pfn, size)

    counting = Counting({p: memory.page(p) for p in memory.nonzero_pfns}, memory.max_pfn, ranges=memory.ranges)
    hits = list(iter_vmcoreinfo_pages(counting))
    assert len(hits) == 2
    assert calls["head"] == len(memory.nonzero_pfns)  # only non-zero pages
    assert calls["page"] <= 2 + 2  # heads only; full reads for the hits
