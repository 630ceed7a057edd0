"""PhysicalMemory.runs (kdfix.read.runs): runs cover [0, max_pfn) exactly, and the bytes they locate are the pages.

Expected pages come from the input a dump was written from (hypothesis), from ELF files built here from the
format declarations, or from per-page reads of real QEMU fixtures (``page()``, which does not use runs).
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdfix import open_dump
from kdfix.codecs import decode_page
from kdfix.errors import AddressError
from kdfix.format.elf import ET_CORE, PT_LOAD, Ehdr, Elf64Phdr, e_ident, ehdr_layout, phdr_layout
from kdfix.format.kdump import PAGE_DESC
from kdfix.format.layout import LP64_LE
from kdfix.read.dump import Dump
from kdfix.read.memory import DictMemory, PhysicalMemory
from kdfix.read.runs import RUN_PAGES, Run, RunKind
from kdfix.write import write_kdump, write_split
from tests.oracle.fixtures import repo_fixture
from tests.read.test_kdump import make_model
from tests.strategies import PAGE_SIZE, codecs, memories

PS = PAGE_SIZE


def checked_runs(memory: PhysicalMemory, start: int = 0, end: int | None = None) -> list[Run]:
    """The runs of ``[start, end)``, checked to cover it exactly, in order, without empty runs."""
    end = memory.max_pfn if end is None else end
    runs = list(memory.runs(start, end))
    pos = start
    for run in runs:
        assert run.start_pfn == pos and run.count > 0, (run, pos)
        pos = run.end_pfn
    assert pos == end
    return runs


def run_pages(memory: PhysicalMemory, run: Run) -> list[bytes]:
    """The pages of a STORED, ZERO or PARTIAL run, read from where the run says they are."""
    if run.kind is RunKind.ZERO:
        return [bytes(PS)] * run.count
    if run.kind is RunKind.PARTIAL:
        assert run.count == 1 and run.source is not None
        page = bytearray(PS)
        for at, offset, length in run.pieces:
            page[at : at + length] = run.source.read_at(offset, length)
        return [bytes(page)]
    assert run.kind is RunKind.STORED
    if run.source is None:  # held by the memory itself
        return [memory.page(pfn) for pfn in range(run.start_pfn, run.end_pfn)]
    data = run.source.read_at(run.offset, run.stored_size(PS))
    assert len(data) == run.stored_size(PS)
    if run.sizes is None:
        return [data[i * PS : (i + 1) * PS] for i in range(run.count)]
    assert len(run.sizes) == run.count <= RUN_PAGES
    pages, at = [], 0
    for size in run.sizes:
        pages.append(decode_page(data[at : at + size], run.flags, PS))
        at += size
    return pages


def located(memory: PhysicalMemory, runs: list[Run]) -> tuple[dict[int, bytes], dict[RunKind, set[int]]]:
    """({pfn: page} of every page the runs locate, {kind: pfns} of the runs)."""
    pages: dict[int, bytes] = {}
    kinds: dict[RunKind, set[int]] = {kind: set() for kind in RunKind}
    for run in runs:
        kinds[run.kind].update(range(run.start_pfn, run.end_pfn))
        if run.kind not in (RunKind.EXCLUDED, RunKind.MISSING):
            pages.update(zip(range(run.start_pfn, run.end_pfn), run_pages(memory, run), strict=True))
    return pages, kinds


def assert_matches_input(memory: PhysicalMemory, source: dict[int, bytes], missing: set[int] = frozenset()) -> None:
    """Runs of a dump written from ``source`` pages: every page located and equal, zero runs zero, the rest out."""
    pages, kinds = located(memory, checked_runs(memory))
    assert kinds[RunKind.MISSING] == set(missing)
    assert pages == {pfn: page for pfn, page in source.items() if pfn not in missing}
    assert all(not any(source[pfn]) for pfn in kinds[RunKind.ZERO])
    assert kinds[RunKind.EXCLUDED] == set(range(memory.max_pfn)) - set(source)


_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(memory=memories(), codec=codecs, zero_page=st.booleans(), flat=st.booleans())
def test_kdump_runs_locate_the_written_pages(memory: DictMemory, codec: str, zero_page: bool, flat: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dump"
        write_kdump(path, make_model(max_mapnr=memory.max_pfn), memory, codec=codec, zero_page=zero_page, flat=flat)
        with open_dump(path) as dump:
            assert_matches_input(dump.memory, memory._pages)


def write_three_parts(tmp: str, memory: DictMemory, codec: str, drop_middle: bool) -> tuple[list[Path], int, int]:
    """A split set of three parts written from ``memory``: the parts to open (without the middle one with
    ``drop_middle``) and the middle part's pfn range."""
    paths = [Path(tmp) / f"part{i}" for i in range(3)]
    write_split(paths, make_model(max_mapnr=memory.max_pfn), memory, codec=codec)
    with open_dump(paths[1]) as middle:
        lo, hi = middle.kdump.start_pfn, middle.kdump.end_pfn
    return ([paths[0], paths[2]] if drop_middle else paths), lo, hi


@_SETTINGS
@given(memory=memories(min_pages=3), codec=codecs, drop_middle=st.booleans())
def test_split_runs_mark_pages_of_a_missing_part(memory: DictMemory, codec: str, drop_middle: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        given_parts, lo, hi = write_three_parts(tmp, memory, codec, drop_middle)
        with open_dump(*given_parts) as dump:
            missing = {pfn for pfn in memory._pages if lo <= pfn < hi} if drop_middle else set()
            assert_matches_input(dump.memory, memory._pages, missing)
            for pfn in missing:
                with pytest.raises(AddressError):
                    dump.memory.page(pfn)


def test_raw_pages_in_pfn_order_coalesce_into_one_run(tmp_path: Path) -> None:
    """write_kdump stores pages back to back in pfn order (kdump-format.md §7): raw pages make one run per
    RUN_PAGES consecutive dumped pfns, and a window of runs() starts and ends where asked."""
    pages = {pfn: bytes([pfn % 251 + 1]) * PS for pfn in range(10, 10 + RUN_PAGES + 5)}
    memory = DictMemory(pages, max_pfn=RUN_PAGES + 100)
    write_kdump(tmp_path / "raw", make_model(max_mapnr=memory.max_pfn), memory, codec="none", zero_page=False)
    with open_dump(tmp_path / "raw") as dump:
        runs = checked_runs(dump.memory)
        assert [(r.kind, r.start_pfn, r.count, r.sizes) for r in runs] == [
            (RunKind.EXCLUDED, 0, 10, None),
            (RunKind.STORED, 10, RUN_PAGES, None),
            (RunKind.STORED, 10 + RUN_PAGES, 5, None),
            (RunKind.EXCLUDED, 15 + RUN_PAGES, memory.max_pfn - 15 - RUN_PAGES, None),
        ]
        window = checked_runs(dump.memory, 5, 20)
        assert located(dump.memory, window)[0] == {pfn: pages[pfn] for pfn in range(10, 20)}


def test_stored_blocks_out_of_order_are_separate_runs(tmp_path: Path) -> None:
    """Descriptors need not point at their data in pfn order (kdump-format.md §6): swapping two descriptors'
    offsets swaps the pages, and runs still locate each page where its descriptor says."""
    pages = {pfn: bytes([pfn + 1]) * PS for pfn in range(4)}
    path = tmp_path / "swapped"
    write_kdump(path, make_model(max_mapnr=8), DictMemory(pages, max_pfn=8), codec="none", zero_page=False)
    with open_dump(path) as dump:
        table = dump.kdump.data_offset
    desc = PAGE_DESC.bind(LP64_LE)
    with open(path, "r+b") as f:
        f.seek(table)
        first, second = desc.unpack(f.read(desc.size)), desc.unpack(f.read(desc.size))
        f.seek(table)
        f.write(desc.pack(second) + desc.pack(first))
    with open_dump(path) as dump:
        runs = checked_runs(dump.memory)
        assert [(r.start_pfn, r.count) for r in runs if r.kind is RunKind.STORED] == [(0, 1), (1, 1), (2, 2)]
        assert located(dump.memory, runs)[0] == {0: pages[1], 1: pages[0], 2: pages[2], 3: pages[3]}


# ---- ELF files built from the declarations (kdfix.format.elf) --------------------------------------------


def build_elf(segments: list[tuple[int, int, int]], seed: int) -> tuple[bytes, dict[int, bytes], int]:
    """An ELF64 core with PT_LOADs ``(paddr, filesz, memsz)`` (ascending, not overlapping) of seeded bytes;
    returns the file, the pages readers must see and the pfn bound (pages no segment reaches are absent)."""
    ehdr, phdr = ehdr_layout(LP64_LE), phdr_layout(LP64_LE)
    data_at = ehdr.size + phdr.size * len(segments)
    headers, blobs, memory = [], [], bytearray()
    for i, (paddr, filesz, memsz) in enumerate(segments):
        blob = bytes((seed + i * 7 + k * 13) % 255 + 1 for k in range(filesz))
        headers.append(phdr.pack(Elf64Phdr(PT_LOAD, 0, data_at, paddr, paddr, filesz, memsz, 0)))
        blobs.append(blob)
        data_at += filesz
        top = paddr + memsz
        memory.extend(bytes(max(0, top - len(memory))))
        memory[paddr : paddr + filesz] = blob
    header = Ehdr(e_ident(LP64_LE), ET_CORE, 62, 1, 0, ehdr.size, 0, 0, ehdr.size, phdr.size, len(segments), 0, 0, 0)
    max_pfn = -(-len(memory) // PS)
    memory.extend(bytes(max_pfn * PS - len(memory)))
    touched = {pfn for paddr, _, memsz in segments for pfn in range(paddr // PS, -(-(paddr + memsz) // PS))}
    pages = {pfn: bytes(memory[pfn * PS : (pfn + 1) * PS]) for pfn in touched}
    return ehdr.pack(header) + b"".join(headers) + b"".join(blobs), pages, max_pfn


@contextlib.contextmanager
def opened_elf(segments: list[tuple[int, int, int]], seed: int) -> Iterator[tuple[Dump, dict[int, bytes], int]]:
    """The ELF of :func:`build_elf` in a temporary file, opened: the dump, the pages it holds and the pfn bound."""
    elf, pages, max_pfn = build_elf(segments, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "core"
        path.write_bytes(elf)
        with open_dump(path) as dump:
            yield dump, pages, max_pfn


@st.composite
def elf_segments(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    """Up to five PT_LOADs at byte granularity: page-aligned or not, sharing pages, with memsz > filesz tails."""
    out, pos = [], 0
    for _ in range(draw(st.integers(1, 5))):
        pos += draw(st.sampled_from([0, 1, 100, PS - 1, PS, 3 * PS]))
        if draw(st.booleans()):
            pos = -(-pos // PS) * PS
        filesz = draw(st.sampled_from([0, 1, 200, PS, 2 * PS + 300, 5 * PS]))
        memsz = filesz + draw(st.sampled_from([0, 0, 17, PS, 3 * PS]))
        if memsz:
            out.append((pos, filesz, memsz))
            pos += memsz
    return out or [(0, PS, PS)]


@_SETTINGS
@given(segments=elf_segments(), seed=st.integers(0, 250))
def test_elf_runs_locate_segment_bytes(segments: list[tuple[int, int, int]], seed: int) -> None:
    with opened_elf(segments, seed) as (dump, pages, max_pfn):
        memory = dump.memory
        assert memory.max_pfn == max_pfn
        got, kinds = located(memory, checked_runs(memory))
        assert got == pages
        assert kinds[RunKind.EXCLUDED] == set(range(max_pfn)) - set(pages) and not kinds[RunKind.MISSING]
        assert all(not any(pages[pfn]) for pfn in kinds[RunKind.ZERO])
        backing = memory.backing
        assert backing is not None and backing.raw and Path(backing.path) == Path(dump.paths[0])


# ---- real QEMU fixtures: runs agree with per-page reads ---------------------------------------------------


def assert_agrees_with_pages(memory: PhysicalMemory) -> None:
    pages, kinds = located(memory, checked_runs(memory))
    assert set(pages) == set(memory.dumped.iter_set()) and kinds[RunKind.ZERO] and not kinds[RunKind.MISSING]
    for pfn, page in pages.items():
        assert memory.page(pfn) == page, f"pfn {pfn:#x}"
    assert kinds[RunKind.EXCLUDED] == set(range(memory.max_pfn)) - set(pages)


def test_runs_of_a_qemu_flattened_dump_agree_with_its_pages() -> None:
    with open_dump(repo_fixture("firmware-16m.kdump-zlib")) as dump:
        assert dump.container == "flattened" and dump.memory.backing is not None
        assert not dump.memory.backing.raw
        assert_agrees_with_pages(dump.memory)


def test_runs_of_a_reassembled_qemu_dump_agree_with_its_pages(firmware_reassembled: Path) -> None:
    with open_dump(firmware_reassembled) as dump:
        assert dump.container == "kdump"
        assert_agrees_with_pages(dump.memory)


def test_runs_of_a_qemu_elf_agree_with_its_pages(tmp_path: Path) -> None:
    path = tmp_path / "firmware.elf"
    with gzip.open(repo_fixture("firmware-16m.elf.gz")) as src, open(path, "wb") as out:
        shutil.copyfileobj(src, out)
    with open_dump(path) as dump:
        assert dump.container == "elf"
        pages, kinds = located(dump.memory, checked_runs(dump.memory))
        assert set(pages) == set(dump.memory.dumped.iter_set()) and not kinds[RunKind.MISSING]
        assert all(dump.memory.page(pfn) == page for pfn, page in pages.items())
