"""Page encoding for writers that pass stored pages through: re-encode a page, detect zero pages.

Pages compressed from memory go through kdfix.write.page_units, page_cache, unit_compressor and parallel (the
worker processes).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kdfix.codecs import codec_for_flags, codec_named, decode_page
from kdfix.errors import WriteError

ZERO_PROBE_MAX = 512  # compressed pages at most this long are decoded to check for an all-zero page


@dataclass(frozen=True, slots=True)
class EncodedPage:
    """One page ready to store: ``zero`` pages share the zero page; others carry flags and stored bytes."""

    pfn: int
    flags: int
    data: bytes
    zero: bool = False


@functools.cache
def _zeros(size: int) -> bytes:
    return bytes(size)


def is_zero(page: bytes | memoryview) -> bool:
    """True if every byte is zero (one C-level comparison, not a per-byte loop)."""
    return page == _zeros(len(page))


def encode_page(page: bytes, codec_name: str, *, zero_page: bool) -> tuple[int, bytes, bool]:
    """Return (flags, stored bytes, is_zero) of one page; compressed only if strictly smaller (kdump-format.md §5)."""
    if zero_page and is_zero(page):
        return 0, b"", True
    codec = codec_named(codec_name)
    if codec.flag:
        packed = codec.compress(page)
        if len(packed) < len(page):
            return int(codec.flag), packed, False
    return 0, bytes(page), False


def is_zero_stored(flags: int, data: bytes, page_size: int) -> bool:
    """True if stored page bytes decode to an all-zero page (small compressed pages are decoded to check)."""
    if flags == 0:
        return len(data) == page_size and is_zero(data)
    if len(data) > ZERO_PROBE_MAX:
        return False
    return is_zero(decode_page(data, flags, page_size))


def pass_through_pages(
    source: Iterable[tuple[int, int, bytes]], codec_name: str, page_size: int, *, zero_page: bool
) -> Iterator[EncodedPage]:
    """Stored pages from a reader, kept as they are unless their codec differs from ``codec_name``.

    Raw pages pass unchanged (a writer stores raw what did not compress); pages compressed with
    another method are decoded and re-encoded. Zero pages are recognised for the shared zero page.
    """
    codec = codec_named(codec_name)
    for pfn, flags, data in source:
        data = bytes(data)
        if zero_page and is_zero_stored(flags, data, page_size):
            yield EncodedPage(pfn, 0, b"", True)
            continue
        if not flags and codec.flag and len(data) == page_size and is_zero(data):
            # a shared zero page of the input: compress it now that it has its own data
            flags, data, _ = encode_page(data, codec_name, zero_page=False)
        elif flags and flags != codec.flag:
            page = decode_page(data, flags, page_size, pfn=pfn)
            flags, data, _ = encode_page(page, codec_name, zero_page=False)
        elif not flags and len(data) != page_size:
            raise WriteError(f"raw page {pfn:#x} is {len(data)} bytes, expected {page_size}", field="page_source")
        else:
            codec_for_flags(flags)  # reject multi-codec flags
        yield EncodedPage(pfn, flags, data)
