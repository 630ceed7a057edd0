"""Page encoding for writers: compress each page (optionally in worker processes), detect zero pages.

The output order and bytes never depend on the number of workers: chunks are submitted and
collected in pfn order through a bounded window, so memory stays flat whatever the dump size.
"""

from __future__ import annotations

import functools
import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

from kdfix.codecs import codec_for_flags, codec_named, decode_page
from kdfix.errors import WriteError

CHUNK_PAGES = 256  # pages per work item sent to a worker process
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


def _encode_chunk(codec_name: str, zero_page: bool, pages: list[bytes]) -> list[tuple[int, bytes, bool]]:
    return [encode_page(p, codec_name, zero_page=zero_page) for p in pages]


def iter_chunks(items: Iterable[tuple[int, bytes]], size: int = CHUNK_PAGES) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def encode_pages(
    pages: Iterable[tuple[int, bytes]], codec_name: str, *, zero_page: bool, workers: int = 1
) -> Iterator[EncodedPage]:
    """Encode (pfn, page) pairs in order; ``workers > 1`` compresses chunks in parallel processes."""
    codec_named(codec_name)._lib()  # fail early (UnsupportedError) when the codec library is missing
    if workers <= 1:
        for pfn, page in pages:
            flags, data, zero = encode_page(page, codec_name, zero_page=zero_page)
            yield EncodedPage(pfn, flags, data, zero)
        return
    # fork: workers need nothing but the codec; forkserver/spawn would re-import the caller's __main__.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    window: deque[tuple[list[tuple[int, bool]], Future[list[tuple[int, bytes, bool]]]]] = deque()
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for chunk in iter_chunks(pages):
            # zero pages are recognised here and never shipped to a worker
            marks = [(pfn, zero_page and is_zero(page)) for pfn, page in chunk]
            todo = [bytes(page) for (_, page), (_, zero) in zip(chunk, marks, strict=True) if not zero]
            window.append((marks, pool.submit(_encode_chunk, codec_name, False, todo)))
            if len(window) >= 2 * workers:
                yield from _collect(window.popleft())
        while window:
            yield from _collect(window.popleft())


def _collect(item: tuple[list[tuple[int, bool]], Future[list[tuple[int, bytes, bool]]]]) -> Iterator[EncodedPage]:
    marks, future = item
    encoded = iter(future.result())
    for pfn, zero in marks:
        if zero:
            yield EncodedPage(pfn, 0, b"", True)
        else:
            flags, data, _ = next(encoded)
            yield EncodedPage(pfn, flags, data)


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
