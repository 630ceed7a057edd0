"""makedumpfile's dump levels judged from the kernel's ``struct page`` array (arch-kernels-and-introspection.md §6).

Which pages a dump level drops (cache 2, private cache 4, user 8, free 16; hwpoison and offline pages whenever the
pass runs) is decided from each pfn's struct page, found through VMCOREINFO (SPARSEMEM, SPARSEMEM_EXTREME, VMEMMAP
or FLATMEM, §6.2) and judged with makedumpfile's rules in its order (§6.3, §6.4). Zero pages (bit 1) are decided
from page contents by the writers, not here. The pass is vectorised with numpy and streamed: one chunk of struct
pages (at most a mem_section) at a time, so memory holds the output bitmap and one chunk, whatever the RAM size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from kdfix.errors import AddressError, UnsupportedError
from kdfix.format.bitmap import Bitmap
from kdfix.format.constants import DumpLevel
from kdfix.kernel.vmem import Endian, VirtualReader
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.dump import Dump

# Exclusion classes: the dump-level bit that excludes a page, plus the two makedumpfile drops at any level (§6.1).
CLASS_KEEP = 0
CLASS_CACHE = int(DumpLevel.EXCLUDE_CACHE)
CLASS_CACHE_PRIVATE = int(DumpLevel.EXCLUDE_CACHE_PRI)
CLASS_USER = int(DumpLevel.EXCLUDE_USER_DATA)
CLASS_FREE = int(DumpLevel.EXCLUDE_FREE)
CLASS_HWPOISON = 0x20
CLASS_OFFLINE = 0x40
CLASS_NO_PAGE = 0x80  # dumped pfns without a struct page (device memory, firmware ROM): not RAM the kernel manages
CLASS_NAMES = {
    CLASS_CACHE: "cache",
    CLASS_CACHE_PRIVATE: "cache_private",
    CLASS_USER: "user",
    CLASS_FREE: "free",
    CLASS_HWPOISON: "hwpoison",
    CLASS_OFFLINE: "offline",
    CLASS_NO_PAGE: "no_struct_page",
}
PAGE_LEVEL_BITS = CLASS_CACHE | CLASS_CACHE_PRIVATE | CLASS_USER | CLASS_FREE  # the bits judged from struct pages

PAGE_MAPPING_ANON = 0x1  # low bit of page.mapping (Linux page-flags.h; §6.4)
SECTION_MARKED_PRESENT = 0x1  # section_mem_map flag bits (§6.2 step 5)
SECTION_MAP_MASK = ~0x1F
CHUNK_PAGES = 1 << 15  # struct pages judged at once (a 128 MiB x86_64 section; 2 MiB of struct pages)


@dataclass(frozen=True)
class PageRules:
    """The struct page layout and flag constants of one kernel, from its VMCOREINFO (§6.3, §6.7)."""

    word_size: int
    endian: Endian
    size_page: int
    off_flags: int
    off_mapping: int
    off_mapcount: int | None
    off_private: int | None
    off_compound_head: int | None
    off_compound_order: int | None
    off_compound_dtor: int | None
    pg_lru: int | None
    pg_private: int | None
    pg_swapcache: int | None
    pg_swapbacked: int | None
    pg_slab: int | None
    pg_head_mask: int | None
    pg_hwpoison: int | None
    pg_hugetlb: int | None  # 6.6+: hugetlb flag in the first tail's flags
    buddy: int | None  # PAGE_BUDDY_MAPCOUNT_VALUE
    offline: int | None  # PAGE_OFFLINE_MAPCOUNT_VALUE
    unaccepted: int | None  # PAGE_UNACCEPTED_MAPCOUNT_VALUE
    slab_mapcount: int | None  # 6.10+: PAGE_SLAB_MAPCOUNT_VALUE
    hugetlb_mapcount: int | None  # 6.9+: PAGE_HUGETLB_MAPCOUNT_VALUE
    hugetlb_dtor: int | None  # HUGETLB_PAGE_DTOR
    max_order: int | None  # LENGTH(zone.free_area)

    @classmethod
    def from_vmcoreinfo(cls, info: VmcoreInfo, *, word_size: int, endian: Endian) -> PageRules:
        """The rules, or UnsupportedError naming the first required key that is missing (§6.2)."""
        required = {k: info.get(k) for k in ("SIZE(page)", "OFFSET(page.flags)", "OFFSET(page.mapping)")}
        for key, value in required.items():
            if value is None:
                raise UnsupportedError(f"VMCOREINFO has no {key}: struct pages cannot be judged", field=key)
        size_page, off_flags, off_mapping = info.size("page"), info.offset("page.flags"), info.offset("page.mapping")
        assert size_page is not None and off_flags is not None and off_mapping is not None
        return cls(
            word_size=word_size,
            endian=endian,
            size_page=size_page,
            off_flags=off_flags,
            off_mapping=off_mapping,
            off_mapcount=info.offset("page._mapcount"),
            off_private=info.offset("page.private"),
            off_compound_head=info.offset("page.compound_head"),
            off_compound_order=info.offset("page.compound_order"),
            off_compound_dtor=info.offset("page.compound_dtor"),
            pg_lru=info.number("PG_lru"),
            pg_private=info.number("PG_private"),
            pg_swapcache=info.number("PG_swapcache"),
            pg_swapbacked=info.number("PG_swapbacked"),
            pg_slab=info.number("PG_slab"),
            pg_head_mask=info.number("PG_head_mask"),
            pg_hwpoison=info.number("PG_hwpoison"),
            pg_hugetlb=info.number("PG_hugetlb"),
            buddy=info.number("PAGE_BUDDY_MAPCOUNT_VALUE"),
            offline=info.number("PAGE_OFFLINE_MAPCOUNT_VALUE"),
            unaccepted=info.number("PAGE_UNACCEPTED_MAPCOUNT_VALUE"),
            slab_mapcount=info.number("PAGE_SLAB_MAPCOUNT_VALUE"),
            hugetlb_mapcount=info.number("PAGE_HUGETLB_MAPCOUNT_VALUE"),
            hugetlb_dtor=info.number("HUGETLB_PAGE_DTOR"),
            max_order=parse_length(info, "zone.free_area"),
        )

    @property
    def buddy_test(self) -> bool:
        """page_is_buddy_v3 is usable (§6.3 step 2); else makedumpfile walks the free lists, which kdfix does not."""
        return self.buddy is not None and self.off_mapcount is not None and self.off_private is not None

    def check_level(self, level: int) -> None:
        """UnsupportedError when a requested bit cannot be judged with this kernel's keys."""
        if level & (CLASS_CACHE | CLASS_CACHE_PRIVATE) and self.pg_lru is None:
            raise UnsupportedError("VMCOREINFO has no NUMBER(PG_lru): cache pages cannot be told", field="PG_lru")
        if level & CLASS_CACHE and self.pg_private is None:
            raise UnsupportedError("VMCOREINFO has no NUMBER(PG_private): dump level 2 needs it", field="PG_private")
        if level & CLASS_FREE and not self.buddy_test:
            raise UnsupportedError(
                "VMCOREINFO lacks NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE), OFFSET(page._mapcount) or OFFSET(page.private): "
                "free pages cannot be told from struct pages (the free-list walk is not implemented)",
                field="PAGE_BUDDY_MAPCOUNT_VALUE",
            )

    def runs_for(self, level: int) -> bool:
        """makedumpfile runs the struct page pass for these bits, or whenever the kernel exports PG_hwpoison."""
        return bool(level & PAGE_LEVEL_BITS) or self.pg_hwpoison is not None


def parse_length(info: VmcoreInfo, name: str) -> int | None:
    value = info.get(f"LENGTH({name})")
    try:
        return int(value, 0) if value is not None else None
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------------ the judgement


def _field(rows: np.ndarray, offset: int, width: int, endian: Endian, *, signed: bool = False) -> np.ndarray:
    kind = "i" if signed else "u"
    dtype = np.dtype(f"{'<' if endian == 'little' else '>'}{kind}{width}")
    return np.ascontiguousarray(rows[:, offset : offset + width]).view(dtype).ravel()


def _bit(values: np.ndarray, bit: int | None) -> np.ndarray:
    if bit is None:
        return np.zeros(values.shape, dtype=bool)
    return ((values >> np.uint64(bit)) & np.uint64(1)).astype(bool)


@dataclass
class ChunkDecision:
    """Per-page class of one chunk (CLASS_*), and an exclusion that runs past its end: (end pfn, class)."""

    classes: np.ndarray
    carry: tuple[int, int] | None = None


def judge(
    rows: np.ndarray,
    start_pfn: int,
    rules: PageRules,
    level: int,
    *,
    readable: np.ndarray | None = None,
    carry: tuple[int, int] | None = None,
) -> ChunkDecision:
    """Classify the struct pages ``rows`` (n rows of SIZE(page) bytes) of pfns ``start_pfn``… for ``level`` (§6.3).

    The first matching rule wins, in makedumpfile's order; a free block or compound head excludes its whole
    range (2^order pages). Rows not ``readable`` are kept. ``carry`` is the previous chunk's range running into
    this one.
    """
    cols = _columns(rows, rules)
    order, hugetlb = _compound(rows, cols, rules, start_pfn)
    undecided = ~cols.tail
    if readable is not None:
        undecided &= readable
    match = _FirstMatch(undecided)
    _match_rules(match, cols, order, hugetlb, rules, level)
    return _spread(match.classes, match.span, start_pfn, carry)


@dataclass
class _Columns:
    """The struct page members the rules read, one array over the chunk each (absent members: neutral values)."""

    flags: np.ndarray
    mapping: np.ndarray
    mapcount: np.ndarray
    private: np.ndarray
    tail: np.ndarray  # compound_head bit 0: a tail page, judged with its head
    head: np.ndarray  # PG_head: a compound head


def _columns(rows: np.ndarray, rules: PageRules) -> _Columns:
    n = rows.shape[0]
    w, e = rules.word_size, rules.endian
    flags = _field(rows, rules.off_flags, w, e).astype(np.uint64)
    mapping = _field(rows, rules.off_mapping, w, e).astype(np.uint64)
    mapcount = (
        _field(rows, rules.off_mapcount, 4, e, signed=True).astype(np.int64)
        if rules.off_mapcount is not None
        else np.full(n, -1, dtype=np.int64)
    )
    private = (
        _field(rows, rules.off_private, w, e).astype(np.uint64)
        if rules.off_private is not None
        else np.zeros(n, dtype=np.uint64)
    )
    tail = (
        (_field(rows, rules.off_compound_head, w, e) & 1).astype(bool)
        if rules.off_compound_head is not None
        else np.zeros(n, dtype=bool)
    )
    head = (flags & np.uint64(rules.pg_head_mask)) != 0 if rules.pg_head_mask else np.zeros(n, dtype=bool)
    head[-1:] = False  # its first tail is in the next chunk; chunks are 2^k aligned, so its order would be 0
    return _Columns(flags, mapping, mapcount, private, tail, head)


def _compound(rows: np.ndarray, cols: _Columns, rules: PageRules, start_pfn: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, hugetlb) of each compound head, from its first tail (the next struct page, §6.3); order 0 where
    it is not a head or its block would not be aligned."""
    n = rows.shape[0]
    w, e = rules.word_size, rules.endian
    order = np.zeros(n, dtype=np.int64)
    hugetlb = np.zeros(n, dtype=bool)
    if n > 1:
        nxt = rows[1:]
        if rules.off_compound_order is not None:
            order[:-1] = nxt[:, rules.off_compound_order]
        elif rules.pg_hugetlb is not None:
            order[:-1] = (_field(nxt, rules.off_flags, w, e) & 0xFF).astype(np.int64)
        if rules.off_compound_dtor is not None and rules.hugetlb_dtor is not None:
            hugetlb[:-1] = nxt[:, rules.off_compound_dtor] == rules.hugetlb_dtor
        if rules.pg_hugetlb is not None:
            hugetlb[:-1] |= _bit(_field(nxt, rules.off_flags, w, e).astype(np.uint64), rules.pg_hugetlb)
    if rules.hugetlb_mapcount is not None:
        hugetlb |= cols.mapcount == rules.hugetlb_mapcount
    order = np.where(cols.head, order, 0)
    pfns = np.arange(start_pfn, start_pfn + n, dtype=np.int64)
    bad_order = (order >= 8 * w) | ((pfns & ((np.int64(1) << np.minimum(order, 62)) - 1)) != 0)
    return np.where(bad_order, 0, order), hugetlb & cols.head


class _FirstMatch:
    """Classes given in rule order: a page takes the first rule that matches it, with the pages it spans."""

    def __init__(self, undecided: np.ndarray) -> None:
        n = undecided.shape[0]
        self.classes = np.zeros(n, dtype=np.uint8)
        self.span = np.ones(n, dtype=np.int64)
        self.undecided = undecided

    def take(self, mask: np.ndarray, cls: int, pages: np.ndarray | None = None) -> None:
        hit = self.undecided & mask
        self.classes[hit] = cls
        if pages is not None:
            self.span[hit] = pages[hit]
        self.undecided = self.undecided & ~hit

    def keep(self, mask: np.ndarray) -> None:
        """Pages no later rule may take."""
        self.undecided = self.undecided & ~mask


def _match_rules(
    match: _FirstMatch, cols: _Columns, order: np.ndarray, hugetlb: np.ndarray, rules: PageRules, level: int
) -> None:
    """makedumpfile's rules in its order (§6.3, §6.4): free, cache, private cache, user, hwpoison, offline."""
    n = cols.flags.shape[0]
    flags, mapcount = cols.flags, cols.mapcount
    slab = _bit(flags, rules.pg_slab)
    if rules.slab_mapcount is not None:
        slab |= mapcount == rules.slab_mapcount
    swapbacked = _bit(flags, rules.pg_swapbacked) if rules.pg_swapbacked is not None else np.ones(n, dtype=bool)
    cache = _bit(flags, rules.pg_lru) | (_bit(flags, rules.pg_swapcache) & swapbacked)
    anon = ((cols.mapping & np.uint64(PAGE_MAPPING_ANON)) != 0) & ~slab
    priv = _bit(flags, rules.pg_private)
    compound_pages = np.left_shift(np.int64(1), order)
    if level & CLASS_FREE and rules.buddy_test:
        max_order = rules.max_order if rules.max_order is not None else 8 * rules.word_size - 1
        buddy = ~slab & (mapcount == rules.buddy)
        valid = cols.private < np.uint64(max_order)
        buddy_pages = np.left_shift(np.int64(1), np.where(valid, cols.private, np.uint64(0)).astype(np.int64))
        match.take(buddy & valid, CLASS_FREE, buddy_pages)
        match.keep(buddy)  # a buddy head with an invalid order is kept (§6.6)
        if rules.unaccepted is not None and rules.max_order is not None:
            whole = np.full(n, 1 << (rules.max_order - 1), dtype=np.int64)
            match.take(mapcount == rules.unaccepted, CLASS_FREE, whole)
    if level & CLASS_CACHE:
        match.take(cache & ~priv & ~anon, CLASS_CACHE, compound_pages)
    if level & CLASS_CACHE_PRIVATE:
        match.take(cache & ~anon, CLASS_CACHE_PRIVATE, compound_pages)
    if level & CLASS_USER:
        match.take(anon | hugetlb, CLASS_USER, compound_pages)
    match.take(_bit(flags, rules.pg_hwpoison), CLASS_HWPOISON, compound_pages)
    if rules.offline is not None and rules.off_mapcount is not None:
        match.take(~slab & (mapcount == rules.offline), CLASS_OFFLINE, compound_pages)


def _spread(classes: np.ndarray, span: np.ndarray, start_pfn: int, carry: tuple[int, int] | None) -> ChunkDecision:
    """Extend each excluded block head over its 2^order pages; a block running past the chunk is carried."""
    n = classes.shape[0]
    if carry is not None and carry[0] > start_pfn:
        upto = min(n, carry[0] - start_pfn)
        classes[:upto] = np.where(classes[:upto] == CLASS_KEEP, carry[1], classes[:upto])
    starts = np.flatnonzero((classes != CLASS_KEEP) & (span > 1))
    new_carry = None
    if starts.size:
        ends = starts + span[starts]
        mark = np.full(n, -1, dtype=np.int64)
        mark[starts] = np.arange(starts.size)
        owner = np.maximum.accumulate(mark)
        index = np.arange(n)
        inside = (owner >= 0) & (index < ends[np.maximum(owner, 0)])
        classes = np.where(inside, classes[starts[np.maximum(owner, 0)]], classes).astype(np.uint8)
        last = int(np.argmax(ends))
        if ends[last] > n:
            new_carry = (start_pfn + int(ends[last]), int(classes[starts[last]]))
    return ChunkDecision(classes, new_carry)


# ------------------------------------------------------------------------------------------------ finding pages


@dataclass(frozen=True)
class MemMapChunk:
    """``count`` struct pages for pfns ``start_pfn``… at kernel virtual address ``vaddr``."""

    start_pfn: int
    count: int
    vaddr: int


def mem_map_chunks(
    reader: VirtualReader, info: VmcoreInfo, *, word_size: int, endian: Endian, max_pfn: int, size_page: int
) -> Iterator[MemMapChunk]:
    """The struct page array as chunks, from SPARSEMEM(_EXTREME) mem_section or FLATMEM mem_map (§6.2)."""
    page_size = info.page_size or 4096
    page_shift = page_size.bit_length() - 1
    mask = (1 << (8 * word_size)) - 1

    def ulong(vaddr: int) -> int:
        return int.from_bytes(reader.read(vaddr, word_size), endian)

    root = info.symbol("mem_section")
    if root is None:
        mem_map = info.symbol("mem_map")
        if mem_map is None:
            raise UnsupportedError(
                "VMCOREINFO has neither SYMBOL(mem_section) nor SYMBOL(mem_map)", field="mem_section"
            )
        base = ulong(mem_map)  # FLATMEM: struct page of pfn 0 (ARCH_PFN_OFFSET 0)
        for start in range(0, max_pfn, CHUNK_PAGES):
            yield MemMapChunk(start, min(CHUNK_PAGES, max_pfn - start), (base + start * size_page) & mask)
        return
    section_bits, physmem_bits = info.number("SECTION_SIZE_BITS"), info.number("MAX_PHYSMEM_BITS")
    size_section = info.size("mem_section")
    off_map = info.offset("mem_section.section_mem_map")
    for key, value in (
        ("NUMBER(SECTION_SIZE_BITS)", section_bits),
        ("NUMBER(MAX_PHYSMEM_BITS)", physmem_bits),
        ("SIZE(mem_section)", size_section),
        ("OFFSET(mem_section.section_mem_map)", off_map),
    ):
        if value is None:
            raise UnsupportedError(f"VMCOREINFO has no {key}: SPARSEMEM cannot be decoded", field=key)
    assert section_bits is not None and physmem_bits is not None and size_section and off_map is not None
    per_section = 1 << (section_bits - page_shift)
    nr_sections = 1 << (physmem_bits - section_bits)
    per_root = page_size // size_section
    roots = -(-nr_sections // per_root)
    length = parse_length(info, "mem_section")
    extreme = length is None or length == roots
    wanted = min(nr_sections, -(-max_pfn // per_section))
    root_cache: dict[int, int] = {}
    for nr in range(wanted):
        if extreme:
            r = nr // per_root
            if r not in root_cache:
                root_cache[r] = ulong(root + r * word_size)
            if not root_cache[r]:
                continue
            section = root_cache[r] + (nr % per_root) * size_section
        else:
            section = root + nr * size_section
        coded = ulong(section + off_map)
        if not coded & SECTION_MARKED_PRESENT:
            continue
        start = nr * per_section
        base = ((coded & SECTION_MAP_MASK & mask) + start * size_page) & mask
        count = min(per_section, max_pfn - start)
        for at in range(0, count, CHUNK_PAGES):
            yield MemMapChunk(start + at, min(CHUNK_PAGES, count - at), (base + at * size_page) & mask)


def read_rows(
    reader: VirtualReader, chunk: MemMapChunk, size_page: int, page_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The chunk's struct pages as an (n, SIZE(page)) array and which rows were wholly readable."""
    total = chunk.count * size_page
    try:
        raw = reader.read(chunk.vaddr, total)
        return np.frombuffer(raw, dtype=np.uint8).reshape(chunk.count, size_page), np.ones(chunk.count, dtype=bool)
    except AddressError:
        pass
    buf = np.zeros(total, dtype=np.uint8)
    ok = np.zeros(total, dtype=bool)
    pos = 0
    while pos < total:
        take = min(page_size - (chunk.vaddr + pos) % page_size, total - pos)
        try:
            buf[pos : pos + take] = np.frombuffer(reader.read(chunk.vaddr + pos, take), dtype=np.uint8)
            ok[pos : pos + take] = True
        except AddressError:
            pass
        pos += take
    return buf.reshape(chunk.count, size_page), np.asarray(ok.reshape(chunk.count, size_page).all(axis=1), dtype=bool)


# ------------------------------------------------------------------------------------------------ the whole pass


@dataclass
class Exclusion:
    """Pfns a dump level drops (of those the dump holds), and how many of each class."""

    level: int
    excluded: Bitmap
    counts: dict[str, int] = field(default_factory=dict)
    struct_pages: int = 0
    seconds: float = 0.0

    @property
    def pages(self) -> int:
        return sum(self.counts.values())


def page_exclusion(
    reader: VirtualReader,
    info: VmcoreInfo,
    dumped: Bitmap,
    level: int,
    *,
    word_size: int,
    endian: Endian,
    dump_page_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Exclusion:
    """The pfns of ``dumped`` that ``level`` excludes by their struct pages (bit 1 is left to the writer).

    With any of the bits 2-16, dumped pfns that have no struct page at all (no present mem_section: a VGA
    framebuffer, the BIOS ROM) are excluded too. makedumpfile leaves out those past the last mem_map (it cuts
    max_mapnr there); kdfix leaves out every one, so it excludes at least what makedumpfile does.

    ``dump_page_size``: the dump's page (block) size when it is not the kernel's PAGESIZE (QEMU writes 64 KiB
    pages for aarch64 guests): a dump page is excluded only when every kernel page in it is. Counts are in
    kernel pages; the bitmap is in the dump's pfns.
    """
    began = time.monotonic()
    rules = PageRules.from_vmcoreinfo(info, word_size=word_size, endian=endian)
    rules.check_level(level)
    kernel_page = info.page_size or 4096
    dump_page = dump_page_size or kernel_page
    nbits = dumped.nbits
    nbytes = (nbits + 7) // 8
    counts = {name: 0 for name in CLASS_NAMES.values()}
    judged = 0
    if not (rules.runs_for(level) and nbits):
        return Exclusion(level, Bitmap(bytes(nbytes), nbits), counts, judged, round(time.monotonic() - began, 3))
    have = np.frombuffer(dumped.to_bytes(nbytes), dtype=np.uint8)
    have_k, nbits_k = _to_kernel_pages(have, nbits, dump_page, kernel_page)
    chunks = mem_map_chunks(
        reader, info, word_size=word_size, endian=endian, max_pfn=nbits_k, size_page=rules.size_page
    )
    out, with_page, judged = _judge_chunks(reader, chunks, rules, level, have_k, kernel_page, counts, progress)
    if level & PAGE_LEVEL_BITS:
        no_page = have_k & ~with_page
        counts[CLASS_NAMES[CLASS_NO_PAGE]] = int(np.unpackbits(no_page, bitorder="little")[:nbits_k].sum())
        out |= no_page
    excluded = _to_dump_pages(out, nbits_k, nbits, dump_page, kernel_page) & have
    return Exclusion(level, Bitmap(excluded.tobytes(), nbits), counts, judged, round(time.monotonic() - began, 3))


def _judge_chunks(
    reader: VirtualReader,
    chunks: Iterator[MemMapChunk],
    rules: PageRules,
    level: int,
    have_k: np.ndarray,
    kernel_page: int,
    counts: dict[str, int],
    progress: Callable[[int], None] | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Judge the struct pages of the held kernel pfns ``have_k`` chunk by chunk, adding to ``counts``: (the
    excluded kernel pfns, the pfns that have a struct page, how many struct pages were judged)."""
    out = np.zeros(have_k.size, dtype=np.uint8)
    with_page = np.zeros(have_k.size, dtype=np.uint8)
    carry: tuple[int, int] | None = None
    judged = 0
    for chunk in chunks:
        lo, hi = chunk.start_pfn, chunk.start_pfn + chunk.count
        _or_bits(with_page, lo, np.ones(chunk.count, dtype=bool))
        # struct pages of pfns the dump does not hold are not read (§6.2 step 7)
        if not have_k[lo >> 3 : (hi + 7) >> 3].any():
            continue
        rows, readable = read_rows(reader, chunk, rules.size_page, kernel_page)
        decision = judge(rows, lo, rules, level, readable=readable, carry=carry)
        carry = decision.carry
        judged += chunk.count
        held = np.unpackbits(have_k[lo >> 3 : (hi + 7) >> 3], bitorder="little")[: chunk.count].astype(bool)
        classes = np.where(held, decision.classes, CLASS_KEEP)
        for cls, name in CLASS_NAMES.items():
            counts[name] += int(np.count_nonzero(classes == cls))
        _or_bits(out, lo, classes != CLASS_KEEP)
        if progress is not None:
            progress(judged)
    return out, with_page, judged


def _to_kernel_pages(have: np.ndarray, nbits: int, dump_page: int, kernel_page: int) -> tuple[np.ndarray, int]:
    """A dump-pfn bitmap as a kernel-pfn bitmap: a kernel page is held when its dump page is (or any of them)."""
    if dump_page == kernel_page:
        return have, nbits
    bits = np.unpackbits(have, bitorder="little")[:nbits]
    if dump_page > kernel_page:
        ratio = dump_page // kernel_page
        kbits = np.repeat(bits, ratio)
    else:
        ratio = kernel_page // dump_page
        padded = np.zeros(-(-nbits // ratio) * ratio, dtype=np.uint8)
        padded[:nbits] = bits
        kbits = padded.reshape(-1, ratio).max(axis=1)
    return np.packbits(kbits, bitorder="little"), int(kbits.size)


def _to_dump_pages(out: np.ndarray, nbits_k: int, nbits: int, dump_page: int, kernel_page: int) -> np.ndarray:
    """A kernel-pfn exclusion as a dump-pfn one: a dump page goes only when every kernel page in it goes."""
    if dump_page == kernel_page:
        return out
    kbits = np.unpackbits(out, bitorder="little")[:nbits_k]
    if dump_page > kernel_page:
        bits = kbits.reshape(nbits, dump_page // kernel_page).min(axis=1)
    else:
        bits = np.repeat(kbits, kernel_page // dump_page)[:nbits]
    return np.packbits(bits, bitorder="little")


def _or_bits(out: np.ndarray, start: int, bits: np.ndarray) -> None:
    """OR ``bits`` (bool per pfn) into the LSB-first bitmap ``out`` from pfn ``start`` (kdump-format.md §7)."""
    head = (-start) % 8
    for i in np.flatnonzero(bits[:head]):
        pfn = start + int(i)
        out[pfn >> 3] |= np.uint8(1 << (pfn & 7))
    body = bits[head:]
    whole = body.size // 8 * 8
    first = (start + head) >> 3
    if whole:
        out[first : first + whole // 8] |= np.packbits(body[:whole], bitorder="little")
    for i in np.flatnonzero(body[whole:]):
        pfn = start + head + whole + int(i)
        out[pfn >> 3] |= np.uint8(1 << (pfn & 7))


def level_name(level: int) -> str:
    """``31`` → ``zero|cache|cache_private|user|free``."""
    names = [n for b, n in ((1, "zero"), *CLASS_NAMES.items()) if level & b and b <= int(DumpLevel.EXCLUDE_FREE)]
    return "|".join(names) or "none"


def dump_exclusion(dump: Dump, level: int, *, progress: Callable[[int], None] | None = None) -> Exclusion:
    """:func:`page_exclusion` of an opened dump, through its kernel view (VMCOREINFO from the file or memory)."""
    from kdfix.kernel.view import kernel_view

    view = kernel_view(dump)
    return page_exclusion(
        view.memory, view.vmcoreinfo, dump.memory.dumped, level, word_size=view.word_size, endian=view.endian,
        dump_page_size=dump.memory.page_size, progress=progress,
    )  # fmt: skip
