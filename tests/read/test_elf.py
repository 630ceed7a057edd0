"""ElfContainer: writer-made and hand-built ELF cores; partial pages, memsz tails, notes, the incomplete flag."""

from __future__ import annotations

import struct

import pytest

from kdfix import open_dump
from kdfix.errors import AddressError, KdfixError
from kdfix.format.constants import EM_386, EM_X86_64, NOTE_NAME_CORE, NOTE_NAME_VMCOREINFO, NoteType
from kdfix.format.layout import I386_LE, LP64_BE, LP64_LE
from kdfix.model import DumpModel
from kdfix.notes.framing import Note, pack_notes
from kdfix.read.memory import DictMemory
from kdfix.write import write_elf
from tests.read.conftest import sample_pages

VMCOREINFO = b"OSRELEASE=6.1.0\nPAGESIZE=4096\nNUMBER(phys_base)=-710934528\n"


def prstatus_note(pid: int, size: int = 336) -> Note:
    desc = bytearray(size)
    struct.pack_into("<i", desc, 32 if size == 336 else 24, pid)
    return Note(NOTE_NAME_CORE, NoteType.NT_PRSTATUS, bytes(desc))


def build_elf64(segments: list[tuple[int, bytes, int]], notes: list[Note], *, e_flags: int = 0) -> bytes:
    """Hand-built ELF64 LE core: (paddr, file data, memsz) per PT_LOAD; phdrs right after the ehdr."""
    blob = pack_notes(notes, LP64_LE)
    phnum = 1 + len(segments)
    offset = 64 + 56 * phnum
    phdrs = [struct.pack("<IIQQQQQQ", 4, 0, offset, 0, 0, len(blob), len(blob), 0)]
    data = bytearray(blob)
    pos = offset + len(blob)
    for paddr, filedata, memsz in segments:
        phdrs.append(struct.pack("<IIQQQQQQ", 1, 7, pos, paddr, paddr, len(filedata), memsz, 0))
        data += filedata
        pos += len(filedata)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 4, EM_X86_64, 1, 0, 64, 0, e_flags, 64, 56, phnum, 64, 0, 0)
    return ehdr + b"".join(phdrs) + bytes(data)


@pytest.mark.parametrize("abi", [LP64_LE, LP64_BE, I386_LE], ids=lambda a: a.name)
def test_writer_elf_roundtrip(tmp_path, abi):
    pages = sample_pages()
    notes = (prstatus_note(7, 336 if abi.is_64bit else 144), Note(NOTE_NAME_VMCOREINFO, 0, VMCOREINFO))
    if abi.byte_order == ">":
        notes = (Note(NOTE_NAME_VMCOREINFO, 0, VMCOREINFO),)
    model = DumpModel(abi=abi, notes=notes, e_machine=EM_X86_64 if abi.is_64bit else EM_386)
    path = tmp_path / "d.elf"
    write_elf(path, model, DictMemory(pages, max_pfn=0x2000))
    with open_dump(path) as d:
        assert d.container == "elf" and d.signature is None and d.main_header is None
        assert d.elf.phdrs_follow_ehdr and not d.elf.incomplete
        assert d.elf.ei_class == (2 if abi.is_64bit else 1)
        assert dict(d.memory.iter_pages()) == pages
        assert d.notes == notes
        assert d.model.nr_cpus == sum(1 for n in notes if n.type == NoteType.NT_PRSTATUS)
        assert d.vmcoreinfo.osrelease == "6.1.0"
        assert d.model.phys_base == (-710934528) & (2**64 - 1)
        assert d.compression == "none" and d.header_version is None
        with pytest.raises(AddressError):
            d.memory.page(3)


def test_partial_pages_and_memsz_tail(tmp_path):
    """A page partly covered by segments is zero-filled; bytes past p_filesz up to p_memsz read as zero."""
    a = bytes(range(256)) * 8  # 2048 bytes: first half of page 0
    b = b"\x11" * 1024  # inside page 0, at 3072
    c = b"\x22" * 4096  # page 2, memsz 3 pages: pages 3 and 4 are zero
    raw = build_elf64([(0, a, len(a)), (3072, b, len(b)), (0x2000, c, 0x3000)], [prstatus_note(1)])
    path = tmp_path / "p.elf"
    path.write_bytes(raw)
    with open_dump(path) as d:
        mem = d.memory
        assert mem.page(0) == a + bytes(1024) + b
        assert not mem.present(1)
        assert mem.page(2) == c and mem.page(3) == bytes(4096) and mem.page(4) == bytes(4096)
        assert [pfn for pfn, _ in mem.iter_pages()] == [0, 2, 3, 4]
        assert mem.read(0x2FF0, 0x20) == b"\x22" * 16 + bytes(16)
        assert d.model.nr_cpus == 1 and d.elf.e_machine == EM_X86_64


def test_incomplete_flag_and_truncation(tmp_path):
    c = bytes(range(256)) * 16 * 4  # 4 pages at paddr 0
    raw = build_elf64([(0, c, len(c))], [prstatus_note(1)], e_flags=1)
    path = tmp_path / "i.elf"
    path.write_bytes(raw[: len(raw) - 4096 - 100])  # cut inside page 2
    with open_dump(path) as d:
        assert d.elf.incomplete and "incomplete" in d.status_flags
        assert any("INCOMPLETE" in p for p in d.problems) and any("truncated" in p for p in d.problems)
        assert d.memory.page(0) == c[:4096] and d.memory.page(1) == c[4096:8192]
        with pytest.raises(KdfixError):
            d.memory.page(2)
        with pytest.raises(KdfixError):
            list(d.memory.iter_pages())


def test_qemu_72_elf_layout(firmware_elf):
    """QEMU >= 7.2: section headers at 64, phdrs at 192, e_ehsize 8 (qemu-dumps.md §6.3)."""
    with open_dump(firmware_elf) as d:
        e = d.elf
        assert e.e_ehsize == 8 and e.e_phoff == 192 and not e.phdrs_follow_ehdr
        assert e.notes_offset > 192 and e.notes_size == 2 * 624
        assert [s.paddr for s in e.segments] == sorted(s.paddr for s in e.segments)
        assert e.segments[-1].paddr + e.segments[-1].memsz == 1 << 32
