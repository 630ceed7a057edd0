"""The verify hot loop (kdfix.read.page_check) reports exactly what the reader's per-page path reports, on sound
dumps of every codec and on dumps with bytes flipped in the descriptor table or the page data."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.format.kdump import PAGE_DESC_SIZE
from kdfix.generate.synthetic import build_linux_image
from kdfix.read.page_check import _slow, check_pages
from kdfix.read.probe import open_dump
from kdfix.write import write_kdump

MiB = 1 << 20


@functools.cache
def _base(codec: str, flat: bool) -> bytes:
    model, memory, _ = build_linux_image(memory_size=32 * MiB, vmcoreinfo_in_notes=False, filler_fraction=0.3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d"
        write_kdump(path, model, memory, codec=codec, flat=flat)
        return path.read_bytes()


def _both(path: Path) -> tuple[tuple[int, list[tuple[int, str]]], tuple[int, list[tuple[int, str]]]]:
    with open_dump(path) as dump:
        part = dump.kdump
        assert part is not None
        fast_n, fast_bad = check_pages(part, 0, part.end_pfn)
        slow_n, slow_bad = _slow(part, 0, part.end_pfn, 0, [])
    return (fast_n, [(p, str(e)) for p, e in fast_bad]), (slow_n, [(p, str(e)) for p, e in slow_bad])


@pytest.mark.parametrize("codec", ["zlib", "lzo", "snappy", "zstd", "none"])
def test_sound_dump_all_pages_checked(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "d"
    path.write_bytes(_base(codec, False))
    fast, slow = _both(path)
    assert fast == slow and not fast[1]
    with open_dump(path) as dump:
        assert fast[0] == dump.memory.dumped.count()


@given(
    st.sampled_from(["zlib", "none", "zstd"]),
    st.booleans(),
    st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=6),
    st.booleans(),
)
def test_flipped_bytes_are_reported_as_the_reader_reports_them(
    codec: str, flat: bool, flips: list[tuple[float, int]], in_table: bool
) -> None:
    data = bytearray(_base(codec, flat))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d"
        path.write_bytes(data)
        with open_dump(path) as dump:
            part = dump.kdump
            assert part is not None
            table = (part.data_offset, part.descriptors_end)
        if flat:  # flip anywhere past the headers of the stream
            lo, hi = 8192, len(data)
        else:
            lo, hi = table if in_table else (table[1], len(data))
        for where, xor in flips:
            at = lo + int(where * (hi - lo - 1))
            data[at] ^= xor
        path.write_bytes(data)
        try:
            fast, slow = _both(path)
        except Exception as exc:  # the headers themselves became unreadable: nothing to compare
            assert "Error" in type(exc).__name__
            return
        assert fast == slow


def test_truncated_descriptor_table_is_reported_like_the_reader(tmp_path: Path) -> None:
    data = _base("zlib", False)
    path = tmp_path / "d"
    path.write_bytes(data)
    with open_dump(path) as dump:
        part = dump.kdump
        assert part is not None
        cut = part.data_offset + PAGE_DESC_SIZE * (part.num_dumped // 2) + 5
    with open(path, "r+b") as fh:
        fh.truncate(cut)
    fast, slow = _both(path)
    assert fast == slow and fast[1]


def test_pages_out_of_file_order_are_read_one_by_one(tmp_path: Path) -> None:
    """Data written out of pfn order (two descriptors swapped) still checks sound, page for page."""
    data = bytearray(_base("zlib", False))
    path = tmp_path / "d"
    path.write_bytes(data)
    with open_dump(path) as dump:
        part = dump.kdump
        assert part is not None
        zero = part.zero_page_offsets()
        descs = []
        for loc in part.iter_locations():
            if loc.desc.offset not in zero:  # type: ignore[attr-defined]
                descs.append(loc.descriptor_offset)
    a, b = descs[len(descs) // 4], descs[3 * len(descs) // 4]
    data[a : a + PAGE_DESC_SIZE], data[b : b + PAGE_DESC_SIZE] = (
        data[b : b + PAGE_DESC_SIZE],
        data[a : a + PAGE_DESC_SIZE],
    )
    path.write_bytes(data)
    fast, slow = _both(path)
    assert fast == slow and not fast[1]
