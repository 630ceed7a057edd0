"""The PhysicalMemory protocol every container exposes, and a dict-backed implementation for tests and generators."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

from kdfix.errors import AddressError
from kdfix.format.bitmap import Bitmap
from kdfix.read.runs import Backing, Run, held_runs

if TYPE_CHECKING:
    import numpy as np

ZeroRun = tuple[int, int, bool]  # (first pfn, end pfn, stored as the shared zero page)


@runtime_checkable
class PhysicalMemory(Protocol):
    """Physical memory of a dump, in pages of ``page_size`` bytes.

    ``valid`` is the 1st bitmap (pfns that exist), ``dumped`` the 2nd (pfns with data);
    ``max_pfn`` is the exclusive end (``max_mapnr``).
    """

    page_size: int
    max_pfn: int

    @property
    def valid(self) -> Bitmap: ...

    @property
    def dumped(self) -> Bitmap: ...

    def present(self, pfn: int) -> bool:
        """True if the page has data in the dump."""
        ...

    def page(self, pfn: int) -> bytes:
        """The decoded page; AddressError if it is not dumped, CodecError if it does not decode."""
        ...

    def iter_pages(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Yield (pfn, page bytes) of dumped pages in ascending pfn order."""
        ...

    def read(self, paddr: int, size: int, *, zero_fill: bool = False) -> bytes:
        """Read a physical byte range; missing pages raise AddressError unless ``zero_fill``."""
        ...

    def runs(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[Run]:
        """Where and how the pages of ``[start_pfn, end_pfn)`` are stored, covering it exactly (kdfix.read.runs)."""
        ...

    @property
    def backing(self) -> Backing | None:
        """The file another process reopens to read the same pages; None if there is none (see Backing)."""
        ...


def read_range(memory: PhysicalMemory, paddr: int, size: int, *, zero_fill: bool = False) -> bytes:
    """Shared implementation of ``PhysicalMemory.read`` on top of ``page()``."""
    if size < 0 or paddr < 0:
        raise AddressError(f"bad range {paddr:#x}+{size:#x}", paddr=paddr)
    ps = memory.page_size
    out = bytearray()
    pos = paddr
    end = paddr + size
    while pos < end:
        pfn, off = divmod(pos, ps)
        take = min(ps - off, end - pos)
        if memory.present(pfn):
            out += memory.page(pfn)[off : off + take]
        elif zero_fill:
            out += bytes(take)
        else:
            raise AddressError(f"physical address {pos:#x} (pfn {pfn:#x}) is not in the dump", paddr=pos)
        pos += take
    return bytes(out)


def mask_runs(mask: np.ndarray, base: int) -> Iterator[ZeroRun]:
    """Maximal runs ``(base + a, base + b, value)`` of a boolean array, found at C speed."""
    import numpy as np

    if not mask.size:
        return
    edges = [0, *(np.flatnonzero(mask[1:] != mask[:-1]) + 1).tolist(), int(mask.size)]
    for a, b in itertools.pairwise(edges):
        yield base + a, base + b, bool(mask[a])


def merge_runs(runs: Iterable[ZeroRun]) -> Iterator[ZeroRun]:
    """Adjacent runs of the same value joined into one (pieces from batches, parts or gaps)."""
    held: ZeroRun | None = None
    for run in runs:
        if held is not None and held[1] == run[0] and held[2] == run[2]:
            held = (held[0], run[1], held[2])
            continue
        if held is not None:
            yield held
        held = run
    if held is not None:
        yield held


def zero_runs_over(start: int, end: int, spans: Iterable[tuple[int, int, Iterable[ZeroRun]]]) -> Iterator[ZeroRun]:
    """Merged runs over ``[start, end)`` from ``spans`` (ascending, disjoint ``(a, b, runs of [a, b))``), not zero
    between them: a container's dumped runs, a split set's parts."""

    def pieces() -> Iterator[ZeroRun]:
        pos = start
        for a, b, runs in spans:
            if a > pos:
                yield pos, a, False
            yield from runs
            pos = b
        if pos < end:
            yield pos, end, False

    return merge_runs(pieces())


class HeldPages:
    """What every memory that holds or computes its pages itself (no file behind them) answers alike: byte reads
    through ``page()``, runs without a stored extent (kdfix.read.runs), no backing file."""

    def read(self, paddr: int, size: int, *, zero_fill: bool = False) -> bytes:
        return read_range(cast(PhysicalMemory, self), paddr, size, zero_fill=zero_fill)

    def runs(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[Run]:
        return held_runs(cast(PhysicalMemory, self), start_pfn, end_pfn)

    @property
    def backing(self) -> Backing | None:
        return None


class DictMemory(HeldPages):
    """PhysicalMemory over a {pfn: page bytes} mapping (generators, tests, fakes)."""

    def __init__(
        self,
        pages: Mapping[int, bytes],
        page_size: int = 4096,
        max_pfn: int | None = None,
        valid: Bitmap | None = None,
    ) -> None:
        self._pages = dict(pages)
        for pfn, data in self._pages.items():
            if len(data) != page_size:
                raise ValueError(f"page {pfn:#x} is {len(data)} bytes, expected {page_size}")
        self.page_size = page_size
        top = max(self._pages, default=-1) + 1
        self.max_pfn = top if max_pfn is None else max_pfn
        if self.max_pfn < top:
            raise ValueError("max_pfn below the highest page")
        self._dumped = Bitmap.from_pfns(self._pages, self.max_pfn)
        self._valid = valid if valid is not None else self._dumped

    @property
    def valid(self) -> Bitmap:
        return self._valid

    @property
    def dumped(self) -> Bitmap:
        return self._dumped

    def present(self, pfn: int) -> bool:
        return pfn in self._pages

    def page(self, pfn: int) -> bytes:
        try:
            return self._pages[pfn]
        except KeyError:
            raise AddressError(f"pfn {pfn:#x} is not in the dump", paddr=pfn * self.page_size) from None

    def iter_pages(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[tuple[int, bytes]]:
        for pfn in sorted(self._pages):
            if pfn >= start_pfn and (end_pfn is None or pfn < end_pfn):
                yield pfn, self._pages[pfn]


class PageContainer(Protocol):
    """What ContainerMemory needs of a container: its bitmaps, presence and zero-page hint, and page reads."""

    @property
    def valid(self) -> Bitmap: ...

    @property
    def dumped(self) -> Bitmap: ...

    def present(self, pfn: int) -> bool: ...

    def is_zero_page(self, pfn: int) -> bool: ...

    def zero_runs(self, start: int, end: int) -> Iterator[ZeroRun]: ...

    def page(self, pfn: int) -> bytes: ...

    def iter_pages(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[tuple[int, bytes]]: ...

    def runs(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[Run]: ...

    @property
    def backing(self) -> Backing | None: ...


class ContainerMemory:
    """PhysicalMemory of one container: every answer is the container's (each format gives its own).

    Subclasses name the container type and where its page size and pfn bound come from.
    """

    def __init__(self, container: PageContainer, page_size: int, max_pfn: int) -> None:
        self.container = container
        self.page_size = page_size
        self.max_pfn = max_pfn

    @property
    def valid(self) -> Bitmap:
        return self.container.valid

    @property
    def dumped(self) -> Bitmap:
        return self.container.dumped

    def present(self, pfn: int) -> bool:
        return self.container.present(pfn)

    def is_zero_page(self, pfn: int) -> bool:
        return self.container.is_zero_page(pfn)

    def zero_runs(self, start: int, end: int) -> Iterator[ZeroRun]:
        """Runs of :meth:`is_zero_page` over ``[start, end)``, in bulk (see the container's)."""
        return self.container.zero_runs(start, end)

    def page(self, pfn: int) -> bytes:
        return self.container.page(pfn)

    def iter_pages(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[tuple[int, bytes]]:
        return self.container.iter_pages(start_pfn, end_pfn)

    def read(self, paddr: int, size: int, *, zero_fill: bool = False) -> bytes:
        return read_range(self, paddr, size, zero_fill=zero_fill)  # type: ignore[arg-type]

    def runs(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[Run]:
        return self.container.runs(start_pfn, end_pfn)

    @property
    def backing(self) -> Backing | None:
        return self.container.backing
