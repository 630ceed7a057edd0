"""The early-exit VMCOREINFO scan: its order covers every pfn once, it stops at the first agreeing copy, its KDUMP
head path agrees with per-page decoding, and a granule smaller than the dump's page finds buffers inside blocks."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.detect.candidate import Candidate
from kdfix.detect.vmcoreinfo_scan import (
    HEAD_SIZE,
    first_agreeing_copy,
    iter_page_heads,
    iter_vmcoreinfo_pages,
    scan_ranges,
)
from kdfix.format.constants import NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO
from kdfix.format.layout import LP64_LE
from kdfix.format.x86 import ZONE_STARTS
from kdfix.generate.synthetic import SparseMemory, build_linux_image
from kdfix.notes.framing import Note, pack_note
from kdfix.read.memory import DictMemory
from kdfix.read.probe import open_dump
from kdfix.write import write_kdump

MiB = 1 << 20


def _pages(max_pfn: int, page_size: int) -> DictMemory:
    """An empty memory of ``max_pfn`` pages (scan_ranges needs only its size)."""
    return DictMemory({}, page_size=page_size, max_pfn=max_pfn)


@given(
    st.integers(1, 1 << 22),
    st.sampled_from([4096, 16384, 65536]),
    st.lists(st.integers(0, 1 << 36), max_size=4),
)
def test_scan_ranges_cover_every_pfn_once_highest_zone_first(max_pfn: int, page_size: int, starts: list[int]) -> None:
    ranges = scan_ranges(_pages(max_pfn, page_size), starts)
    covered = sorted(ranges)
    assert covered[0][0] == 0 and covered[-1][1] == max_pfn
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))  # disjoint, no gap
    assert all(a < b for a, b in ranges)
    inside = [-(-s // page_size) for s in starts if 0 < -(-s // page_size) < max_pfn]
    if inside:
        assert ranges[0] == (max(inside), max_pfn)  # the highest zone present is scanned first
    else:
        assert ranges == [(0, max_pfn)]


def test_x86_order_scans_the_normal_zone_first_on_a_large_guest() -> None:
    ranges = scan_ranges(_pages((10 << 30) // 4096, 4096), ZONE_STARTS)
    assert ranges == [((4 << 30) // 4096, (10 << 30) // 4096), (4096, (4 << 30) // 4096), (0, 4096)]


class _CountingSparse(SparseMemory):
    heads = 0

    def page_head(self, pfn: int, size: int) -> bytes:
        type(self).heads += 1
        return super().page_head(pfn, size)


def test_first_agreeing_copy_stops_early_and_matches_the_truth() -> None:
    """The copy found is the live one, and far fewer heads are read than a full scan reads."""
    model, memory, truth = build_linux_image(
        memory_size=160 * MiB, phys_base=-0x32200000, kaslr_offset=0x35600000, vmcoreinfo_in_notes=False,
        filler_fraction=0.3,
    )  # fmt: skip
    counting = _CountingSparse({p: memory.page(p) for p in memory.nonzero_pfns}, memory.max_pfn, ranges=memory.ranges)
    known = Candidate("cr3_walk", truth.phys_base, truth.kaslr_offset)
    found = first_agreeing_copy(model, counting, known)
    assert found is not None
    hit, candidate, _checks = found
    assert hit.paddr in (truth.vmcoreinfo_data_paddr, truth.vmcoreinfo_note_paddr)
    assert (candidate.phys_base, candidate.kernel_offset, candidate.vmcoreinfo) == (
        truth.phys_base,
        truth.kaslr_offset,
        truth.vmcoreinfo,
    )
    early = _CountingSparse.heads
    _CountingSparse.heads = 0
    assert len(list(iter_vmcoreinfo_pages(counting))) == 2
    assert early < _CountingSparse.heads  # stopping at the first copy read fewer heads than the full scan


def test_first_agreeing_copy_rejects_a_disagreeing_walk() -> None:
    model, memory, truth = build_linux_image(memory_size=64 * MiB, phys_base=-16 * MiB, vmcoreinfo_in_notes=False)
    assert first_agreeing_copy(model, memory, Candidate("cr3_walk", truth.phys_base + (2 << 20), None)) is None


@pytest.mark.parametrize("codec", ["zlib", "none", "zstd"])
def test_kdump_head_path_equals_decoding_every_page(tmp_path: Path, codec: str) -> None:
    """Heads from raw descriptors (zero pages skipped, zlib inflated from a prefix) equal decoded pages' heads."""
    model, memory, _truth = build_linux_image(memory_size=64 * MiB, vmcoreinfo_in_notes=False, filler_fraction=0.2)
    path = tmp_path / "d.kdump"
    write_kdump(path, model, memory, codec=codec)
    with open_dump(path) as dump:
        mem = dump.memory
        fast = dict(iter_page_heads(mem))
        lo, hi = 0x2000, 0x5000
        assert dict(iter_page_heads(mem, lo, hi)) == {a: h for a, h in fast.items() if lo <= a // 4096 < hi}
        expected = {}
        for pfn, page in mem.iter_pages():
            if any(page):
                expected[pfn * 4096] = page[:HEAD_SIZE]
        assert {a: h for a, h in fast.items() if any(h) or a in expected} == expected


def _note(text: bytes) -> bytes:
    return pack_note(Note(NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO, text), LP64_LE)


@given(st.integers(0, 15), st.integers(1, 40))
def test_granule_finds_a_4k_buffer_inside_a_64k_block(slot: int, block: int) -> None:
    text = b"OSRELEASE=6.1.0-arm64\nPAGESIZE=4096\n"
    page = bytearray(b"\xaa" * 65536)
    page[slot * 4096 : slot * 4096 + len(_note(text)) + 1] = _note(text) + b"\0"
    memory = DictMemory({block: bytes(page), block + 1: bytes(65536)}, page_size=65536)
    hits = list(iter_vmcoreinfo_pages(memory, granule=4096))
    assert [(h.paddr, h.form, h.text) for h in hits] == [(block * 65536 + slot * 4096, "note", text)]
    assert all(h.pfn == block for h in hits)
    assert [h.paddr for h in iter_vmcoreinfo_pages(memory)] == [h.paddr for h in hits]  # 4 KiB is the default
    if slot:
        assert list(iter_vmcoreinfo_pages(memory, granule=65536)) == []  # not at a 64 KiB block's head
