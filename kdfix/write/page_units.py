"""What the page writers compress: units of consecutive pfns (1 MiB with 4 KiB pages), the pieces of a source their
bytes come from, the sources themselves (an ELF file read with pread, or any PhysicalMemory), and the units over
the dumped pfns of a memory (``plan_memory``). Used in the main process and in the helpers of kdfix.write.parallel.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from kdfix.errors import FormatError, WriteError
from kdfix.format.bitmap import Bitmap

if TYPE_CHECKING:
    from kdfix.read.elf import ElfContainer

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

    An ELF memory on a regular file is read with pread at file offsets (PT_LOAD pieces, zeros elsewhere, as
    kdfix.read.elf fills pages); helpers reopen the file. A single-file kdump or flattened dump is read
    through its memory (pages decoded) and helpers reopen it with kdfix.open_dump. Memories without a
    container (DictMemory, synthetic memories) are inherited by forked helpers; anything else stays in this
    process.
    """
    ps = memory.page_size
    runs = list(dumped.iter_runs(start_pfn, end_pfn))
    container = getattr(memory, "container", None)
    elf = _elf_file(container)
    if elf is not None:
        elf_container, elf_path = elf
        source = FileRangeSource(elf_path)

        def make_elf(first: int, end: int) -> Unit:
            lo, hi = first * ps, end * ps
            pieces = []
            for seg in elf_container._segments_for(lo, hi):
                a = max(lo, seg.paddr)
                b = min(hi, seg.paddr + min(seg.filesz, seg.memsz))
                if a < b:
                    pieces.append(Piece(a - lo, seg.file_offset + (a - seg.paddr), b - a))
            return Unit(first, end - first, tuple(pieces))

        return MemoryPlan(PfnUnits(runs, make_elf), source, SourceSpec("elf", elf_path), source.close)

    def make_mem(first: int, end: int) -> Unit:
        return Unit(first, end - first, (Piece(0, first * ps, (end - first) * ps),))

    source2 = MemorySource(memory)
    spec: SourceSpec | None = None
    if container is None:
        spec = SourceSpec("inherit", "", source2)
    else:
        path = _single_dump_file(container)
        if path is not None:
            spec = SourceSpec("dump", path)
    return MemoryPlan(PfnUnits(runs, make_mem), source2, spec, lambda: None)


def _elf_file(container: Any) -> tuple[ElfContainer, str] | None:
    """An ELF container read from a regular file with pread, and that file's path; else None."""
    from kdfix.read.elf import ElfContainer
    from kdfix.read.source import FileSource

    if isinstance(container, ElfContainer) and isinstance(container.source, FileSource):
        path = container.source.path
        return (container, path) if os.path.isfile(path) else None
    return None


def _single_dump_file(container: Any) -> str | None:
    """The path of a one-file KDUMP (or flattened) container that kdfix.open_dump reopens as the same memory."""
    from kdfix.read.kdump import KdumpContainer

    if not isinstance(container, KdumpContainer):
        return None
    path = getattr(container, "path", None)
    if not isinstance(path, str) or not os.path.isfile(path):
        return None
    if getattr(container, "split", False):
        return None
    return path
