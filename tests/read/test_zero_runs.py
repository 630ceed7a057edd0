"""``zero_runs``: the bulk answer of which pfns are stored as the shared zero page (kdump-format.md §7).

It must say for every pfn of a range what ``is_zero_page`` says one descriptor at a time, on every ABI, for a
split set, a flattened stream, a file cut inside its descriptor table and ELF; and the zero pfns it finds are the
all-zero pages the memory held (the writer stores those as the shared zero page).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdfix import open_dump
from kdfix.format.layout import ALL_ABIS
from kdfix.read.memory import DictMemory
from kdfix.write import write_elf, write_kdump, write_split
from tests.read.conftest import sample_pages
from tests.read.test_kdump import make_model

MAX_PFN = 0x2000


def _one_by_one(memory: object, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
    """Runs of ``is_zero_page`` asked pfn by pfn."""
    is_zero = memory.is_zero_page  # type: ignore[attr-defined]
    pfns = range(start, end)
    for value, group in itertools.groupby(pfns, key=lambda pfn: bool(is_zero(pfn))):
        members = list(group)
        yield members[0], members[-1] + 1, value


def _check(memory: object, pages: dict[int, bytes], start: int = 0, end: int = MAX_PFN) -> None:
    runs = list(memory.zero_runs(start, end))  # type: ignore[attr-defined]
    assert runs == list(_one_by_one(memory, start, end))
    zero = {pfn for a, b, z in runs if z for pfn in range(a, b)}
    assert zero == {pfn for pfn, page in pages.items() if start <= pfn < end and not any(page)}


@pytest.mark.parametrize("abi", ALL_ABIS, ids=lambda a: a.name)
@pytest.mark.parametrize("flat", [False, True], ids=["file", "flattened"])
def test_zero_runs_agree_with_each_descriptor(tmp_path: Path, abi: object, flat: bool) -> None:
    pages = sample_pages()
    path = tmp_path / "dump"
    write_kdump(path, make_model(abi=abi), DictMemory(pages, max_pfn=MAX_PFN), flat=flat)
    with open_dump(path) as d:
        _check(d.memory, pages)
        _check(d.memory, pages, 2, 4097)  # a range starting and ending inside runs


def test_zero_runs_of_a_split_set_and_of_one_part(tmp_path: Path) -> None:
    pages = sample_pages()
    paths = [tmp_path / f"part{i}" for i in range(3)]
    write_split(paths, make_model(), DictMemory(pages, max_pfn=MAX_PFN))
    with open_dump(*paths) as d:
        _check(d.memory, pages)
    with open_dump(paths[1]) as part:  # pfns outside the part's range are not its zero pages
        c = part.kdump
        assert c is not None
        inside = {pfn: page for pfn, page in pages.items() if c.start_pfn <= pfn < c.end_pfn}
        _check(part.memory, inside)


def test_zero_runs_of_a_file_cut_in_its_descriptor_table(tmp_path: Path) -> None:
    """A cut table is answered as ``is_zero_page`` answers each pfn (a descriptor past the end is not zero)."""
    pages = {pfn: bytes(4096) for pfn in range(40)} | sample_pages()
    path = tmp_path / "dump"
    write_kdump(path, make_model(), DictMemory(pages, max_pfn=MAX_PFN))
    with open_dump(path) as d:
        c = d.kdump
        assert c is not None
        cut = c.data_offset + 24 * 20 + 7
    path.write_bytes(path.read_bytes()[:cut])
    with open_dump(path) as d:
        runs = list(d.memory.zero_runs(0, MAX_PFN))
        assert runs == list(_one_by_one(d.memory, 0, MAX_PFN))
        assert runs == [(0, MAX_PFN, False)]  # the shared zero page, after the table, is cut off too


def test_elf_has_no_zero_pages(tmp_path: Path) -> None:
    pages = sample_pages()
    path = tmp_path / "dump.elf"
    write_elf(path, make_model(), DictMemory(pages, max_pfn=MAX_PFN))
    with open_dump(path) as d:
        assert list(d.memory.zero_runs(0, MAX_PFN)) == [(0, MAX_PFN, False)]
