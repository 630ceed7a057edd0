"""The verify hot loop: check every dumped page of a KDUMP container at close to the codec's own speed.

A page is sound when its descriptor passes crash's checks (kdump-format.md §7) and its data decodes to exactly
one block. Sound pages need no object per page: descriptors are unpacked from batched reads, page data is sliced
from large sequential reads (QEMU and makedumpfile write data in pfn order), shared zero pages are recognised by
their descriptor alone, and zlib pages are inflated in one C call. The first anomaly in a batch sends that batch
to ``KdumpContainer.iter_page_results``, the reader's own per-page path, so every bad page is reported exactly as
the reader describes it.
"""

from __future__ import annotations

import zlib
from itertools import islice
from typing import TYPE_CHECKING

from kdfix.codecs.base import decode_page
from kdfix.errors import KdfixError
from kdfix.format.constants import COMPRESSION_FLAGS, DumpFlag
from kdfix.format.kdump import PAGE_DESC, PAGE_DESC_SIZE
from kdfix.read.flattened import FlattenedSource

if TYPE_CHECKING:
    from kdfix.read.kdump import KdumpContainer

BATCH = 4096  # descriptors per read
DATA_CHUNK = 8 << 20  # page data read at once
_COMPRESSION = int(COMPRESSION_FLAGS)
_ZLIB = int(DumpFlag.COMPRESSED_ZLIB)


def check_pages(part: KdumpContainer, start: int, end: int) -> tuple[int, list[tuple[int, KdfixError]]]:
    """(pages checked, [(pfn, error)] in pfn order) for the dumped pages of ``part`` in ``[start, end)``."""
    start, end = max(start, part.start_pfn), min(end, part.end_pfn)
    if start >= end:
        return 0, []
    bs = part.block_size
    src = part.source
    size = src.size
    zero_offsets = part.zero_page_offsets()
    holes = src.hole_bytes if isinstance(src, FlattenedSource) and src.has_holes else None
    unpack = PAGE_DESC.bind(part.abi).struct.iter_unpack
    inflate = zlib.decompress
    pfns = part.iter_dumped_pfns(start, end)
    index = part.table_index(start)
    checked = 0
    bad: list[tuple[int, KdfixError]] = []
    chunk, chunk_lo, chunk_hi = b"", 0, 0
    chunk_whole = True  # no byte of the chunk is a hole: its pages need no hole test of their own
    while True:
        batch = list(islice(pfns, BATCH))
        if not batch:
            return checked, bad
        off = part.data_offset + PAGE_DESC_SIZE * index
        raw = src.read_at(off, PAGE_DESC_SIZE * len(batch)) if off < size else b""
        index += len(batch)
        if len(raw) < PAGE_DESC_SIZE * len(batch):  # the table ends early: the reader reports the rest
            return _slow(part, batch[0], end, checked, bad)
        if holes is not None and holes(off, len(raw)):  # bytes no record wrote: missing, reported by the reader
            checked, bad = _slow(part, batch[0], batch[-1] + 1, checked, bad)
            continue
        sound = True
        for offset, stored, flags, _page_flags in unpack(raw):
            if offset in zero_offsets and stored == bs and not flags & _COMPRESSION:
                continue
            if stored > bs or offset <= 0 or offset + stored > size:
                sound = False
                break
            if chunk_lo <= offset and offset + stored <= chunk_hi:
                data = chunk[offset - chunk_lo : offset - chunk_lo + stored]
                whole = chunk_whole
            elif offset < chunk_lo:  # data out of pfn order: read just this page (chunks never overlap)
                data = src.read_at(offset, stored)
                whole = holes is None
            else:
                chunk_lo = offset
                chunk = src.read_at(offset, max(DATA_CHUNK, stored))
                chunk_hi = offset + len(chunk)
                chunk_whole = whole = holes is None or not holes(chunk_lo, len(chunk))
                data = chunk[:stored]
            if len(data) != stored or (not whole and holes is not None and holes(offset, stored)):
                sound = False
                break
            try:
                if flags == _ZLIB:
                    if len(inflate(data)) != bs:
                        sound = False
                        break
                elif flags or stored != bs:
                    decode_page(data, flags, bs)
            except (zlib.error, KdfixError):
                sound = False
                break
        if sound:
            checked += len(batch)
        else:
            checked, bad = _slow(part, batch[0], batch[-1] + 1, checked, bad)


def _slow(
    part: KdumpContainer, start: int, end: int, checked: int, bad: list[tuple[int, KdfixError]]
) -> tuple[int, list[tuple[int, KdfixError]]]:
    """Check ``[start, end)`` page by page through the reader, adding to ``checked`` and ``bad``."""
    for loc, result in part.iter_page_results(start, end):
        checked += 1
        if isinstance(result, KdfixError):
            bad.append((loc if isinstance(loc, int) else loc.pfn, result))
    return checked, bad
