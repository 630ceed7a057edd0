"""probe_abi finds each main-header ABI, also where two views are both sane (kdump-format.md §12)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.format.abi import probe_abi
from kdfix.format.kdump import DISK_DUMP_HEADER
from kdfix.format.layout import I386_BE, I386_LE, LP64_BE, LP64_LE

MAIN_ABIS = (LP64_LE, LP64_BE, I386_LE, I386_BE)


def _block0(abi, **fields) -> bytes:
    values = dict(signature=b"KDUMP   ", header_version=6, block_size=4096, sub_hdr_size=1, status=1) | fields
    return DISK_DUMP_HEADER.bind(abi).pack(DISK_DUMP_HEADER.make(**values)).ljust(4096, b"\0")


@pytest.mark.parametrize("abi", MAIN_ABIS, ids=lambda a: a.name)
@pytest.mark.parametrize("max_mapnr", [0x1000, 0x8000, 0x40000, 0x100000, 0x12345])
def test_probe_finds_the_written_abi(abi, max_mapnr):
    """A 32-bit max_mapnr that is a power of two in [4096, 262144] reads as a sane 64-bit block_size; still 32-bit."""
    bitmap_blocks = 2 * -(-max_mapnr // (8 * 4096))
    assert probe_abi(_block0(abi, max_mapnr=max_mapnr, bitmap_blocks=bitmap_blocks)) == abi


@pytest.mark.parametrize("abi", MAIN_ABIS, ids=lambda a: a.name)
@pytest.mark.parametrize("max_mapnr", [0x100, 0x1000, 0x40000])
def test_version_0_header_probes_back_whatever_the_other_byte_order_reads(abi, max_mapnr):
    """header_version 0 reads as 0 in both byte orders, and a zero timestamp fills the 64-bit padding: the other
    byte order's view can be sane too (block_size = a byte-swapped 32-bit max_mapnr); its impossible tv_usec or its
    sub_hdr_size of 0 gives it away."""
    bitmap_blocks = 2 * -(-max_mapnr // (8 * 4096))
    raw = _block0(abi, header_version=0, max_mapnr=max_mapnr, bitmap_blocks=bitmap_blocks, total_ram_blocks=1,
                  device_blocks=1, written_blocks=1)  # fmt: skip
    assert probe_abi(raw) == abi


@pytest.mark.parametrize("tv_usec", [256, 512, 1024, 4096, 8192, 65536, 262144])
def test_64bit_header_with_hazardous_tv_usec_still_probes_64bit(tv_usec):
    """kdump-format.md §12: these tv_usec values make libkdumpfile pick a 32-bit view; kdfix must not."""
    raw = _block0(
        LP64_LE,
        max_mapnr=0x100000,
        bitmap_blocks=64,
        timestamp=DISK_DUMP_HEADER.fields[3].ctype.make(tv_sec=1700000000, tv_usec=tv_usec),
    )
    assert probe_abi(raw) == LP64_LE


@given(st.binary(min_size=0, max_size=600))
def test_probe_never_raises_on_foreign_bytes(data):
    assert probe_abi(b"KDUMP   " + data) in (None, *MAIN_ABIS)
    assert probe_abi(data) in (None, *MAIN_ABIS)
