"""Stored pages of an opened KDUMP dump as (pfn, flags, stored bytes), for ``write_kdump(page_source=...)``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kdfix.errors import FormatError, TruncatedError

_SPAN = 8 << 20  # read the data of a descriptor batch in one pread when it spans at most this many bytes
_BATCH = 2048


def kdump_parts(dump: Any) -> list[Any]:
    """The KdumpContainers of a dump in pfn order (one, or every part of a split set); [] for ELF."""
    if getattr(dump, "split", None) is not None:
        return sorted(dump.split.parts, key=lambda p: p.start_pfn)
    return [dump.kdump] if getattr(dump, "kdump", None) is not None else []


def iter_stored_pages(dump: Any) -> Iterator[tuple[int, int, bytes]]:
    """Yield (pfn, page flags, stored bytes) of every dumped page, undecoded, in ascending pfn order."""
    for part in kdump_parts(dump):
        yield from _iter_part(part)


def _iter_part(part: Any) -> Iterator[tuple[int, int, bytes]]:
    src = part.source
    bs = part.block_size
    batch: list[tuple[int, Any]] = []
    for item in part.iter_descriptors():
        batch.append(item)
        if len(batch) >= _BATCH:
            yield from _read_batch(part, src, bs, batch)
            batch = []
    if batch:
        yield from _read_batch(part, src, bs, batch)


def _read_batch(part: Any, src: Any, bs: int, batch: list[tuple[int, Any]]) -> Iterator[tuple[int, int, bytes]]:
    for pfn, desc in batch:
        if desc.size > bs or desc.offset <= 0:
            raise FormatError(f"pfn {pfn:#x}: descriptor {{offset {desc.offset:#x}, size {desc.size:#x}}} unusable",
                              field="page_desc", path=part.path)  # fmt: skip
    lo = min(d.offset for _, d in batch)
    hi = max(d.offset + d.size for _, d in batch)
    if hi > src.size:
        raise TruncatedError(f"page data ends at {hi:#x}, past the end of the file", field="page_desc.offset",
                             path=part.path)  # fmt: skip
    if hi - lo <= _SPAN:
        span = src.read_at(lo, hi - lo)
        for pfn, desc in batch:
            yield pfn, desc.flags, span[desc.offset - lo : desc.offset - lo + desc.size]
    else:
        for pfn, desc in batch:
            yield pfn, desc.flags, src.read_at(desc.offset, desc.size)
