"""ELF core-file structures for writing vmcores: Elf32/Elf64 Ehdr and Phdr (/proc/vmcore layout).

Addresses and offsets are ``ulong`` so one declaration serves Elf64 (LP64 ABIs) and Elf32 (ILP32
ABIs); only the program header orders its members differently per class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdfix.format.layout import I386_BE, I386_LE, LP64_BE, LP64_LE, Abi, BoundLayout, Layout, cfield

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


@dataclass(frozen=True, slots=True)
class Ehdr:
    """``ElfN_Ehdr``; addresses are ``ulong`` so one class serves both ELF classes."""

    e_ident: bytes = cfield("char[16]")
    e_type: int = cfield("u16")
    e_machine: int = cfield("u16")
    e_version: int = cfield("u32")
    e_entry: int = cfield("ulong")
    e_phoff: int = cfield("ulong")
    e_shoff: int = cfield("ulong")
    e_flags: int = cfield("u32")
    e_ehsize: int = cfield("u16")
    e_phentsize: int = cfield("u16")
    e_phnum: int = cfield("u16")
    e_shentsize: int = cfield("u16")
    e_shnum: int = cfield("u16")
    e_shstrndx: int = cfield("u16")


@dataclass(frozen=True, slots=True)
class Elf64Phdr:
    """``Elf64_Phdr``."""

    p_type: int = cfield("u32")
    p_flags: int = cfield("u32")
    p_offset: int = cfield("u64")
    p_vaddr: int = cfield("u64")
    p_paddr: int = cfield("u64")
    p_filesz: int = cfield("u64")
    p_memsz: int = cfield("u64")
    p_align: int = cfield("u64")


@dataclass(frozen=True, slots=True)
class Elf32Phdr:
    """``Elf32_Phdr``: the same members as Elf64's, with p_flags moved after p_memsz."""

    p_type: int = cfield("u32")
    p_offset: int = cfield("u32")
    p_vaddr: int = cfield("u32")
    p_paddr: int = cfield("u32")
    p_filesz: int = cfield("u32")
    p_memsz: int = cfield("u32")
    p_flags: int = cfield("u32")
    p_align: int = cfield("u32")


@dataclass(frozen=True, slots=True)
class Shdr:
    """``ElfN_Shdr``; a core file has at most section 0, whose ``sh_info`` holds e_phnum when that is PN_XNUM."""

    sh_name: int = cfield("u32")
    sh_type: int = cfield("u32")
    sh_flags: int = cfield("ulong")
    sh_addr: int = cfield("ulong")
    sh_offset: int = cfield("ulong")
    sh_size: int = cfield("ulong")
    sh_link: int = cfield("u32")
    sh_info: int = cfield("u32")
    sh_addralign: int = cfield("ulong")
    sh_entsize: int = cfield("ulong")


ELF_EHDR = Layout.declare("elf_ehdr", Ehdr)
ELF_SHDR = Layout.declare("elf_shdr", Shdr)
ELF64_PHDR = Layout.declare("elf64_phdr", Elf64Phdr)
ELF32_PHDR = Layout.declare("elf32_phdr", Elf32Phdr)


def elf_class(abi: Abi) -> int:
    return ELFCLASS64 if abi.is_64bit else ELFCLASS32


def ehdr_layout(abi: Abi) -> BoundLayout[Ehdr]:
    return ELF_EHDR.bind(abi)


def shdr_layout(abi: Abi) -> BoundLayout[Shdr]:
    return ELF_SHDR.bind(abi)


def phdr_layout(abi: Abi) -> BoundLayout[Any]:
    return (ELF64_PHDR if abi.is_64bit else ELF32_PHDR).bind(abi)


def e_ident(abi: Abi) -> bytes:
    data = ELFDATA2LSB if abi.byte_order == "<" else ELFDATA2MSB
    return (ELF_MAGIC + bytes([elf_class(abi), data, EV_CURRENT])).ljust(16, b"\0")


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
