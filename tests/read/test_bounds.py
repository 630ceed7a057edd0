"""Hostile but valid-looking containers: `kdfix info` stays within 10 s CPU and 500 MiB.

Each input is built here from a small writer-made dump: a flattened stream that rewrites its first bytes
one record at a time, and a PT_NOTE padded with hundreds of thousands of notes.
"""

from __future__ import annotations

import random
import struct
import time
from pathlib import Path

import pytest

from kdfix.format.constants import FLAT_HEADER_SIZE, FLAT_SIGNATURE, FLAT_TYPE, NOTE_NAME_VMCOREINFO
from kdfix.format.elf import PT_NOTE, ehdr_layout, phdr_layout
from kdfix.format.flattened import FLAT_HEADER_BOUND, FLAT_RECORD_BOUND
from kdfix.format.layout import LP64_LE
from kdfix.format.notes import NHDR
from kdfix.notes.framing import Note, pack_note, read_notes
from kdfix.read.flattened import FlattenedSource
from kdfix.read.source import BytesSource
from tests.reliability.conftest import run_kdfix

CPU_LIMIT = 10  # seconds
MEMORY_LIMIT = 500 << 20
RELEASE = "6.1.0-kdfix-bounds"


def _model_and_memory() -> tuple[object, object]:
    from kdfix.model import DumpModel, make_utsname
    from kdfix.read.memory import DictMemory

    rnd = random.Random(10)
    pages = {pfn: rnd.randbytes(4096) for pfn in range(200)}  # incompressible: the dump is > 600,000 bytes
    vmcoreinfo = f"OSRELEASE={RELEASE}\nPAGESIZE=4096\n".encode()
    model = DumpModel(
        utsname=make_utsname(sysname="Linux", release=RELEASE, version="#1 SMP", machine="x86_64"),
        nr_cpus=1,
        dump_level=1,
        notes=(Note(b"CORE", 1, bytes(336)), Note(NOTE_NAME_VMCOREINFO, 0, vmcoreinfo)),
        vmcoreinfo=vmcoreinfo,
    )
    return model, DictMemory(pages, max_pfn=200)


@pytest.fixture(scope="module")
def kdump_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from kdfix.write import write_kdump

    model, memory = _model_and_memory()
    path = tmp_path_factory.mktemp("bounds") / "base.kdump"
    write_kdump(path, model, memory, codec="none")  # type: ignore[arg-type]
    return path.read_bytes()


@pytest.fixture(scope="module")
def elf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from kdfix.write import write_elf

    model, memory = _model_and_memory()
    path = tmp_path_factory.mktemp("bounds") / "base.elf"
    write_elf(path, model, memory)  # type: ignore[arg-type]
    return path.read_bytes()


def flat_rewriting_each_byte(dump: bytes, count: int) -> bytes:
    """One record holding the whole dump, then ``count`` one-byte records at offsets 0.. (same bytes again)."""
    assert count <= len(dump)
    header = FLAT_HEADER_BOUND.pack(FLAT_HEADER_BOUND.layout.make(signature=FLAT_SIGNATURE, type=FLAT_TYPE, version=1))
    out = bytearray(header.ljust(FLAT_HEADER_SIZE, b"\0"))
    record = FLAT_RECORD_BOUND.layout.make
    out += FLAT_RECORD_BOUND.pack(record(offset=0, buf_size=len(dump))) + dump
    one = struct.Struct(FLAT_RECORD_BOUND.abi.byte_order + "qqc")  # record header + its one byte
    for i in range(count):
        out += one.pack(i, 1, dump[i : i + 1])
    out += FLAT_RECORD_BOUND.pack(record(offset=-1, buf_size=-1))
    return bytes(out)


def elf_with_padded_notes(elf: bytes, count: int, *, filler: Note, vmcoreinfo_last: bool = False) -> bytes:
    """The ELF with its PT_NOTE moved to the end and ``count`` copies of ``filler`` added after its notes."""
    ehdr, phdr = ehdr_layout(LP64_LE), phdr_layout(LP64_LE)
    eh = ehdr.unpack(elf)
    out = bytearray(elf)
    for i in range(eh.e_phnum):
        at = eh.e_phoff + i * phdr.size
        ph = phdr.unpack(out, at)
        if ph.p_type != PT_NOTE:
            continue
        own = bytes(out[ph.p_offset : ph.p_offset + ph.p_filesz])
        vmcoreinfo = b""
        if vmcoreinfo_last:  # the real notes first, VMCOREINFO only after the filler
            kept = [n for n in read_notes(own, LP64_LE)[0] if n.name != NOTE_NAME_VMCOREINFO]
            vmcoreinfo = b"".join(pack_note(n, LP64_LE) for n in read_notes(own, LP64_LE)[0] if n not in kept)
            own = b"".join(pack_note(n, LP64_LE) for n in kept)
        blob = own + pack_note(filler, LP64_LE) * count + vmcoreinfo
        start = len(out)
        out += blob
        for name, value in (("p_offset", start), ("p_filesz", len(blob)), ("p_memsz", len(blob))):
            out[at + phdr.offset_of(name) : at + phdr.offset_of(name) + phdr.size_of(name)] = phdr.pack_field(
                name, value
            )
        return bytes(out)
    raise AssertionError("no PT_NOTE in the writer's ELF")


def bounded_info(path: Path) -> str:
    """`kdfix info` under the limits; the output."""
    run = run_kdfix("info", path, memory=MEMORY_LIMIT, cpu_seconds=CPU_LIMIT, timeout=120)
    assert run.code == 0, (run.code, run.stderr[-2000:])
    return run.stdout


def test_flattened_stream_of_one_byte_records_is_bounded(kdump_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bytewise.flat"
    path.write_bytes(flat_rewriting_each_byte(kdump_bytes, 300_000))
    out = bounded_info(path)
    assert RELEASE in out


def _index_cpu(stream: bytes) -> float:
    best = float("inf")
    for _ in range(3):
        began = time.process_time()
        FlattenedSource(BytesSource(stream))
        best = min(best, time.process_time() - began)
    return best


def test_flattened_index_grows_n_log_n(kdump_bytes: bytes) -> None:
    """Doubling the records at most about doubles the index time (a quadratic index quadruples it)."""
    small, large = (flat_rewriting_each_byte(kdump_bytes, n) for n in (150_000, 300_000))
    src = FlattenedSource(BytesSource(large))
    assert src.read_at(0, src.size) == kdump_bytes and src.record_count == 300_001
    assert _index_cpu(large) / _index_cpu(small) < 3.0


@pytest.mark.parametrize("count", [600_000, 1_400_000])
def test_pt_note_of_empty_notes_is_bounded(elf_bytes: bytes, tmp_path: Path, count: int) -> None:
    path = tmp_path / "empty-notes.elf"
    path.write_bytes(elf_with_padded_notes(elf_bytes, count, filler=Note(b"", 1, b""), vmcoreinfo_last=True))
    out = bounded_info(path)
    assert f"{count} empty notes" in out  # said, not silently dropped
    assert RELEASE in out  # VMCOREINFO after the filler is still found


def test_pt_note_of_many_named_notes_keeps_a_bounded_number(elf_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "named-notes.elf"
    path.write_bytes(elf_with_padded_notes(elf_bytes, 600_000, filler=Note(b"X", 7, b""), vmcoreinfo_last=True))
    out = bounded_info(path)
    assert "not kept" in out and RELEASE in out


def test_read_notes_counts_what_it_does_not_keep() -> None:
    vmcoreinfo = Note(NOTE_NAME_VMCOREINFO, 0, b"OSRELEASE=x\n")
    filler = [Note(b"CORE", 1, bytes([i]) * 4) for i in range(6)]
    blob = b"".join(pack_note(n, LP64_LE) for n in (*filler, Note(b"", 1, b""), vmcoreinfo))
    notes, problems = read_notes(blob, LP64_LE, base_offset=0x100, limit=4)
    assert list(notes) == [*filler[:4], vmcoreinfo]
    assert notes[0].offset == 0x100 and notes[-1].offset == 0x100 + len(blob) - vmcoreinfo.packed_size
    assert any("1 empty notes" in p for p in problems) and any("2 notes beyond the first 4" in p for p in problems)


def test_read_notes_reports_a_framing_error_and_keeps_the_notes_before_it() -> None:
    good = pack_note(Note(b"CORE", 1, b"abcd"), LP64_LE)
    bad = NHDR.bind(LP64_LE).pack(NHDR.make(n_namesz=5, n_descsz=1 << 20, n_type=1))
    notes, problems = read_notes(good + bad + bytes(8), LP64_LE, base_offset=0x40)
    assert notes == (Note(b"CORE", 1, b"abcd"),)
    assert len(problems) == 1 and f"{0x40 + len(good):#x}" in problems[0]
