"""open_dump's recognition: flattened ELF cores, Xen xc_core refused by name, the pointer size of an ELF core."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from kdfix import open_dump
from kdfix.errors import UnsupportedError
from kdfix.format.constants import EM_386, EM_AARCH64, EM_X86_64, XC_CORE_MAGICS
from kdfix.format.elf import ELF_EHDR, ELFCLASS32, ELFCLASS64, ET_CORE, e_ident
from kdfix.format.layout import I386_LE, LP64_LE
from kdfix.model import DumpModel
from kdfix.read.dump import verify_dump
from kdfix.read.elf import pointer_size
from kdfix.read.memory import DictMemory
from kdfix.write import write_elf
from kdfix.write.sink import FlattenedSink
from tests.read.conftest import sample_pages
from tests.reliability.conftest import run_kdfix


def test_flattened_elf_reads_like_its_elf(tmp_path: Path) -> None:
    memory = DictMemory(sample_pages(), max_pfn=0x2000)
    plain, flat = tmp_path / "plain.elf", tmp_path / "flat.elf"
    write_elf(plain, DumpModel(), memory)
    with FlattenedSink(flat) as sink:
        write_elf(sink, DumpModel(), memory)
    assert flat.read_bytes()[:12] == b"makedumpfile"
    with open_dump(flat) as d, open_dump(plain) as e:
        assert d.container == "elf" and d.elf is not None
        assert any("flattened stream of an ELF core" in p for p in d.problems)
        assert [s.paddr for s in d.elf.segments] == [s.paddr for s in e.elf.segments]  # type: ignore[union-attr]
        assert dict(d.memory.iter_pages()) == dict(e.memory.iter_pages()) == sample_pages()
        assert verify_dump(d).ok


def _xen_elf(section: bytes) -> bytes:
    """An ELF64 core with a section string table and one section named ``section`` (xc_core's ELF form)."""
    ehdr = ELF_EHDR.bind(LP64_LE)
    names = b"\0.shstrtab\0" + section + b"\0"
    shoff = ehdr.size + len(names)
    shdr = struct.Struct("<IIQQQQIIQQ")
    sections = [
        shdr.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        shdr.pack(1, 3, 0, 0, ehdr.size, len(names), 0, 0, 1, 0),  # SHT_STRTAB
        shdr.pack(11, 7, 0, 0, ehdr.size, 0, 0, 0, 4, 0),  # SHT_NOTE
    ]
    header = ehdr.pack(
        ELF_EHDR.make(
            e_ident=e_ident(LP64_LE), e_type=ET_CORE, e_machine=EM_X86_64, e_version=1, e_shoff=shoff,
            e_ehsize=ehdr.size, e_phentsize=56, e_shentsize=shdr.size, e_shnum=3, e_shstrndx=1,
        )
    )  # fmt: skip
    return header + names + b"".join(sections)


@pytest.mark.parametrize("section", [b".note.Xen", b".xen_pages"])
def test_xen_xc_core_elf_is_refused_by_name(tmp_path: Path, section: bytes) -> None:
    path = tmp_path / "xc.core"
    path.write_bytes(_xen_elf(section))
    with pytest.raises(UnsupportedError, match="Xen xc_core dump: not supported"):
        open_dump(path)
    run = run_kdfix("verify", path)
    assert run.code == 2 and "Xen xc_core dump: not supported" in run.stderr and "Traceback" not in run.stderr


def test_an_elf_with_other_sections_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "plain.core"
    path.write_bytes(_xen_elf(b".note.other"))
    with open_dump(path) as d:
        assert d.container == "elf"


@pytest.mark.parametrize("magic", XC_CORE_MAGICS)
def test_legacy_xc_core_header_is_refused_by_name(tmp_path: Path, magic: int) -> None:
    path = tmp_path / "xc.core"
    path.write_bytes(struct.pack("<6I", magic, 1, 16, 24, 4096, 8192).ljust(8192, b"\0"))
    with pytest.raises(UnsupportedError, match="Xen xc_core dump: not supported"):
        open_dump(path)


@pytest.mark.parametrize(
    ("ei_class", "e_machine", "size"),
    [(ELFCLASS64, EM_386, 4), (ELFCLASS64, EM_X86_64, 8), (ELFCLASS32, EM_386, 4), (ELFCLASS64, EM_AARCH64, 8),
     (ELFCLASS64, 0xFFFF, 8), (ELFCLASS32, 0xFFFF, 4)],
)  # fmt: skip
def test_pointer_size_follows_the_machine_not_the_class(ei_class: int, e_machine: int, size: int) -> None:
    assert pointer_size(ei_class, e_machine) == size


def test_elf64_em386_core_reports_32_bit_pointers(tmp_path: Path) -> None:
    """QEMU's ELF of an x86 guest in real mode: ELF64 class, EM_386 (tools-and-oracles.md §5)."""
    path = tmp_path / "em386.elf"
    write_elf(path, DumpModel(e_machine=EM_386), DictMemory(sample_pages(), max_pfn=0x2000))
    with open_dump(path) as d:
        assert d.elf is not None and d.elf.ei_class == ELFCLASS64 and d.elf.pointer_size == I386_LE.word_size
    run = run_kdfix("info", path)
    assert "32-bit pointers" in run.stdout
