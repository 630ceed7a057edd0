"""KdumpContainer on writer-made files: every ABI x header version x codec, descriptors, raw pages, zero page."""

from __future__ import annotations

import dataclasses

import pytest

from kdfix import open_dump
from kdfix.errors import AddressError
from kdfix.format.constants import NOTE_NAME_VMCOREINFO
from kdfix.format.kdump import PAGE_DESC_SIZE
from kdfix.format.layout import ALL_ABIS, LP64_LE
from kdfix.model import DumpModel, make_utsname
from kdfix.notes.framing import Note
from kdfix.read.memory import DictMemory
from kdfix.write import write_kdump
from tests.read.conftest import sample_pages

VMCOREINFO = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nNUMBER(phys_base)=-12345\nKERNELOFFSET=1a000000\n"
CODECS = ("zlib", "lzo", "snappy", "zstd", "none")


def make_model(abi=LP64_LE, version=6, **kw) -> DumpModel:
    fields = {
        "nr_cpus": 1,
        "max_mapnr": 0x2000,
        "utsname": make_utsname(sysname="Linux", release="6.1.0-test", version="#1", machine="x86_64"),
        "notes": (Note(NOTE_NAME_VMCOREINFO, 0, VMCOREINFO),),
        "dump_level": 1,
        "tv_sec": 1700000000,
    }
    return DumpModel(abi=abi, header_version=version, **(fields | kw))


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("version", range(7), ids=lambda v: f"v{v}")
@pytest.mark.parametrize("abi", ALL_ABIS, ids=lambda a: a.name)
def test_roundtrip_pages_and_header(tmp_path, abi, version, codec):
    """Pages written by kdfix.write come back identical; ABI, version and codec are detected from the bytes."""
    pages = sample_pages()
    path = tmp_path / "d.kdump"
    write_kdump(path, make_model(abi, version), DictMemory(pages, max_pfn=0x2000), codec=codec)
    with open_dump(path) as d:
        assert d.container == "kdump" and d.header_version == version
        assert (d.abi.word_size, d.abi.byte_order) == (abi.word_size, abi.byte_order)
        assert d.compression == codec
        assert dict(d.memory.iter_pages()) == pages
        assert {pfn: d.memory.page(pfn) for pfn in pages} == pages
        assert d.model.max_mapnr == 0x2000 and d.model.nr_cpus == 1
        if version >= 4:
            assert d.vmcoreinfo is not None and d.vmcoreinfo.osrelease == "6.1.0-test"
            assert d.notes == (Note(NOTE_NAME_VMCOREINFO, 0, VMCOREINFO),)
        else:
            assert d.notes == ()
        if version >= 3 and d.sub_header.size_vmcoreinfo:
            assert d.kdump.sub_abi == abi  # i386 "pack" vs ARM32 "pad" found from the pointer (§12)
        if version >= 1:
            assert d.model.dump_level == 1
        assert d.problems == []


def test_descriptor_api_and_raw_pages(tmp_path):
    """descriptor_offset is data_offset + 24*rank; raw_page returns stored bytes that decode to the page."""
    from kdfix.codecs import decode_page

    pages = sample_pages()
    path = tmp_path / "d.kdump"
    write_kdump(path, make_model(), DictMemory(pages, max_pfn=0x2000), codec="zlib")
    with open_dump(path) as d:
        k = d.kdump
        listed = list(k.iter_descriptors())
        assert [pfn for pfn, _ in listed] == sorted(pages)
        for i, (pfn, desc) in enumerate(listed):
            assert k.descriptor_offset(pfn) == k.data_offset + PAGE_DESC_SIZE * i
            assert k.descriptor(pfn) == desc
            flags, stored = k.raw_page(pfn)
            assert flags == desc.flags and len(stored) == desc.size
            assert decode_page(stored, flags, 4096) == pages[pfn]
            assert d.memory.is_zero_page(pfn) == (pages[pfn] == bytes(4096))
        assert k.bitmap2_offset == k.bitmap1_offset + k.bitmap_len
        assert k.notes_size > 0 and k.notes_offset == 4096 + 104


def test_missing_pages_raise_address_errors(tmp_path):
    """Holes, excluded pages and pfns past max_mapnr are AddressErrors; read(zero_fill=True) fills them."""
    pages = sample_pages()
    path = tmp_path / "d.kdump"
    write_kdump(path, make_model(), DictMemory(pages, max_pfn=0x2000), codec="zlib", exclude_zero=True)
    with open_dump(path) as d:
        mem = d.memory
        assert not mem.present(2) and not mem.present(3)
        with pytest.raises(AddressError, match="does not exist"):
            mem.page(3)
        with pytest.raises(AddressError):
            mem.page(0x2000)
        with pytest.raises(AddressError):
            mem.read(3 * 4096, 8)
        assert mem.read(5 * 4096 - 4, 8, zero_fill=True) == bytes(4) + pages[5][:4]
        assert dict(mem.iter_pages()) == {p: b for p, b in pages.items() if any(b)}


def test_excluded_page_is_reported_as_excluded(tmp_path):
    """A pfn in the 1st bitmap but not the 2nd is 'excluded' (kdump-format.md §7 step 2)."""
    pages = sample_pages()
    path = tmp_path / "d.kdump"
    valid_pfns = set(pages) | {3}
    from kdfix.format.bitmap import Bitmap

    mem = DictMemory(pages, max_pfn=0x2000, valid=Bitmap.from_pfns(valid_pfns, 0x2000))
    write_kdump(path, make_model(), mem, codec="zlib")
    with open_dump(path) as d:
        assert d.memory.valid.test(3), "the writer keeps the memory's 1st bitmap"
        with pytest.raises(AddressError, match="excluded"):
            d.memory.page(3)


@pytest.mark.parametrize("codec", ("zlib", "none"))
def test_flattened_writer_output_reads_like_plain(tmp_path, codec):
    """A flattened stream written by kdfix reads exactly like the plain file of the same model."""
    pages = sample_pages()
    model = make_model()
    write_kdump(tmp_path / "p.kdump", model, DictMemory(pages, max_pfn=0x2000), codec=codec)
    write_kdump(tmp_path / "f.kdump", model, DictMemory(pages, max_pfn=0x2000), codec=codec, flat=True)
    with open_dump(tmp_path / "p.kdump") as p, open_dump(tmp_path / "f.kdump") as f:
        assert (p.container, f.container) == ("kdump", "flattened")
        assert p.model == f.model and p.main_header == f.main_header and p.sub_header == f.sub_header
        assert dict(f.memory.iter_pages()) == pages
        assert f.source.read_at(0, p.source.size) == p.source.read_at(0, p.source.size)


def test_model_fields_from_headers(tmp_path):
    """The DumpModel mirrors the headers: utsname, timestamp, phys_base, status without the codec bit."""
    path = tmp_path / "d.kdump"
    model = make_model(phys_base=0x1000000)
    write_kdump(path, model, DictMemory(sample_pages(), max_pfn=0x2000), codec="zstd",
                phys_base_from_vmcoreinfo=False)  # fmt: skip
    with open_dump(path) as d:
        m = d.model
        assert m.utsname == model.utsname and m.tv_sec == 1700000000
        assert m.phys_base == 0x1000000 and m.status == 0
        assert d.main_header.status == 0x20 and d.compression == "zstd"
        assert d.vmcoreinfo.raw == VMCOREINFO


# ---- quirks of real and broken writers ----------------------------------------------------------------


def _write(tmp_path, **kw):
    path = tmp_path / "q.kdump"
    write_kdump(path, make_model(**kw), DictMemory(sample_pages(), max_pfn=0x2000), codec="zlib")
    return path


def _patch(path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


def test_diskdump_signature_ignores_the_sub_header(tmp_path):
    """DISKDUMP (kdump-format.md §2): no sub header semantics, status 8 = compressed, 32-bit max_mapnr."""
    path = _write(tmp_path)
    _patch(path, 0, b"DISKDUMP")
    _patch(path, 0x1A8, (8).to_bytes(4, "little"))  # legacy DUMP_HEADER_COMPRESSED
    with open_dump(path) as d:
        assert d.signature == b"DISKDUMP" and d.sub_header is None and d.notes == ()
        assert d.compression == "zlib" and d.status_flags == ["COMPRESSED"]
        assert dict(d.memory.iter_pages()) == {p: b for p, b in sample_pages().items()}
        assert d.model.phys_base == 0


def test_vmcoreinfo_pointer_mismatch_is_a_problem(tmp_path):
    from kdfix.format.kdump import KDUMP_SUB_HEADER

    path = _write(tmp_path)
    sub = KDUMP_SUB_HEADER.bind(LP64_LE)
    with open_dump(path) as d:
        note_desc = d.sub_header.offset_vmcoreinfo
    _patch(path, 4096 + sub.offset_of("offset_vmcoreinfo"), (note_desc + 1).to_bytes(8, "little"))
    with open_dump(path) as d:
        assert d.vmcoreinfo.raw == VMCOREINFO  # v6: the note wins (libkdumpfile/drgn, §5)
        assert any("do not reference the VMCOREINFO note" in p for p in d.problems)


def test_v3_takes_vmcoreinfo_from_the_pointer(tmp_path):
    path = _write(tmp_path, version=3, vmcoreinfo=VMCOREINFO)
    with open_dump(path) as d:
        assert d.sub_header.size_vmcoreinfo, "a v3 writer points offset_vmcoreinfo at the text"
        assert d.notes == () and d.vmcoreinfo.raw == VMCOREINFO


def test_incomplete_dump(tmp_path):
    """status INCOMPLETE and zeroed descriptors (§8): listed as problems; the zeroed page is 'page incomplete'."""
    from kdfix.errors import FormatError
    from kdfix.read.dump import verify_dump

    path = _write(tmp_path)
    with open_dump(path) as d:
        desc_off = d.kdump.descriptor_offset(300)
    _patch(path, 0x1A8, (1 | 8).to_bytes(4, "little"))
    _patch(path, desc_off, bytes(24))
    with open_dump(path) as d:
        assert d.kdump.incomplete and "compressed_incomplete" in d.status_flags
        assert d.model.status == 8
        with pytest.raises(FormatError, match="page incomplete"):
            d.memory.page(300)
        assert d.memory.page(7) == sample_pages()[7]
        report = verify_dump(d)
        assert not report.ok and [b["pfn"] for b in report.bad_pages] == [300]


def test_single_bitmap_when_bitmap_blocks_counts_one(tmp_path):
    """bitmap_blocks counting one bitmap (kdumpling mistake 1) is read as a single bitmap, with a problem (§7)."""
    path = _write(tmp_path)
    with open_dump(path) as d:
        blocks = d.main_header.bitmap_blocks
    _patch(path, 0x1B4, (blocks // 2).to_bytes(4, "little"))
    with open_dump(path) as d:
        assert d.kdump.single_bitmap and d.kdump.bitmap1_offset == d.kdump.bitmap2_offset
        assert any("single bitmap" in p for p in d.problems)


def test_kdfix_note_marks_kdfix_output(tmp_path):
    from kdfix.format.constants import NOTE_NAME_KDFIX
    from kdfix.read.origin import identify_origin

    path = tmp_path / "k.kdump"
    notes = (Note(NOTE_NAME_KDFIX, 0, b"kdfix 0.1.0 convert"), Note(NOTE_NAME_VMCOREINFO, 0, VMCOREINFO))
    write_kdump(path, make_model(notes=notes), DictMemory(sample_pages(), max_pfn=0x2000))
    with open_dump(path) as d:
        origin, evidence = identify_origin(d)
        assert origin == "kdfix" and "kdfix 0.1.0" in evidence[0]


def test_kdumpling_traits(tmp_path):
    """kdumpling's header traits (tools-and-oracles.md §6) are recognised."""
    from kdfix.read.origin import identify_origin

    path = tmp_path / "l.kdump"
    model = make_model(total_ram_blocks=12, written_blocks=12,
                       utsname=make_utsname(sysname="Linux", nodename="synthetic", release="5.14.0-synthetic",
                                            version="#1 SMP", machine="x86_64"))  # fmt: skip
    write_kdump(path, model, DictMemory(sample_pages(), max_pfn=0x2000))
    with open_dump(path) as d:
        origin, evidence = identify_origin(d)
        assert origin == "kdumpling" and len(evidence) >= 2


@pytest.mark.parametrize(
    ("firmware", "dump_level", "tv_sec", "expected", "signal"),
    [
        # a QEMU verdict, said as "generated?" because the synthetic kernel shows (its utsname, its BIOS)
        (True, 1, 0, "qemu-style (generated?)", "pages dumped in [0xc0000000, 0x100000000)"),
        (False, 1, 0, "makedumpfile", "1st bitmap covers RAM only"),
        (True, 31, 0, "makedumpfile", "dump_level 31"),
        (True, 1, 1700000000, "makedumpfile", "timestamp 1700000000"),
    ],
    ids=["filled-in-by-a-fixer", "ram-only-like-makedumpfile", "refiltered", "stamped-by-makedumpfile"],
)
def test_qemu_notes_with_full_utsname(tmp_path, firmware, dump_level, tv_sec, expected, signal):
    """QEMU notes + a kernel utsname: QEMU's memory coverage (the PC firmware ROM below 4 GiB) keeps a fixed QEMU
    dump qemu; RAM-only coverage, refiltering or a time stamp make it makedumpfile. The evidence names the signal."""
    from kdfix.generate.synthetic import build_linux_image
    from kdfix.read.origin import identify_origin

    model, memory, _ = build_linux_image(memory_size=64 << 20, cpus=2, firmware=firmware)
    model = dataclasses.replace(model, dump_level=dump_level, tv_sec=tv_sec)
    path = tmp_path / "q.kdump"
    write_kdump(path, model, memory)
    with open_dump(path) as d:
        origin, evidence = identify_origin(d)
        assert origin == expected
        assert any(signal in e for e in evidence), evidence


def test_qemu_dump_repaired_in_place_stays_qemu(tmp_path):
    """kdfix fix --in-place appends the notes (with VMCOREINFO) after the page data and fills the utsname: that
    trail says 'repaired QEMU dump' even when the coverage is RAM only."""
    from kdfix.fix import fix_dump
    from kdfix.generate.synthetic import build_linux_image
    from kdfix.read.origin import identify_origin

    model, memory, _ = build_linux_image(memory_size=64 << 20, firmware=False, vmcoreinfo_in_notes=False)
    path = tmp_path / "r.kdump"
    write_kdump(path, model, memory)
    with open_dump(path) as d:
        assert identify_origin(d)[0] == "qemu"  # utsname zero and no firmware: nothing tells it from QEMU's
    fix_dump(path, in_place=True)
    with open_dump(path) as d:
        assert d.model.utsname.sysname.rstrip(b"\0") == b"Linux" and d.kdump.notes_offset > d.kdump.descriptors_end
        origin, evidence = identify_origin(d)
        assert origin == "qemu-style (generated?)"  # QEMU's, repaired; the filled utsname names the synthetic kernel
        assert any("past the page data" in e for e in evidence), evidence
        assert any("kdfix-synthetic" in e for e in evidence), evidence


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_parallel_verify_reports_the_same_bad_pages(tmp_path, monkeypatch, workers):
    """verify with N processes checks every page once and reports every bad page, in pfn order, as N=1 does."""
    import kdfix.read.dump as dump_module
    from kdfix.read.dump import verify_dump

    monkeypatch.setattr(dump_module, "_CHUNK_PAGES", 2)  # many small chunks on a small dump
    path = _write(tmp_path)
    with open_dump(path) as d:
        pfns = list(d.memory.dumped.iter_set())
        bad = [pfns[1], pfns[len(pfns) // 2], pfns[-1]]
        offsets = [d.kdump.descriptor(p).offset for p in bad]
        data = [d.kdump.descriptor(p) for p in bad]
    for desc, off in zip(data, offsets, strict=True):
        if desc.flags:  # corrupt compressed bytes; a raw page gets a wrong size in its descriptor instead
            _patch(path, off, b"\xff" * min(desc.size, 8))
    with open_dump(path) as d:
        for p in bad:
            if not d.kdump.descriptor(p).flags:
                _patch(path, d.kdump.descriptor_offset(p) + 8, (1).to_bytes(4, "little"))
    with open_dump(path) as d:
        assert d.kdump.num_dumped > 2 * dump_module._CHUNK_PAGES  # so N > 1 really uses processes
        serial = verify_dump(d, workers=1)
        parallel = verify_dump(d, workers=workers)
    assert [b["pfn"] for b in serial.bad_pages] == bad
    assert parallel.bad_pages == serial.bad_pages and parallel.pages_checked == serial.pages_checked == len(pfns)


def test_codecs_the_pages_use_when_the_status_names_none(tmp_path):
    """A header whose status names no codec over zlib pages: info names what the page flags say (issue 14.6)."""
    import json

    from kdfix.format.kdump import DISK_DUMP_HEADER
    from tests.reliability.conftest import run_kdfix

    pages = sample_pages()
    path = tmp_path / "status-none.kdump"
    write_kdump(path, make_model(), DictMemory(pages, max_pfn=0x2000), codec="zlib")
    with open_dump(path) as d:
        counts, seen = d.kdump.page_codecs()
        expected: dict[str, int] = {}
        for p in d.memory.dumped.iter_set():  # DumpFlag.COMPRESSED_ZLIB is bit 0 (kdump-format.md §5)
            name = "zlib" if d.kdump.descriptor(p).flags & 1 else "none"
            expected[name] = expected.get(name, 0) + 1
    assert counts == expected and seen == len(pages) and "zlib" in counts
    data = bytearray(path.read_bytes())
    layout = DISK_DUMP_HEADER.bind(LP64_LE)
    at = layout.offset_of("status")
    data[at : at + 4] = layout.pack_field("status", 0)
    path.write_bytes(data)
    run = run_kdfix("info", "--json", path)
    shape = json.loads(run.stdout)
    shape = shape[0] if isinstance(shape, list) else shape
    assert shape["compression"] == "none" and shape["page_codecs"] == counts
    assert f"zlib {counts['zlib']}" in run_kdfix("info", path).stdout
    plain = tmp_path / "plain.kdump"
    write_kdump(plain, make_model(), DictMemory(pages, max_pfn=0x2000), codec="zlib")
    shape = json.loads(run_kdfix("info", "--json", plain).stdout)
    assert (shape[0] if isinstance(shape, list) else shape)["page_codecs"] is None  # the header tells the truth
