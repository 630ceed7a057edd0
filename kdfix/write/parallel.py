"""Parallel page compression shared by the writers: 1 MiB units of consecutive pfns read from a pread-able source,
a page-dedup cache (:class:`PageCache` across forked processes, :class:`LocalPageCache` in one) and helper
processes that read their units themselves and return results through shared-memory slots.

Used by ``kdfix generate --style qemu`` (:mod:`kdfix.generate.qemu_stream`) and by ``write_kdump``
(``kdfix convert``). The output never depends on the number of workers: results are consumed in unit order.
"""

from __future__ import annotations

import bisect
import contextlib
import mmap
import multiprocessing
import os
import pickle
import select
import struct
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from kdfix.codecs import codec_named
from kdfix.errors import FormatError, KdfixError, WriteError
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


# --------------------------------------------------------------------------------------------------------------
# Page sources and compression (runs in the main process or in workers)


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
        buf[:] = _zeros(total)
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


def _zeros(size: int) -> bytes:
    zeros = _ZEROS.get(size)
    if zeros is None:
        zeros = _ZEROS[size] = bytes(size)
    return zeros


DEDUP_CACHE_BYTES = 16 << 20  # stored bytes of recently compressed pages kept for reuse (shared by all processes)
DEDUP_SLOTS = 1 << 17  # index entries of the page cache (direct-mapped by page hash)


def _shared_map(size: int) -> mmap.mmap:
    """Anonymous shared memory (visible across fork), populated up front: pages are zeroed once, here."""
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    return mmap.mmap(-1, size, flags=flags)


class PageCache:
    """Recently compressed pages, in shared memory so that every process of one run (forked helpers too) uses it.

    An index entry maps a page's ``hash()`` to where a page with that hash was read (``src``) and to its stored
    bytes in a ring of ``ring_bytes``; an entry whose bytes the ring has since overwritten is ignored. The hash
    only proposes a candidate: the caller confirms it by comparing the page with the bytes at ``src``. Forked
    processes share the hash secret, so their hashes agree. Memory is fixed: the index plus the ring.
    """

    _ENTRY = struct.Struct("<qqqii")  # key, src, ring position, stored size, kind (0 empty, 1 stored, 2 raw)
    _WPOS = struct.Struct("<q")  # total bytes ever written to the ring (at offset 0)

    def __init__(self, ring_bytes: int = DEDUP_CACHE_BYTES, slots: int = DEDUP_SLOTS, *, lock: Any = None) -> None:
        self._mask = slots - 1
        self._index = 8
        self._ring = 8 + slots * self._ENTRY.size
        self._ring_bytes = ring_bytes
        self._mm = _shared_map(self._ring + ring_bytes)
        self._lock = lock if lock is not None else contextlib.nullcontext()

    def get(self, key: int) -> tuple[int, bytes | None] | None:
        """``(src, stored bytes or None for a raw page)`` of the page last put with ``key``, if still held."""
        at = self._index + (key & self._mask) * self._ENTRY.size
        mm = self._mm
        with self._lock:
            k, src, pos, size, kind = self._ENTRY.unpack_from(mm, at)
            if kind == 0 or k != key:
                return None
            if kind == 2:
                return src, None
            (wpos,) = self._WPOS.unpack_from(mm, 0)
            if pos < wpos - self._ring_bytes:
                return None
            start = self._ring + pos % self._ring_bytes
            return src, mm[start : start + size]

    def put(self, key: int, src: int, packed: bytes | None) -> None:
        at = self._index + (key & self._mask) * self._ENTRY.size
        mm, ring = self._mm, self._ring_bytes
        with self._lock:
            if packed is None:
                self._ENTRY.pack_into(mm, at, key, src, 0, 0, 2)
                return
            size = len(packed)
            if size > ring:
                return
            (wpos,) = self._WPOS.unpack_from(mm, 0)
            if wpos % ring + size > ring:  # keep every item contiguous: skip the ring's tail
                wpos += ring - wpos % ring
            start = self._ring + wpos % ring
            mm[start : start + size] = packed
            self._ENTRY.pack_into(mm, at, key, src, wpos, size, 1)
            self._WPOS.pack_into(mm, 0, wpos + size)

    def close(self) -> None:
        with contextlib.suppress(BufferError):
            self._mm.close()


class LocalPageCache:
    """:class:`PageCache` for a single process: a FIFO dict of at most ``ring_bytes`` (stored bytes plus a fixed
    charge per entry, so raw pages, which store nothing, cannot grow it without bound)."""

    ENTRY_COST = 384  # measured: an OrderedDict entry with its key, tuple and source offset, in CPython 3.11

    def __init__(self, ring_bytes: int = DEDUP_CACHE_BYTES) -> None:
        self._items: OrderedDict[int, tuple[int, bytes | None]] = OrderedDict()
        self._bytes = 0
        self._limit = ring_bytes
        self.get = self._items.get

    def put(self, key: int, src: int, packed: bytes | None) -> None:
        items, cost = self._items, self.ENTRY_COST
        old = items.get(key)
        if old is not None:
            self._bytes -= cost + (len(old[1]) if old[1] is not None else 0)
        items[key] = (src, packed)  # a replaced entry keeps its place in the FIFO
        self._bytes += cost + (len(packed) if packed is not None else 0)
        while self._bytes > self._limit:
            dropped = items.popitem(last=False)[1][1]
            self._bytes -= cost + (len(dropped) if dropped is not None else 0)

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        self._items.clear()


class UnitCompressor:
    """Reads and compresses units in one process as QEMU compresses pages (qemu-dumps.md §5).

    A page whose bytes equal a recently compressed page is not compressed again: the codecs are pure functions
    of the page, so the earlier result is the same bytes. The :class:`PageCache` proposes the earlier page by
    hash; it is used only after re-reading that page from the source and comparing it in full.
    """

    def __init__(
        self,
        source: PageSource,
        codec: str,
        page_size: int,
        *,
        cache: PageCache | LocalPageCache | None = None,
        zero_page: bool = True,
    ) -> None:
        self.source = source
        self.page_size = page_size
        self.compress = page_compressor(codec)
        self._zero_page = _zeros(page_size)
        self.cache = cache if cache is not None else LocalPageCache()
        self.hits = 0
        # zero_page=False: an all-zero page is stored like any other (its own compressed bytes, or raw)
        self._zero_stored: bytes | None = None
        if not zero_page:
            packed = self.compress(self._zero_page)
            self._zero_stored = packed if len(packed) < page_size else self._zero_page

    def __call__(self, unit: Unit) -> tuple[bytes, bytes]:
        ps = self.page_size
        data = fill_unit(self.source, unit, ps)
        p0 = unit.pieces[0] if len(unit.pieces) == 1 else None
        base = p0.src if p0 is not None and p0.buf_offset == 0 and p0.length == len(data) else None
        return self.pages(data, unit.npages, base)

    def pages(self, data: bytes | bytearray, npages: int, base: int | None = None) -> tuple[bytes, bytes]:
        """Compress ``npages`` pages of ``data`` (the source's bytes from ``base`` on, when given).

        Returns ``(sizes, stored)``: ``sizes`` is an ``array('I')`` as bytes with 0 for an all-zero page (shared
        zero descriptor; with ``zero_page=False`` such a page is stored like any other), the compressed size
        when smaller than a page, or ``page_size`` for a raw page;
        ``stored`` is the concatenation of the stored bytes of the non-zero pages. Only pages with a ``base``
        (read whole from the source) are remembered, since a hit is confirmed against the source.
        """
        ps = self.page_size
        zero_stored = self._zero_stored
        if data == _zeros(len(data)):
            if zero_stored is None:
                return bytes(4 * npages), b""
            return array("I", [len(zero_stored)] * npages).tobytes(), zero_stored * npages
        zero_page, compress, read = self._zero_page, self.compress, self.source.read
        reread = getattr(self.source, "cheap_rereads", True)  # else only in-unit repeats are confirmed
        get, put = self.cache.get, self.cache.put
        sizes = array("I", bytes(4 * npages))
        out: list[bytes] = []
        hits = 0
        view = memoryview(data)
        for i in range(npages):
            at = i * ps
            if data.startswith(zero_page, at):
                if zero_stored is not None:
                    out.append(zero_stored)
                    sizes[i] = len(zero_stored)
                continue
            page = view[at : at + ps].tobytes()
            key = hash(page)
            hit = get(key)
            if hit is not None and (
                data.startswith(page, hit[0] - base)
                if base is not None and base <= hit[0] < at + base
                else reread and read(hit[0], ps) == page
            ):  # confirmed in full: in this unit's buffer when the earlier page is in it, else from the source
                hits += 1
                packed = hit[1]
            else:
                packed = compress(page)
                if len(packed) >= ps:
                    packed = None
                if base is not None:
                    put(key, base + at, packed)
            if packed is None:
                out.append(page)
                sizes[i] = ps
            else:
                out.append(packed)
                sizes[i] = len(packed)
        view.release()
        self.hits += hits
        return sizes.tobytes(), b"".join(out)


def page_compressor(codec: str) -> Callable[[bytes], bytes]:
    """The codec's level-1 page compressor, bound once (no per-page module lookup on the hot path)."""
    if codec == "zlib":
        import functools
        import zlib

        return functools.partial(zlib.compress, level=1)  # compress2(..., Z_BEST_SPEED) as QEMU
    compress = codec_named(codec).compress
    return lambda page: compress(bytes(page))  # python-lzo wants read-only bytes


@dataclass(frozen=True)
class SourceSpec:
    """How a worker process gets the source: ``kind`` is "elf" (file offsets, reopened), "dump" (reopened with
    kdfix.open_dump) or "inherit" (``source`` itself, a copy of which every forked helper holds: only for sources
    without file state, e.g. in-memory pages)."""

    kind: str
    path: str
    source: PageSource | None = None


def _open_source(spec: SourceSpec) -> PageSource:
    if spec.kind == "elf":
        return FileRangeSource(spec.path)
    if spec.kind == "inherit":
        if spec.source is None:
            raise WriteError("an inherited page source is missing", field="workers")
        return spec.source
    from kdfix import open_dump  # type: ignore[attr-defined]

    return MemorySource(open_dump(spec.path).memory)


def compressed_units(
    units: Sequence[Unit],
    *,
    source: PageSource,
    spec: SourceSpec | None,
    codec: str,
    page_size: int,
    workers: int,
    zero_page: bool = True,
) -> Iterator[tuple[bytes | memoryview, bytes | memoryview]]:
    """Yield ``(sizes, stored)`` for every unit, in unit order (see :meth:`UnitCompressor.pages`).

    With ``workers = N > 1`` the main process is one of N compressors (see :class:`_Helpers`). A yielded pair is
    valid until the next item is requested. The output does not depend on N.
    """
    if workers <= 1 or spec is None or len(units) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        cache = LocalPageCache()
        try:
            inline = UnitCompressor(source, codec, page_size, cache=cache, zero_page=zero_page)
            for unit in units:
                yield inline(unit)
        finally:
            cache.close()
        return
    ctx = multiprocessing.get_context("fork")
    shared = PageCache(lock=ctx.Lock())
    try:
        with _Helpers(units, spec, codec, page_size, workers - 1, shared, zero_page=zero_page) as helpers:
            yield from helpers.run(UnitCompressor(source, codec, page_size, cache=shared, zero_page=zero_page))
    finally:
        shared.close()


_RESULT = struct.Struct("<iiqqq")  # helper, slot, unit index, len(sizes) (-1: error), len(stored)
_SLOTS = 4  # result buffers per helper: a helper runs at most this many units ahead of the writer
_LOOKAHEAD = 8  # the main process computes a unit itself only while fewer than this many per process are pending


class _Helpers:
    """Helper processes that share the unit queue with the main process.

    Every process (main included) takes the next unit index from a shared counter, so work is balanced
    whatever the unit costs. A helper reads its unit from the source itself (the ELF is reopened, nothing is
    sent but indices), compresses it and leaves the result in one of its shared-memory slots, then posts a
    24-byte record on a pipe; the main process writes results strictly in unit order and hands the slot back.
    When the next unit to write is not ready, the main process compresses the next untaken unit instead of
    waiting. Memory is bounded: ``_SLOTS`` units per helper plus ``_LOOKAHEAD`` per process in the main one.
    """

    def __init__(
        self,
        units: Sequence[Unit],
        spec: SourceSpec,
        codec: str,
        page_size: int,
        count: int,
        cache: PageCache,
        *,
        zero_page: bool = True,
    ) -> None:
        self.units = units
        self.count = len(units)
        self.page_size = page_size
        ctx = multiprocessing.get_context("fork")
        self._counter = ctx.RawValue("q", 0)
        self._lock = ctx.Lock()
        unit_pages = getattr(units, "unit_pages", None) or max(u.npages for u in units)
        self._slot_size = unit_pages * (page_size + 4)
        self._slots = [[_shared_map(self._slot_size) for _ in range(_SLOTS)] for _ in range(count)]
        self._result_r, result_w = os.pipe()
        self._free_w: list[int] = []
        self._procs = []
        try:
            for hid in range(count):
                free_r, free_w = os.pipe()
                self._free_w.append(free_w)
                proc = ctx.Process(
                    target=_helper_main,
                    args=(hid, units, spec, codec, page_size, cache, self._counter, self._lock, self._slots[hid]),
                    kwargs={
                        "free_r": free_r,
                        "result_w": result_w,
                        "close": [self._result_r, *self._free_w],
                        "zero_page": zero_page,
                    },
                    daemon=True,
                )
                proc.start()
                self._procs.append(proc)
                os.close(free_r)
        finally:
            os.close(result_w)
        os.set_blocking(self._result_r, False)
        self._pending = b""

    def __enter__(self) -> _Helpers:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in (self._result_r, *self._free_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        for proc in self._procs:
            if proc.is_alive() and exc[0] is not None:
                proc.terminate()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for slots in self._slots:
            for m in slots:
                with contextlib.suppress(BufferError):  # a caller still holds a view: freed with it
                    m.close()

    def _take(self) -> int:
        with self._lock:
            index = self._counter.value
            if index < self.count:
                self._counter.value = index + 1
        return index

    def _records(self, block: bool) -> list[tuple[int, int, int, int, int]]:
        """Read posted results; with ``block`` wait for at least one (checking that the helpers are alive)."""
        while True:
            try:
                data = os.read(self._result_r, _RESULT.size * 64)
            except BlockingIOError:
                data = None
            if data == b"":
                data = None
                if block and not self._pending:
                    raise WriteError("a compression worker exited before finishing its unit", field="workers")
            if data:
                data = self._pending + data
                whole = len(data) - len(data) % _RESULT.size
                self._pending = data[whole:]
                return [_RESULT.unpack_from(data, at) for at in range(0, whole, _RESULT.size)]
            if not block:
                return []
            ready, _, _ = select.select([self._result_r], [], [], 1.0)
            if not ready and any(p.exitcode not in (None, 0) for p in self._procs):
                raise WriteError("a compression worker died", field="workers")

    def run(self, inline: UnitCompressor) -> Iterator[tuple[bytes | memoryview, bytes | memoryview]]:
        ready: dict[int, tuple[int, int, int, int] | tuple[bytes, bytes]] = {}
        limit = _LOOKAHEAD * (len(self._procs) + 1)
        taken_by_me = 0
        emit = 0
        while emit < self.count:
            for hid, slot, index, nsizes, nstored in self._records(False):
                ready[index] = self._check(hid, slot, nsizes, nstored)
            done = ready.pop(emit, None)
            if done is None:
                if taken_by_me - emit < limit:
                    index = self._take()
                    if index < self.count:
                        ready[index] = inline(self.units[index])
                        taken_by_me = index
                        continue
                for hid, slot, index, nsizes, nstored in self._records(True):
                    ready[index] = self._check(hid, slot, nsizes, nstored)
                continue
            if len(done) == 2:
                yield done  # type: ignore[misc]
            else:
                hid, slot, nsizes, nstored = done  # type: ignore[misc]
                view = memoryview(self._slots[hid][slot])
                try:
                    yield view[:nsizes], view[nsizes : nsizes + nstored]
                finally:
                    view.release()
                with contextlib.suppress(BrokenPipeError):  # that helper found no more work and left
                    os.write(self._free_w[hid], bytes((slot,)))
            emit += 1

    def _check(self, hid: int, slot: int, nsizes: int, nstored: int) -> tuple[int, int, int, int]:
        if nsizes < 0:
            kind, message, field_, offset, path = pickle.loads(self._slots[hid][slot][:nstored])
            cls = kind if isinstance(kind, type) and issubclass(kind, KdfixError) else WriteError
            raise cls(message, field=field_, offset=offset, path=path)
        return hid, slot, nsizes, nstored


def _helper_main(
    hid: int,
    units: Sequence[Unit],
    spec: SourceSpec,
    codec: str,
    page_size: int,
    cache: PageCache,
    counter: Any,
    lock: Any,
    slots: list[mmap.mmap],
    *,
    free_r: int,
    result_w: int,
    close: list[int],
    zero_page: bool = True,
) -> None:
    for fd in close:
        os.close(fd)
    free = list(range(len(slots)))
    try:
        compressor = UnitCompressor(_open_source(spec), codec, page_size, cache=cache, zero_page=zero_page)
        count = len(units)
        while True:
            if not free:
                got = os.read(free_r, len(slots))
                if not got:
                    return  # the main process is gone
                free.extend(got)
            with lock:
                index = counter.value
                if index >= count:
                    return
                counter.value = index + 1
            sizes, stored = compressor(units[index])
            slot = free.pop()
            buf = slots[slot]
            buf[: len(sizes)] = sizes
            buf[len(sizes) : len(sizes) + len(stored)] = stored
            os.write(result_w, _RESULT.pack(hid, slot, index, len(sizes), len(stored)))
    except BaseException as exc:  # reported to the main process, which raises it
        info: tuple[type[KdfixError] | None, str, str | None, int | None, str | None]
        if isinstance(exc, KdfixError):
            info = (type(exc), exc.message, exc.field, exc.offset, exc.path)
        else:
            info = (None, f"compression worker failed: {type(exc).__name__}: {exc}", "workers", None, None)
        blob = pickle.dumps(info)
        slot = free.pop() if free else 0
        slots[slot][: len(blob)] = blob[: len(slots[slot])]
        with contextlib.suppress(OSError):
            os.write(result_w, _RESULT.pack(hid, slot, -1, -1, len(blob)))


# --------------------------------------------------------------------------------------------------------------
# Units of a PhysicalMemory (write_kdump): runs of the 2nd bitmap, read from the file when the memory is an ELF


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
