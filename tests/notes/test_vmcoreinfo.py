"""VMCOREINFO text (notes-and-vmcoreinfo.md §4): KEY=VALUE lines, first key wins, kernel number formats."""

from __future__ import annotations

import pytest

from kdfix.notes.vmcoreinfo import VmcoreInfo, parse_hex, parse_number, qemu_misparse

TEXT = (
    b"OSRELEASE=6.1.0-56-cloud-amd64\n"
    b"PAGESIZE=4096\n"
    b"SYMBOL(init_uts_ns)=ffffffffb81f9b60\n"
    b"OFFSET(uts_namespace.name)=0\n"
    b"NUMBER(phys_base)=-1694498816\n"
    b"NUMBER(VMALLOC_START)=0xffffa2c000000000\n"
    b"KERNELOFFSET=35600000\n"
    b"PAGESIZE=65536\n"
)


def test_keys_follow_the_kernel_formats():
    info = VmcoreInfo.parse(TEXT)
    assert info.osrelease == "6.1.0-56-cloud-amd64"
    assert info.page_size == 4096  # the first PAGESIZE wins, as in crash
    assert info.symbol("init_uts_ns") == 0xFFFFFFFFB81F9B60  # hex without 0x
    assert info.offset("uts_namespace.name") == 0
    assert info.number("phys_base") == -1694498816  # signed decimal
    assert info.phys_base == (-1694498816) % 2**64  # as the u64 the header stores
    assert info.number("VMALLOC_START") == 0xFFFFA2C000000000  # the 0x exception
    assert info.kernel_offset == 0x35600000


def test_text_ends_at_a_nul_and_odd_lines_are_skipped():
    info = VmcoreInfo.parse(b"A=1\nno equals sign\n=empty key\nB=2\n\0C=3\n")
    assert info.as_dict() == {"A": "1", "B": "2"}


@pytest.mark.parametrize(
    ("text", "value"),
    [("12", 12), ("-12", -12), ("+0x10", 16), ("-0x10", -16), (" 7 ", 7), ("x", None), (None, None), ("", None)],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_parse_hex():
    assert parse_hex("ffffffff81000000") == 0xFFFFFFFF81000000
    assert parse_hex("0x10") == 16
    assert parse_hex("zz") is None


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        # qemu-dumps.md §6 bug 1: QEMU reads the kernel's decimal as hex.
        ("16777216", 0x16777216),
        ("-1694498816", (-0x1694498816) % 2**64),
        ("0x1000000", 0x1000000),
        ("12abc", 0x12ABC),
        ("12 ", None),  # trailing characters: QEMU keeps 0
        ("ffffffffffffffffff", None),  # overflow
    ],
)
def test_qemu_misparse(text, stored):
    assert qemu_misparse(text) == stored
