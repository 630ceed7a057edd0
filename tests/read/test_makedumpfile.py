"""Files written by the real makedumpfile (from a kdfix-written ELF of a Linux guest) read back page-exact."""

from __future__ import annotations

import subprocess

import pytest

from kdfix import open_dump
from kdfix.read.dump import verify_dump
from kdfix.read.origin import identify_origin
from kdfix.write import write_elf
from tests.oracle.fixtures import require_tool


@pytest.fixture(scope="module")
def linux_elf(guest_seabios_kaslr_vmcoreinfo, tmp_path_factory):
    """ELF with phdrs right after the ehdr (makedumpfile needs that), from the QEMU kdump of a Linux guest."""
    out = tmp_path_factory.mktemp("mdf") / "linux.elf"
    with open_dump(guest_seabios_kaslr_vmcoreinfo.kdump_zlib) as d:
        write_elf(out, d.model, d.memory)
    return out


def _makedumpfile(*args: str) -> None:
    require_tool("makedumpfile")
    proc = subprocess.run(["makedumpfile", *args], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-500:] + proc.stderr[-500:]


def _assert_pages_from(dump_paths, elf_path) -> int:
    with open_dump(*dump_paths) as d, open_dump(elf_path) as e:
        assert d.problems == []
        n = 0
        for pfn, page in d.memory.iter_pages():
            assert page == e.memory.page(pfn), f"pfn {pfn:#x}"
            n += 1
        report = verify_dump(d)
        assert report.ok, (report.errors, report.bad_pages[:3])
        assert report.pages_checked == n
        assert identify_origin(d)[0] == "makedumpfile"
        assert d.vmcoreinfo is not None and d.vmcoreinfo.osrelease
        return n


@pytest.mark.parametrize(
    ("flags", "codec"), [(("-c", "-d", "31"), "zlib"), (("-l", "-d", "1"), "lzo"), (("-d", "17"), "none")]
)
def test_makedumpfile_kdump(linux_elf, tmp_path, flags, codec):
    out = tmp_path / "out.kdump"
    _makedumpfile(*flags, str(linux_elf), str(out))
    with open_dump(out) as d:
        assert d.compression == codec and d.container == "kdump"
        assert d.model.dump_level == int(flags[-1])
        assert d.model.utsname.sysname.rstrip(b"\0") == b"Linux"
    assert _assert_pages_from([out], linux_elf) > 1000


def test_makedumpfile_flattened_uncompressed(linux_elf, tmp_path):
    """``-F`` output (no compression, raw pages) reads like its ``-R`` reassembly."""
    out = tmp_path / "out.flat"
    require_tool("makedumpfile")
    with open(out, "wb") as fh:
        proc = subprocess.run(["makedumpfile", "-F", "-d", "1", str(linux_elf)], stdout=fh, stderr=subprocess.PIPE,
                              timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-500:]
    with open_dump(out) as d:
        assert d.container == "flattened" and d.compression == "none"
    _assert_pages_from([out], linux_elf)


def test_makedumpfile_split(linux_elf, tmp_path):
    parts = [tmp_path / "p1.kdump", tmp_path / "p2.kdump", tmp_path / "p3.kdump"]
    _makedumpfile("--split", "-c", "-d", "31", str(linux_elf), *map(str, parts))
    with open_dump(*reversed(parts)) as d:
        assert d.container == "split"
    _assert_pages_from(parts, linux_elf)


def test_makedumpfile_flattened_elf(linux_elf, tmp_path):
    """``-E -F``: a flattened stream holding an ELF core reads like its ``makedumpfile -R`` reassembly."""
    from tests.read.conftest import reassemble_with_makedumpfile

    out = tmp_path / "out.flat-elf"
    require_tool("makedumpfile")
    with open(out, "wb") as fh:
        proc = subprocess.run(["makedumpfile", "-E", "-F", "-d", "1", str(linux_elf)], stdout=fh,
                              stderr=subprocess.PIPE, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-500:]
    assert out.read_bytes()[:12] == b"makedumpfile"
    plain = reassemble_with_makedumpfile(out, tmp_path / "reassembled.elf")
    assert plain.read_bytes()[:4] == b"\x7fELF"
    with open_dump(out) as d, open_dump(plain) as e:
        assert d.container == e.container == "elf" and any("flattened stream of an ELF core" in p for p in d.problems)
        assert d.elf.segments == e.elf.segments and d.notes == e.notes
        n = 0
        for (pfn, page), (pfn_e, page_e) in zip(d.memory.iter_pages(), e.memory.iter_pages(), strict=True):
            assert (pfn, page) == (pfn_e, page_e), f"pfn {pfn:#x}"
            n += 1
        assert n > 1000
        assert d.vmcoreinfo is not None and d.vmcoreinfo.osrelease
        report = verify_dump(d)
        assert report.ok, (report.errors, report.bad_pages[:3], report.missing[:3])


def test_makedumpfile_split_with_empty_parts(linux_elf, tmp_path):
    """More parts than makedumpfile has pages to share: the last ones are empty ([max, max)), and still one set
    for open_dump, the CLI's grouping and batch's walk; one part alone is not called incomplete."""
    from kdfix.batch.walk import walk
    from kdfix.cli.dumps import group_dumps

    folder = tmp_path / "set"
    folder.mkdir()
    parts = [folder / f"mdf.split{i}" for i in range(1, 6)]
    _makedumpfile("--split", "-c", "-d", "31", str(linux_elf), *map(str, parts))
    with open_dump(parts[-1]) as last:
        assert last.kdump.split and last.kdump.start_pfn == last.kdump.end_pfn  # an empty part, as observed
        assert not any("missing" in p for p in last.problems)
    _assert_pages_from(parts, linux_elf)
    (found,) = walk([folder]).dumps
    assert found.kind == "split" and sorted(found.files) == sorted(map(str, parts))
    (unit,) = group_dumps([str(p) for p in reversed(parts)])
    assert sorted(unit) == sorted(found.files)
