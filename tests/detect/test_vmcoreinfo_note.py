"""Method A and QEMU's hex-misparse of NUMBER(phys_base) (qemu-dumps.md §6)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.detect.vmcoreinfo_note import (
    find_by_vmcoreinfo_note,
    header_evidence,
    qemu_misparse,
    unmisparse_qemu_phys_base,
)
from kdfix.generate.synthetic import build_linux_image
from kdfix.model import DumpModel
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.memory import DictMemory
from kdfix.units import to_s64, to_u64

MiB = 1 << 20
# The two measured samples of qemu-dumps.md §6: guest text, true phys_base, QEMU header.
SAMPLES = [
    ("-840957952", 0xFFFFFFFFCDE00000, 0xFFFFFFF7BF6A86AE),
    ("-710934528", 0xFFFFFFFFD5A00000, 0xFFFFFFF8EF6CBAD8),
]


@pytest.mark.parametrize(("text", "true", "header"), SAMPLES)
def test_misparse_samples(text, true, header):
    assert to_u64(int(text)) == true
    assert qemu_misparse(text) == header
    assert unmisparse_qemu_phys_base(header) == int(text)
    info = VmcoreInfo.parse(f"NUMBER(phys_base)={text}\n".encode())
    assert "QEMU's hex misparse" in header_evidence(header, info)
    assert "matches" in header_evidence(true, info)


def test_unmisparse_refuses_values_with_hex_letters_and_zero():
    assert unmisparse_qemu_phys_base(0xFFFFFFFFD5A00000) is None  # |value| = 0x2a600000 has a hex letter
    assert unmisparse_qemu_phys_base(0) is None
    assert unmisparse_qemu_phys_base(0x6291456) == 6291456


@given(st.integers(-(1 << 40), 1 << 40).filter(lambda v: v != 0))
def test_misparse_roundtrip(value):
    """For any kernel value, un-misparsing QEMU's header gives the kernel value back."""
    assert unmisparse_qemu_phys_base(qemu_misparse(str(value))) == value


@pytest.mark.parametrize("header_bug", [False, True])
def test_note_candidate_reports_values_and_header_state(header_bug):
    model, memory, truth = build_linux_image(
        memory_size=128 * MiB, phys_base=-0x32200000, kaslr_offset=0x35600000, qemu_header_bug=header_bug
    )
    log: list[str] = []
    cand = find_by_vmcoreinfo_note(model, memory, log=log)
    assert cand is not None and not log
    assert (cand.phys_base, cand.kernel_offset) == (truth.phys_base, truth.kaslr_offset)
    assert cand.vmcoreinfo == truth.vmcoreinfo
    text = " | ".join(cand.evidence)
    assert ("QEMU's hex misparse" in text) == header_bug
    assert "default link address" in text


def test_note_only_and_mismatch_and_missing():
    model, memory, _ = build_linux_image(memory_size=64 * MiB)
    note_only = dataclasses.replace(model, vmcoreinfo=None)
    cand = find_by_vmcoreinfo_note(note_only, memory)
    assert cand is not None and "from note" in cand.evidence[0]
    mismatch = dataclasses.replace(model, vmcoreinfo=model.vmcoreinfo + b"EXTRA=1\n")
    cand = find_by_vmcoreinfo_note(mismatch, memory)
    assert cand is not None and "differs" in cand.evidence[0]
    log: list[str] = []
    assert find_by_vmcoreinfo_note(DumpModel(), DictMemory({}), log=log) is None
    assert "no VMCOREINFO" in log[0]
    old = DumpModel(vmcoreinfo=b"OSRELEASE=4.9.0\nSYMBOL(phys_base)=ffffffff81e0f010\n")
    log.clear()
    assert find_by_vmcoreinfo_note(old, DictMemory({}), log=log) is None
    assert "NUMBER(phys_base)" in log[0]


def test_signed_decimal_parse():
    model = DumpModel(vmcoreinfo=b"NUMBER(phys_base)=-16777216\nKERNELOFFSET=1e00000\n")
    cand = find_by_vmcoreinfo_note(model, DictMemory({}))
    assert cand is not None and to_s64(cand.phys_base) == -16 * MiB and cand.kernel_offset == 0x1E00000
