"""Split KDUMP output (makedumpfile ``--split``): one file per pfn range, kdump-format.md §9.

Every part has the byte-identical main header, a sub header with ``split = 1`` and its range, the
full bitmaps and notes, and descriptors + data for its own range only. Page data starts after room
for the *global* dumped count, as makedumpfile lays it out (a hole in all but the last part).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections.abc import Iterator

from kdfix.errors import WriteError
from kdfix.format.bitmap import Bitmap
from kdfix.model import DumpModel
from kdfix.read.memory import PhysicalMemory
from kdfix.write.kdump import (
    Bitmaps,
    KdumpLayout,
    PageSource,
    Progress,
    WriteResult,
    header_phys_base,
    open_sink,
    page_stream,
    prepare_kdump,
    write_header_area,
    write_memory_pages,
    write_page_area,
    write_tail,
)
from kdfix.write.sink import Sink, output_path, output_size


def split_ranges(bitmaps: Bitmaps, max_mapnr: int, parts: int) -> list[tuple[int, int]]:
    """Split ``[0, max_mapnr)`` into ``parts`` non-empty ranges holding about equal numbers of dumped pages."""
    if parts < 1:
        raise WriteError("a split set needs at least one part", field="split")
    if max_mapnr < parts:
        raise WriteError(f"cannot split {max_mapnr} pfns into {parts} parts", field="split")
    total = bitmaps.dumped.count()
    bounds = [0]
    pfns = bitmaps.dumped.iter_set()
    seen = 0
    cut = 0
    for k in range(1, parts):
        goal = total * k // parts
        while seen < goal:
            cut = next(pfns) + 1
            seen += 1
        # every range non-empty, and room left for the remaining parts
        bounds.append(min(max(cut, bounds[-1] + 1), max_mapnr - (parts - k)))
    bounds.append(max_mapnr)
    return list(itertools.pairwise(bounds))


def write_split(
    targets: list[str | os.PathLike[str] | Sink],
    model: DumpModel,
    memory: PhysicalMemory,
    *,
    # the options of write_kdump too: one keyword list would hide them from type checkers and help()
    codec: str = "zlib",
    flat: bool = False,
    zero_page: bool = True,
    exclude_zero: bool = False,
    workers: int = 1,
    progress: Progress | None = None,
    page_source: PageSource | None = None,
    phys_base_from_vmcoreinfo: bool = True,
    exclude: Bitmap | None = None,
) -> WriteResult:
    """Write ``len(targets)`` split parts, balanced by dumped page count; returns totals over the parts.

    ``page_source`` must yield pages in ascending pfn order (it is consumed across the parts).
    """
    began = time.monotonic()
    the_codec, layout, bitmaps = prepare_kdump(
        model, memory, codec, exclude_zero=exclude_zero, split=True, exclude=exclude
    )
    shared = _SplitSet(
        model, memory, layout, bitmaps, codec, int(the_codec.flag),
        phys_base=header_phys_base(model, from_vmcoreinfo=phys_base_from_vmcoreinfo),
        flat=flat, zero_page=zero_page and not exclude_zero, workers=workers,
        cursor=_PfnCursor(page_source) if page_source is not None else None,
    )  # fmt: skip
    total = bitmaps.dumped.count()
    parts: list[WriteResult] = []
    done = 0
    for index, (target, (start, end)) in enumerate(zip(targets, split_ranges(bitmaps, layout.max_mapnr, len(targets)),
                                                       strict=True)):  # fmt: skip

        def part_progress(n: int, _t: int, base: int = done) -> None:
            if progress is not None:
                progress(base + n, total)

        parts.append(_write_part(shared, target, start, end, first=index == 0, progress=part_progress))
        done += bitmaps.dumped.count(start, end)
    return WriteResult(
        paths=tuple(p for r in parts for p in r.paths if p),
        size=sum(r.size for r in parts),
        pages=sum(r.pages for r in parts),
        zero_pages=sum(r.zero_pages for r in parts),
        raw_pages=sum(r.raw_pages for r in parts),
        compressed_pages=sum(r.compressed_pages for r in parts),
        seconds=time.monotonic() - began,
        layout=layout,
    )


@dataclasses.dataclass(frozen=True)
class _SplitSet:
    """What every part of one split set is written from: the same headers, bitmaps and page source."""

    model: DumpModel
    memory: PhysicalMemory
    layout: KdumpLayout
    bitmaps: Bitmaps
    codec: str
    codec_flag: int
    phys_base: int
    flat: bool
    zero_page: bool
    workers: int
    cursor: _PfnCursor | None


def _write_part(
    shared: _SplitSet, target: str | os.PathLike[str] | Sink, start: int, end: int, *, first: bool, progress: Progress
) -> WriteResult:
    """One part: the full headers and bitmaps, descriptors and data of ``[start, end)``, then its tail (§9).

    Page data starts after room for the whole set's descriptors, as makedumpfile lays a part out."""
    began = time.monotonic()
    model, layout, bitmaps = shared.model, shared.layout, shared.bitmaps
    data_start = layout.data_start(bitmaps.dumped.count())
    part_total = bitmaps.dumped.count(start, end)
    own = not isinstance(target, Sink)
    sink = open_sink(target, flat=shared.flat)
    try:
        write_header_area(sink, model, layout, shared.codec_flag, bitmaps)
        if shared.cursor is None:
            data_end, counts = write_memory_pages(
                sink, layout, shared.memory, bitmaps, shared.codec, part_total, zero_page=shared.zero_page,
                workers=shared.workers, progress=progress, start_pfn=start, end_pfn=end, data_start=data_start,
            )  # fmt: skip
        else:
            stream = page_stream(
                bitmaps, shared.codec, shared.memory.page_size, zero_page=shared.zero_page,
                page_source=shared.cursor.take(start, end), start_pfn=start, end_pfn=end,
            )  # fmt: skip
            data_end, counts = write_page_area(
                sink, layout, stream, bitmaps.dumped.iter_set(start, end), part_total, data_start=data_start,
                zero_page=shared.zero_page, progress=progress,
            )  # fmt: skip
        # eraseinfo goes into the first part only: readers concatenate the parts' texts (§9).
        part_model = model if first else dataclasses.replace(model, eraseinfo=b"")
        write_tail(sink, part_model, layout, data_end, phys_base=shared.phys_base, split_range=(start, end))
    finally:
        if own:
            sink.close()
    return WriteResult(
        paths=(output_path(target, sink),),
        size=output_size(sink, 0),
        pages=counts.pages,
        zero_pages=counts.zero,
        raw_pages=counts.raw,
        compressed_pages=counts.compressed,
        seconds=time.monotonic() - began,
    )


class _PfnCursor:
    """Hands out consecutive pfn ranges of one ascending (pfn, flags, data) iterator."""

    def __init__(self, source: PageSource) -> None:
        self._it = iter(source)
        self._head: tuple[int, int, bytes] | None = None

    def take(self, start: int, end: int) -> Iterator[tuple[int, int, bytes]]:
        while True:
            item = self._head if self._head is not None else next(self._it, None)
            self._head = None
            if item is None:
                return
            if item[0] >= end:
                self._head = item
                return
            if item[0] >= start:
                yield item
