"""The incompressibility proof against zlib itself: a page it calls incompressible never compresses smaller."""

from __future__ import annotations

import os
import random
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from kdfix.codecs import deflate_bound

PS = 4096


def _proven(pages: list[bytes]) -> list[bool]:
    return deflate_bound.incompressible(b"".join(pages), list(range(len(pages))), PS)


def _mutated(seed: int) -> bytes:
    """Random bytes with planted structure: repeats, a narrowed alphabet, skew or a zero run."""
    rng = random.Random(seed)
    page = bytearray(rng.randbytes(PS))
    kind = seed % 4
    if kind == 0:
        m = rng.randrange(150, 257)
        page = bytearray(b % m for b in page)
    elif kind == 1:
        for _ in range(rng.randrange(1, 40)):
            n, src, dst = rng.randrange(3, 40), rng.randrange(PS - 40), rng.randrange(PS - 40)
            page[dst : dst + n] = page[src : src + n]
    elif kind == 2:
        for _ in range(rng.randrange(300)):
            page[rng.randrange(PS)] = rng.randrange(4)
    else:
        n = rng.randrange(200)
        page[:n] = bytes(n)
    return bytes(page)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 2**32), min_size=1, max_size=64))
def test_proven_pages_never_compress_smaller(seeds: list[int]) -> None:
    pages = [_mutated(s) for s in seeds]
    for page, proven in zip(pages, _proven(pages), strict=True):
        if proven:
            assert all(len(zlib.compress(page, level)) >= PS for level in (1, 6, 9))


def test_random_pages_are_proven_and_compressible_ones_are_not() -> None:
    rng = random.Random(7)
    noise = [rng.randbytes(PS) for _ in range(200)]
    text = [(b"%08d kernel: line\n" % i) * (PS // 22) + bytes(PS % 22) for i in range(20)]
    assert all(len(p) == PS for p in text)
    proven = _proven(noise + text)
    assert sum(proven[:200]) >= 190  # about 99% of random pages in measurements
    assert not any(proven[200:])
    for page, ok in zip(noise, proven, strict=False):
        if ok:
            assert len(zlib.compress(page, 1)) >= PS


def test_only_single_block_page_sizes() -> None:
    assert deflate_bound.applies(4096)
    assert not deflate_bound.applies(65536)
    assert deflate_bound.incompressible(os.urandom(PS), [], PS) == []
