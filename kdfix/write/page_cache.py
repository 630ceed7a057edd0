"""The page-dedup cache of the page writers: a page equal to one compressed recently is not compressed again.

:class:`PageCache` lives in shared memory, for every process of one run (forked helpers too);
:class:`LocalPageCache` is its one-process form. Both are bounded, whatever the dump's size.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
from collections import OrderedDict
from typing import Any

# Stored bytes of recently compressed pages kept for reuse (one ring for all processes of a run). 32 MiB reaches from a
# KASLR x86 kernel's image back to the copy its decompressor left in low memory (on the bench's 512 MiB guest
# 13 MiB of pages 50 MiB apart, more than 16 MiB of stored bytes between them): 17% fewer pages compressed.
DEDUP_CACHE_BYTES = 32 << 20
DEDUP_SLOTS = 1 << 17  # index entries of the page cache (direct-mapped by page hash)
# Index entries of the one-process cache (about 250 bytes each). On the bench's guests 16 Ki entries find 99.7% of
# the hits 32 Ki find; 8 Ki lost two thirds of them on the 128 MiB guest with random data, whose raw pages fill it.
DEDUP_ENTRIES = 1 << 14


def _placed(wpos: int, size: int, ring: int) -> int:
    """Where in a ring's write stream an item of ``size`` bytes goes when the stream is at ``wpos``: there, or at
    the ring's next start if it would wrap, so every item stays contiguous (the ring's tail is skipped)."""
    return wpos if wpos % ring + size <= ring else wpos + ring - wpos % ring


def shared_map(size: int) -> mmap.mmap:
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
        self._mm = shared_map(self._ring + ring_bytes)
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
            wpos = _placed(self._WPOS.unpack_from(mm, 0)[0], size, ring)
            start = self._ring + wpos % ring
            mm[start : start + size] = packed
            self._ENTRY.pack_into(mm, at, key, src, wpos, size, 1)
            self._WPOS.pack_into(mm, 0, wpos + size)

    def close(self) -> None:
        with contextlib.suppress(BufferError):
            self._mm.close()


class LocalPageCache:
    """:class:`PageCache` for a single process: an index dict over a private ring of stored bytes.

    The ring is one fixed mapping, written in place and taken from the system only where written, so the cache's
    memory has one bound on any dump and cannot fragment. Keeping each page's stored bytes as its own object did
    not stay flat: evicted in FIFO order, they left the allocator's heap fragmented (at 8 GiB, a 39 MiB heap for
    15 MiB of live data). An entry is evicted, oldest first, once the ring's writes reach its bytes or the index
    holds ``entries``.
    """

    def __init__(self, ring_bytes: int = DEDUP_CACHE_BYTES, entries: int = DEDUP_ENTRIES) -> None:
        # key -> (src, position in the ring's write stream, stored size, or -1 for a raw page); oldest first
        self._items: OrderedDict[int, tuple[int, int, int]] = OrderedDict()
        self._ring_bytes = ring_bytes
        self._ring = mmap.mmap(-1, max(ring_bytes, 1), flags=mmap.MAP_PRIVATE)
        self._wpos = 0  # bytes ever written to the ring, counting the skipped tails
        self._entries = entries

    def get(self, key: int) -> tuple[int, bytes | None] | None:
        """``(src, stored bytes or None for a raw page)`` of the page last put with ``key``, if still held."""
        item = self._items.get(key)
        if item is None:
            return None
        src, pos, size = item
        if size < 0:
            return src, None
        start = pos % self._ring_bytes
        return src, self._ring[start : start + size]

    def put(self, key: int, src: int, packed: bytes | None) -> None:
        items, ring = self._items, self._ring_bytes
        items.pop(key, None)  # a replaced entry moves to the young end, so the FIFO stays in ring order
        wpos = self._wpos
        if packed is None:
            items[key] = (src, wpos, -1)
        else:
            size = len(packed)
            if not 0 < size <= ring:
                return
            wpos = _placed(wpos, size, ring)
            reused = wpos + size - ring  # bytes of the stream before this are overwritten by this write
            while items and next(iter(items.values()))[1] < reused:
                items.popitem(last=False)
            start = wpos % ring
            self._ring[start : start + size] = packed
            items[key] = (src, wpos, size)
            self._wpos = wpos + size
        while len(items) > self._entries:
            items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        self._items.clear()
        self._ring.close()
