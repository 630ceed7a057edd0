"""What the page writers compress: units of consecutive pfns (1 MiB with 4 KiB pages), the pieces of a source their
bytes come from, the sources themselves (an ELF file read with pread, or any PhysicalMemory), and the units over
the dumped pfns of a memory (``plan_memory``). Used in the main process and in the helpers of kdfix.write.parallel.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kdfix.errors import FormatError, WriteError
from kdfix.format.bitmap import Bitmap
from kdfix.read.runs import Run, RunKind

UNIT_PAGES = 256  # pages per compression unit (1 MiB with 4 KiB pages)


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes ``[src, src + length)`` of the source land at ``buf_offset`` of a unit buffer."""

    buf_offset: int
    src: int
    length: int


@dataclass(frozen=True, slots=True)
class Unit:
    """A run of consecutive pfns and where their bytes come from; untouched bytes are zero."""

    first_pfn: int
    npages: int
    pieces: tuple[Piece, ...]


class PageSource(Protocol):
    """Reads source bytes for a unit."""

    def read(self, src: int, length: int) -> bytes: ...


class FileRangeSource:
    """Positional reads of a file (an ELF dump: ``src`` is a file offset)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size

    def read(self, src: int, length: int) -> bytes:
        data = os.pread(self._fd, length, src)
        if len(data) != length:
            raise FormatError(
                f"file ends inside a PT_LOAD segment (wanted {length} bytes, got {len(data)})",
                field="PT_LOAD.p_filesz",
                offset=src,
                path=self.path,
            )
        return data

    def read_into(self, view: memoryview, src: int) -> None:
        got = os.preadv(self._fd, [view], src)
        while 0 < got < len(view):  # preadv may return short on huge requests
            more = os.preadv(self._fd, [view[got:]], src + got)
            if more <= 0:
                break
            got += more
        if got != len(view):
            raise FormatError(
                f"file ends inside a PT_LOAD segment (wanted {len(view)} bytes, got {got})",
                field="PT_LOAD.p_filesz",
                offset=src,
                path=self.path,
            )

    def close(self) -> None:
        os.close(self._fd)


class MemorySource:
    """Reads through a PhysicalMemory (``src`` is a guest-physical address)."""

    cheap_rereads = False  # a page read may mean decoding it: cache hits outside the unit are not confirmed

    def __init__(self, memory: object) -> None:
        self.memory = memory

    def read(self, src: int, length: int) -> bytes:
        memory: Any = self.memory
        ps = memory.page_size
        if length > ps and not src % ps and not length % ps:
            # whole pages: the memory's own batched page iterator, when it yields every page of the range
            first, end = src // ps, (src + length) // ps
            pages = [page for _, page in memory.iter_pages(first, end)]
            if len(pages) == end - first:
                return b"".join(pages)
        return memory.read(src, length)  # type: ignore[no-any-return]


_SCRATCH: dict[int, bytearray] = {}  # per-process unit buffers, reused (no allocation or page faults per unit)


def fill_unit(source: PageSource, unit: Unit, page_size: int) -> bytes | bytearray:
    """The unit's page bytes: source pieces, zeros elsewhere.

    The result may be a reused buffer: it is valid until the next call in the same process.
    """
    total = unit.npages * page_size
    buf = _SCRATCH.get(total)
    if buf is None:
        buf = _SCRATCH[total] = bytearray(total)
    whole = len(unit.pieces) == 1 and unit.pieces[0].buf_offset == 0 and unit.pieces[0].length == total
    if not whole:
        buf[:] = zeros(total)
    read_into = getattr(source, "read_into", None)
    view = memoryview(buf)
    for p in unit.pieces:
        if read_into is not None:
            read_into(view[p.buf_offset : p.buf_offset + p.length], p.src)
        else:
            view[p.buf_offset : p.buf_offset + p.length] = source.read(p.src, p.length)
    view.release()
    return buf


_ZEROS: dict[int, bytes] = {}


def zeros(size: int) -> bytes:
    zeros = _ZEROS.get(size)
    if zeros is None:
        zeros = _ZEROS[size] = bytes(size)
    return zeros


@dataclass(frozen=True)
class SourceSpec:
    """How a worker process gets the source: ``kind`` is "elf" (file offsets, reopened), "dump" (reopened with
    kdfix.open_dump) or "inherit" (``source`` itself, a copy of which every forked helper holds: only for sources
    without file state, e.g. in-memory pages)."""

    kind: str
    path: str
    source: PageSource | None = None


def open_source(spec: SourceSpec) -> PageSource:
    if spec.kind == "elf":
        return FileRangeSource(spec.path)
    if spec.kind == "inherit":
        if spec.source is None:
            raise WriteError("an inherited page source is missing", field="workers")
        return spec.source
    from kdfix import open_dump  # type: ignore[attr-defined]

    return MemorySource(open_dump(spec.path).memory)


class PfnUnits(Sequence[Unit]):
    """Units of at most ``unit_pages`` pages covering ``runs`` of pfns, built on demand by ``make(first, end)``
    (memory stays flat: only the runs are held)."""

    def __init__(
        self, runs: Sequence[tuple[int, int]], make: Callable[[int, int], Unit], unit_pages: int = UNIT_PAGES
    ) -> None:
        self.runs = list(runs)
        self.make = make
        self.unit_pages = unit_pages
        self._starts: list[int] = []
        total = 0
        for first, end in self.runs:
            self._starts.append(total)
            total += -(-(end - first) // unit_pages)
        self._count = total
        self.pages = sum(end - first for first, end in self.runs)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> Unit:  # type: ignore[override]
        if not 0 <= index < self._count:
            raise IndexError(index)
        r = bisect.bisect_right(self._starts, index) - 1
        first, end = self.runs[r]
        ufirst = first + (index - self._starts[r]) * self.unit_pages
        return self.make(ufirst, min(end, ufirst + self.unit_pages))

    def __iter__(self) -> Iterator[Unit]:
        step = self.unit_pages
        for first, end in self.runs:
            for ufirst in range(first, end, step):
                yield self.make(ufirst, min(end, ufirst + step))


@dataclass
class MemoryPlan:
    """How to compress the dumped pages of a memory: the units, a source for this process and a spec for helpers
    (None: helpers cannot get at the pages, so everything is compressed in this process)."""

    units: PfnUnits
    source: PageSource
    spec: SourceSpec | None
    close: Callable[[], None]


def plan_memory(memory: Any, dumped: Bitmap, *, start_pfn: int = 0, end_pfn: int | None = None) -> MemoryPlan:
    """Units over the set bits of ``dumped`` in ``[start_pfn, end_pfn)`` and where their bytes come from.

    Decided by the memory's runs and backing (kdfix.read.runs), not by its container: a memory whose pages lie raw
    in a regular file (an ELF core) is read with pread at the file offsets its runs give, zeros elsewhere, and
    helpers reopen the file; one that kdfix.open_dump reopens (a one-file KDUMP or flattened dump) is read through
    the memory, pages decoded, and helpers reopen it; any other is inherited by the forked helpers.
    """
    runs = list(dumped.iter_runs(start_pfn, end_pfn))
    backing = memory.backing
    if backing is not None and backing.raw:
        ps = memory.page_size
        source = FileRangeSource(backing.path)

        def make_file(first: int, end: int) -> Unit:
            return Unit(first, end - first, tuple(file_pieces(memory.runs(first, end), first, ps)))

        return MemoryPlan(PfnUnits(runs, make_file), source, SourceSpec("elf", backing.path), source.close)

    def make_mem(first: int, end: int) -> Unit:
        ps = memory.page_size
        return Unit(first, end - first, (Piece(0, first * ps, (end - first) * ps),))

    source2 = MemorySource(memory)
    spec = SourceSpec("dump", backing.path) if backing is not None else SourceSpec("inherit", "", source2)
    return MemoryPlan(PfnUnits(runs, make_mem), source2, spec, lambda: None)


def file_pieces(runs: Iterable[Run], first_pfn: int, page_size: int) -> Iterator[Piece]:
    """The file bytes of raw STORED and PARTIAL runs as pieces of a unit starting at ``first_pfn`` (ZERO runs
    and pages not in the file are left zero)."""
    for run in runs:
        at = (run.start_pfn - first_pfn) * page_size
        if run.kind is RunKind.STORED:
            if not run.raw:
                raise WriteError(f"pfn {run.start_pfn:#x} is not stored raw in its file", field="runs")
            yield Piece(at, run.offset, run.count * page_size)
        elif run.kind is RunKind.PARTIAL:
            for in_page, offset, length in run.pieces:
                yield Piece(at + in_page, offset, length)
