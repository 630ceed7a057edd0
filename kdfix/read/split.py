"""SplitContainer: the parts of a ``makedumpfile --split`` set joined by pfn range (kdump-format.md §9)."""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator, Sequence

from kdfix.errors import AddressError, FormatError, KdfixError
from kdfix.format.bitmap import Bitmap
from kdfix.format.kdump import header_features, split_identity
from kdfix.read.kdump import KdumpContainer, PageLocation
from kdfix.read.memory import ZeroRun, read_range, zero_runs_over
from kdfix.read.runs import Backing, Run, RunKind, bitmap_runs


def _same_file(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a == b


class SplitContainer:
    """Parts ordered by ``start_pfn_64``; ranges may not overlap, but may leave gaps (``gaps``, in ``problems``)."""

    def __init__(self, parts: Sequence[KdumpContainer]) -> None:
        if len(parts) < 2:
            raise FormatError("a split set needs at least two parts")
        self.problems: list[str] = []
        for i, part in enumerate(parts):
            name = part.path or f"part {i}"
            if part.is_diskdump or not header_features(part.header_version).split or not part.split:
                raise FormatError("not a part of a split dump (sub_header.split is 0, or a header version without it)",
                                  field="sub_header.split", path=name)  # fmt: skip
            for j in range(i):
                if _same_file(part.path, parts[j].path):
                    raise FormatError(f"given twice (also as part {j})", path=name)
        ordered = sorted(parts, key=lambda p: (p.start_pfn, p.end_pfn))
        first = ordered[0]
        ref = _header_key(first)
        for part in ordered[1:]:
            if _header_key(part) != ref:
                raise FormatError(f"main header differs from that of {first.path}: not parts of the same dump",
                                  field="main_header", offset=0, path=part.path)  # fmt: skip
            if part.max_mapnr != first.max_mapnr or part.block_size != first.block_size:
                raise FormatError("max_mapnr or block_size differs between parts", path=part.path)
        expected = 0
        prev: KdumpContainer | None = None
        self.gaps: list[tuple[int, int]] = []  # pfn ranges in no part (a part not given, or never written)
        for part in ordered:
            if part.end_pfn < part.start_pfn:  # empty parts are legal: makedumpfile --split writes them
                raise FormatError(f"inverted pfn range [{part.start_pfn:#x}, {part.end_pfn:#x})",
                                  field="sub_header.end_pfn_64", path=part.path)  # fmt: skip
            if part.start_pfn < expected:
                if prev is not None and part.start_pfn == prev.start_pfn and part.end_pfn == prev.end_pfn:
                    raise FormatError(f"duplicate part: same range [{part.start_pfn:#x}, {part.end_pfn:#x}) as "
                                      f"{prev.path}", field="sub_header.start_pfn_64", path=part.path)  # fmt: skip
                raise FormatError(f"range [{part.start_pfn:#x}, {part.end_pfn:#x}) overlaps the previous part "
                                  f"(ends at {expected:#x})", field="sub_header.start_pfn_64",
                                  path=part.path)  # fmt: skip
            if part.start_pfn > expected:
                self.gaps.append((expected, part.start_pfn))
            expected = max(expected, part.end_pfn)
            prev = part
        nbits = first.dumped.nbits
        if expected < nbits:
            self.gaps.append((expected, nbits))
        # Readable as libkdumpfile reads it: pages in no part are missing, and said so (kdump-format.md §9).
        for a, b in self.gaps:
            lost = first.dumped.count(a, b)
            if lost:
                self.problems.append(f"pfns [{a:#x}, {b:#x}) are in no part: {lost} dumped pages missing "
                                     "(a part of the set was not given)")  # fmt: skip
        for part in ordered:
            self.problems.extend(f"{part.path}: {p}" for p in part.problems)
        self.parts: tuple[KdumpContainer, ...] = tuple(ordered)
        self._starts = [p.start_pfn for p in ordered]

    @property
    def first(self) -> KdumpContainer:
        return self.parts[0]

    def part_for(self, pfn: int) -> KdumpContainer:
        i = bisect.bisect_right(self._starts, pfn) - 1
        if i < 0 or pfn >= self.parts[i].end_pfn:
            raise AddressError(f"pfn {pfn:#x} is in no part of the split set", paddr=pfn * self.first.block_size)
        return self.parts[i]

    def iter_page_results(
        self, start: int = 0, end: int | None = None
    ) -> Iterator[tuple[PageLocation | int, bytes | KdfixError]]:
        for part in self.parts:
            yield from part.iter_page_results(start, end)

    @property
    def memory(self) -> SplitMemory:
        return SplitMemory(self)

    def close(self) -> None:
        for part in self.parts:
            part.close()


def _header_key(part: KdumpContainer) -> bytes:
    """The main header's identity of a split set: see :func:`kdfix.format.kdump.split_identity`."""
    return split_identity(part._main_layout, part.main_header)


class SplitMemory:
    """PhysicalMemory of a split set: bitmaps of part 0, pages from the part that holds the pfn."""

    def __init__(self, split: SplitContainer) -> None:
        self.split = split
        self.page_size = split.first.block_size
        self.max_pfn = split.first.max_mapnr

    @property
    def valid(self) -> Bitmap:
        return self.split.first.valid

    @property
    def dumped(self) -> Bitmap:
        return self.split.first.dumped

    def present(self, pfn: int) -> bool:
        return self.split.first.dumped.test(pfn)

    def page(self, pfn: int) -> bytes:
        return self.split.part_for(pfn).page(pfn)

    def is_zero_page(self, pfn: int) -> bool:
        try:
            return self.split.part_for(pfn).is_zero_page(pfn)
        except KdfixError:
            return False

    def zero_runs(self, start: int, end: int) -> Iterator[ZeroRun]:
        """Runs of :meth:`is_zero_page` over ``[start, end)``: each part's for its range, not zero between."""
        clipped = ((max(start, p.start_pfn), min(end, p.end_pfn), p) for p in self.split.parts)
        return zero_runs_over(start, end, ((a, b, p.zero_runs(a, b)) for a, b, p in clipped if a < b))

    def iter_pages(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[tuple[int, bytes]]:
        for part in self.split.parts:
            yield from part.iter_pages(start_pfn, end_pfn)

    def read(self, paddr: int, size: int, *, zero_fill: bool = False) -> bytes:
        return read_range(self, paddr, size, zero_fill=zero_fill)

    def runs(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[Run]:
        """Each part's runs over its range; dumped pfns in no part are MISSING (kdfix.read.runs)."""
        end = self.max_pfn if end_pfn is None else min(end_pfn, self.max_pfn)
        pos = max(0, start_pfn)
        for part in self.split.parts:
            lo, hi = max(pos, part.start_pfn), min(end, part.end_pfn)
            if lo >= hi:
                continue
            if pos < lo:
                yield from self._gap(pos, lo)
            yield from part.runs(lo, hi)
            pos = hi
        if pos < end:
            yield from self._gap(pos, end)

    def _gap(self, start: int, end: int) -> Iterator[Run]:
        def missing(a: int, b: int) -> Iterator[Run]:
            yield Run(a, b - a, RunKind.MISSING)

        return bitmap_runs(self.dumped, start, end, missing)

    @property
    def backing(self) -> Backing | None:
        return None  # several files: forked helpers keep the parts open
