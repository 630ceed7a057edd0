"""`verify` of a cut dump lists every missing page of every container, at the file offset where it is lost.

The expectation comes from the uncut file: its descriptors (kdump), its record extents (flattened) or its
program headers (ELF, through the format declarations) say which bytes each page needs; a page is
missing exactly when one of those bytes is past the cut.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from kdfix.format.elf import PT_LOAD, ehdr_layout, phdr_layout
from kdfix.format.kdump import PAGE_DESC_SIZE
from kdfix.format.layout import LP64_LE
from kdfix.model import DumpModel, make_utsname
from kdfix.notes.framing import Note
from kdfix.read.dump import verify_dump
from kdfix.read.flattened import FlattenedSource
from kdfix.read.memory import DictMemory
from kdfix.read.probe import open_dump
from kdfix.read.source import FileSource
from tests.reliability.conftest import run_kdfix

PS = 4096
PFNS = 600
CUTS = (0.35, 0.6, 0.9)  # fractions of the file kept


def _memory() -> DictMemory:
    rnd = random.Random(13)
    pages = {}
    for pfn in range(PFNS):
        if pfn % 7 == 3:
            pages[pfn] = bytes(PS)  # zero pages between the stored ones (kdump's shared zero page)
        elif pfn % 5 == 0:
            pages[pfn] = rnd.randbytes(PS)  # stored raw
        else:
            pages[pfn] = rnd.randbytes(64) * 64
    for pfn in range(300, 340):  # a hole: not dumped
        del pages[pfn]
    return DictMemory(pages, max_pfn=PFNS)


def _model() -> DumpModel:
    vmcoreinfo = b"OSRELEASE=6.1.0-kdfix\nPAGESIZE=4096\n"
    return DumpModel(
        utsname=make_utsname(sysname="Linux", release="6.1.0-kdfix", version="#1", machine="x86_64"),
        nr_cpus=1,
        dump_level=1,
        notes=(Note(b"CORE", 1, bytes(336)), Note(b"VMCOREINFO", 0, vmcoreinfo)),
        vmcoreinfo=vmcoreinfo,
    )


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    from kdfix.write import write_elf, write_kdump, write_split

    tmp = tmp_path_factory.mktemp("cut")
    model, memory = _model(), _memory()
    out = {"kdump": [tmp / "d.kdump"], "flat": [tmp / "d.flat"], "elf": [tmp / "d.elf"]}
    write_kdump(out["kdump"][0], model, memory, codec="zlib")
    write_kdump(out["flat"][0], model, memory, codec="zlib", flat=True)
    write_elf(out["elf"][0], model, memory)
    out["split"] = [tmp / f"d.split{i}" for i in (1, 2, 3)]
    write_split(list(out["split"]), model, memory, codec="zlib")  # type: ignore[arg-type]
    return out


def _cut(path: Path, keep: float, directory: Path) -> Path:
    data = path.read_bytes()
    cut = directory / path.name
    cut.write_bytes(data[: int(len(data) * keep)])
    return cut


def _kdump_needs(path: Path) -> dict[int, list[tuple[int, int]]]:
    """pfn -> byte ranges (descriptor, data) of each dumped page of an uncut kdump file."""
    with open_dump(path) as dump:
        part = dump.kdump
        assert part is not None
        return {
            loc.pfn: [(loc.descriptor_offset, PAGE_DESC_SIZE), (loc.desc.offset, loc.desc.size)]
            for loc in part.iter_locations()
        }


def _missing_kdump(needs: dict[int, list[tuple[int, int]]], present: object) -> dict[int, int]:
    """pfn -> file offset of the first byte it lacks, for pages lacking any; ``present(offset, size)``."""
    out = {}
    for pfn, ranges in needs.items():
        for offset, size in ranges:
            if not present(offset, size):  # type: ignore[operator]
                out[pfn] = offset
                break
    return out


def _check(report: object, expected: dict[int, int], path: Path) -> None:
    """Every expected page is in exactly one run of ``path`` and the counts match; nothing else is listed."""
    runs = [r for r in report.missing if r.path == str(path)]  # type: ignore[attr-defined]
    assert report.bad_pages == []  # type: ignore[attr-defined]
    assert sum(r.pages for r in runs) == len(expected)
    for pfn in expected:
        assert sum(r.start_pfn <= pfn < r.end_pfn for r in runs) == 1, hex(pfn)
    for run in runs:  # each run begins at a missing page, at the offset where that page's bytes are lost
        assert expected[run.start_pfn] == run.file_offset, (hex(run.start_pfn), hex(run.file_offset))


@pytest.mark.parametrize("keep", CUTS)
def test_cut_kdump(dumps: dict[str, list[Path]], tmp_path: Path, keep: float) -> None:
    full = dumps["kdump"][0]
    cut = _cut(full, keep, tmp_path)
    size = cut.stat().st_size
    expected = _missing_kdump(_kdump_needs(full), lambda off, n: off + n <= size)
    assert expected
    with open_dump(cut) as dump:
        report = verify_dump(dump)
    _check(report, expected, cut)
    assert not report.ok and report.pages_checked == len(_kdump_needs(full))


@pytest.mark.parametrize("keep", CUTS)
def test_cut_flattened_stream(dumps: dict[str, list[Path]], tmp_path: Path, keep: float) -> None:
    full = dumps["flat"][0]
    cut = _cut(full, keep, tmp_path)
    stream_end = cut.stat().st_size
    extents = list(FlattenedSource(FileSource(full)).iter_extents())

    def present(offset: int, size: int) -> bool:  # every logical byte comes from a record byte before the cut
        need = offset
        for start, end, src in extents:
            if end <= need or start >= offset + size:
                continue
            if start > need:
                return False
            upto = min(end, offset + size)
            if src + (upto - start) > stream_end:
                return False
            need = upto
        return need >= offset + size

    expected = _missing_kdump(_kdump_needs(full), present)
    assert expected
    with open_dump(cut) as dump:
        report = verify_dump(dump)
    _check(report, expected, cut)


@pytest.mark.parametrize("keep", CUTS)
def test_cut_elf(dumps: dict[str, list[Path]], tmp_path: Path, keep: float) -> None:
    full = dumps["elf"][0]
    cut = _cut(full, keep, tmp_path)
    size = cut.stat().st_size
    data = full.read_bytes()
    eh, ph = ehdr_layout(LP64_LE).unpack(data), phdr_layout(LP64_LE)
    expected: dict[int, int] = {}
    for i in range(eh.e_phnum):
        seg = ph.unpack(data, eh.e_phoff + i * ph.size)
        if seg.p_type != PT_LOAD:
            continue
        for pfn in range(seg.p_paddr // PS, -(-(seg.p_paddr + seg.p_filesz) // PS)):
            lo = max(pfn * PS, seg.p_paddr) - seg.p_paddr + seg.p_offset
            hi = min(pfn * PS + PS, seg.p_paddr + seg.p_filesz) - seg.p_paddr + seg.p_offset
            if hi > size:
                expected[pfn] = lo
    assert expected
    with open_dump(cut) as dump:
        report = verify_dump(dump)
    _check(report, expected, cut)
    with open_dump(full) as dump:
        assert report.pages_checked == dump.memory.dumped.count()


def test_cut_split_part(dumps: dict[str, list[Path]], tmp_path: Path) -> None:
    """Only the cut part has missing pages; the pages of the others are all read."""
    parts = dumps["split"]
    cut = _cut(parts[1], 0.5, tmp_path)
    size = cut.stat().st_size
    expected = _missing_kdump(_kdump_needs(parts[1]), lambda off, n: off + n <= size)
    assert expected
    with open_dump(parts[0], cut, parts[2]) as dump:
        report = verify_dump(dump)
    _check(report, expected, cut)
    assert {r.path for r in report.missing} == {str(cut)}


def test_cli_lists_missing_runs_and_counts(dumps: dict[str, list[Path]], tmp_path: Path) -> None:
    cut = _cut(dumps["elf"][0], 0.5, tmp_path)
    run = run_kdfix("verify", cut, "--json")
    assert run.code == 1
    import json

    (shape,) = json.loads(run.stdout) if run.stdout.lstrip().startswith("[") else [json.loads(run.stdout)]
    assert shape["missing_pages"] == sum(r["pages"] for r in shape["missing"]) > 0
    assert all(f"{r['file_offset']:#x}" in r["error"] for r in shape["missing"])
    text = run_kdfix("verify", cut)
    assert f"{shape['missing_pages']} missing" in text.stdout and "FAILED" in text.stdout
