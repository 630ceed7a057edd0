"""FlattenedSource: record index, last-write-wins replay, holes, and stream validation (kdump-format.md §11)."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.errors import FormatError, KdfixError
from kdfix.read.flattened import FlattenedSource, probe_flattened
from kdfix.read.source import BytesSource

HEADER = (b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1)).ljust(4096, b"\0")
END = b"\xff" * 16


def stream(records: list[tuple[int, bytes]], *, end: bool = True, header: bytes = HEADER) -> bytes:
    body = b"".join(struct.pack(">qq", off, len(data)) + data for off, data in records)
    return header + body + (END if end else b"")


def replay(records: list[tuple[int, bytes]]) -> bytes:
    """What ``makedumpfile -R`` produces: records applied in order, holes zero."""
    out = bytearray()
    for off, data in records:
        if len(out) < off + len(data):
            out.extend(bytes(off + len(data) - len(out)))
        out[off : off + len(data)] = data
    return bytes(out)


def test_holes_read_as_zero_and_size_is_max_end():
    src = FlattenedSource(BytesSource(stream([(0, b"abc"), (10, b"xyz")])))
    assert src.size == 13 and src.read_at(0, 100) == b"abc" + bytes(7) + b"xyz"
    assert src.read_at(2, 3) == b"c\0\0" and src.read_at(13, 5) == b""
    assert src.problems == [] and src.end_marker


def test_last_write_wins():
    records = [(0, b"AAAAAAAA"), (2, b"bb"), (6, b"cccc"), (1, b"D")]
    src = FlattenedSource(BytesSource(stream(records)))
    assert src.read_at(0, src.size) == replay(records) == b"ADbbAAcccc"
    extents = list(src.iter_extents())
    starts = [e[0] for e in extents]
    assert starts == sorted(starts)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(extents))


@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.binary(min_size=1, max_size=60)),
        min_size=0,
        max_size=25,
    ),
    st.integers(0, 400),
    st.integers(0, 200),
)
def test_any_stream_reads_like_its_replay(records, offset, length):
    """Property: every read equals the same bytes of the sequential replay."""
    src = FlattenedSource(BytesSource(stream(records)))
    expected = replay(records)
    assert src.size == len(expected)
    assert src.read_at(offset, length) == expected[offset : offset + length]
    assert src.read_at(0, src.size) == expected


def test_missing_end_marker_is_a_problem_not_an_error():
    src = FlattenedSource(BytesSource(stream([(0, b"abc")], end=False)))
    assert src.read_at(0, 3) == b"abc" and not src.end_marker
    assert any("end marker" in p for p in src.problems)


def test_record_cut_by_eof_keeps_what_is_there():
    raw = stream([(0, b"abc"), (100, b"0123456789")], end=False)[:-4]
    src = FlattenedSource(BytesSource(raw))
    assert src.size == 106 and src.read_at(100, 10) == b"012345"
    assert any("truncated" in p for p in src.problems)


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (struct.pack(">qq", -5, 3) + b"abc", "flat_record.offset"),
        (struct.pack(">qq", 0, 0), "flat_record.buf_size"),
        (struct.pack(">qq", 0, -7), "flat_record.buf_size"),
        (struct.pack(">qq", 1 << 62, 1 << 62), "flat_record.buf_size"),
    ],
)
def test_bad_records_name_field_and_offset(record, field):
    with pytest.raises(FormatError) as info:
        FlattenedSource(BytesSource(HEADER + record + END))
    assert info.value.field == field and info.value.offset in (4096, 4104)


def test_bad_header():
    assert probe_flattened(HEADER)
    bad_type = HEADER[:16] + struct.pack(">q", 2) + HEADER[24:]
    assert not probe_flattened(bad_type)
    with pytest.raises(FormatError, match="type"):
        FlattenedSource(BytesSource(bad_type + END))
    no_nul = b"makedumpfileX" + HEADER[13:]  # crash compares 13 bytes, NUL included
    with pytest.raises(KdfixError):
        FlattenedSource(BytesSource(no_nul + END))
    with pytest.raises(KdfixError):
        FlattenedSource(BytesSource(HEADER[:20]))


def test_memory_is_proportional_to_records():
    """A stream whose records describe a huge sparse file costs one index entry per record."""
    records = [(i << 30, b"x" * 16) for i in range(64)]
    src = FlattenedSource(BytesSource(stream(records)))
    assert src.size == (63 << 30) + 16 and src.extent_count == 64
    assert src.read_at(5 << 30, 20) == b"x" * 16 + bytes(4)
