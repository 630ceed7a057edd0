"""Proof that zlib cannot shrink a page, without compressing it.

A page writer stores a page raw when its compressed form is not smaller (qemu-dumps.md §5). On high-entropy pages
(random data, compressed files in RAM) zlib's level-1 attempt costs about 30 ns per byte only to be thrown away.
This module bounds from below the size of *any* single-block deflate stream of a page (RFC 1951 §3.2), so that
the writer may skip the attempt when the bound already exceeds the page: the stored bytes are the same.

The bound, per page:

- LZ77 can only replace bytes inside a trigram that occurs twice in the page; every other byte ("uncovered") is
  a literal. A page with no repeated trigram is all literals.
- Fixed Huffman (BTYPE 01): a literal costs 8 or 9 bits; a run of covered bytes at least 12 bits (one match
  needs a 7-bit length code and a 5-bit distance code; three literals cost more); end of block 7, header 3.
- Dynamic Huffman (BTYPE 10): one prefix code over the uncovered literals and end-of-block; its cost is bounded
  by Lagrangian duality over integer code lengths 1..15 (Kraft: sum 2^-l <= 1). The block header costs at least
  3 + 14 + 4 * 3 bits plus half a bit per present literal (code 16 repeats a length 3..6 times for 1 + 2 bits).
- Stored (BTYPE 00) carries every byte.

zlib adds 6 bytes of wrapper (RFC 1950), so a result smaller than the page needs at most ``(page - 7) * 8`` bits.
zlib writes one block for a page while its symbol buffer (16383 symbols at memLevel 8) does not fill, hence the
page size limit; zlib-ng and other deflaters are not assumed to behave alike.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

ZLIB_WRAPPER_BYTES = 6  # RFC 1950: CMF, FLG, ADLER32
MAX_SINGLE_BLOCK_PAGE = 8192  # < zlib's 16383-symbol buffer at the default memLevel 8: one block per page
DYNAMIC_HEADER_BITS = 3 + 5 + 5 + 4 + 4 * 3  # BFINAL/BTYPE, HLIT, HDIST, HCLEN, at least four code-length codes
FIXED_OVERHEAD_BITS = 3 + 7  # block header and end of block
FIXED_MATCH_BITS = 7 + 5  # shortest length code and distance code of the fixed code
SAMPLE_BYTES = 48  # bytes of a page looked at before trying a proof
SAMPLE_DISTINCT = 38  # random bytes give about 44 distinct values in 48; text and code far fewer
MIN_BATCH = 16  # fewer likely pages than this do not repay numpy's per-call cost
SCRATCH_ROWS = 64  # pages proven per numpy pass: the scratch arrays stay at 2.6 MiB for 4 KiB pages, any unit size

_LAMBDA_STEPS = (0.97, 1.0, 1.03)  # dual multipliers around the relaxation's optimum N / ln 2


def applies(page_size: int) -> bool:
    """True when the bound holds for this page size and the running zlib (stock zlib: one block per page)."""
    return page_size <= MAX_SINGLE_BLOCK_PAGE and "ng" not in zlib.ZLIB_RUNTIME_VERSION


def worth_proving(page: bytes | bytearray | memoryview, at: int) -> bool:
    """Cheap guess that the page at ``at`` is high-entropy; only such pages are worth the proof's cost."""
    return len(set(page[at : at + SAMPLE_BYTES])) >= SAMPLE_DISTINCT


def incompressible(data: bytes | bytearray, indices: list[int], page_size: int) -> list[bool]:
    """For each page ``indices[i]`` of ``data``: True when zlib's output is proven not smaller than the page."""
    proofs: list[bool] = []
    for start in range(0, len(indices), SCRATCH_ROWS):
        proofs += _incompressible(data, indices[start : start + SCRATCH_ROWS], page_size)
    return proofs


def _incompressible(data: bytes | bytearray, indices: list[int], page_size: int) -> list[bool]:
    """:func:`incompressible` for one pass of 1 to ``SCRATCH_ROWS`` pages."""
    import numpy as np

    n = len(indices)
    work = _scratch(page_size)
    every = np.frombuffer(data, np.uint8, len(data) // page_size * page_size).reshape(-1, page_size)
    pages = np.take(every, indices, axis=0, out=work.pages[:n])
    counts = work.counts[:n]
    for i, page in enumerate(pages):
        counts[i] = np.bincount(page, minlength=256)
    proven = _literal_bound(counts, np.zeros(len(pages), np.int64), page_size)  # covered bytes only lower it
    rows = np.flatnonzero(proven)
    if rows.size:
        if rows.size < n:
            counts, pages = counts[rows], pages[rows]
        segments = np.zeros(rows.size, np.int64)
        for i, mask in _covered_bytes(pages, work):
            counts[i] -= np.bincount(pages[i][mask], minlength=256)
            segments[i] = np.count_nonzero(mask[1:] & ~mask[:-1]) + int(mask[0])
        proven[rows] = _literal_bound(counts, segments, page_size)
    return proven.tolist()


class _Scratch:
    """Arrays one batch of proofs works in (each batch uses their first rows), kept between batches: fresh arrays
    of a MiB or more are mapped anew by the allocator each time, and those page faults cost as much as the sort.
    One per process: the page writers compress in processes, not threads."""

    def __init__(self, rows: int, page_size: int) -> None:
        import numpy as np

        self.pages = np.empty((rows, page_size), np.uint8)
        self.counts = np.empty((rows, 256), np.int64)
        self.keys = np.empty((rows, page_size - 2), np.uint32)
        self.ordered = np.empty((rows, page_size - 2), np.uint32)
        self.repeats = np.empty((rows, page_size - 3), bool)


_SCRATCH: dict[int, _Scratch] = {}  # by page size


def _scratch(page_size: int) -> _Scratch:
    held = _SCRATCH.get(page_size)
    if held is None:
        held = _SCRATCH[page_size] = _Scratch(SCRATCH_ROWS, page_size)
    return held


def _literal_bound(counts: np.ndarray, segments: np.ndarray, page_size: int) -> np.ndarray:
    """Rows whose uncovered literals (``counts``) and ``segments`` runs of covered bytes cannot fit the page."""
    import numpy as np

    limit = (page_size - ZLIB_WRAPPER_BYTES - 1) * 8  # most deflate bits of an output smaller than the page
    fixed_cost = np.where(np.arange(256) < 144, 8, 9)  # RFC 1951 §3.2.6
    fixed = counts @ fixed_cost + FIXED_OVERHEAD_BITS + FIXED_MATCH_BITS * segments
    header = DYNAMIC_HEADER_BITS + (np.count_nonzero(counts, 1) + 2) // 2  # ceil((literals + end of block) / 2)
    symbols = np.concatenate([counts, np.ones((len(counts), 1), counts.dtype)], 1)
    dynamic = _prefix_code_bound(symbols, page_size) + header
    return (fixed > limit) & (dynamic > limit)


def _prefix_code_bound(counts: np.ndarray, page_size: int) -> np.ndarray:
    """A lower bound of min sum(c * l) over prefix codes with lengths 1..15 for the present symbols of each row.

    For any lambda >= 0 the cost is at least sum_i min_l (c_i l + lambda 2^-l) - lambda (weak duality on Kraft's
    inequality; an absent symbol adds 0). The inner minimum depends on the count alone, so it is a table per
    lambda; the lambdas sit around the relaxation's optimum for a full page (N / ln 2).
    """
    import numpy as np

    best = np.full(len(counts), -np.inf)
    for lam, table in _dual_tables(page_size):
        best = np.maximum(best, table[counts].sum(1) - lam)
    return best - 1e-6 * counts.shape[1]  # float rounding of the sums: never above the true bound


@functools.lru_cache(maxsize=8)
def _dual_tables(page_size: int) -> tuple[tuple[float, np.ndarray], ...]:
    """Per lambda: ``table[c] = min over l in 1..15 of c * l + lambda * 2^-l``, with ``table[0] = 0``."""
    import numpy as np

    total = page_size + 1  # a page of literals and the end of block
    c = np.arange(total + 1, dtype=np.float64)[:, None]
    lengths = np.arange(1, 16, dtype=np.float64)[None, :]
    tables = []
    for step in _LAMBDA_STEPS:
        lam = total * step / np.log(2)
        table = (c * lengths + lam * np.exp2(-lengths)).min(1)
        table[0] = 0.0
        tables.append((lam, table))
    return tuple(tables)


def _trigrams(pages: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Each page's trigrams as 24-bit integers, position by position, into ``out`` (rows x (size - 2))."""
    import numpy as np

    pages = np.ascontiguousarray(pages)
    n, size = pages.shape
    quads = np.ndarray((n, size - 3), ">u4", pages, 0, (size, 1))  # big-endian 4-grams at every offset
    np.right_shift(quads, 8, out=out[:, :-1], casting="unsafe")
    np.bitwise_and(quads[:, -1], 0xFFFFFF, out=out[:, -1], casting="unsafe")
    return out


def _covered_bytes(pages: np.ndarray, work: _Scratch) -> Iterator[tuple[int, np.ndarray]]:
    """Per page with a repeated trigram: its index and the mask of bytes inside one (pages without are skipped)."""
    import numpy as np

    n = len(pages)
    keys = _trigrams(pages, work.keys[:n])
    ordered = work.ordered[:n]
    np.copyto(ordered, keys)
    ordered.sort(axis=1)
    repeats = np.equal(ordered[:, 1:], ordered[:, :-1], out=work.repeats[:n])
    for row in np.flatnonzero(repeats.any(1)).tolist():
        mask = np.zeros(pages.shape[1], bool)
        for key in set(ordered[row, 1:][repeats[row]].tolist()):  # a few values: compares beat np.isin
            starts = np.flatnonzero(keys[row] == key)
            for shift in (0, 1, 2):
                mask[starts + shift] = True
        yield row, mask
