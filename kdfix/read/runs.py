"""Memory as runs: where and how the bytes of consecutive pfns are stored, as volatility3's ``mapping()`` tells.

``PhysicalMemory.runs(start_pfn, end_pfn)`` yields :class:`Run` records that cover ``[start_pfn, end_pfn)``
exactly, in ascending order, lazily (a dump has millions of pages: runs are produced batch by batch and a record
holds at most :data:`RUN_PAGES` per-page sizes). Writers consume them instead of asking which container a memory
is: stored pages pass through undecoded, ELF page bytes are read at their file offsets, zero pages are known
without reading them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from kdfix.format.bitmap import Bitmap
from kdfix.read.source import Source

RUN_PAGES = 4096  # pages one coalesced KDUMP run holds at most (its per-page sizes stay small)


class RunKind(enum.Enum):
    """How the pages of a run are stored."""

    STORED = "stored"  # stored bytes at ``offset`` of ``source``: raw pages, or one stored block per page
    ZERO = "zero"  # read as zeros and nothing of theirs is stored (a KDUMP shared zero page, an ELF memsz tail)
    PARTIAL = "partial"  # one page: ``pieces`` of file bytes, zeros elsewhere (an ELF page not inside one segment)
    EXCLUDED = "excluded"  # not in the dump (the 2nd bitmap's bit is clear, or no PT_LOAD covers the page)
    MISSING = "missing"  # dumped by the bitmap, but in no file given (a part of a split set left out)


@dataclass(frozen=True, slots=True)
class Run:
    """``count`` consecutive pfns from ``start_pfn`` stored alike.

    A STORED run's bytes lie back to back from ``offset`` in ``source``: ``count`` raw pages when ``sizes`` is
    None, else one stored block per page of ``sizes[i]`` bytes, encoded as ``flags`` says (page_desc.flags,
    kdump-format.md §5-§7). ``source`` None: the memory holds the pages itself (read them with ``page()``).
    A PARTIAL page's ``pieces`` are (offset in the page, file offset, length).
    """

    start_pfn: int
    count: int
    kind: RunKind
    offset: int = 0
    sizes: tuple[int, ...] | None = None
    flags: int = 0
    pieces: tuple[tuple[int, int, int], ...] = ()
    source: Source | None = None

    @property
    def end_pfn(self) -> int:
        return self.start_pfn + self.count

    @property
    def raw(self) -> bool:
        """True if the stored bytes are the pages themselves (read, not decoded)."""
        return self.kind is RunKind.STORED and self.sizes is None

    def stored_size(self, page_size: int) -> int:
        """Bytes of the stored extent ``[offset, offset + stored_size)`` (0 unless STORED)."""
        if self.kind is not RunKind.STORED:
            return 0
        return self.count * page_size if self.sizes is None else sum(self.sizes)


@dataclass(frozen=True, slots=True)
class Backing:
    """How another process reaches the same memory: the regular file at ``path``.

    ``raw``: every STORED run of the memory is raw, at file offsets of ``path`` (an ELF core: read them with
    pread); otherwise ``kdfix.open_dump(path)`` reopens the same memory.
    """

    path: str
    raw: bool


class RunBuilder:
    """Coalesces pages one after another into a Run: consecutive pfns whose stored blocks lie back to back with
    the same flags (all raw, or all one block per page), or consecutive shared zero pages; at most RUN_PAGES."""

    __slots__ = ("count", "flags", "next", "offset", "page_size", "pfn", "raw", "sizes", "source", "zero")

    def __init__(
        self, pfn: int, source: Source, *, zero: bool = False, offset: int = 0, size: int = 0, flags: int = 0,
        page_size: int = 0,
    ) -> None:  # fmt: skip
        self.pfn, self.source, self.zero = pfn, source, zero
        self.count = 1
        self.offset, self.next, self.flags, self.page_size = offset, offset + size, flags, page_size
        self.raw = not zero and size == page_size and not flags
        self.sizes = [] if zero or self.raw else [size]

    def add_zero(self) -> bool:
        """Take the next pfn as a shared zero page; False if it starts a new run."""
        if not self.zero or self.count >= RUN_PAGES:
            return False
        self.count += 1
        return True

    def add(self, offset: int, size: int, flags: int) -> bool:
        """Take the next pfn's stored block; False if it starts a new run."""
        if self.zero or self.count >= RUN_PAGES or offset != self.next or flags != self.flags:
            return False
        raw = size == self.page_size and not flags
        if raw != self.raw:
            return False
        if not raw:
            self.sizes.append(size)
        self.count += 1
        self.next += size
        return True

    def build(self) -> Run:
        if self.zero:
            return Run(self.pfn, self.count, RunKind.ZERO)
        sizes = None if self.raw else tuple(self.sizes)
        return Run(self.pfn, self.count, RunKind.STORED, self.offset, sizes, self.flags, source=self.source)


class _Held(Protocol):
    page_size: int
    max_pfn: int

    @property
    def dumped(self) -> Bitmap: ...


def held_runs(memory: _Held, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[Run]:
    """Runs of a memory that holds its pages itself (no file): STORED without a source where the 2nd bitmap is
    set, EXCLUDED elsewhere."""
    end = memory.max_pfn if end_pfn is None else min(end_pfn, memory.max_pfn)
    yield from bitmap_runs(memory.dumped, start_pfn, end, lambda a, b: iter((Run(a, b - a, RunKind.STORED),)))


def bitmap_runs(
    dumped: Bitmap, start: int, end: int, stored: _StoredRuns, *, absent: RunKind = RunKind.EXCLUDED
) -> Iterator[Run]:
    """Runs covering ``[start, end)``: ``stored(a, b)`` over each run of set bits, ``absent`` between them."""
    pos = max(0, start)
    for a, b in dumped.iter_runs(pos, end):
        if pos < a:
            yield Run(pos, a - pos, absent)
        yield from stored(a, b)
        pos = b
    if pos < end:
        yield Run(pos, end - pos, absent)


class _StoredRuns(Protocol):
    def __call__(self, first: int, end: int, /) -> Iterator[Run]: ...
