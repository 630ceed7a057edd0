"""kdumpling 0.4.0's files (tools-and-oracles.md §6), made by kdumpling itself: read as they were meant, and
``kdfix fix`` turns them into files that drgn, crash and makedumpfile read.

The unit tier writes small synthetic memory with every codec; the oracle tier gives kdumpling a real guest's
memory and VMCOREINFO, fixes the result and asks makedumpfile, drgn and crash about it.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from kdfix import open_dump
from kdfix.fix import fix_dump
from kdfix.read.dump import verify_dump
from kdfix.read.origin import identify_origin
from tests.oracle.fixtures import in_ci, require_tool
from tests.reliability.conftest import run_kdfix

if in_ci():  # the test extra installs it (scripts/setup.sh); only a bare local checkout may skip
    import kdumpling
else:
    kdumpling = pytest.importorskip("kdumpling")

PS = 4096
BASE = 0x100000
VMCOREINFO = (
    "OSRELEASE=6.1.0-kdumpling\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff82a0a000\n"
    "SYMBOL(_stext)=ffffffff81000000\nNUMBER(phys_base)=0\n"
)
CODECS = ("NONE", "ZLIB", "LZO", "SNAPPY", "ZSTD")


def _memory() -> bytes:
    rnd = random.Random(14)
    return b"".join(rnd.randbytes(64) * 64 for _ in range(8)) + bytes(PS * 4) + rnd.randbytes(PS * 4)


def _build(data: bytes, vmcoreinfo: str = VMCOREINFO, base: int = BASE) -> object:
    b = kdumpling.KdumpBuilder(arch="x86_64").set_vmcoreinfo(vmcoreinfo).add_memory_segment(base, data)
    return b.add_cpu_context(0, {"rip": 0xFFFFFFFF81000000, "rsp": 0x1000}, pid=1)


def _expected(data: bytes, base: int = BASE) -> dict[int, bytes]:
    """The pages kdumpling stores: every non-zero page (it drops zero pages from the 2nd bitmap)."""
    pages = {base // PS + i: data[i * PS : (i + 1) * PS] for i in range(len(data) // PS)}
    return {pfn: page for pfn, page in pages.items() if any(page)}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("kdumpling")
    out = {}
    for codec in CODECS:
        out[codec] = tmp / f"kl.{codec.lower()}"
        _build(_memory()).write(  # type: ignore[attr-defined]
            str(out[codec]), format=kdumpling.OutputFormat.KDUMP_COMPRESSED,
            compression=getattr(kdumpling.CompressionType, codec),
        )  # fmt: skip
    out["elf"] = tmp / "kl.elf"
    _build(_memory()).write(str(out["elf"]), format=kdumpling.OutputFormat.ELF)  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("codec", CODECS)
def test_read_as_meant(files: dict[str, Path], codec: str) -> None:
    """Its one-bitmap count, page flags and status codes read as kdumpling meant them; verify passes."""
    with open_dump(files[codec]) as d:
        assert d.kdump is not None and d.kdump.dialect == "kdumpling"
        assert dict(d.memory.iter_pages()) == _expected(_memory())
        assert d.compression == codec.lower() and not d.kdump.incomplete  # status 8 is its zstd, not INCOMPLETE
        assert any("kdumpling" in p for p in d.problems)
        report = verify_dump(d)
        assert report.ok and report.pages_checked == len(_expected(_memory()))
        origin, evidence = identify_origin(d)
        assert origin == "kdumpling" and any("332 bytes" in e for e in evidence)


def test_its_elf_is_named_kdumpling(files: dict[str, Path]) -> None:
    data = _memory()
    with open_dump(files["elf"]) as d:
        assert d.container == "elf"
        pages = {BASE // PS + i: data[i * PS : (i + 1) * PS] for i in range(len(data) // PS)}
        assert dict(d.memory.iter_pages()) == pages
        origin, evidence = identify_origin(d)
    assert origin == "kdumpling" and len(evidence) >= 2


@pytest.mark.parametrize("codec", CODECS)
def test_convert_and_fix_write_standard_files(files: dict[str, Path], tmp_path: Path, codec: str) -> None:
    """convert writes a standard file; fix rewrites (patching cannot move its tables) and says so."""
    conv = tmp_path / "conv.kdump"
    run = run_kdfix("convert", files[codec], "-o", conv)
    assert run.code == 0, run.stderr
    fixed = tmp_path / "fixed.kdump"
    result = fix_dump(files[codec], output=fixed)
    assert result.status == "fixed" and result.edits[0]["field"] == "layout"
    data = _memory()
    every = {BASE // PS + i: data[i * PS : (i + 1) * PS] for i in range(len(data) // PS)}
    for path, pages in ((conv, _expected(data)), (fixed, every)):  # fix stores its excluded zero pages as zero
        with open_dump(path) as d:
            assert d.kdump is not None and d.kdump.dialect is None and not d.kdump.single_bitmap
            assert dict(d.memory.iter_pages()) == pages
            assert verify_dump(d).ok
    with open_dump(fixed) as d:
        assert {len(n.desc) for n in d.notes if n.name == b"CORE"} == {336}  # its 332-byte prstatus padded


def test_fix_in_place_keeps_the_original_for_undo(files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "in-place.kdump"
    path.write_bytes(files["ZLIB"].read_bytes())
    original = path.read_bytes()
    result = fix_dump(path, in_place=True)
    assert result.status == "fixed" and result.journal is not None
    with open_dump(path) as d:
        assert d.kdump is not None and d.kdump.dialect is None and verify_dump(d).ok
    run = run_kdfix("undo", path)
    assert run.code == 0, run.stderr
    assert path.read_bytes() == original


# ---- oracle tier: kdumpling given a real guest's memory -------------------------------------------------------


@pytest.fixture(scope="module")
def guest_kdumpling(guest_seabios_kaslr_vmcoreinfo, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """kdumpling's KDUMP file of a real Linux guest: its RAM below 4 GiB and its VMCOREINFO."""
    out = tmp_path_factory.mktemp("kdumpling-guest") / "guest.kdumpling"
    with open_dump(guest_seabios_kaslr_vmcoreinfo.kdump_zlib) as d:
        assert d.model.vmcoreinfo is not None
        builder = kdumpling.KdumpBuilder(arch="x86_64").set_vmcoreinfo(d.model.vmcoreinfo.decode())
        ram = [(a, b) for a, b in d.memory.dumped.iter_runs() if a * PS < 0xC0000000]
        for a, b in ram:
            builder.add_memory_segment(a * PS, d.memory.read(a * PS, (b - a) * PS))
    builder.write(str(out), format=kdumpling.OutputFormat.KDUMP_COMPRESSED,
                  compression=kdumpling.CompressionType.ZLIB)  # fmt: skip
    return out


def test_fixed_kdumpling_file_opens_in_makedumpfile_drgn_and_crash(  # type: ignore[no-untyped-def]
    guest_kdumpling: Path, guest_seabios_kaslr_vmcoreinfo, debug_vmlinux: Path, tmp_path: Path
) -> None:
    from tests.oracle.tools import crash_with_vmlinux, drgn_release_by_vaddr, makedumpfile_dump_dmesg

    release = guest_seabios_kaslr_vmcoreinfo.kernel_release
    fixed = tmp_path / "fixed.kdump"
    result = fix_dump(guest_kdumpling, output=fixed)
    assert result.status == "fixed", result.messages
    require_tool("makedumpfile")
    assert "Linux version" in makedumpfile_dump_dmesg(fixed)
    require_tool("drgn")
    assert drgn_release_by_vaddr(fixed) == release
    require_tool("crash")
    res = crash_with_vmlinux(debug_vmlinux, fixed, ["sys"])
    assert res.returncode == 0 and release in res.output, res.output[-2000:]
