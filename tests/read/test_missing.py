"""Missing-page runs: a sound or bad page ends a run, zero pages do not, chunks join when nothing lies between."""

from __future__ import annotations

from kdfix.read.missing import DESCRIPTORS, PAGE_DATA, RunCollector, merge_runs


def test_collector_runs_end_at_a_present_page_or_a_change_of_kind() -> None:
    c = RunCollector("d", 0x1000)
    c.missing(2, PAGE_DATA, 0x800)
    c.zero_page(3)
    c.missing(5, PAGE_DATA, 0x900)
    c.close()
    c.missing(9, PAGE_DATA, 0xA00)
    c.missing(10, DESCRIPTORS, 0xB00, pages=3, end_pfn=20)
    runs = c.finish()
    assert [(r.start_pfn, r.end_pfn, r.pages, r.zero_pages, r.file_offset) for r in runs] == [
        (2, 6, 2, 1, 0x800),
        (9, 10, 1, 0, 0xA00),
        (10, 20, 3, 0, 0xB00),
    ]
    assert "2 dumped pages in pfns [0x2, 0x6)" in runs[0].describe() and "0x800" in runs[0].describe()


def test_merge_joins_chunks_only_without_dumped_pages_between() -> None:
    a, b, c = RunCollector("d", 1), RunCollector("d", 1), RunCollector("d", 1)
    a.missing(0, PAGE_DATA, 10, pages=4, end_pfn=4)
    b.missing(6, PAGE_DATA, 20, pages=2, end_pfn=8)
    c.missing(12, PAGE_DATA, 30, pages=1, end_pfn=13)
    dumped = {0, 1, 2, 3, 6, 7, 10, 12}
    runs = merge_runs([*c.finish(), *a.finish(), *b.finish()], lambda _p, x, y: len(dumped & set(range(x, y))))
    assert [(r.start_pfn, r.end_pfn, r.pages, r.file_offset) for r in runs] == [(0, 8, 6, 10), (12, 13, 1, 30)]
