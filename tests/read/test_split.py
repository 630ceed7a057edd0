"""Split sets (kdump-format.md §9): parts in any order join into one memory; bad sets are refused clearly."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from kdfix import open_dump
from kdfix.errors import AddressError, FormatError
from kdfix.format.kdump import DISK_DUMP_HEADER
from kdfix.format.layout import LP64_LE
from kdfix.read.dump import verify_dump
from kdfix.read.memory import DictMemory
from kdfix.write import write_kdump, write_split
from tests.oracle.fixtures import require_tool
from tests.read.conftest import sample_pages
from tests.read.test_kdump import make_model


@pytest.fixture
def split3(tmp_path):
    pages = sample_pages()
    paths = [tmp_path / f"part{i}.kdump" for i in range(3)]
    write_split(paths, make_model(), DictMemory(pages, max_pfn=0x2000), codec="zlib")
    return pages, paths


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_split_parts_in_any_order(split3, order):
    """Whatever the order on the command line, the set reads as the whole memory."""
    pages, paths = split3
    with open_dump(*(paths[i] for i in order)) as d:
        assert d.container == "split" and len(d.split.parts) == 3
        starts = [p.start_pfn for p in d.split.parts]
        assert starts == sorted(starts) and starts[0] == 0
        assert d.split.parts[-1].end_pfn == 0x2000
        assert dict(d.memory.iter_pages()) == pages
        assert {pfn: d.memory.page(pfn) for pfn in pages} == pages
        assert d.problems == []
        assert d.vmcoreinfo is not None


def test_flattened_split_parts(tmp_path):
    """Parts may be flattened streams."""
    pages = sample_pages()
    paths = [tmp_path / f"part{i}.flat" for i in range(2)]
    write_split(paths, make_model(), DictMemory(pages, max_pfn=0x2000), codec="zlib", flat=True)
    with open_dump(*paths) as d:
        assert dict(d.memory.iter_pages()) == pages


@pytest.mark.parametrize("given", [(0, 2), (0, 1), (1, 2)])
def test_a_set_with_a_part_missing_is_readable_and_names_the_gap(split3, given):
    """As libkdumpfile reads it: the parts given are read, the pfns in no part are problems (kdump-format.md §9)."""
    pages, paths = split3
    with open_dump(*(paths[i] for i in given)) as d, open_dump(*paths) as whole:
        ranges = {i: (p.start_pfn, p.end_pfn) for i, p in enumerate(whole.split.parts)}
        missing = [i for i in range(3) if i not in given]
        (gap,) = [ranges[i] for i in missing]
        assert d.split.gaps == [gap]
        in_gap = [pfn for pfn in pages if gap[0] <= pfn < gap[1]]
        assert any(f"[{gap[0]:#x}, {gap[1]:#x}) are in no part" in p for p in d.problems) == bool(in_gap)
        assert dict(d.memory.iter_pages()) == {pfn: pages[pfn] for pfn in pages if pfn not in in_gap}
        for pfn in in_gap:
            with pytest.raises(AddressError):
                d.memory.page(pfn)
        report = verify_dump(d)
        assert report.ok == (not in_gap)
        if in_gap:
            assert any(f"{len(in_gap)} dumped pages missing" in e for e in report.errors)


def test_parts_differing_only_in_the_timestamp_are_one_set(split3, tmp_path):
    """makedumpfile stamps each part as it writes it: the timestamp is not part of a set's identity."""
    pages, paths = split3
    copy = tmp_path / "stamped.kdump"
    data = bytearray(paths[1].read_bytes())
    layout = DISK_DUMP_HEADER.bind(LP64_LE)
    at = layout.offset_of("timestamp.tv_sec")
    data[at : at + 8] = layout.pack_field("timestamp.tv_sec", 1_700_000_123)
    copy.write_bytes(data)
    with open_dump(paths[0], copy, paths[2]) as d:
        assert dict(d.memory.iter_pages()) == pages
    data[at : at + 8] = layout.pack_field("timestamp.tv_sec", 0)
    at = layout.offset_of("nr_cpus")
    data[at : at + 4] = layout.pack_field("nr_cpus", 7)
    copy.write_bytes(data)
    with pytest.raises(FormatError, match="main header differs"):
        open_dump(paths[0], copy, paths[2])


def test_one_part_alone_does_not_call_other_pages_missing(split3):
    _pages, paths = split3
    with open_dump(paths[1]) as d:
        assert d.container == "kdump" and d.kdump.split
        assert not any("missing" in p for p in d.problems)
        assert verify_dump(d).ok


def test_same_part_twice_is_refused(split3, tmp_path):
    _pages, paths = split3
    with pytest.raises(FormatError, match="twice"):
        open_dump(paths[0], paths[1], paths[2], paths[1])
    copy = tmp_path / "copy.kdump"
    shutil.copy(paths[1], copy)
    with pytest.raises(FormatError, match="duplicate"):
        open_dump(paths[0], paths[1], copy, paths[2])


def test_parts_of_other_dumps_are_refused(split3, tmp_path):
    """Headers must be identical (crash and makedumpfile memcmp them); a plain dump is not a part."""
    _pages, paths = split3
    other = [tmp_path / f"other{i}.kdump" for i in range(2)]
    write_split(other, make_model(nr_cpus=4), DictMemory(sample_pages(2), max_pfn=0x2000), codec="zlib")
    with pytest.raises(FormatError):
        open_dump(paths[0], other[1])
    plain = tmp_path / "plain.kdump"
    write_kdump(plain, make_model(), DictMemory(sample_pages(), max_pfn=0x2000))
    with pytest.raises(FormatError, match="split"):
        open_dump(paths[0], plain)


def test_overlapping_parts_are_refused(tmp_path):
    """Two sets split differently overlap when mixed."""
    pages = sample_pages()
    a = [tmp_path / f"a{i}.kdump" for i in range(2)]
    b = [tmp_path / f"b{i}.kdump" for i in range(3)]
    write_split(a, make_model(), DictMemory(pages, max_pfn=0x2000), codec="zlib")
    write_split(b, make_model(), DictMemory(pages, max_pfn=0x2000), codec="zlib")
    with open_dump(*a) as da, open_dump(*b) as db:
        ranges_a = [(p.start_pfn, p.end_pfn) for p in da.split.parts]
        ranges_b = [(p.start_pfn, p.end_pfn) for p in db.split.parts]
    if ranges_a[0][1] in {r[1] for r in ranges_b}:
        pytest.skip("the two splits share a boundary")
    if ranges_a[0][1] > ranges_b[1][0]:
        with pytest.raises(FormatError, match="overlap"):
            open_dump(a[0], b[1], b[2])
    else:  # a gap between them: readable, the gap named
        with open_dump(a[0], b[1], b[2]) as d:
            assert d.split.gaps == [(ranges_a[0][1], ranges_b[1][0])]


def test_makedumpfile_reassembles_our_reading(split3, tmp_path):
    """makedumpfile --reassemble of the parts reads back to the same pages (oracle)."""
    require_tool("makedumpfile")
    pages, paths = split3
    out = tmp_path / "joined.kdump"
    proc = subprocess.run(["makedumpfile", "--reassemble", *map(str, paths), str(out)], capture_output=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with open_dump(out) as d:
        assert dict(d.memory.iter_pages()) == pages
