"""fix on aarch64 and i386 dumps laid out as QEMU writes them (synthetic guests of tests/arch/guests.py).

Expected values come from the reference: aarch64 header phys_base = PHYS_OFFSET, machine "aarch64", block_size =
the kernel's PAGESIZE (arch-kernels-and-introspection.md §1.6); i386 phys_base 0, machine "i686", the 32-bit
header i386 tools read (§2.6, kdump-format.md §3-§4: 452-byte main header, 80-byte packed sub header).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kdfix import open_dump
from kdfix.fix import fix_dump
from kdfix.fix.journal import original_path, undo
from kdfix.units import cstr
from kdfix.write import write_kdump
from tests.arch.guests import aarch64_guest, i386_guest
from tests.fix.conftest import file_state


def write_guest(path: Path, builder, **kw) -> object:  # type: ignore[no-untyped-def]
    model, memory, truth = builder(**kw)
    write_kdump(path, model, memory, codec="zlib", flat=True, phys_base_from_vmcoreinfo=False)
    return truth, memory


@pytest.fixture(scope="module")
def arm64_kaslr(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("arm64") / "vmcore.kdump-zlib"
    truth, memory = write_guest(path, aarch64_guest, kaslr=True, seed=5)
    return path, truth, memory


def check_pages_equal(fixed: Path, memory, sample: int = 64) -> None:  # type: ignore[no-untyped-def]
    """Every sampled 4 KiB page of the fixed dump holds the source's bytes (physical reads are blocking-free)."""
    with open_dump(str(fixed)) as dump:
        pfns = list(dump.memory.dumped.iter_set())
        step = max(1, len(pfns) // sample)
        for pfn in pfns[::step]:
            paddr = pfn * dump.memory.page_size
            assert dump.memory.read(paddr, 4096) == memory.read(paddr, 4096), hex(paddr)


def test_aarch64_fix_reblocks_and_fills_headers(tmp_path: Path, arm64_kaslr) -> None:  # type: ignore[no-untyped-def]
    src, truth, memory = arm64_kaslr
    out = tmp_path / "fixed.kdump"
    result = fix_dump(src, output=out)
    assert result.status == "fixed"
    assert any(e["field"] == "kdump" and "block_size 65536 → 4096" in e["new"] for e in result.edits)
    with open_dump(str(out)) as dump:
        assert dump.container == "kdump" and dump.kdump is not None
        assert dump.kdump.block_size == 4096
        assert dump.model.phys_base == truth.phys_base  # PHYS_OFFSET, not the RAM base QEMU wrote
        assert cstr(dump.model.utsname.machine) == "aarch64"
        assert cstr(dump.model.utsname.release) == truth.release
        assert dump.vmcoreinfo is not None and dump.vmcoreinfo.raw.startswith(truth.vmcoreinfo)
        assert dump.memory.max_pfn * 4096 >= memory.max_pfn * 65536
    check_pages_equal(out, memory)
    again = fix_dump(out, output=tmp_path / "again.kdump")
    assert again.status == "ok"  # idempotent: nothing left


def test_aarch64_dry_run_says_it_rewrites(tmp_path: Path, arm64_kaslr) -> None:  # type: ignore[no-untyped-def]
    src, _, _ = arm64_kaslr
    out = tmp_path / "never.kdump"
    result = fix_dump(src, output=out, dry_run=True)
    assert result.status == "fixed" and not out.exists()
    assert any("rewritten whole" in m for m in result.messages)


def test_aarch64_in_place_rewrite_and_undo(tmp_path: Path, arm64_kaslr) -> None:  # type: ignore[no-untyped-def]
    src, truth, _memory = arm64_kaslr
    path = tmp_path / "vmcore"
    shutil.copyfile(src, path)
    os.chmod(path, 0o640)
    before = file_state(path)
    result = fix_dump(path, in_place=True)
    assert result.status == "fixed" and result.journal == original_path(path)
    assert os.stat(path).st_mode & 0o777 == 0o640
    with open_dump(str(path)) as dump:
        assert dump.kdump is not None and dump.kdump.block_size == 4096
        assert dump.model.phys_base == truth.phys_base
    undo(path)
    assert file_state(path)[:2] == before[:2]
    assert not os.path.exists(original_path(path))


def test_aarch64_nokaslr_phys_offset_is_ram_base(tmp_path: Path) -> None:
    src = tmp_path / "nokaslr.kdump"
    truth, _memory = write_guest(src, aarch64_guest, kaslr=False, seed=1)
    out = tmp_path / "fixed.kdump"
    fix_dump(src, output=out)
    with open_dump(str(out)) as dump:
        assert dump.model.phys_base == 0x40000000 == truth.phys_base  # type: ignore[attr-defined]


def test_aarch64_with_vmcoreinfo_device(tmp_path: Path) -> None:
    """With the device QEMU already wrote PHYS_OFFSET (hex parse, right) and the note: only blocks and utsname."""
    src = tmp_path / "dev.kdump"
    truth, _memory = write_guest(src, aarch64_guest, kaslr=True, seed=9, note_in_dump=True)
    result = fix_dump(src, output=tmp_path / "fixed.kdump", dry_run=True)
    assert result.status == "fixed" and result.phys_base == f"{truth.phys_base:#x}"  # type: ignore[attr-defined]


@pytest.mark.parametrize("pae", [True, False])
def test_i386_fix_writes_the_32bit_header(tmp_path: Path, pae: bool) -> None:
    src = tmp_path / "i386.kdump"
    truth, memory = write_guest(src, i386_guest, kaslr=True, pae=pae, seed=2)
    out = tmp_path / "fixed.kdump"
    result = fix_dump(src, output=out)
    assert result.status == "fixed"
    assert any(e["field"] == "kdump" and "i386-le" in e["new"] for e in result.edits)
    with open(out, "rb") as fh:
        head = fh.read(4096 + 80)
    # kdump-format.md §3: 32-bit block_size at 416, sub header (packed) at bs: phys_base u32 at 0.
    assert int.from_bytes(head[416:420], "little") == 4096
    assert int.from_bytes(head[4096:4100], "little") == 0
    assert head[272:276] == b"i686"
    with open_dump(str(out)) as dump:
        assert dump.model.abi.word_size == 4 and dump.model.abi.align64 == 4
        assert cstr(dump.model.utsname.release) == truth.release  # type: ignore[attr-defined]
        assert dump.vmcoreinfo is not None
    check_pages_equal(out, memory)
    assert fix_dump(out, output=tmp_path / "again.kdump").status == "ok"


def test_i386_elf_gets_proc_vmcore_vaddrs(tmp_path: Path) -> None:
    """§2.4: after the fix, lowmem PT_LOADs carry 0xC0000000 + paddr (drgn reads the kernel through them)."""
    import dataclasses

    from kdfix.format.constants import EM_386
    from kdfix.write.elf import LoadSegment, write_elf

    model, memory, truth = i386_guest(kaslr=True, seed=4)
    src = tmp_path / "i386.elf"
    end = memory.max_pfn * 4096
    write_elf(src, dataclasses.replace(model, e_machine=EM_386), memory, segments=[LoadSegment(0, 0, end)])
    out = tmp_path / "fixed.elf"
    assert fix_dump(src, output=out).status == "fixed"
    with open_dump(str(out)) as dump:
        assert dump.elf is not None
        assert [(s.paddr, s.vaddr) for s in dump.elf.segments] == [(0, 0xC0000000)]
        assert dump.vmcoreinfo is not None and dump.vmcoreinfo.osrelease == truth.release  # type: ignore[attr-defined]
