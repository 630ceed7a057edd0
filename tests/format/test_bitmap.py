"""Bitmap rank/select/count against the sorted set of pfns the bitmap was built from."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.format.bitmap import Bitmap

# sizes around the 4096-pfn prefix-sum sections and the 8-byte words select scans
NBITS = st.sampled_from([1, 7, 8, 63, 64, 65, 4095, 4096, 4097, 3 * 4096 + 5, 20000])


@st.composite
def bitmaps(draw: st.DrawFn) -> tuple[Bitmap, list[int]]:
    nbits = draw(NBITS)
    dense = draw(st.booleans())  # long full runs too, not only scattered bits
    if dense:
        a = draw(st.integers(0, nbits - 1))
        b = draw(st.integers(a, nbits))
        pfns = set(range(a, b)) | set(draw(st.lists(st.integers(0, nbits - 1), max_size=50)))
    else:
        pfns = set(draw(st.lists(st.integers(0, nbits - 1), max_size=200)))
    return Bitmap.from_pfns(pfns, nbits), sorted(pfns)


@given(bitmaps(), st.data())
def test_select_is_the_kth_set_pfn(case: tuple[Bitmap, list[int]], data: st.DataObject) -> None:
    bitmap, pfns = case
    if not pfns:
        with pytest.raises(ValueError):
            bitmap.select(0)
        return
    k = data.draw(st.integers(0, len(pfns) - 1))
    assert bitmap.select(k) == pfns[k]
    assert bitmap.rank(pfns[k]) == k
    with pytest.raises(ValueError):
        bitmap.select(len(pfns))


@given(bitmaps(), st.data())
def test_rank_and_count_match_the_set(case: tuple[Bitmap, list[int]], data: st.DataObject) -> None:
    bitmap, pfns = case
    a = data.draw(st.integers(0, bitmap.nbits))
    b = data.draw(st.integers(a, bitmap.nbits))
    assert bitmap.rank(a) == sum(1 for p in pfns if p < a)
    assert bitmap.count(a, b) == sum(1 for p in pfns if a <= p < b)
    assert list(bitmap.iter_set(a, b)) == [p for p in pfns if a <= p < b]
