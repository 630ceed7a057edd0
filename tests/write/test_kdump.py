"""KDUMP writer: layout examples from kdump-format.md §1/§5/§7, then write → read properties."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import kdfix
from kdfix.format.constants import DumpFlag
from kdfix.format.kdump import DISK_DUMP_HEADER, KDUMP_SUB_HEADER, PAGE_DESC
from kdfix.format.layout import ARM32_BE, ARM32_LE, I386_LE, LP64_LE
from kdfix.model import DumpModel
from kdfix.notes.framing import Note
from kdfix.read.memory import DictMemory
from kdfix.write import MemorySink, plan_kdump, write_kdump
from kdfix.write.kdump import header_phys_base
from kdfix.write.passthrough import iter_stored_pages
from tests import strategies as S
from tests.roundtrip import (
    SPLIT_PARTS,
    abi_probes_back,
    assert_models_equal,
    assert_same_bitmaps,
    assert_same_pages,
    expected_kdump_model,
    file_bytes,
    write_container,
)

BS = 4096


def _mixed_memory(seed: int = 1, n: int = 40, spread: int = 5000) -> DictMemory:
    rnd = random.Random(seed)
    pages = {}
    for pfn in sorted(rnd.sample(range(spread), n)):
        kind = pfn % 3
        pages[pfn] = bytes(BS) if kind == 0 else rnd.randbytes(BS) if kind == 1 else bytes([pfn & 0xFF]) * BS
    return DictMemory(pages, max_pfn=spread)


def _parse(data: bytes, abi=LP64_LE, version=6):  # type: ignore[no-untyped-def]
    main = DISK_DUMP_HEADER.bind(abi).unpack(data)
    sub = KDUMP_SUB_HEADER.bind(abi, version).unpack(data, main.block_size)
    return main, sub


def test_layout_matches_the_qemu_worked_example() -> None:
    """kdump-format.md §1: 128 MiB guest, 2 vCPUs, note_size 4920 → sub_hdr_size 2, bitmaps 12288/143360."""
    notes = (
        Note(b"CORE", 1, bytes(336)),
        Note(b"CORE", 1, bytes(336)),
        Note(b"QEMU", 0, bytes(440)),
        Note(b"QEMU", 0, bytes(440)),
        Note(b"VMCOREINFO", 0, b"x" * 3262),
    )
    layout = plan_kdump(DumpModel(notes=notes), 0x100000)
    assert layout.size_note == 4920
    assert layout.sub_hdr_size == 2
    assert layout.bitmap_blocks == 64
    assert (layout.bitmap1_offset, layout.bitmap2_offset) == (12288, 143360)
    assert layout.data_offset == 274432
    assert (layout.offset_note, layout.offset_vmcoreinfo, layout.size_vmcoreinfo) == (4200, 5856, 3262)


@pytest.mark.parametrize(("abi", "offset_note"), [(LP64_LE, BS + 104), (I386_LE, BS + 80), (ARM32_LE, BS + 96)])
def test_offset_note_follows_the_sub_header(abi, offset_note) -> None:  # type: ignore[no-untyped-def]
    layout = plan_kdump(DumpModel(abi=abi, vmcoreinfo=b"OSRELEASE=1\n"), 10)
    assert layout.offset_note == offset_note
    assert layout.offset_vmcoreinfo == offset_note + 24  # Nhdr 12 + "VMCOREINFO\0" padded to 12


def test_header_fields_and_zero_page_layout() -> None:
    """status = codec | model flags; zero pages share the zero page written first; raw pages are stored raw."""
    mem = _mixed_memory()
    model = S.drgn_model(status=int(DumpFlag.EXCLUDED_VMEMMAP), tv_sec=1234, dump_level=1, nr_cpus=3)
    sink = MemorySink()
    result = write_kdump(sink, model, mem, codec="zlib")
    data = sink.getvalue()
    main, sub = _parse(data)
    assert main.signature == b"KDUMP   "
    assert main.status == DumpFlag.COMPRESSED_ZLIB | DumpFlag.EXCLUDED_VMEMMAP
    assert (main.timestamp.tv_sec, main.timestamp.tv_usec, main.nr_cpus) == (1234, 0, 3)
    assert main.max_mapnr == sub.max_mapnr_64 == 5000
    assert main.bitmap_blocks == 2  # both bitmaps: one block each for 5000 pfns
    assert sub.dump_level == 1
    layout = result.layout
    assert layout is not None
    n = len(mem.dumped.to_bytes()) and mem.dumped.count()
    desc = PAGE_DESC.bind(LP64_LE)
    zero_at = layout.data_offset + 24 * n
    assert data[zero_at : zero_at + BS] == bytes(BS)
    seen = {"zero": 0, "raw": 0, "zlib": 0}
    for i, (_pfn, page) in enumerate(mem.iter_pages()):
        d = desc.unpack(data, layout.data_offset + 24 * i)
        assert d.page_flags == 0
        if not any(page):
            assert (d.offset, d.size, d.flags) == (zero_at, BS, 0)
            seen["zero"] += 1
        elif d.flags == 0:
            assert d.size == BS and data[d.offset : d.offset + BS] == page
            seen["raw"] += 1
        else:
            assert d.flags == DumpFlag.COMPRESSED_ZLIB and d.size < BS
            seen["zlib"] += 1
    assert seen == {"zero": result.zero_pages, "raw": result.raw_pages, "zlib": result.compressed_pages}
    assert min(seen.values()) > 0


def test_exclude_zero_clears_the_2nd_bitmap_and_writes_no_zero_page() -> None:
    mem = _mixed_memory()
    sink = MemorySink()
    result = write_kdump(sink, S.drgn_model(), mem, exclude_zero=True)
    layout = result.layout
    assert layout is not None
    data = sink.getvalue()
    second = data[layout.bitmap2_offset : layout.bitmap2_offset + layout.bitmap_len]
    zero_pfns = {pfn for pfn, page in mem.iter_pages() if not any(page)}
    for pfn, _ in mem.iter_pages():
        assert bool(second[pfn >> 3] >> (pfn & 7) & 1) == (pfn not in zero_pfns)
    first = data[layout.bitmap1_offset : layout.bitmap1_offset + layout.bitmap_len]
    assert all(first[p >> 3] >> (p & 7) & 1 for p in zero_pfns)  # still valid memory
    assert result.zero_pages == 0 and result.pages == len(list(mem.iter_pages())) - len(zero_pfns)


@pytest.mark.parametrize(
    ("text", "model_value", "want"),
    [
        (b"NUMBER(phys_base)=-840957952\n", 5, (1 << 64) - 840957952),
        (b"NUMBER(phys_base)=16777216\n", 5, 0x1000000),
        (b"OSRELEASE=x\n", 5, 5),
    ],
)
def test_phys_base_comes_from_vmcoreinfo_decimal(text: bytes, model_value: int, want: int) -> None:
    """The sub header takes NUMBER(phys_base) (signed decimal → u64), else the model's value (qemu-dumps.md §6)."""
    model = DumpModel(vmcoreinfo=text, phys_base=model_value)
    assert header_phys_base(model) == want
    sink = MemorySink()
    write_kdump(sink, model, DictMemory({}, max_pfn=1))
    assert _parse(sink.getvalue())[1].phys_base == want
    sink = MemorySink()
    write_kdump(sink, model, DictMemory({}, max_pfn=1), phys_base_from_vmcoreinfo=False)
    assert _parse(sink.getvalue())[1].phys_base == model_value


def test_max_mapnr_above_32_bits_is_clamped_in_the_main_header() -> None:
    model = DumpModel(max_mapnr=(1 << 32) + 5)
    layout = plan_kdump(model, model.max_mapnr)
    from kdfix.write.kdump import HeaderValues, pack_main_header, pack_sub_header

    values = HeaderValues.of(model)
    main = DISK_DUMP_HEADER.bind(LP64_LE).unpack(pack_main_header(values, layout, 1))
    sub = KDUMP_SUB_HEADER.bind(LP64_LE).unpack(pack_sub_header(values, layout, phys_base=0))
    assert main.max_mapnr == 0xFFFFFFFF
    assert sub.max_mapnr_64 == (1 << 32) + 5


@pytest.mark.parametrize("version", range(7))
def test_fields_absent_from_the_version_are_not_written(version: int) -> None:
    """A v<6 sub header ends after its last field; everything after it up to the notes is zero."""
    model = dataclasses.replace(S.drgn_model(), header_version=version, eraseinfo=b"erase x size 4\n", dump_level=3)
    sink = MemorySink()
    write_kdump(sink, model, _mixed_memory(n=5))
    data = sink.getvalue()
    sub = KDUMP_SUB_HEADER.bind(LP64_LE, version)
    end = BS + sub.size
    if version < 3:
        assert not any(data[end : 2 * BS])
    main = DISK_DUMP_HEADER.bind(LP64_LE).unpack(data)
    assert main.header_version == version
    assert not any(data[DISK_DUMP_HEADER.bind(LP64_LE).size : BS])


def test_workers_give_identical_bytes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Parallel compression is byte-identical to a single worker (chunks larger than one work item)."""
    mem = _mixed_memory(seed=7, n=700, spread=3000)
    one, two = tmp_path / "one", tmp_path / "two"
    write_kdump(one, S.drgn_model(), mem, codec="zlib", workers=1)
    write_kdump(two, S.drgn_model(), mem, codec="zlib", workers=2)
    assert file_bytes(one) == file_bytes(two)


def test_page_source_must_match_the_bitmap() -> None:
    mem = _mixed_memory(n=5)
    bad = [(pfn + 1, 0, page) for pfn, page in mem.iter_pages()]
    with pytest.raises(kdfix.KdfixError, match="page source"):
        write_kdump(MemorySink(), S.drgn_model(), mem, page_source=iter(bad))


def test_block_size_must_match_memory() -> None:
    with pytest.raises(kdfix.KdfixError, match="block_size"):
        write_kdump(MemorySink(), DumpModel(block_size=8192), DictMemory({0: bytes(BS)}))


# ---- properties --------------------------------------------------------------------------------------


def _usable(model: DumpModel) -> bool:
    """ARM32 and i386 sub headers are told apart by the VMCOREINFO pointer only (kdump-format.md §12)."""
    return not (model.abi in (ARM32_LE, ARM32_BE) and model.header_version >= 3 and model.vmcoreinfo is None
                and model.vmcoreinfo_note() is None)  # fmt: skip


@given(model=S.models(), memory=S.memories(), codec=S.codecs, container=st.sampled_from(["kdump", "flat", "split"]))
def test_write_then_read_gives_back_model_and_pages(tmp_path_factory, model, memory, codec, container) -> None:  # type: ignore[no-untyped-def]
    """write → kdfix.open_dump reports the written model (what the version can hold), bitmaps and every page."""
    if container == "split":
        model = dataclasses.replace(model, header_version=max(2, model.header_version))
        assume(memory.max_pfn >= SPLIT_PARTS)
    assume(_usable(model))
    assert abi_probes_back(model, memory, codec)
    paths, result = write_container(container, tmp_path_factory.mktemp("rt"), model, memory, codec=codec)
    with kdfix.open_dump(*paths) as dump:
        assert_models_equal(dump.model, expected_kdump_model(model, memory))
        assert dump.compression == codec
        assert_same_bitmaps(dump.memory, memory)
        assert_same_pages(dump.memory, memory)
    assert result.pages == memory.dumped.count()


@given(model=S.models(), memory=S.memories(), codec=S.codecs, flat=st.booleans(), zero_page=st.booleans())
def test_write_read_write_is_byte_identical(tmp_path_factory, model, memory, codec, flat, zero_page) -> None:  # type: ignore[no-untyped-def]
    """write → read → write (stored pages passed through, phys_base kept) reproduces the file exactly."""
    assume(_usable(model))
    assert abi_probes_back(model, memory, codec)
    d = tmp_path_factory.mktemp("rw")
    first = d / "first"
    write_kdump(first, model, memory, codec=codec, flat=flat, zero_page=zero_page)
    with kdfix.open_dump(first) as dump:
        again = d / "again"
        write_kdump(again, dump.model, dump.memory, codec=dump.compression, flat=flat, zero_page=zero_page,
                    page_source=iter_stored_pages(dump.memory), phys_base_from_vmcoreinfo=False)  # fmt: skip
        assert file_bytes(again) == file_bytes(first)
        # …and re-encoding from decoded pages gives the same bytes too (deterministic codecs).
        third = d / "third"
        write_kdump(third, dump.model, dump.memory, codec=codec, flat=flat, zero_page=zero_page,
                    phys_base_from_vmcoreinfo=False)  # fmt: skip
        assert file_bytes(third) == file_bytes(first)


@given(model=S.models(), memory=S.memories(), codec=S.codecs)
def test_flat_and_plain_reassemble_to_the_same_bytes(tmp_path_factory, model, memory, codec) -> None:  # type: ignore[no-untyped-def]
    """reassemble(write(flat=True)) == write(flat=False)."""
    from kdfix.write import reassemble

    d = tmp_path_factory.mktemp("flat")
    write_kdump(d / "plain", model, memory, codec=codec)
    write_kdump(d / "flat", model, memory, codec=codec, flat=True)
    reassemble(d / "flat", d / "re")
    assert file_bytes(d / "re") == file_bytes(d / "plain")
