"""Parallel page compression shared by the writers: helper processes that take units from a shared counter, read
them themselves and return results through shared-memory slots, while the main process writes them in unit order.

Used by ``kdfix generate --style qemu`` (:mod:`kdfix.generate.qemu_stream`) and by ``write_kdump``
(``kdfix convert``). The output never depends on the number of workers: results are consumed in unit order. The
units and their sources are in kdfix.write.page_units, the dedup cache in kdfix.write.page_cache, the compression
of one unit in kdfix.write.unit_compressor.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
import pickle
import select
import struct
from collections.abc import Iterator, Sequence
from typing import Any

from kdfix.errors import KdfixError, WriteError
from kdfix.write.page_cache import LocalPageCache, PageCache, shared_map
from kdfix.write.page_units import PageSource, SourceSpec, Unit, open_source
from kdfix.write.unit_compressor import UnitCompressor


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
        self._slots = [[shared_map(self._slot_size) for _ in range(_SLOTS)] for _ in range(count)]
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
        compressor = UnitCompressor(open_source(spec), codec, page_size, cache=cache, zero_page=zero_page)
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
