"""Page records in a producer's own chunking: the bitmap a chunk at a time, and descriptors and page data through
two write caches, each flushed as one record before an item that would overflow it (kdump-format.md §5-§7).

The cache size is the producer's policy (QEMU: four pages each, qemu-dumps.md §2 items 4-6); the shared zero page
is the first page of the data region and every zero page's descriptor points at it.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence

from kdfix.format.kdump import PAGE_DESC, PAGE_DESC_SIZE
from kdfix.format.layout import Abi
from kdfix.write.records import RecordOut


def bitmap_chunks(runs: Sequence[tuple[int, int, object]], page_size: int) -> Iterator[tuple[int, bytes]]:
    """Yield ``(chunk_index, chunk bytes)`` for chunks 0 … the chunk holding the last enumerated pfn."""
    if not runs:
        return
    bits = page_size * 8
    last_chunk = (runs[-1][1] - 1) // bits
    ri = 0
    for chunk in range(last_chunk + 1):
        base, top = chunk * bits, (chunk + 1) * bits
        value = 0
        while ri < len(runs) and runs[ri][0] < top:
            a, b = max(runs[ri][0], base), min(runs[ri][1], top)
            if a < b:
                value |= ((1 << (b - a)) - 1) << (a - base)
            if runs[ri][1] <= top:
                ri += 1
            else:
                break
        yield chunk, value.to_bytes(page_size, "little")


class _Cache:
    """A QEMU write cache: flushed as one record *before* an item that would overflow it."""

    __slots__ = ("buf", "capacity", "offset", "out")

    def __init__(self, out: RecordOut, offset: int, capacity: int) -> None:
        self.out = out
        self.offset = offset
        self.capacity = capacity
        self.buf = bytearray()

    def flush(self) -> None:
        if self.buf:
            self.out.record(self.offset, self.buf)
            self.offset += len(self.buf)
            self.buf = bytearray()


class PageEmitter:
    """Descriptor and data caches of ``cache_bytes`` each; the shared zero page comes first."""

    def __init__(
        self,
        out: RecordOut,
        *,
        data_offset: int,
        num_dumpable: int,
        page_size: int,
        flag: int,
        abi: Abi,
        cache_bytes: int,
    ) -> None:
        cap = cache_bytes
        self.page_size = page_size
        self.flag = flag
        self._desc = _Cache(out, data_offset, cap)
        self._data = _Cache(out, data_offset + PAGE_DESC_SIZE * num_dumpable, cap)
        self._pack = PAGE_DESC.bind(abi).struct.pack
        zero_at = self._data.offset
        self._zero_desc = self._pack(zero_at, page_size, 0, 0)
        self._data.buf += bytes(page_size)
        self._next_data = zero_at + page_size
        self.pages = 0
        self.zero_pages = 0
        self.raw_pages = 0

    def _zero_run(self, count: int) -> None:
        desc = self._desc
        self.zero_pages += count
        while count:
            room = (desc.capacity - len(desc.buf)) // PAGE_DESC_SIZE
            if room == 0:
                desc.flush()
                continue
            take = min(room, count)
            desc.buf += self._zero_desc * take
            count -= take

    def add(self, sizes_raw: bytes | memoryview, stored: bytes | memoryview) -> None:
        """Append one unit's pages (output of :meth:`UnitCompressor.pages`) in pfn order."""
        sizes = array("I")
        sizes.frombytes(sizes_raw)
        n = len(sizes)
        self.pages += n
        if not stored:
            self._zero_run(n)
            return
        desc, data = self._desc, self._data
        cap, ps, flag, pack = desc.capacity, self.page_size, self.flag, self._pack
        stored = memoryview(stored)  # slices below are views, copied once into the cache
        pos = 0
        zeros = 0
        for size in sizes:
            if size == 0:
                zeros += 1
                continue
            if zeros:
                self._zero_run(zeros)
                zeros = 0
            if len(data.buf) + size > cap:
                data.flush()
            data.buf += stored[pos : pos + size]
            pos += size
            if size == ps:
                self.raw_pages += 1
                item = pack(self._next_data, ps, 0, 0)
            else:
                item = pack(self._next_data, size, flag, 0)
            self._next_data += size
            if len(desc.buf) + PAGE_DESC_SIZE > cap:
                desc.flush()
            desc.buf += item
        if zeros:
            self._zero_run(zeros)

    def finish(self) -> int:
        """Final flush: descriptors, then data. Returns the end offset of the page data."""
        self._desc.flush()
        self._data.flush()
        return self._next_data
