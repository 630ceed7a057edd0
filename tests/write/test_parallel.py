"""Page units as write_kdump uses them: zero_page=False, bitmap runs, and helpers that reopen a kdump input."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kdfix
from kdfix.codecs import codec_named
from kdfix.format.bitmap import Bitmap
from kdfix.read.memory import DictMemory
from kdfix.write import write_kdump
from kdfix.write.convert import convert
from kdfix.write.page_units import UNIT_PAGES, plan_memory
from tests import strategies as S
from tests.roundtrip import assert_same_pages, file_bytes

BS = 4096
CODECS = S.available_codecs()


def _memory(seed: int, zero_share: float = 0.4) -> DictMemory:
    """Runs long enough for several compression units (so N workers really share them), with many zero pages."""
    rnd = random.Random(seed)
    pfns = sorted(
        set(range(0, 3 * UNIT_PAGES + 17))
        | set(range(1000, 1000 + UNIT_PAGES))
        | set(rnd.sample(range(1300, 4000), 200))
    )
    pages = {}
    for pfn in pfns:
        r = rnd.random()
        if r < zero_share:
            pages[pfn] = bytes(BS)
        elif r < zero_share + 0.2:
            pages[pfn] = rnd.randbytes(BS)
        else:
            pages[pfn] = pfn.to_bytes(4, "little") * (BS // 4)
    return DictMemory(pages, max_pfn=4000)


# ---- zero_page=False ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_without_zero_page_zero_pages_are_stored_like_any_page(tmp_path: Path, codec: str) -> None:
    """Every all-zero page gets its own descriptor and data (compressed, or raw for "none"); identical for 1/2/3
    workers; kdfix.open_dump reads every page back."""
    mem = _memory(11)
    zero_pfns = {pfn for pfn, page in mem.iter_pages() if not any(page)}
    outs = []
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}"
        result = write_kdump(out, S.drgn_model(), mem, codec=codec, zero_page=False, workers=workers)
        assert result.zero_pages == 0 and result.pages == mem.dumped.count()
        outs.append(file_bytes(out))
    assert outs[0] == outs[1] == outs[2]
    flag = int(codec_named(codec).flag)
    want_zero = codec_named(codec).compress(bytes(BS)) if flag else bytes(BS)
    with kdfix.open_dump(tmp_path / "w1") as dump:
        data = outs[0]
        offsets = []
        for pfn, desc in dump.kdump.iter_descriptors():
            offsets.append(desc.offset)
            if pfn in zero_pfns:
                assert (desc.flags, desc.size) == (flag, len(want_zero))
                assert data[desc.offset : desc.offset + desc.size] == want_zero
        assert len(set(offsets)) == len(offsets)  # nothing shared: every page has its own bytes
        assert_same_pages(dump.memory, mem)


def test_with_zero_page_zero_pages_share_one_descriptor(tmp_path: Path) -> None:
    """The contrast to the test above: by default all zero pages point at the one zero page."""
    mem = _memory(11)
    write_kdump(tmp_path / "d", S.drgn_model(), mem, codec="zlib", workers=2)
    zero_pfns = {pfn for pfn, page in mem.iter_pages() if not any(page)}
    with kdfix.open_dump(tmp_path / "d") as dump:
        shared = {desc.offset for pfn, desc in dump.kdump.iter_descriptors() if pfn in zero_pfns}
        assert len(shared) == 1
        assert_same_pages(dump.memory, mem)


# ---- bitmap runs ------------------------------------------------------------------------------------------------


def _naive_runs(bits: list[bool], start: int, end: int) -> list[tuple[int, int]]:
    runs: list[list[int]] = []
    for pfn in range(start, end):
        if bits[pfn]:
            if runs and runs[-1][1] == pfn:
                runs[-1][1] = pfn + 1
            else:
                runs.append([pfn, pfn + 1])
    return [(a, b) for a, b in runs]


def _bits(data: bytes, nbits: int) -> list[bool]:
    return [bool(data[p >> 3] >> (p & 7) & 1) for p in range(nbits)]


@pytest.mark.parametrize(
    ("data", "nbits", "want"),
    [
        (b"", 0, []),
        (bytes(64), 512, []),
        (b"\xff" * 64, 512, [(0, 512)]),
        (b"\xff" * 64, 509, [(0, 509)]),  # nbits cuts a full byte
        (b"\x80\x01", 16, [(7, 9)]),  # a run across a byte boundary, partial bytes on both sides
        (b"\x80\xff\xff\x01", 32, [(7, 25)]),  # partial, full, full, partial: one run
        (b"\xff\x00\xff", 24, [(0, 8), (16, 24)]),  # full bytes split by a zero byte
        (b"\xff\x7f\xff", 24, [(0, 15), (16, 24)]),  # the last bit of a byte clear
        (b"\xfe\xff", 16, [(1, 16)]),  # the first bit of a byte clear
        (b"\x55", 8, [(0, 1), (2, 3), (4, 5), (6, 7)]),
        (b"\x00" * 600 + b"\x01" + b"\x00" * 5000 + b"\x80", 5602 * 8, [(4800, 4801), (44815, 44816)]),
    ],
    ids=lambda v: None if isinstance(v, bytes) and len(v) < 8 else "long" if isinstance(v, bytes) else None,
)
def test_iter_runs_edge_cases(data: bytes, nbits: int, want: list[tuple[int, int]]) -> None:
    assert list(Bitmap(data, nbits).iter_runs()) == want == _naive_runs(_bits(data, nbits), 0, nbits)
    assert list(Bitmap(memoryview(bytearray(data)), nbits).iter_runs()) == want  # any bytes-like buffer


def test_iter_runs_clips_to_the_range_inside_bytes() -> None:
    bm = Bitmap(b"\xff\xff\xff", 24)
    assert list(bm.iter_runs(3, 21)) == [(3, 21)]
    assert list(bm.iter_runs(8, 16)) == [(8, 16)]
    assert list(bm.iter_runs(5, 5)) == list(bm.iter_runs(30, 40)) == list(bm.iter_runs(-4, 0)) == []
    assert list(Bitmap(b"\x03\xc0", 16).iter_runs(2, 14)) == []  # runs only outside the range, in its end bytes


_bytes = st.lists(st.sampled_from([0, 0, 0xFF, 0xFF, 0x01, 0x80, 0x7F, 0xFE]) | st.integers(0, 255), max_size=80).map(
    bytes
)


@given(data=_bytes, cut=st.integers(0, 12), start=st.integers(-3, 700), length=st.integers(0, 700) | st.none())
def test_iter_runs_iter_set_and_count_match_a_naive_reference(data: bytes, cut: int, start: int, length) -> None:  # type: ignore[no-untyped-def]
    nbits = max(0, len(data) * 8 - cut)
    bm = Bitmap(data, nbits)
    bits = _bits(data, nbits)
    end = None if length is None else start + length
    lo, hi = max(0, start), nbits if end is None else min(end, nbits)
    hi = max(lo, hi)
    runs = list(bm.iter_runs(start, end))
    assert runs == _naive_runs(bits, lo, hi)
    assert list(bm.iter_set(start, end)) == [p for p in range(lo, hi) if bits[p]]
    assert bm.count(lo, hi) == sum(b - a for a, b in runs)


@given(a=_bytes, b=_bytes, nbits=st.integers(0, 700))
def test_union_and_difference_are_the_set_operations(a: bytes, b: bytes, nbits: int) -> None:
    x, y = Bitmap(a, len(a) * 8), Bitmap(b, len(b) * 8)
    xs, ys = set(x.iter_set()), set(y.iter_set())
    union = x.union(y, nbits)
    assert union.nbits == nbits and len(union.to_bytes()) == (nbits + 7) // 8
    assert set(union.iter_set()) == {p for p in xs | ys if p < nbits}
    assert x.union(y).nbits == max(x.nbits, y.nbits)
    diff = x.difference(y)
    assert diff.nbits == x.nbits and set(diff.iter_set()) == xs - ys


# ---- a kdump input: helpers reopen the dump with kdfix.open_dump ------------------------------------------------


@pytest.mark.skipif("lzo" not in CODECS, reason="python-lzo is not installed")
def test_kdump_input_converted_by_workers_gives_identical_bytes(tmp_path: Path) -> None:
    """kdump-zlib → lzo: helpers reopen the input and decode their own units; 1 and 2 workers give the same bytes
    and the pages of the input."""
    mem = _memory(5, zero_share=0.2)
    src = tmp_path / "in.zlib"
    write_kdump(src, S.drgn_model(), mem, codec="zlib")
    with kdfix.open_dump(src) as dump:
        plan = plan_memory(dump.memory, dump.kdump.dumped)
        try:
            assert plan.spec is not None and plan.spec.kind == "dump"  # the path where helpers reopen the file
            assert len(plan.units) >= 4
        finally:
            plan.close()
    for workers in (1, 2):
        result = convert([src], tmp_path / f"w{workers}", codec="lzo", workers=workers)
        assert not result.passthrough
    assert file_bytes(tmp_path / "w1") == file_bytes(tmp_path / "w2")
    with kdfix.open_dump(tmp_path / "w2") as out, kdfix.open_dump(src) as inp:
        assert out.compression == "lzo"
        assert out.memory.dumped == inp.memory.dumped
        assert_same_pages(out.memory, inp.memory)
        assert_same_pages(out.memory, mem)
