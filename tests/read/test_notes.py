"""Typed note views: elf_prstatus (x86_64 336 B, i386 144 B), QEMUCPUState (440/432 B), decode_note."""

from __future__ import annotations

import struct

import pytest

from kdfix import open_dump
from kdfix.errors import FormatError
from kdfix.format.constants import NOTE_NAME_CORE, NOTE_NAME_QEMU, NOTE_NAME_VMCOREINFO, NoteType
from kdfix.format.layout import LP64_BE, LP64_LE
from kdfix.notes.framing import Note
from kdfix.notes.prstatus import parse_prstatus, prstatus_registers
from kdfix.notes.qemu_cpu import decode_note, parse_qemu_cpu_state
from kdfix.notes.vmcoreinfo import VmcoreInfo


def x86_64_prstatus(pid: int, rip: int, rsp: int, order: str = "<") -> bytes:
    desc = bytearray(336)
    struct.pack_into(order + "i", desc, 32, pid)
    struct.pack_into(order + "Q", desc, 240, rip)  # notes-and-vmcoreinfo.md §2 offsets
    struct.pack_into(order + "Q", desc, 264, rsp)
    struct.pack_into(order + "Q", desc, 112, 0x1515)  # r15
    return bytes(desc)


def qemu_state(size: int) -> bytes:
    desc = bytearray(size)
    struct.pack_into("<II", desc, 0, 1, size)
    struct.pack_into("<Q", desc, 136, 0xFFFFFFFF81000000)  # rip
    struct.pack_into("<Q", desc, 264, 0xFFFF8B7F47A00000)  # gs.base
    struct.pack_into("<I", desc, 348, 0x7F)  # gdt.limit
    struct.pack_into("<Q", desc, 392, 0x80050033)  # cr0
    struct.pack_into("<Q", desc, 416, 0x2308000)  # cr3
    if size == 440:
        struct.pack_into("<Q", desc, 432, 0xABC)
    return bytes(desc)


@pytest.mark.parametrize("abi", [LP64_LE, LP64_BE], ids=lambda a: a.name)
def test_prstatus_x86_64_offsets(abi):
    rec = parse_prstatus(x86_64_prstatus(42, 0xFFFFFFFF81234567, 0x7FFE0000, abi.byte_order), abi)
    assert rec.pr_pid == 42 and rec.pr_reg.rip == 0xFFFFFFFF81234567 and rec.pr_reg.rsp == 0x7FFE0000
    regs = prstatus_registers(rec)
    assert list(regs)[:2] == ["r15", "r14"] and regs["r15"] == 0x1515 and len(regs) == 27


def test_prstatus_i386_offsets():
    desc = bytearray(144)
    struct.pack_into("<i", desc, 24, 3)
    struct.pack_into("<I", desc, 120, 0xFFF0)  # eip
    struct.pack_into("<I", desc, 124, 0xF000)  # cs
    rec = parse_prstatus(bytes(desc), LP64_LE)
    assert rec.pr_pid == 3 and rec.pr_reg.eip == 0xFFF0 and rec.pr_reg.cs == 0xF000


def test_prstatus_bad_size():
    with pytest.raises(FormatError):
        parse_prstatus(bytes(200), LP64_LE)


@pytest.mark.parametrize("size", [440, 432])
def test_qemu_cpu_state_by_size_field(size):
    rec = parse_qemu_cpu_state(qemu_state(size), LP64_LE)
    assert rec.size == size and rec.rip == 0xFFFFFFFF81000000 and rec.cr0 == 0x80050033 and rec.cr3 == 0x2308000
    assert rec.gs.base == 0xFFFF8B7F47A00000 and rec.gdt.limit == 0x7F
    assert rec.kernel_gs_base == (0xABC if size == 440 else 0)


def test_qemu_cpu_state_bad_size_field():
    desc = bytearray(qemu_state(440))
    struct.pack_into("<I", desc, 4, 999)
    with pytest.raises(FormatError):
        parse_qemu_cpu_state(bytes(desc), LP64_LE)
    with pytest.raises(FormatError):
        parse_qemu_cpu_state(qemu_state(440)[:300], LP64_LE)


def test_decode_note_dispatch():
    core = Note(NOTE_NAME_CORE, NoteType.NT_PRSTATUS, x86_64_prstatus(1, 5, 6))
    assert decode_note(core, LP64_LE).pr_reg.rip == 5
    assert decode_note(Note(NOTE_NAME_QEMU, 0, qemu_state(440)), LP64_LE).cr3 == 0x2308000
    vmci = decode_note(Note(NOTE_NAME_VMCOREINFO, 0, b"OSRELEASE=6.1\n"), LP64_LE)
    assert isinstance(vmci, VmcoreInfo) and vmci.osrelease == "6.1"
    assert decode_note(Note(b"LINUX", 0x700, b"x" * 8), LP64_LE) is None
    assert decode_note(Note(NOTE_NAME_CORE, NoteType.NT_PRSTATUS, bytes(10)), LP64_LE) is None


def test_linux_guest_notes(guest_seabios_kaslr):
    """Real x86_64 notes of a Linux guest: 336-byte prstatus with pids 1..n, QEMU states with CR3 and IDT."""
    with open_dump(guest_seabios_kaslr.kdump_zlib) as d:
        cores = [decode_note(n, d.abi) for n in d.notes if n.name == NOTE_NAME_CORE]
        qemus = [decode_note(n, d.abi) for n in d.notes if n.name == NOTE_NAME_QEMU]
        assert [c.pr_pid for c in cores] == [1, 2] and all(hasattr(c.pr_reg, "rip") for c in cores)
        assert all(q.size == 440 and q.cr0 >> 31 & 1 for q in qemus)  # paging on
        assert cores[0].pr_reg.rip == qemus[0].rip and cores[0].pr_reg.rsp == qemus[0].rsp
        assert qemus[0].idt.base >> 48 == 0xFFFF
