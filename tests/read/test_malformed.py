"""Hostile input: truncated files and corrupted header fields give KdfixError (or a readable dump), quickly."""

from __future__ import annotations

import contextlib
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdfix import open_dump
from kdfix.errors import FormatError, KdfixError
from kdfix.format.kdump import DISK_DUMP_HEADER, KDUMP_SUB_HEADER
from kdfix.format.layout import LP64_LE
from kdfix.read.dump import verify_dump
from kdfix.read.memory import DictMemory
from kdfix.write import write_elf, write_kdump
from tests.read.conftest import sample_pages
from tests.read.test_kdump import make_model

MAIN = DISK_DUMP_HEADER.bind(LP64_LE)
SUB = KDUMP_SUB_HEADER.bind(LP64_LE)


def exercise(path: Path) -> str:
    """Open, read every page, verify; only KdfixError may escape. Returns 'error' or 'ok'."""
    try:
        with open_dump(path) as d:
            _ = d.model, d.vmcoreinfo, d.notes, d.problems
            for pfn in range(0, min(d.memory.max_pfn, 0x2000), 97):
                with contextlib.suppress(KdfixError):
                    d.memory.page(pfn)
            with contextlib.suppress(KdfixError):
                list(d.memory.iter_pages())
            verify_dump(d)
    except KdfixError as exc:
        assert "\n" not in str(exc)
        return "error"
    return "ok"


class Files(dict):
    """File bytes by kind, with a short repr (hypothesis prints fixture values)."""

    def __repr__(self) -> str:
        return f"Files({', '.join(self)})"


@pytest.fixture(scope="module")
def small_dumps(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("small")
    out = Files()
    for name, kw in {"kdump": {}, "flat": {"flat": True}}.items():
        write_kdump(d / name, make_model(), DictMemory(sample_pages(), max_pfn=0x2000), codec="zlib", **kw)
        out[name] = (d / name).read_bytes()
    write_elf(d / "elf", make_model(), DictMemory(sample_pages(), max_pfn=0x2000))
    out["elf"] = (d / "elf").read_bytes()
    return out


@pytest.mark.parametrize("kind", ["kdump", "flat", "elf"])
def test_truncation_at_many_offsets(small_dumps, tmp_path, kind):
    """Every prefix of the file opens with problems listed, or fails with a KdfixError; never anything else."""
    data = small_dumps[kind]
    cuts = sorted({*range(0, 9000, 37), *range(0, len(data), max(1, len(data) // 150)), len(data) - 1})
    outcomes = set()
    t0 = time.monotonic()
    for cut in cuts:
        p = tmp_path / "t"
        p.write_bytes(data[:cut])
        outcomes.add(exercise(p))
    assert time.monotonic() - t0 < 60
    assert "error" in outcomes


def test_truncated_real_qemu_stream(firmware_kdump, tmp_path):
    """The real flattened file cut anywhere: readable as far as the data goes, or a KdfixError."""
    data = firmware_kdump.read_bytes()
    for cut in range(4096, len(data), len(data) // 40):
        p = tmp_path / "t"
        p.write_bytes(data[:cut])
        result = exercise(p)
        if result == "ok" and cut > 0x50000:
            with open_dump(p) as d:
                assert any("end marker" in x for x in d.problems)
                assert not verify_dump(d).ok


def test_notes_size_beyond_file_names_field_and_offset(small_dumps, tmp_path):
    data = bytearray(small_dumps["kdump"])
    off = 4096 + SUB.offset_of("size_note")
    data[off : off + 8] = (1 << 40).to_bytes(8, "little")
    p = tmp_path / "n"
    p.write_bytes(data)
    with pytest.raises(FormatError) as info:
        open_dump(p)
    assert info.value.field == "sub_header.size_note" and info.value.offset == off
    assert "sub_header.size_note at 0x1038" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("block_size", 0),
        ("block_size", 4097),
        ("sub_hdr_size", 0x7FFFFFFF),
        ("sub_hdr_size", -1),
        ("bitmap_blocks", 0xFFFFFFFF),
        ("header_version", -3),
    ],
)
def test_bad_main_header_fields(small_dumps, tmp_path, field, value):
    data = bytearray(small_dumps["kdump"])
    data[MAIN.offset_of(field) : MAIN.offset_of(field) + 4] = value.to_bytes(4, "little", signed=value < 0)
    p = tmp_path / "h"
    p.write_bytes(data)
    with pytest.raises(KdfixError):
        open_dump(p)


def _set(data: bytearray, off: int, size: int, value: int) -> None:
    data[off : off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_corrupted_fields_never_crash(small_dumps, tmp_path, data):
    """Any header, sub-header or descriptor field set to an extreme value: KdfixError or a readable dump."""
    kind = data.draw(st.sampled_from(["kdump", "flat"]))
    raw = bytearray(small_dumps["kdump"])
    fields = [(0, path, off, size) for path, off, size in MAIN.iter_fields() if size in (4, 8)]
    fields += [(4096, path, off, size) for path, off, size in SUB.iter_fields()]
    fields += [(None, f"desc{i}", i * 8, 8) for i in range(30)]
    base, _name, off, size = data.draw(st.sampled_from(fields))
    value = data.draw(st.sampled_from([0, 1, -1, 0x7FFFFFFF, 1 << 31, 1 << 40, 1 << 63, 4096, 4097]))
    if base is None:  # descriptor area: find it through a clean open
        p0 = tmp_path / "clean"
        p0.write_bytes(raw)
        with open_dump(p0) as d:
            base = d.kdump.data_offset
    _set(raw, base + off, size, value)
    p = tmp_path / "m"
    if kind == "flat":  # the same corrupted file as one record of a flattened stream
        body = struct.pack(">qq", 0, len(raw)) + bytes(raw)
        hdr = (b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1)).ljust(4096, b"\0")
        p.write_bytes(hdr + body + b"\xff" * 16)
    else:
        p.write_bytes(raw)
    t0 = time.monotonic()
    exercise(p)
    assert time.monotonic() - t0 < 10


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 700), st.binary(min_size=1, max_size=8))
def test_elf_header_garbage(small_dumps, tmp_path, offset, junk):
    raw = bytearray(small_dumps["elf"])
    raw[offset : offset + len(junk)] = junk
    p = tmp_path / "e"
    p.write_bytes(raw)
    t0 = time.monotonic()
    exercise(p)
    assert time.monotonic() - t0 < 10


def test_not_a_dump(tmp_path):
    for content in (b"", b"hello world" * 100, b"KDUMP   " + bytes(10), b"\x7fELF" + bytes(3)):
        p = tmp_path / "x"
        p.write_bytes(content)
        with pytest.raises(KdfixError):
            open_dump(p)
