"""Real readers check kdfix's writer: drgn, makedumpfile -R / --reassemble / ELF input / --dump-dmesg, crash."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

import kdfix
from kdfix.format.layout import LP64_LE
from kdfix.read.memory import DictMemory
from kdfix.write import reassemble, write_elf, write_kdump, write_split
from kdfix.write.convert import convert
from tests import strategies as S
from tests.oracle.fixtures import require_tool
from tests.oracle.tools import (
    crash_osrelease,
    drgn_program,
    makedumpfile_dump_dmesg,
    makedumpfile_from_elf,
    makedumpfile_reassemble,
    makedumpfile_reassemble_split,
)
from tests.roundtrip import file_bytes

pytestmark = pytest.mark.oracle
BS = 4096
CODECS = S.available_codecs()


def _memory(seed: int = 3) -> DictMemory:
    """Zero, incompressible, compressible and almost-zero pages in runs and holes, up to 1 GiB."""
    rnd = random.Random(seed)
    pfns = sorted(set(range(0, 40)) | set(range(300, 340)) | set(rnd.sample(range(400, 1 << 18), 50)))
    pages = {}
    for pfn in pfns:
        kind = rnd.randrange(4)
        if kind == 0:
            pages[pfn] = bytes(BS)
        elif kind == 1:
            pages[pfn] = rnd.randbytes(BS)
        elif kind == 2:
            pages[pfn] = pfn.to_bytes(4, "little") * (BS // 4)
        else:
            pages[pfn] = bytes(BS - 1) + b"\x01"
    return DictMemory(pages, max_pfn=(1 << 18) + 7)


@pytest.mark.parametrize(
    ("container", "codec"), [(c, k) for c in ("kdump", "flat") for k in CODECS] + [("elf", "none")]
)
def test_drgn_reads_every_page(tmp_path: Path, codec: str, container: str) -> None:
    """libkdumpfile (through drgn, no platform hint) returns every written page of every codec and container."""
    require_tool("drgn")
    mem = _memory()
    path = tmp_path / "dump"
    if container == "elf":
        write_elf(path, S.drgn_model(), mem)
    else:
        write_kdump(path, S.drgn_model(), mem, codec=codec, flat=container == "flat")
    prog = drgn_program(path, platform=None)
    for pfn, page in mem.iter_pages():
        assert prog.read(pfn * BS, BS, True) == page, f"pfn {pfn:#x}"


@pytest.mark.parametrize("codec", CODECS)
def test_makedumpfile_reassembles_flat_to_the_plain_file(tmp_path: Path, codec: str) -> None:
    """makedumpfile -R of kdfix's flattened output equals kdfix's plain output, and kdfix's reassemble too."""
    require_tool("makedumpfile")
    mem = _memory(seed=5)
    write_kdump(tmp_path / "plain", S.drgn_model(), mem, codec=codec)
    write_kdump(tmp_path / "flat", S.drgn_model(), mem, codec=codec, flat=True)
    res = makedumpfile_reassemble(tmp_path / "flat", tmp_path / "R")
    assert res.returncode == 0, res.output
    assert file_bytes(tmp_path / "R") == file_bytes(tmp_path / "plain")
    reassemble(tmp_path / "flat", tmp_path / "ours")
    assert file_bytes(tmp_path / "ours") == file_bytes(tmp_path / "plain")


def test_makedumpfile_reassembles_a_kdfix_split_set(tmp_path: Path) -> None:
    """makedumpfile --reassemble accepts kdfix's split parts; the result holds every page."""
    require_tool("makedumpfile")
    mem = _memory(seed=9)
    parts = [tmp_path / f"part.{i}" for i in (1, 2, 3)]
    write_split(parts, S.drgn_model(dump_level=1), mem, codec="zlib")
    res = makedumpfile_reassemble_split(parts, tmp_path / "joined")
    assert res.returncode == 0, res.output
    with kdfix.open_dump(tmp_path / "joined") as dump:
        assert dict(dump.memory.iter_pages()) == dict(mem.iter_pages())


@pytest.mark.parametrize("version", [3, 4, 5, 6])
def test_crash_finds_the_vmcoreinfo(tmp_path: Path, version: int) -> None:
    """crash --osrelease reads OSRELEASE through offset_vmcoreinfo (notes-and-vmcoreinfo.md §5)."""
    require_tool("crash")
    model = S.drgn_model(header_version=version, abi=LP64_LE)
    write_kdump(tmp_path / "dump", model, _memory())
    res = crash_osrelease(tmp_path / "dump")
    assert res.returncode == 0, res.output
    assert res.output.strip().splitlines()[-1] == "6.1.0-kdfix"


# ---- real QEMU guests ---------------------------------------------------------------------------------


def test_qemu_flattened_to_plain_is_makedumpfile_R(tmp_path: Path, guest_seabios_kaslr_vmcoreinfo) -> None:  # type: ignore[no-untyped-def]
    """convert --no-flat of QEMU's kdump-zlib stream is byte-identical to makedumpfile -R of it."""
    require_tool("makedumpfile")
    src = guest_seabios_kaslr_vmcoreinfo.kdump_zlib
    res = makedumpfile_reassemble(src, tmp_path / "R")
    assert res.returncode == 0, res.output
    result = convert([src], tmp_path / "ours", flat=False)
    assert result.passthrough
    assert file_bytes(tmp_path / "ours") == file_bytes(tmp_path / "R")


@pytest.mark.parametrize("codec", CODECS)
def test_qemu_elf_to_kdump_to_elf_keeps_every_page(tmp_path: Path, guest_seabios_kaslr, codec: str) -> None:  # type: ignore[no-untyped-def]
    """ELF → KDUMP (each codec) → ELF: every page survives, and the final ELF is our direct ELF rewrite."""
    elf = guest_seabios_kaslr.elf
    convert([elf], tmp_path / "k", to="kdump", codec=codec)
    convert([tmp_path / "k"], tmp_path / "back.elf", to="elf")
    with kdfix.open_dump(elf) as a, kdfix.open_dump(tmp_path / "back.elf") as b:
        assert b.model.notes == a.model.notes
        pages_b = b.memory.iter_pages()
        for (pa, da), (pb, db) in zip(a.memory.iter_pages(), pages_b, strict=True):
            assert (pa, da) == (pb, db)


def test_dump_dmesg_works_on_kdump_converted_from_qemu_elf(tmp_path: Path, guest_seabios_kaslr_vmcoreinfo) -> None:  # type: ignore[no-untyped-def]
    """The header phys_base comes from VMCOREINFO (not QEMU's hex misparse), so makedumpfile can walk memory."""
    require_tool("makedumpfile")
    g = guest_seabios_kaslr_vmcoreinfo
    convert([g.elf], tmp_path / "k", to="kdump")
    log = makedumpfile_dump_dmesg(tmp_path / "k")
    assert g.truth.marker in log


def test_makedumpfile_accepts_kdfix_elf(tmp_path: Path, guest_seabios_kaslr_vmcoreinfo) -> None:  # type: ignore[no-untyped-def]
    """makedumpfile -c -d 0 takes kdfix's ELF (phdrs after the Ehdr) as input; its pages match ours."""
    require_tool("makedumpfile")
    g = guest_seabios_kaslr_vmcoreinfo
    convert([g.elf], tmp_path / "k.elf", to="elf")
    res = makedumpfile_from_elf(tmp_path / "k.elf", tmp_path / "out", compress="zlib", dump_level=0)
    assert res.returncode == 0, res.output
    with kdfix.open_dump(g.elf) as a, kdfix.open_dump(tmp_path / "out") as b:
        ram_end = max(s.paddr + s.memsz for s in a.elf.segments if s.paddr < 0xFD000000) // BS
        for pfn, page in a.memory.iter_pages():
            if b.memory.present(pfn):
                assert b.memory.page(pfn) == page, f"pfn {pfn:#x}"
            else:  # makedumpfile keeps only the kernel's RAM, not VRAM/BIOS
                assert pfn >= ram_end, f"RAM pfn {pfn:#x} missing"


def test_kdfix_dump_keeps_input_mode(tmp_path: Path, guest_seabios_kaslr) -> None:  # type: ignore[no-untyped-def]
    """QEMU writes 0400 dumps; convert keeps the input's mode."""
    src = tmp_path / "in.kdump"
    shutil.copy(guest_seabios_kaslr.kdump_zlib, src)
    src.chmod(0o400)
    convert([src], tmp_path / "out")
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o400
