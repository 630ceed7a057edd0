"""The file-layout plan (kdump-format.md §1): formulas, the measured worked example, and its inverse."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from kdfix.format.file_layout import FileLayout, one_bitmap_len, plan_file
from kdfix.format.kdump import DISK_DUMP_HEADER
from kdfix.format.layout import ALL_ABIS, ARM32_LE, I386_LE, LP64_LE

# kdump-format.md §1 "Formulas": sizeof(kdump_sub_header) per ABI at version 6, and offset_note = bs + that.
SUB_HEADER_SIZE = {LP64_LE: 104, I386_LE: 80, ARM32_LE: 96}


def test_qemu_10_worked_example():
    """kdump-format.md §1: QEMU 10.0.2, 128 MiB x86_64 guest, note_size 4920."""
    lay = plan_file(LP64_LE, 6, 4096, 0x100000, after_sub_header=4920)
    assert (lay.sub_hdr_size, lay.bitmap_len, lay.bitmap_blocks) == (2, 131072, 64)
    assert (lay.bitmap1_offset, lay.bitmap2_offset, lay.data_offset) == (12288, 143360, 274432)
    assert lay.offset_note == 4200
    assert lay.desc_offset(3) == 274432 + 3 * 24


def test_offset_note_follows_the_sub_header_and_only_from_version_4():
    for abi, size in SUB_HEADER_SIZE.items():
        assert plan_file(abi, 6, 4096, 1, after_sub_header=0).offset_note == 4096 + size
    assert plan_file(LP64_LE, 3, 4096, 1, after_sub_header=0).offset_note == 0


@given(
    abi=st.sampled_from(ALL_ABIS),
    version=st.integers(0, 6),
    block_shift=st.integers(12, 16),
    max_mapnr=st.integers(0, 1 << 26),
    after=st.integers(0, 1 << 16),
)
def test_plan_matches_the_formulas_and_reads_back_from_its_header(abi, version, block_shift, max_mapnr, after):
    bs = 1 << block_shift
    lay = plan_file(abi, version, bs, max_mapnr, after_sub_header=after)
    sub_size = lay.sub_header.size
    assert lay.sub_hdr_size == -(-(sub_size + after) // bs) >= 1
    assert lay.bitmap_len == -(-max_mapnr // (8 * bs)) * bs == one_bitmap_len(max_mapnr, bs)
    assert lay.bitmap_blocks == 2 * lay.bitmap_len // bs  # counts both bitmaps
    assert lay.data_offset == (1 + lay.sub_hdr_size + lay.bitmap_blocks) * bs
    header = DISK_DUMP_HEADER.make(
        header_version=version, block_size=bs, sub_hdr_size=lay.sub_hdr_size,
        bitmap_blocks=lay.bitmap_blocks, max_mapnr=max_mapnr,
    )  # fmt: skip
    assert FileLayout.from_header(abi, header) == lay
    assert not lay.counts_one_bitmap()


def test_a_header_counting_one_bitmap_is_recognised():
    """tools-and-oracles.md §6: kdumpling's bitmap_blocks counts one bitmap."""
    lay = plan_file(LP64_LE, 6, 4096, 0x8000, after_sub_header=0)
    one = dataclasses.replace(lay, bitmap_blocks=lay.bitmap_blocks // 2)
    assert one.counts_one_bitmap()
