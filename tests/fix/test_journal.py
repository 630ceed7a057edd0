"""The undo journal: written before any change, restores bytes exactly, refuses a file changed since."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdfix.errors import JournalError
from kdfix.fix.journal import Journal, Write, begin, journal_path, undo
from tests.fix.conftest import file_state


def _apply(path: Path, writes: list[Write]) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        for w in writes:
            os.pwrite(fd, w.new, w.file_offset)
    finally:
        os.close(fd)


def _writes(data: bytes, spans: list[tuple[int, bytes]]) -> list[Write]:
    """Writes with the bytes they replace, simulated in order (later writes see earlier ones)."""
    buf = bytearray(data)
    out = []
    for off, new in spans:
        old = bytes(buf[off : off + len(new)]) if off < len(buf) else b""
        out.append(Write(off, old, new))
        end = off + len(new)
        if end > len(buf):
            buf.extend(bytes(end - len(buf)))
        buf[off:end] = new
    return out


@settings(max_examples=25)
@given(
    size=st.integers(1, 5000),
    spans=st.lists(st.tuples(st.integers(0, 6000), st.binary(min_size=1, max_size=300)), min_size=1, max_size=6),
    seed=st.integers(0, 1000),
)
def test_undo_restores_exact_bytes_and_size(tmp_path_factory, size, spans, seed):
    path = tmp_path_factory.mktemp("j") / "f"
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    writes = _writes(data, spans)
    begin(path, writes, size)
    assert Path(journal_path(path)).is_file()
    _apply(path, writes)
    undo(path)
    assert path.read_bytes() == data
    assert not Path(journal_path(path)).exists()


def test_second_fix_extends_the_journal_and_undo_goes_back_to_the_first_original(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = bytes(range(256)) * 8
    path.write_bytes(data)
    first = _writes(data, [(10, b"AAAA"), (len(data) + 8, b"tail")])
    begin(path, first, len(data))
    _apply(path, first)
    now = path.read_bytes()
    second = _writes(now, [(12, b"BBBB"), (100, b"C")])
    begin(path, second, len(now))
    _apply(path, second)
    assert Journal.load(path).original_size == len(data)
    undo(path)
    assert path.read_bytes() == data


def test_undo_refuses_when_the_file_changed_since_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(100))
    writes = _writes(bytes(100), [(5, b"xyz")])
    begin(path, writes, 100)
    _apply(path, writes)
    _apply(path, [Write(6, b"", b"Q")])
    with pytest.raises(JournalError, match="changed since"):
        undo(path)
    undo(path, force=True)
    assert path.read_bytes() == bytes(100)


def test_corrupt_or_missing_journal_is_a_journal_error(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(10))
    with pytest.raises(JournalError, match="no undo journal"):
        undo(path)
    begin(path, [Write(1, b"\0", b"\1")], 10)
    data = json.loads(Path(journal_path(path)).read_text())
    data["writes"][0]["old"] = "ff"
    Path(journal_path(path)).write_text(json.dumps(data))
    with pytest.raises(JournalError, match="checksums"):
        undo(path)
    assert file_state(path)[1] == 10
