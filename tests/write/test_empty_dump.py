"""A valid dump with no pages converts to files that kdfix and libkdumpfile (through drgn) open again."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdfix import open_dump
from kdfix.format.elf import PT_LOAD, ehdr_layout, phdr_layout
from kdfix.format.layout import LP64_LE
from kdfix.model import DumpModel, make_utsname
from kdfix.notes.framing import Note
from kdfix.read.dump import verify_dump
from kdfix.read.memory import DictMemory
from kdfix.write import write_kdump
from tests.oracle.fixtures import require_tool
from tests.reliability.conftest import run_kdfix

# What drgn needs of VMCOREINFO to open a dump (tools-and-oracles.md §4).
VMCOREINFO = (
    b"OSRELEASE=6.1.0-empty\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff82a0a000\nSYMBOL(_stext)=ffffffff81000000\n"
)


@pytest.fixture(params=[0, 0x100], ids=["max_mapnr-0", "max_mapnr-0x100"])
def empty(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    model = DumpModel(
        utsname=make_utsname(sysname="Linux", release="6.1.0-empty", version="#1", machine="x86_64"),
        nr_cpus=1,
        notes=(Note(b"VMCOREINFO", 0, VMCOREINFO),),
        vmcoreinfo=VMCOREINFO,
    )
    path = tmp_path / "empty.kdump"
    write_kdump(path, model, DictMemory({}, max_pfn=request.param))
    return path


def _loads(path: Path) -> list[int]:
    data = path.read_bytes()
    eh, ph = ehdr_layout(LP64_LE).unpack(data), phdr_layout(LP64_LE)
    return [
        ph.unpack(data, eh.e_phoff + i * ph.size).p_filesz
        for i in range(eh.e_phnum)
        if ph.unpack(data, eh.e_phoff + i * ph.size).p_type == PT_LOAD
    ]


@pytest.mark.parametrize("args", [("--no-flat",), ("--to", "elf")], ids=["kdump", "elf"])
def test_empty_dump_converts_and_reopens(empty: Path, tmp_path: Path, args: tuple[str, ...]) -> None:
    out = tmp_path / "out"
    run = run_kdfix("convert", empty, "-o", out, *args)
    assert run.code == 0, run.stderr
    info = run_kdfix("info", out)
    assert info.code == 0, info.stderr
    with open_dump(out) as d:
        assert d.memory.dumped.count() == 0 and verify_dump(d).ok
    if "elf" in args:
        assert _loads(out) == [0]  # one PT_LOAD, empty: readers want at least one
    require_tool("drgn")
    import drgn

    prog = drgn.Program()
    prog.set_core_dump(str(out))  # libkdumpfile for KDUMP, drgn's ELF reader for ELF: both accept it


def test_empty_legacy_diskdump_converts_and_reopens(empty: Path, tmp_path: Path) -> None:
    """The same empty dump as a legacy DISKDUMP file (no sub header, kdump-format.md §2)."""
    from kdfix.format.constants import DISKDUMP_SIGNATURE
    from kdfix.format.kdump import DISK_DUMP_HEADER

    data = bytearray(empty.read_bytes())
    layout = DISK_DUMP_HEADER.bind(LP64_LE)
    data[0:8] = DISKDUMP_SIGNATURE
    for name, value in (("header_version", 1), ("sub_hdr_size", 0), ("status", 0)):
        at = layout.offset_of(name)
        data[at : at + layout.size_of(name)] = layout.pack_field(name, value)
    legacy = tmp_path / "diskdump-empty.dump"
    legacy.write_bytes(data)
    for args in (("--no-flat",), ("--to", "elf")):
        out = tmp_path / f"out{len(args)}"
        run = run_kdfix("convert", legacy, "-o", out, *args)
        assert run.code == 0, run.stderr
        assert run_kdfix("info", out).code == 0
        with open_dump(out) as d:
            assert d.memory.dumped.count() == 0 and verify_dump(d).ok
