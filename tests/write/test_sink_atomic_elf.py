"""Sinks (flattened records, coalescing, end marker), reassemble, atomic_output and the ELF writer's layout."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kdfix
from kdfix.errors import FormatError, WriteError
from kdfix.format.constants import EM_386, EM_ARM, EM_X86_64
from kdfix.format.elf import ELF32_PHDR, ELF64_PHDR, ELF_EHDR, ET_CORE, PT_LOAD, PT_NOTE
from kdfix.format.flattened import FLAT_HEADER_BOUND, FLAT_RECORD_BOUND, FLAT_RECORD_SIZE
from kdfix.format.layout import ARM32_LE, I386_LE, LP64_LE
from kdfix.model import DumpModel
from kdfix.notes.framing import Note, iter_notes
from kdfix.read.flattened import FlattenedSource
from kdfix.read.memory import DictMemory
from kdfix.read.source import FileSource
from kdfix.write import FlattenedSink, MemorySink, atomic_output, reassemble, write_elf
from kdfix.write.elf import LoadSegment, runs_of
from kdfix.write.flattened import reassemble_extents
from tests import strategies as S
from tests.roundtrip import assert_elf_model, assert_same_pages, file_bytes

BS = 4096


def _records(data: bytes) -> list[tuple[int, int]]:
    pos, out = 4096, []
    while True:
        rec = FLAT_RECORD_BOUND.unpack(data, pos)
        out.append((rec.offset, rec.buf_size))
        if rec.offset < 0:
            return out
        pos += FLAT_RECORD_SIZE + rec.buf_size


def test_flattened_sink_header_records_and_end_marker(tmp_path: Path) -> None:
    """kdump-format.md §11: 4096-byte header, {BE offset, BE size}+payload, consecutive writes coalesced, {-1,-1}."""
    path = tmp_path / "f"
    with FlattenedSink(path) as sink:
        sink.write_at(0, b"a" * 10)
        sink.write_at(10, b"b" * 5)  # continues the record
        sink.write_at(4096, b"c" * 3)  # new record
        sink.write_at(100, b"")  # nothing
    data = file_bytes(path)
    hdr = FLAT_HEADER_BOUND.unpack(data)
    assert hdr.signature == b"makedumpfile".ljust(16, b"\0") and (hdr.type, hdr.version) == (1, 1)
    assert not any(data[FLAT_HEADER_BOUND.size : 4096])
    assert _records(data) == [(0, 15), (4096, 3), (-1, -1)]
    assert data[-16:] == b"\xff" * 16
    reassemble(path, tmp_path / "r")
    assert file_bytes(tmp_path / "r") == b"a" * 10 + b"b" * 5 + bytes(4096 - 15) + b"ccc"


def test_flattened_sink_splits_long_records(tmp_path: Path) -> None:
    path = tmp_path / "f"
    with FlattenedSink(path, max_record_size=100) as sink:
        sink.write_at(50, bytes(250))
    assert _records(file_bytes(path)) == [(50, 100), (150, 100), (250, 50), (-1, -1)]


@given(writes=st.lists(st.tuples(st.integers(0, 5000), st.binary(min_size=1, max_size=300)), max_size=12))
def test_reassemble_is_last_write_wins(tmp_path_factory, writes) -> None:  # type: ignore[no-untyped-def]
    """Replaying a FlattenedSink's records gives the bytes a MemorySink holds after the same writes."""
    d = tmp_path_factory.mktemp("flat")
    mem = MemorySink()
    with FlattenedSink(d / "f", max_record_size=64) as sink:
        for off, data in writes:
            sink.write_at(off, data)
            mem.write_at(off, data)
    size = reassemble(d / "f", d / "r")
    assert size == mem.size
    assert file_bytes(d / "r") == mem.getvalue()
    # the same file from the reader's extent index (fix -o of a flattened stream): the records are not read again
    with FileSource(d / "f") as stream:
        index = FlattenedSource(stream)
        assert reassemble_extents(d / "f", index.iter_extents(), index.size, d / "x") == mem.size
    assert file_bytes(d / "x") == mem.getvalue()


@pytest.mark.parametrize("damage", ["signature", "truncated", "bad_end"])
def test_reassemble_rejects_damaged_streams(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "f"
    with FlattenedSink(path) as sink:
        sink.write_at(0, b"x" * 100)
    data = bytearray(file_bytes(path))
    if damage == "signature":
        data[0:4] = b"nope"
    elif damage == "truncated":
        data = data[:-20]
    else:
        data[-16:] = (5).to_bytes(8, "big") + (0).to_bytes(8, "big")
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError):
        reassemble(path, tmp_path / "r")


# ---- atomic_output ------------------------------------------------------------------------------------


def test_atomic_output_renames_and_keeps_mode(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.write_bytes(b"x")
    src.chmod(0o400)
    target = tmp_path / "out"
    target.write_bytes(b"old")
    with atomic_output(target, mode_from=src) as tmp:
        assert Path(tmp).parent == tmp_path and Path(tmp) != target
        Path(tmp).write_bytes(b"new")
        assert target.read_bytes() == b"old"  # untouched until success
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_atomic_output_default_mode_is_0644(tmp_path: Path) -> None:
    with atomic_output(tmp_path / "out") as tmp:
        Path(tmp).write_bytes(b"y")
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o644


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_atomic_output_failure_removes_temp_and_keeps_target(tmp_path: Path, code: int) -> None:
    target = tmp_path / "out"
    target.write_bytes(b"old")
    with pytest.raises(WriteError) as info, atomic_output(target) as tmp:
        Path(tmp).write_bytes(b"partial")
        raise OSError(code, os.strerror(code))
    assert "\n" not in str(info.value)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_output_other_exceptions_pass_through(tmp_path: Path) -> None:
    with pytest.raises(KeyError), atomic_output(tmp_path / "out"):
        raise KeyError("x")
    assert list(tmp_path.iterdir()) == []


# ---- ELF writer ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "machine"), [(336, EM_X86_64), (392, 183), (144, EM_386), (100, 0)])
def test_elf_machine_comes_from_the_architecture(tmp_path: Path, size: int, machine: int) -> None:
    """No e_machine in the model: the NT_PRSTATUS size's architecture (kdfix.arch), else EM_NONE, never a guess."""
    mem = DictMemory({1: bytes(BS)}, max_pfn=2)
    write_elf(tmp_path / "e", DumpModel(notes=(Note(b"CORE", 1, bytes(size)),)), mem)
    assert ELF_EHDR.bind(LP64_LE).unpack(file_bytes(tmp_path / "e")).e_machine == machine


@pytest.mark.parametrize(("abi", "machine", "phdr"), [(LP64_LE, EM_X86_64, ELF64_PHDR), (I386_LE, EM_386, ELF32_PHDR),
                                                       (ARM32_LE, EM_ARM, ELF32_PHDR)])  # fmt: skip
def test_elf_layout_is_proc_vmcore_like(tmp_path: Path, abi, machine, phdr) -> None:  # type: ignore[no-untyped-def]
    """Ehdr, Phdrs right after it, PT_NOTE first with all notes (VMCOREINFO included), one PT_LOAD per run."""
    pages = {pfn: bytes([pfn]) * BS for pfn in (1, 2, 3, 7, 9, 10)}
    mem = DictMemory(pages, max_pfn=11)
    model = DumpModel(abi=abi, notes=(Note(b"CORE", 1, b"r" * 10),), vmcoreinfo=b"OSRELEASE=1\n", eraseinfo=b"e\n",
                      e_machine=machine)  # fmt: skip
    write_elf(tmp_path / "e", model, mem)
    data = file_bytes(tmp_path / "e")
    eh = ELF_EHDR.bind(abi).unpack(data)
    bound = phdr.bind(abi)
    assert (eh.e_type, eh.e_machine, eh.e_phoff, eh.e_phentsize, eh.e_phnum) == (
        ET_CORE, machine, eh.e_ehsize, bound.size, 4)  # fmt: skip
    phs = [bound.unpack(data, eh.e_phoff + i * bound.size) for i in range(eh.e_phnum)]
    assert phs[0].p_type == PT_NOTE and phs[0].p_offset == eh.e_phoff + 4 * bound.size
    names = [n.name for n in iter_notes(data[phs[0].p_offset : phs[0].p_offset + phs[0].p_filesz], abi)]
    assert names == [b"CORE", b"VMCOREINFO", b"ERASEINFO"]
    loads = [(p.p_paddr, p.p_vaddr, p.p_filesz, p.p_memsz) for p in phs[1:]]
    assert all(p.p_type == PT_LOAD for p in phs[1:])
    assert loads == [(BS, BS, 3 * BS, 3 * BS), (7 * BS, 7 * BS, BS, BS), (9 * BS, 9 * BS, 2 * BS, 2 * BS)]
    assert phs[1].p_offset % BS == 0
    for p in phs[1:]:
        for i in range(p.p_filesz // BS):
            pfn = p.p_paddr // BS + i
            assert data[p.p_offset + i * BS : p.p_offset + (i + 1) * BS] == pages[pfn]


def test_elf_given_segments_keep_addresses_and_fill_holes(tmp_path: Path) -> None:
    mem = DictMemory({0: b"a" * BS, 2: b"c" * BS}, max_pfn=3)
    segs = [LoadSegment(0, 0xFFFF888000000000, 3 * BS)]
    write_elf(tmp_path / "e", DumpModel(), mem, segments=segs)
    with kdfix.open_dump(tmp_path / "e") as dump:
        assert dump.elf.segments[0].vaddr == 0xFFFF888000000000
        assert dump.memory.read(0, 3 * BS) == b"a" * BS + bytes(BS) + b"c" * BS


def test_runs_of_splits_at_zero_pages_when_excluded() -> None:
    mem = DictMemory({0: b"a" * BS, 1: bytes(BS), 2: b"c" * BS}, max_pfn=3)
    assert [(s.paddr, s.size) for s in runs_of(mem)] == [(0, 3 * BS)]
    assert [(s.paddr, s.size) for s in runs_of(mem, exclude_zero=True)] == [(0, BS), (2 * BS, BS)]


def test_elf32_rejects_addresses_above_4g(tmp_path: Path) -> None:
    mem = DictMemory({1 << 20: bytes(BS)}, max_pfn=(1 << 20) + 1)
    with pytest.raises(WriteError, match="Elf32"):
        write_elf(tmp_path / "e", DumpModel(abi=I386_LE), mem)


@given(model=S.models(abi=LP64_LE), memory=S.memories())
def test_elf_write_then_read(tmp_path_factory, model, memory) -> None:  # type: ignore[no-untyped-def]
    """write_elf → open_dump gives back every page and the notes (VMCOREINFO, ERASEINFO as notes)."""
    path = tmp_path_factory.mktemp("elf") / "e"
    write_elf(path, model, memory)
    with kdfix.open_dump(path) as dump:
        assert_elf_model(dump.model, model)
        assert_same_pages(dump.memory, memory)


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="sync_file_range is Linux's")
def test_writeout_is_asked_every_step_and_stops_where_refused(tmp_path: Path) -> None:
    """Early write-out (kdfix.write.writeback): one request per ``step`` bytes written; a pipe refuses it
    (ESPIPE), after which the pacer asks no more."""
    from kdfix.write.writeback import Writeout, start_writeout

    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"x" * 3 * BS, 0)
        assert start_writeout(fd, 0, 3 * BS)
        pacer = Writeout(fd, step=2 * BS)
        pacer.advance(BS)
        assert pacer.done == 0  # less than a step: not asked yet
        pacer.advance(3 * BS)
        assert (pacer.done, pacer.enabled) == (3 * BS, True)
    finally:
        os.close(fd)
    r, w = os.pipe()
    try:
        pacer = Writeout(w, step=1)
        pacer.advance(10)
        assert not pacer.enabled
        pacer.advance(20)
        assert pacer.done == 10
    finally:
        os.close(r)
        os.close(w)
