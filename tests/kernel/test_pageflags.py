"""Dump levels judged from a synthetic struct page array.

The layouts are the Linux 6.1 columns of arch-kernels-and-introspection.md §6.7 (arm64: 64-byte pages, i386:
40-byte pages); each page kind is built from the flag rules of §6.3/§6.4, and what each level must do with it is
the declared table KINDS below, not kdfix's code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdfix.errors import AddressError, UnsupportedError
from kdfix.format.bitmap import Bitmap
from kdfix.kernel.pageflags import CHUNK_PAGES, PageRules, judge, mem_map_chunks, page_exclusion
from kdfix.notes.vmcoreinfo import VmcoreInfo


@dataclass(frozen=True)
class Layout:
    word: int
    size: int
    flags: int
    compound_head: int
    dtor: int
    order: int
    mapping: int
    private: int
    mapcount: int
    refcount: int
    hwpoison: int
    physmem_bits: int
    section_bits: int


# §6.7: OFFSET(page.flags / lru / compound_head / compound_dtor / compound_order / mapping / private / _mapcount /
# _refcount); SECTION_SIZE_BITS / MAX_PHYSMEM_BITS as the x86_64 and PAE kernels export them.
LAYOUTS = {
    "64-bit": Layout(8, 64, 0, 8, 16, 17, 24, 40, 48, 52, 22, 46, 27),
    "32-bit": Layout(4, 40, 0, 4, 8, 9, 12, 20, 24, 28, 23, 36, 29),
}
PG_LRU, PG_SLAB, PG_SWAPCACHE, PG_PRIVATE, PG_SWAPBACKED, PG_HEAD = 4, 9, 10, 13, 19, 16
BUDDY, OFFLINE, HUGETLB_DTOR = -129, -257, 2
MAX_ORDER = 11
FILE_MAPPING = 0xFFFF8880_01234000  # an address_space pointer: low bits clear
ANON_MAPPING = 0xFFFF8880_05678001  # an anon_vma pointer | PAGE_MAPPING_ANON


def vmcoreinfo(lay: Layout) -> VmcoreInfo:
    keys = {
        "PAGESIZE": "4096",
        "SYMBOL(mem_section)": f"{ROOT & ((1 << (8 * lay.word)) - 1):x}",
        "LENGTH(mem_section)": str(-(-(1 << (lay.physmem_bits - lay.section_bits)) // (4096 // 16))),  # EXTREME
        "SIZE(mem_section)": "16",
        "OFFSET(mem_section.section_mem_map)": "0",
        "NUMBER(SECTION_SIZE_BITS)": str(lay.section_bits),
        "NUMBER(MAX_PHYSMEM_BITS)": str(lay.physmem_bits),
        "SIZE(page)": str(lay.size),
        "OFFSET(page.flags)": str(lay.flags),
        "OFFSET(page._refcount)": str(lay.refcount),
        "OFFSET(page.mapping)": str(lay.mapping),
        "OFFSET(page.lru)": str(lay.compound_head),
        "OFFSET(page._mapcount)": str(lay.mapcount),
        "OFFSET(page.private)": str(lay.private),
        "OFFSET(page.compound_dtor)": str(lay.dtor),
        "OFFSET(page.compound_order)": str(lay.order),
        "OFFSET(page.compound_head)": str(lay.compound_head),
        "LENGTH(zone.free_area)": str(MAX_ORDER),
        "NUMBER(PG_lru)": str(PG_LRU),
        "NUMBER(PG_private)": str(PG_PRIVATE),
        "NUMBER(PG_swapcache)": str(PG_SWAPCACHE),
        "NUMBER(PG_swapbacked)": str(PG_SWAPBACKED),
        "NUMBER(PG_slab)": str(PG_SLAB),
        "NUMBER(PG_head_mask)": str(1 << PG_HEAD),
        "NUMBER(PG_hwpoison)": str(lay.hwpoison),
        "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)": str(BUDDY),
        "NUMBER(HUGETLB_PAGE_DTOR)": str(HUGETLB_DTOR),
        "NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)": str(OFFLINE),
    }
    return VmcoreInfo.from_items(list(keys.items()))


@dataclass
class Page:
    flags: int = 0
    mapping: int = 0
    mapcount: int = -1  # page_type / _mapcount of an unmapped page
    private: int = 0
    compound_head: int = 0
    dtor: int = 0
    order: int = 0


def pack(pages: list[Page], lay: Layout) -> bytes:
    out = bytearray(lay.size * len(pages))
    mask = (1 << (8 * lay.word)) - 1
    for i, p in enumerate(pages):
        base = i * lay.size
        for off, value, width in (
            (lay.flags, p.flags, lay.word),
            (lay.mapping, p.mapping & mask, lay.word),
            (lay.private, p.private, lay.word),
            (lay.compound_head, p.compound_head & mask, lay.word),
            (lay.mapcount, p.mapcount & 0xFFFFFFFF, 4),
            (lay.refcount, 1, 4),
        ):
            out[base + off : base + off + width] = value.to_bytes(width, "little")
        out[base + lay.dtor] = p.dtor
        out[base + lay.order] = p.order
    return bytes(out)


# kind → its struct page (§6.4 predicates), and the class each level gives it (§6.3, first match wins):
# "c" non-private cache (bit 2), "p" cache incl. private (bit 4), "u" user (8), "f" free (16), "o" offline, "h"
# hwpoison, "-" kept. The classes are listed for levels 2, 4, 8, 16, 31 and 6 (= 2|4: bit 2 matches first).
LEVELS = (2, 4, 8, 16, 31, 6)
KINDS: dict[str, tuple[Page, str]] = {
    "kernel": (Page(), "------"),
    "reserved": (Page(flags=1 << 12), "------"),
    "file_cache": (Page(flags=1 << PG_LRU, mapping=FILE_MAPPING), "cp--cc"),
    "private_cache": (Page(flags=1 << PG_LRU | 1 << PG_PRIVATE, mapping=FILE_MAPPING), "-p--pp"),
    "swapcache": (Page(flags=1 << PG_SWAPCACHE | 1 << PG_SWAPBACKED, mapping=FILE_MAPPING), "cp--cc"),
    "owner_priv_only": (Page(flags=1 << PG_SWAPCACHE, mapping=FILE_MAPPING), "------"),  # PG_swapcache alias alone
    "anon": (Page(flags=1 << PG_LRU | 1 << PG_SWAPBACKED, mapping=ANON_MAPPING), "--u-u-"),
    "anon_not_lru": (Page(flags=1 << PG_SWAPBACKED, mapping=ANON_MAPPING), "--u-u-"),
    "ksm": (Page(flags=1 << PG_LRU, mapping=ANON_MAPPING | 0x2), "--u-u-"),
    "slab_odd_mapping": (Page(flags=1 << PG_SLAB, mapping=ANON_MAPPING), "------"),
    "buddy_order0": (Page(mapcount=BUDDY, private=0), "---ff-"),
    "offline": (Page(mapcount=OFFLINE), "oooooo"),
    "slab_offline_value": (Page(flags=1 << PG_SLAB, mapcount=OFFLINE), "------"),
    "buddy_bad_order": (Page(mapcount=BUDDY, private=MAX_ORDER), "------"),
}
CLASS_OF = {"-": 0, "c": 2, "p": 4, "u": 8, "f": 16, "o": 0x40, "h": 0x20}


def expected(kind: str, level: int) -> int:
    return CLASS_OF[KINDS[kind][1][LEVELS.index(level)]]


def rules(lay: Layout) -> PageRules:
    return PageRules.from_vmcoreinfo(vmcoreinfo(lay), word_size=lay.word, endian="little")


def rows_of(pages: list[Page], lay: Layout) -> np.ndarray:
    return np.frombuffer(pack(pages, lay), dtype=np.uint8).reshape(len(pages), lay.size)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("level", LEVELS)
def test_each_single_page_kind(layout: str, level: int) -> None:
    lay = LAYOUTS[layout]
    names = sorted(KINDS)
    got = judge(rows_of([KINDS[n][0] for n in names], lay), 0, rules(lay), level).classes
    assert dict(zip(names, got.tolist(), strict=True)) == {n: expected(n, level) for n in names}


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(LAYOUTS)), st.sampled_from(LEVELS), st.lists(st.sampled_from(sorted(KINDS)), max_size=80))
def test_any_sequence_of_single_pages(layout: str, level: int, kinds: list[str]) -> None:
    lay = LAYOUTS[layout]
    pages = [KINDS[k][0] for k in kinds] + [Page()]  # a kept page last: a head there would see no tail
    got = judge(rows_of(pages, lay), 1 << 20, rules(lay), level).classes.tolist()
    assert got == [expected(k, level) for k in kinds] + [0]


def compound(order: int, head: Page, *, dtor: int = 0, head_pfn: int = 0) -> list[Page]:
    """A compound page: head flag, the first tail holding order and dtor, every tail's compound_head = head | 1."""
    first = Page(flags=head.flags | 1 << PG_HEAD, mapping=head.mapping, mapcount=head.mapcount)
    tails = [
        Page(compound_head=0xFFFFEA00_00000000 + head_pfn * 64 | 1, mapping=0x400) for _ in range((1 << order) - 1)
    ]
    if tails:
        tails[0].order, tails[0].dtor = order, dtor
    return [first, *tails]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_blocks_exclude_their_whole_range(layout: str) -> None:
    lay = LAYOUTS[layout]
    anon = KINDS["anon"][0]
    file = KINDS["file_cache"][0]
    pages = [
        *compound(2, anon),  # pfn 0-3: anon THP → user, 4 pages
        Page(mapcount=BUDDY, private=2), Page(), Page(), Page(),  # 4-7: a free order-2 block
        *compound(1, Page(mapping=FILE_MAPPING), dtor=HUGETLB_DTOR),  # 8-9: hugetlb (not anon) → user
        *compound(1, file),  # 10-11: file THP → cache, 2 pages
        Page(), *compound(2, anon)[:3],  # 12 kept; 13: a head at an odd pfn: order reset to 0, one page
        *compound(2, anon),  # 16-19
    ]  # fmt: skip
    got = judge(rows_of(pages, lay), 0, rules(lay), 31).classes.tolist()
    assert got == [8] * 4 + [16] * 4 + [8] * 2 + [2] * 2 + [0, 8, 0, 0] + [8] * 4
    at8 = judge(rows_of(pages, lay), 0, rules(lay), 8).classes.tolist()
    assert at8 == [8] * 4 + [0] * 4 + [8] * 2 + [0] * 2 + [0, 8, 0, 0] + [8] * 4


def test_a_block_running_past_a_chunk_is_carried() -> None:
    lay = LAYOUTS["64-bit"]
    pages = [Page(mapcount=BUDDY, private=4)] + [Page() for _ in range(15)]
    first = judge(rows_of(pages[:8], lay), 0, rules(lay), 16)
    assert first.classes.tolist() == [16] * 8 and first.carry == (16, 16)
    second = judge(rows_of(pages[8:], lay), 8, rules(lay), 16, carry=first.carry)
    assert second.classes.tolist() == [16] * 8


def test_unreadable_rows_are_kept() -> None:
    lay = LAYOUTS["64-bit"]
    pages = [KINDS["anon"][0]] * 4
    got = judge(rows_of(pages, lay), 0, rules(lay), 8, readable=np.array([True, False, True, False])).classes
    assert got.tolist() == [8, 0, 8, 0]


def test_hwpoison_at_any_level_the_pass_runs() -> None:
    lay = LAYOUTS["32-bit"]
    got = judge(rows_of([Page(flags=1 << lay.hwpoison), Page()], lay), 0, rules(lay), 2).classes
    assert got.tolist() == [0x20, 0]


# ------------------------------------------------------------------- the whole pass over SPARSEMEM_EXTREME

ROOT = 0xFFFF8880_00100000  # SYMBOL(mem_section): the root array's address (≥ 4.15, §6.2 step 3)
SECTIONS = 0xFFFF8880_00200000  # the first root's array of struct mem_section
MEM_MAP = 0xFFFFEA00_00000000  # vmemmap: struct page of pfn 0


class FakeKernel:
    """Kernel virtual memory as a few byte regions; anything else is unmapped."""

    def __init__(self, regions: dict[int, bytes]) -> None:
        self.regions = regions

    def read(self, vaddr: int, size: int) -> bytes:
        for base, data in self.regions.items():
            if base <= vaddr and vaddr + size <= base + len(data):
                return data[vaddr - base : vaddr - base + size]
        raise AddressError(f"unmapped {vaddr:#x}", paddr=None)


def sparse_kernel(lay: Layout, pages: list[Page], *, present: bool = True) -> FakeKernel:
    w = lay.word
    mask = (1 << (8 * w)) - 1
    root = SECTIONS.to_bytes(8, "little")[:w] + bytes(w)
    # PRESENT | HAS_MEM_MAP; the kernel stores mem_map - section start pfn * SIZE(page) (§6.2 step 6)
    sections = b"".join(
        ((MEM_MAP & mask) | (0x3 if present else 0x2)).to_bytes(w, "little") + bytes(16 - w) for _ in range(2)
    )
    return FakeKernel({ROOT & mask: root, SECTIONS & mask: sections, MEM_MAP & mask: pack(pages, lay)})


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_page_exclusion_over_mem_section(layout: str) -> None:
    lay = LAYOUTS[layout]
    info = vmcoreinfo(lay)
    names = sorted(KINDS)
    pages = [KINDS[n][0] for n in names] * 3 + [Page()]
    dumped = Bitmap.from_pfns([i for i in range(len(pages)) if i % 3], len(pages))  # a third is not in the dump
    result = page_exclusion(sparse_kernel(lay, pages), info, dumped, 31, word_size=lay.word, endian="little")
    want = {i for i, page in enumerate(pages[:-1]) if i % 3 and expected(names[i % len(names)], 31)}
    assert set(result.excluded.iter_set()) == want
    assert result.counts["user"] == sum(1 for i in want if expected(names[i % len(names)], 31) == 8)
    assert result.pages == len(want)
    absent = page_exclusion(
        sparse_kernel(lay, pages, present=False), info, dumped, 31, word_size=lay.word, endian="little"
    )
    # a section without PRESENT has no struct pages: nothing is judged, and its pfns (not RAM the kernel manages:
    # device memory, firmware) are left out as makedumpfile leaves out those past the last mem_map
    assert absent.struct_pages == 0 and absent.excluded == dumped
    assert absent.counts["no_struct_page"] == dumped.count() and absent.pages == dumped.count()
    kept = page_exclusion(
        sparse_kernel(lay, pages, present=False), info, dumped, 1, word_size=lay.word, endian="little"
    )
    assert kept.excluded.count() == 0  # level 1 alone judges no struct page


def test_chunks_follow_sections_and_the_dump_size() -> None:
    lay = LAYOUTS["64-bit"]
    pages = [Page()] * 8
    kernel = sparse_kernel(lay, pages)
    end = 3 * CHUNK_PAGES // 2
    chunks = list(mem_map_chunks(kernel, vmcoreinfo(lay), word_size=8, endian="little", max_pfn=end, size_page=64))
    assert [(c.start_pfn, c.count, c.vaddr) for c in chunks] == [
        (0, CHUNK_PAGES, MEM_MAP),
        (CHUNK_PAGES, CHUNK_PAGES // 2, MEM_MAP + CHUNK_PAGES * 64),
    ]


def test_missing_keys_are_named() -> None:
    lay = LAYOUTS["64-bit"]
    items = [(k, v) for k, v in vmcoreinfo(lay).entries if k != "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)"]
    partial = PageRules.from_vmcoreinfo(VmcoreInfo.from_items(items), word_size=8, endian="little")
    partial.check_level(15)
    with pytest.raises(UnsupportedError, match="PAGE_BUDDY_MAPCOUNT_VALUE"):
        partial.check_level(16)
    with pytest.raises(UnsupportedError, match=r"SIZE\(page\)"):
        PageRules.from_vmcoreinfo(VmcoreInfo.from_items([("PAGESIZE", "4096")]), word_size=8, endian="little")


def test_dump_pages_larger_than_kernel_pages() -> None:
    """QEMU writes 64 KiB pages for aarch64 guests: a dump page goes only when all its 16 kernel pages go."""
    lay = LAYOUTS["64-bit"]
    anon, kernel = KINDS["anon"][0], KINDS["kernel"][0]
    pages = [anon] * 16 + [anon] * 15 + [kernel] + [anon] * 16  # dump pfns 0, 1, 2
    dumped = Bitmap.from_pfns([0, 1], 3)  # dump pfn 2 is not in the dump
    result = page_exclusion(
        sparse_kernel(lay, pages), vmcoreinfo(lay), dumped, 8, word_size=8, endian="little", dump_page_size=65536
    )
    assert set(result.excluded.iter_set()) == {0}
    assert result.counts["user"] == 31  # kernel pages judged user, in the dump's pages
