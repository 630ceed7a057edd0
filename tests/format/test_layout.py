"""Golden offsets from kdump-format.md §3-§6 and notes-and-vmcoreinfo.md §2-§3, and layout round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.format.kdump import DISK_DUMP_HEADER, KDUMP_SUB_HEADER, PAGE_DESC
from kdfix.format.layout import ALL_ABIS, ARM32_LE, I386_LE, LP64_BE, LP64_LE
from kdfix.format.notes import ELF_PRSTATUS_I386, ELF_PRSTATUS_X86_64, QEMU_CPU_STATE

MAIN_64 = {
    "signature": 0,
    "header_version": 8,
    "utsname.sysname": 12,
    "utsname.nodename": 77,
    "utsname.release": 142,
    "utsname.version": 207,
    "utsname.machine": 272,
    "utsname.domainname": 337,
    "timestamp.tv_sec": 408,
    "timestamp.tv_usec": 416,
    "status": 424,
    "block_size": 428,
    "sub_hdr_size": 432,
    "bitmap_blocks": 436,
    "max_mapnr": 440,
    "total_ram_blocks": 444,
    "device_blocks": 448,
    "written_blocks": 452,
    "current_cpu": 456,
    "nr_cpus": 460,
}
MAIN_32 = MAIN_64 | {
    "timestamp.tv_sec": 404,
    "timestamp.tv_usec": 408,
    "status": 412,
    "block_size": 416,
    "sub_hdr_size": 420,
    "bitmap_blocks": 424,
    "max_mapnr": 428,
    "total_ram_blocks": 432,
    "device_blocks": 436,
    "written_blocks": 440,
    "current_cpu": 444,
    "nr_cpus": 448,
}
SUB_FIELDS = [
    "phys_base",
    "dump_level",
    "split",
    "start_pfn",
    "end_pfn",
    "offset_vmcoreinfo",
    "size_vmcoreinfo",
    "offset_note",
    "size_note",
    "offset_eraseinfo",
    "size_eraseinfo",
    "start_pfn_64",
    "end_pfn_64",
    "max_mapnr_64",
]
SUB = {
    LP64_LE: (0, 8, 12, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96),
    I386_LE: (0, 4, 8, 12, 16, 20, 28, 32, 40, 44, 52, 56, 64, 72),
    ARM32_LE: (0, 4, 8, 12, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88),
}
SUB_SIZE = {LP64_LE: 104, I386_LE: 80, ARM32_LE: 96}
SUB_END_BY_VERSION = {
    LP64_LE: (8, 12, 32, 48, 64, 80, 104),
    I386_LE: (4, 8, 20, 32, 44, 56, 80),
    ARM32_LE: (4, 8, 20, 36, 52, 68, 96),
}


@pytest.mark.parametrize(
    "abi,expected,size",
    [(LP64_LE, MAIN_64, 464), (I386_LE, MAIN_32, 452), (ARM32_LE, MAIN_32, 452)],
    ids=lambda v: getattr(v, "name", None),
)
def test_main_header_offsets_match_reference(abi, expected, size):
    bound = DISK_DUMP_HEADER.bind(abi)
    assert {p: bound.offset_of(p) for p in expected} == expected
    assert bound.size == size


@pytest.mark.parametrize("abi", [LP64_LE, I386_LE, ARM32_LE], ids=lambda a: a.name)
def test_sub_header_offsets_match_reference(abi):
    bound = KDUMP_SUB_HEADER.bind(abi)
    assert tuple(bound.offset_of(f) for f in SUB_FIELDS) == SUB[abi]
    assert bound.size == SUB_SIZE[abi]
    assert tuple(KDUMP_SUB_HEADER.bind(abi, v).size for v in range(7)) == SUB_END_BY_VERSION[abi]


@pytest.mark.parametrize("abi", ALL_ABIS, ids=lambda a: a.name)
def test_page_desc_is_24_bytes_everywhere(abi):
    bound = PAGE_DESC.bind(abi)
    assert bound.size == 24
    assert [bound.offset_of(f) for f in ("offset", "size", "flags", "page_flags")] == [0, 8, 12, 16]


@pytest.mark.parametrize("abi", ALL_ABIS, ids=lambda a: a.name)
@pytest.mark.parametrize("layout", [PAGE_DESC, DISK_DUMP_HEADER], ids=lambda lay: lay.name)
def test_numpy_dtype_reads_a_table_as_unpack_does(abi, layout):
    """A table read through ``numpy_dtype`` gives each leaf the value ``unpack`` gives (arrays, chars, signs)."""
    import numpy as np

    bound = layout.bind(abi)
    rows = [bytes((i * 37 + j * 11 + 200) & 0xFF for j in range(bound.size)) for i in range(3)]
    table = np.frombuffer(b"".join(rows), dtype=bound.numpy_dtype())
    assert table.dtype.itemsize == bound.size
    for row, record in zip(rows, table, strict=True):
        values = iter(bound.unpack_values(row))
        for slot in bound.slots:
            got = record[slot.path]
            if slot.kind == "array":
                assert tuple(int(v) for v in got) == tuple(next(values) for _ in range(slot.count))
            elif slot.kind == "bytes":
                assert got == next(values).rstrip(b"\0")  # numpy's S type drops trailing NULs
            else:
                assert int(got) == next(values)


def test_note_payload_offsets_match_reference():
    pr64 = ELF_PRSTATUS_X86_64.bind(LP64_LE)
    assert pr64.size == 336
    assert pr64.offset_of("pr_pid") == 32
    assert pr64.offset_of("pr_reg.r15") == 112
    assert pr64.offset_of("pr_reg.rip") == 240
    assert pr64.offset_of("pr_reg.gs") == 320
    assert pr64.offset_of("pr_fpvalid") == 328
    pr32 = ELF_PRSTATUS_I386.bind(I386_LE)
    assert (pr32.size, pr32.offset_of("pr_pid"), pr32.offset_of("pr_reg.eip")) == (144, 24, 120)
    q = QEMU_CPU_STATE.bind(LP64_LE)
    assert q.size == 440 and QEMU_CPU_STATE.bind(LP64_LE, 0).size == 432
    got = {
        p: q.offset_of(p)
        for p in (
            "rip",
            "cs",
            "gs.base",
            "tr.base",
            "gdt.limit",
            "gdt.base",
            "idt.limit",
            "idt.base",
            "cr0",
            "cr3",
            "cr4",
            "kernel_gs_base",
        )
    }
    assert got == {
        "rip": 136,
        "cs": 152,
        "gs.base": 264,
        "tr.base": 336,
        "gdt.limit": 348,
        "gdt.base": 360,
        "idt.limit": 372,
        "idt.base": 384,
        "cr0": 392,
        "cr3": 416,
        "cr4": 424,
        "kernel_gs_base": 432,
    }


@given(st.sampled_from(ALL_ABIS), st.integers(0, 6), st.data())
def test_sub_header_pack_unpack_round_trip(abi, version, data):
    bound = KDUMP_SUB_HEADER.bind(abi, version)
    word = (1 << (8 * abi.word_size)) - 1
    values = {}
    for f in KDUMP_SUB_HEADER.fields:
        if f.since > version:
            continue
        size = bound.size_of(f.name)
        signed = f.ctype in ("int", "off_t", "long")
        bits = 8 * size
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        values[f.name] = data.draw(st.integers(lo, min(hi, word) if not signed else hi))
    record = KDUMP_SUB_HEADER.make(**values)
    raw = bound.pack(record)
    assert len(raw) == bound.size
    assert bound.unpack(raw) == record
    assert bound.pack(bound.unpack(raw)) == raw


def test_big_endian_bytes_are_swapped():
    le = KDUMP_SUB_HEADER.bind(LP64_LE).pack(KDUMP_SUB_HEADER.make(phys_base=0x0102030405060708))
    be = KDUMP_SUB_HEADER.bind(LP64_BE).pack(KDUMP_SUB_HEADER.make(phys_base=0x0102030405060708))
    assert le[:8] == bytes(range(8, 0, -1)) and be[:8] == bytes(range(1, 9))
