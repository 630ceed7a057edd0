"""ELF core-file structures for writing vmcores: Elf32/Elf64 Ehdr and Phdr (/proc/vmcore layout).

Addresses and offsets are ``ulong`` so one declaration serves Elf64 (LP64 ABIs) and Elf32 (ILP32
ABIs); only the program header orders its members differently per class.
"""

from __future__ import annotations

from kdfix.format.layout import I386_BE, I386_LE, LP64_BE, LP64_LE, Abi, BoundLayout, Field, Layout

ELF_MAGIC = b"\x7fELF"
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFDATA2MSB = 2
EV_CURRENT = 1
ET_CORE = 4
PT_LOAD = 1
PT_NOTE = 4
PF_X = 1
PF_W = 2
PF_R = 4
PN_XNUM = 0xFFFF

ELF_EHDR = Layout(
    "elf_ehdr",
    [
        Field("e_ident", "char[16]"),
        Field("e_type", "u16"),
        Field("e_machine", "u16"),
        Field("e_version", "u32"),
        Field("e_entry", "ulong"),
        Field("e_phoff", "ulong"),
        Field("e_shoff", "ulong"),
        Field("e_flags", "u32"),
        Field("e_ehsize", "u16"),
        Field("e_phentsize", "u16"),
        Field("e_phnum", "u16"),
        Field("e_shentsize", "u16"),
        Field("e_shnum", "u16"),
        Field("e_shstrndx", "u16"),
    ],
)

ELF64_PHDR = Layout(
    "elf64_phdr",
    [
        Field("p_type", "u32"),
        Field("p_flags", "u32"),
        Field("p_offset", "u64"),
        Field("p_vaddr", "u64"),
        Field("p_paddr", "u64"),
        Field("p_filesz", "u64"),
        Field("p_memsz", "u64"),
        Field("p_align", "u64"),
    ],
)

ELF32_PHDR = Layout(
    "elf32_phdr",
    [
        Field("p_type", "u32"),
        Field("p_offset", "u32"),
        Field("p_vaddr", "u32"),
        Field("p_paddr", "u32"),
        Field("p_filesz", "u32"),
        Field("p_memsz", "u32"),
        Field("p_flags", "u32"),
        Field("p_align", "u32"),
    ],
)


def elf_class(abi: Abi) -> int:
    return ELFCLASS64 if abi.is_64bit else ELFCLASS32


def ehdr_layout(abi: Abi) -> BoundLayout:
    return ELF_EHDR.bind(abi)


def phdr_layout(abi: Abi) -> BoundLayout:
    return (ELF64_PHDR if abi.is_64bit else ELF32_PHDR).bind(abi)


def e_ident(abi: Abi) -> bytes:
    data = ELFDATA2LSB if abi.byte_order == "<" else ELFDATA2MSB
    return (ELF_MAGIC + bytes([elf_class(abi), data, EV_CURRENT])).ljust(16, b"\0")


Ehdr = ELF_EHDR.record_type
Elf64Phdr = ELF64_PHDR.record_type
Elf32Phdr = ELF32_PHDR.record_type


_IDENT_ABIS = {
    (ELFCLASS64, ELFDATA2LSB): LP64_LE,
    (ELFCLASS64, ELFDATA2MSB): LP64_BE,
    (ELFCLASS32, ELFDATA2LSB): I386_LE,
    (ELFCLASS32, ELFDATA2MSB): I386_BE,
}


def ident_abi(head: bytes) -> Abi | None:
    """The ABI an ELF identification (``e_ident``) names, or None if ``head`` is not ELF of a known class/encoding."""
    if len(head) < 16 or head[:4] != ELF_MAGIC:
        return None
    return _IDENT_ABIS.get((head[4], head[5]))
