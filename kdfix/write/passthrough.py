"""Stored pages of an opened dump as (pfn, flags, stored bytes), for ``write_kdump(page_source=...)``.

They are read where the memory's runs say they are stored (kdfix.read.runs), undecoded: pass-through copying does
not ask which container holds the pages.
"""

from __future__ import annotations

from collections.abc import Iterator

from kdfix.read.memory import PhysicalMemory
from kdfix.read.runs import Run, RunKind

_SPAN = 8 << 20  # a stored run's bytes are read in preads of at most about this many bytes


def iter_stored_pages(memory: PhysicalMemory) -> Iterator[tuple[int, int, bytes]]:
    """Yield (pfn, page flags, stored bytes) of every dumped page in ascending pfn order.

    A shared zero page comes as a raw zero page; pages of a split part that was not given are skipped.
    """
    ps = memory.page_size
    for run in memory.runs():
        if run.kind is RunKind.STORED:
            yield from _stored_pages(memory, run, ps)
        elif run.kind is RunKind.ZERO:
            zero = bytes(ps)
            for pfn in range(run.start_pfn, run.end_pfn):
                yield pfn, 0, zero
        elif run.kind is RunKind.PARTIAL:
            yield run.start_pfn, 0, memory.page(run.start_pfn)


def _stored_pages(memory: PhysicalMemory, run: Run, ps: int) -> Iterator[tuple[int, int, bytes]]:
    if run.source is None:  # held by the memory itself
        for pfn in range(run.start_pfn, run.end_pfn):
            yield pfn, 0, memory.page(pfn)
        return
    sizes = run.sizes if run.sizes is not None else (ps,) * run.count
    pfn, offset, i = run.start_pfn, run.offset, 0
    while i < run.count:
        j, span = i, 0
        while j < run.count and (span == 0 or span + sizes[j] <= _SPAN):
            span += sizes[j]
            j += 1
        data = run.source.read_at(offset, span)
        at = 0
        for k in range(i, j):
            yield pfn + k, run.flags, data[at : at + sizes[k]]
            at += sizes[k]
        offset += span
        i = j
