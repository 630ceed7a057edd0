"""Synthetic aarch64 and i386 kernels in dump memory, laid out as QEMU dumps them, for detect/fix/arch tests.

Built from the reference tables only (arch-kernels-and-introspection.md §1.1-§1.5, §2.1-§2.3; qemu-dumps.md §3):
the kernel's VMCOREINFO note sits at a 4 KiB page inside a 64 KiB block on aarch64; the i386 dump is QEMU's
64-bit-header kdump with 144-byte prstatus and machine ``i686``.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from kdfix.format.constants import NOTE_NAME_CORE, NOTE_NAME_VMCOREINFO, NoteType
from kdfix.format.layout import LP64_LE
from kdfix.model import DumpModel, make_utsname
from kdfix.notes.framing import Note
from kdfix.read.memory import DictMemory
from tests.arch.tables import Aarch64Tables, I386Tables, PageStore

MiB = 1 << 20
GiB = 1 << 30
U64 = (1 << 64) - 1
RELEASE_ARM64 = "6.1.0-27-cloud-arm64"
RELEASE_I386 = "6.1.0-27-686-pae"
UTS_FIELD = 65


def utsname_bytes(release: str, machine: str) -> bytes:
    """struct new_utsname (6 x char[65]) as the kernel holds it."""
    fields = ["Linux", "(none)", release, "#1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1 (2024-11-01)", machine, "(none)"]
    return b"".join(f.encode().ljust(UTS_FIELD, b"\0") for f in fields)


def vmcoreinfo_note(text: bytes) -> bytes:
    """The kernel's vmcoreinfo_note buffer: Nhdr, "VMCOREINFO\\0" padded to 12, the text, then an empty note."""
    return struct.pack("<III", 11, len(text), 0) + b"VMCOREINFO\0\0" + text + b"\0" * (-len(text) % 4) + bytes(12)


@dataclass(frozen=True)
class Truth:
    """What the synthetic kernel really is."""

    phys_base: int  # the header value readers need (aarch64 PHYS_OFFSET, i386 0)
    kernel_offset: int
    vmcoreinfo: bytes
    init_uts_ns: int  # VA
    note_paddr: int
    release: str
    machine: str


def aarch64_guest(*, kaslr: bool, seed: int = 0, block_size: int = 65536, cpus: int = 2, note_in_dump: bool = False):
    """(model, memory, truth) of a QEMU ``virt`` arm64 guest: RAM at 1 GiB, 4K pages, 48-bit VAs (flipped layout)."""
    rng = random.Random(seed)
    ram_base, ram_size = 0x40000000, 64 * MiB
    kaslr_offset = rng.randrange(1, 1 << 14) * 2 * MiB if kaslr else 0
    # KASLR lowers memstart_addr by a random multiple of 1 GiB, usually wrapping below 0 (§1.4).
    phys_offset = (ram_base - rng.randrange(1, 1 << 16) * GiB) & U64 if kaslr else ram_base
    page_offset = 0xFFFF000000000000
    text_va = 0xFFFF800008000000 + kaslr_offset
    text_pa = ram_base + 2 * MiB
    voffset = (text_va - text_pa) & U64
    image_size = 20 * MiB
    store = PageStore(4096, first_free=ram_base + 40 * MiB)  # tables come from RAM above the image
    swapper_va = text_va + 0x1000000
    store.next_free = (swapper_va - voffset) & U64
    tables = Aarch64Tables(store, 4096, 48)
    store.next_free = ram_base + 40 * MiB
    assert tables.root == (swapper_va - voffset) & U64
    for off in range(0, image_size, 2 * MiB):  # image in 2 MiB blocks
        tables.map(text_va + off, text_pa + off, leaf_level=2)

    def linear(pa: int) -> int:
        return (pa - phys_offset + page_offset) & U64

    for off in range(0, ram_size, 2 * MiB):
        tables.map(linear(ram_base + off), ram_base + off, leaf_level=2)
    uts_va = text_va + 0x1100000
    release = RELEASE_ARM64
    store.write((uts_va - voffset) & U64, utsname_bytes(release, "aarch64"))
    mem_section_pa = ram_base + 50 * MiB + 0x380
    store.write(mem_section_pa, b"\x11" * 64)
    text = (
        f"OSRELEASE={release}\nBUILD-ID=0123456789abcdef\nPAGESIZE=4096\n"
        f"SYMBOL(init_uts_ns)={uts_va:x}\nOFFSET(uts_namespace.name)=0\n"
        f"SYMBOL(node_online_map)={text_va + 0x1200000:x}\nSYMBOL(swapper_pg_dir)={swapper_va:x}\n"
        f"SYMBOL(_stext)={text_va + 0x10000:x}\nSYMBOL(mem_section)={linear(mem_section_pa):x}\n"
        f"NUMBER(SECTION_SIZE_BITS)=27\nNUMBER(MAX_PHYSMEM_BITS)=48\nNUMBER(VA_BITS)=48\n"
        f"NUMBER(kimage_voffset)={voffset:#x}\nNUMBER(PHYS_OFFSET)={phys_offset:#x}\n"
        f"NUMBER(TCR_EL1_T1SZ)=0x10\nKERNELOFFSET={kaslr_offset:x}\nNUMBER(KERNELPACMASK)=0x0\n"
    ).encode()
    note_pa = ram_base + 36 * MiB + 0x3000  # a 4 KiB page, not a 64 KiB block head
    store.write(note_pa, vmcoreinfo_note(text))
    for _ in range(8):  # some non-zero RAM so that the dump is not only tables
        store.write(ram_base + rng.randrange(ram_size // 4096) * 4096, rng.randbytes(64))
    memory = store.memory(block_size)
    prstatus = bytearray(392)
    notes = []
    for cpu in range(cpus):
        struct.pack_into("<i", prstatus, 32, cpu + 1)
        struct.pack_into("<Q", prstatus, 368, text_va + 0x10000 + 0x100 * cpu)  # pc in the image
        notes.append(Note(NOTE_NAME_CORE, NoteType.NT_PRSTATUS, bytes(prstatus)))
        notes.append(Note(NOTE_NAME_CORE, 2, bytes(528)))  # NT_PRFPREG
    if note_in_dump:
        notes.append(Note(NOTE_NAME_VMCOREINFO, 0, text))
    end_pa = ram_base + ram_size
    model = DumpModel(
        abi=LP64_LE,
        utsname=make_utsname(machine="Unknown"),
        block_size=block_size,
        max_mapnr=end_pa // block_size,
        nr_cpus=cpus,
        phys_base=phys_offset if note_in_dump else ram_base,  # QEMU: lowest RAM address without the device
        dump_level=1,
        notes=tuple(notes),
        vmcoreinfo=text if note_in_dump else None,
    )
    truth = Truth(phys_offset, kaslr_offset, text, uts_va, note_pa, release, "aarch64")
    return model, memory, truth


def i386_guest(*, kaslr: bool, pae: bool = True, seed: int = 0, cpus: int = 1, note_in_dump: bool = False):
    """(model, memory, truth) of a QEMU PC i386 guest: lowmem at 0xC0000000, kernel relocated by KASLR (§2.2)."""
    rng = random.Random(seed)
    ram_size = 64 * MiB
    kernel_offset = rng.randrange(1, 12) * 4 * MiB if kaslr else 0
    stext = 0xC1000000 + kernel_offset
    store = PageStore(4096, first_free=0x2000000 + kernel_offset)
    swapper_pa = stext - 0xC0000000 + 0x800000
    store.next_free = swapper_pa
    tables = I386Tables(store, pae=pae)
    assert tables.root == swapper_pa
    store.next_free = 0x3000000
    step = (2 if pae else 4) * MiB
    for off in range(0, ram_size, step):
        tables.map(0xC0000000 + off, off, large=True)
    uts_va = stext + 0x900000
    release = RELEASE_I386 if pae else "6.1.0-27-686"
    store.write(uts_va - 0xC0000000, utsname_bytes(release, "i686"))
    text = (
        f"OSRELEASE={release}\nPAGESIZE=4096\nSYMBOL(init_uts_ns)={uts_va:x}\nOFFSET(uts_namespace.name)=0\n"
        f"SYMBOL(swapper_pg_dir)={swapper_pa + 0xC0000000:x}\nSYMBOL(_stext)={stext:x}\n"
        f"SYMBOL(mem_map)={stext + 0xA00000:x}\nSIZE(page)=40\n" + ("CONFIG_X86_PAE=y\n" if pae else "")
    ).encode()
    note_pa = 0x1800000 + 0x5000
    store.write(note_pa, vmcoreinfo_note(text))
    memory: DictMemory = store.memory()
    notes = []
    for cpu in range(cpus):
        prstatus = bytearray(144)
        struct.pack_into("<i", prstatus, 24, cpu + 1)
        struct.pack_into("<I", prstatus, 120, stext + 0x40)
        notes.append(Note(NOTE_NAME_CORE, NoteType.NT_PRSTATUS, bytes(prstatus)))
    if note_in_dump:
        notes.append(Note(NOTE_NAME_VMCOREINFO, 0, text))
    model = DumpModel(
        abi=LP64_LE,  # QEMU writes the 64-bit header for PC guests (qemu-dumps.md §3)
        utsname=make_utsname(machine="i686"),
        block_size=4096,
        max_mapnr=memory.max_pfn,
        nr_cpus=cpus,
        dump_level=1,
        notes=tuple(notes),
        vmcoreinfo=text if note_in_dump else None,
    )
    return model, memory, Truth(0, kernel_offset, text, uts_va, note_pa, release, "i686")
