"""Writers that consume PhysicalMemory.runs (kdfix.read.runs): the units plan_memory builds and the stored pages
pass-through copying reads give back the pages the input was built from (ELF files built from the format
declarations, KDUMP files and split sets written from hypothesis memories)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdfix import open_dump
from kdfix.codecs import decode_page
from kdfix.read.memory import DictMemory
from kdfix.write import write_kdump
from kdfix.write.page_units import fill_unit, open_source, plan_memory
from kdfix.write.passthrough import iter_stored_pages
from tests.read.test_kdump import make_model
from tests.read.test_runs import PS, elf_segments, opened_elf, write_three_parts
from tests.strategies import codecs, memories

_SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def unit_pages(plan_source: object, units: object) -> dict[int, bytes]:
    pages: dict[int, bytes] = {}
    for unit in units:  # type: ignore[attr-defined]
        data = bytes(fill_unit(plan_source, unit, PS))  # type: ignore[arg-type]
        for i in range(unit.npages):
            pages[unit.first_pfn + i] = data[i * PS : (i + 1) * PS]
    return pages


@_SETTINGS
@given(segments=elf_segments(), seed=st.integers(0, 250))
def test_units_of_an_elf_file_are_its_pages(segments: list[tuple[int, int, int]], seed: int) -> None:
    """An ELF core is planned from its runs as file pieces; helpers reopen the file and read the same bytes."""
    with opened_elf(segments, seed) as (dump, pages, _):
        plan = plan_memory(dump.memory, dump.memory.dumped)
        try:
            assert plan.spec is not None and plan.spec.kind == "elf"
            assert unit_pages(plan.source, plan.units) == pages
            helper = open_source(plan.spec)
            assert unit_pages(helper, plan.units) == pages
        finally:
            plan.close()


@_SETTINGS
@given(memory=memories(), codec=codecs, zero_page=st.booleans(), flat=st.booleans())
def test_stored_pages_of_a_kdump_file_decode_to_its_pages(
    memory: DictMemory, codec: str, zero_page: bool, flat: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dump"
        write_kdump(path, make_model(max_mapnr=memory.max_pfn), memory, codec=codec, zero_page=zero_page, flat=flat)
        with open_dump(path) as dump:
            got = {pfn: decode_page(data, flags, PS) for pfn, flags, data in iter_stored_pages(dump.memory)}
            plan = plan_memory(dump.memory, dump.memory.dumped)
            assert plan.spec is not None and plan.spec.kind == "dump"
    assert got == memory._pages


@_SETTINGS
@given(memory=memories(min_pages=3), codec=codecs, drop_middle=st.booleans())
def test_stored_pages_of_a_split_set_skip_a_missing_part(memory: DictMemory, codec: str, drop_middle: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        given_parts, lo, hi = write_three_parts(tmp, memory, codec, drop_middle)
        with open_dump(*given_parts) as dump:
            got = {pfn: decode_page(data, flags, PS) for pfn, flags, data in iter_stored_pages(dump.memory)}
            plan = plan_memory(dump.memory, dump.memory.dumped)
            assert plan.spec is not None and plan.spec.kind == "inherit"  # several files: forked helpers keep them
    kept = {pfn: page for pfn, page in memory._pages.items() if not (drop_middle and lo <= pfn < hi)}
    assert got == kept
