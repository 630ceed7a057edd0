"""Synthetic aarch64 and i386 Linux-like vmcores (``kdfix generate --style linux --arch aarch64|i386``).

The x86_64 image lives in :mod:`kdfix.generate.synthetic`; this module adds the architecture dimension with the
same ingredients (kernel text, ``linux_banner``, ``init_uts_ns``, the kernel's page tables, the VMCOREINFO text
page and note buffer, filler pages) placed as the real kernels place them, and written the way the architecture's
readers need (arch-kernels-and-introspection.md §1-§2):

- aarch64 (Debian cloud-arm64 on QEMU virt): RAM from 0x40000000, the image at DRAM + 2 MiB mapped at
  ``KIMAGE_VADDR + KERNELOFFSET`` (``kimage_voffset``), the linear map at ``PAGE_OFFSET + PA - PHYS_OFFSET`` with
  4 KiB pages and 48-bit VAs (§1.2-§1.5); VMCOREINFO with the arm64 block (§1.1); per vCPU NT_PRSTATUS (392 bytes,
  §1.8) and NT_PRFPREG as QEMU writes them; header ``block_size`` = PAGESIZE and ``phys_base`` = PHYS_OFFSET (§1.6).
- i386 (686-pae): RAM from 0, the image at 16 MiB + KASLR offset, PA and VA moving together, lowmem mapped at
  0xC0000000 through PAE tables (§2.2-§2.3); VMCOREINFO without phys_base or KERNELOFFSET and ``CONFIG_X86_PAE=y``
  last (§2.1); 144-byte NT_PRSTATUS (§2.5); the 32-bit KDUMP header i386 makedumpfile and crash read (§2.6).

Page-table shapes and the header ABI come from kdfix.arch; the entry bits from kdfix.generate.pagetables.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from kdfix.arch import Arch, get_arch
from kdfix.arch.aarch64 import IMAGE_TEXT_OFFSET
from kdfix.arch.i386 import LINK_TEXT as I386_LINK_TEXT
from kdfix.arch.i386 import MAXMEM as I386_MAXMEM
from kdfix.arch.i386 import PAGE_OFFSET as I386_PAGE_OFFSET
from kdfix.format.constants import NOTE_NAME_CORE, NoteType
from kdfix.format.kdump import NEW_UTSNAME
from kdfix.format.notes import AARCH64_USER_REGS, ELF_PRSTATUS_AARCH64, ELF_PRSTATUS_I386, I386_USER_REGS
from kdfix.generate.pagetables import (
    A64_KERNEL_DATA,
    A64_KERNEL_TEXT,
    PAE_KERNEL_LARGE,
    SIZE_1G,
    SIZE_2M,
    RadixTableBuilder,
    aarch64_block,
    aarch64_builder,
    i386_pae_builder,
    table_allocator,
)
from kdfix.generate.synthetic import (
    DEFAULT_MEMORY,
    DEFAULT_RELEASE,
    IMAGE_SIZE,
    PAGE_SIZE,
    UTS_DOMAINNAME,
    UTS_NODENAME,
    UTS_VERSION,
    MiB,
    SparseMemory,
    SyntheticTruth,
    _code_page,
    _PageStore,
    image_memory,
    linux_banner,
    pick_vmcoreinfo_pfns,
    place_vmcoreinfo,
    vmcoreinfo_text,
    write_filler,
)
from kdfix.model import DumpModel, make_utsname
from kdfix.notes.framing import Note
from kdfix.units import U64_MASK
from kdfix.write.utsname import choose_utsname, with_utsname

SYNTHETIC_ARCHES = ("aarch64", "i386")

# aarch64, QEMU virt with Debian's 6.1 cloud-arm64 kernel (§1.1-§1.4, measured values)
A64_RAM_BASE = 0x40000000  # virt DRAM
A64_IMAGE_PA = A64_RAM_BASE + SIZE_2M  # where -kernel puts the image (measured, not randomised)
A64_KIMAGE_VADDR = 0xFFFF800008000000  # MODULES_END; the nokaslr _text
A64_VA_BITS = 48
A64_PAGE_OFFSET = 0xFFFF000000000000  # -(1 << 48): the flipped (>= 5.4) layout
A64_LINEAR_SIZE = 1 << 47  # PAGE_END - PAGE_OFFSET
A64_MEMSTART_ALIGN = SIZE_1G  # PHYS_OFFSET alignment with 4 KiB pages (§1.4)
A64_VMALLOC_END = 0xFFFFFBFFF0000000
A64_PSTATE_EL1H = 0x3C5  # EL1h, DAIF masked
A64_LAYOUT_KEYS = (  # the measured 6.1 arch block values that do not move (§1.1)
    "NUMBER(MODULES_VADDR)=0xffff800000000000",
    "NUMBER(MODULES_END)=0xffff800008000000",
    "NUMBER(VMALLOC_START)=0xffff800008000000",
    "NUMBER(VMALLOC_END)=0xfffffbfff0000000",
    "NUMBER(VMEMMAP_START)=0xfffffc0000000000",
    "NUMBER(VMEMMAP_END)=0xfffffe0000000000",
)
FPREG_SIZE = 528  # NT_PRFPREG: 32 x 128-bit V registers, fpsr, fpcr, padding (§1.8, measured)

# i386 (686-pae, VMSPLIT_3G; §2.2)
I386_LINK_PHYS = I386_LINK_TEXT - I386_PAGE_OFFSET  # CONFIG_PHYSICAL_START, 16 MiB
I386_KERNEL_CS, I386_KERNEL_DS, I386_USER_DS, I386_KERNEL_PERCPU = 0x60, 0x68, 0x7B, 0xD8
I386_VMALLOC_OFFSET = 8 * MiB  # the gap between high_memory and VMALLOC_START
I386_VMAP_AREA_LIST_OFFSET = 20  # OFFSET(vmap_area.list) on 6.1 i386 (measured; va_start at 0)

# the synthetic image, as offsets from _text (as in kdfix.generate.synthetic)
TEXT_PAGES = 16
OFF_BANNER = 0x200100
OFF_INIT_UTS_NS = 0x212B60
OFF_VMAP_AREA_LIST = 0x213000  # vmap_area_list (list_head), then the first vmap_area
OFF_VMAP_AREA = 0x213040
OFF_PGD = 0x220000  # swapper_pg_dir
OFF_TABLES = 0x221000  # further tables, bump-allocated
OFF_TABLES_END = 0x300000


@dataclass(frozen=True)
class _Placement:
    """Where one architecture's synthetic kernel sits."""

    ram_base: int
    text_paddr: int
    text_vaddr: int
    stext_vaddr: int
    header_phys_base: int  # the value the header phys_base must hold (kdfix.arch: PHYS_OFFSET / 0)


def _check_common(arch: str, memory_size: int, cpus: int, release: str) -> Arch:
    if arch not in SYNTHETIC_ARCHES:
        raise ValueError(f"synthetic images exist for x86_64, {', '.join(SYNTHETIC_ARCHES)}; not {arch!r}")
    if memory_size <= 0 or memory_size % SIZE_2M:
        raise ValueError(f"memory size {memory_size:#x} must be a positive multiple of 2 MiB")
    if memory_size < 16 * MiB:
        raise ValueError("memory size must be at least 16 MiB")
    if not 1 <= cpus <= 1024:
        raise ValueError(f"cpus must be 1..1024, got {cpus}")
    if len(release.encode()) > 64 or not release:
        raise ValueError("release must be 1..64 bytes")
    return get_arch(arch)


def _place_aarch64(memory_size: int, phys_offset: int | None, kaslr_offset: int) -> _Placement:
    if memory_size > A64_LINEAR_SIZE // 2:
        raise ValueError(f"memory size {memory_size:#x} is too large for the 48-bit linear map")
    if kaslr_offset % SIZE_2M or not 0 <= kaslr_offset <= A64_VMALLOC_END - A64_KIMAGE_VADDR - IMAGE_SIZE:
        raise ValueError(f"kaslr_offset {kaslr_offset:#x} must be a multiple of 2 MiB that keeps the image in vmalloc")
    offset = A64_RAM_BASE if phys_offset is None else phys_offset & U64_MASK
    if offset % A64_MEMSTART_ALIGN:
        raise ValueError(f"PHYS_OFFSET {offset:#x} is not a multiple of 1 GiB (ARM64_MEMSTART_ALIGN)")
    if ((A64_RAM_BASE - offset) & U64_MASK) + memory_size > A64_LINEAR_SIZE:
        raise ValueError(f"PHYS_OFFSET {offset:#x} puts RAM outside the linear map (RAM starts at {A64_RAM_BASE:#x})")
    text_vaddr = A64_KIMAGE_VADDR + kaslr_offset
    return _Placement(A64_RAM_BASE, A64_IMAGE_PA, text_vaddr, text_vaddr + IMAGE_TEXT_OFFSET, offset)


def _place_i386(memory_size: int, phys_base: int | None, kaslr_offset: int) -> _Placement:
    if phys_base:
        raise ValueError("i386 has no phys_base (the header holds 0); use --kaslr-offset to move the kernel")
    if memory_size > I386_MAXMEM:
        raise ValueError(f"memory size {memory_size:#x} exceeds i386 lowmem ({I386_MAXMEM:#x}): no highmem here")
    if kaslr_offset % SIZE_2M or kaslr_offset < 0:
        raise ValueError(f"kaslr_offset {kaslr_offset:#x} must be a non-negative multiple of 2 MiB")
    text_paddr = I386_LINK_PHYS + kaslr_offset
    if text_paddr + IMAGE_SIZE > memory_size:
        raise ValueError(f"kernel image at PA {text_paddr:#x} does not fit in {memory_size:#x} bytes of memory")
    text_vaddr = I386_PAGE_OFFSET + text_paddr
    return _Placement(0, text_paddr, text_vaddr, text_vaddr, 0)


def _utsname_block(arch: Arch, release: str) -> bytes:
    uts = make_utsname(sysname="Linux", nodename=UTS_NODENAME, release=release, version=UTS_VERSION,
                       machine=arch.machines[0], domainname=UTS_DOMAINNAME)  # fmt: skip
    return NEW_UTSNAME.bind(arch.kdump_abi()).pack(uts)


def _aarch64_keys(p: _Placement, kaslr_offset: int) -> list[str]:
    voffset = (p.text_vaddr - p.text_paddr) & U64_MASK
    return [
        f"NUMBER(VA_BITS)={A64_VA_BITS}",
        f"NUMBER(MAX_PHYSMEM_BITS)={A64_VA_BITS}",
        *A64_LAYOUT_KEYS,
        f"NUMBER(kimage_voffset)={voffset:#x}",
        f"NUMBER(PHYS_OFFSET)={p.header_phys_base:#x}",
        f"NUMBER(TCR_EL1_T1SZ)={64 - A64_VA_BITS:#x}",
        f"KERNELOFFSET={kaslr_offset:x}",
        "NUMBER(KERNELPACMASK)=0x0",
    ]


def _map_aarch64(tables: RadixTableBuilder, p: _Placement, memory_size: int) -> None:
    """Image in 2 MiB blocks (text executable), linear map of all RAM in 2 MiB blocks (§1.3, §1.5)."""
    for off in range(0, IMAGE_SIZE, SIZE_2M):
        attrs = A64_KERNEL_TEXT if off < SIZE_2M else A64_KERNEL_DATA
        tables.map_leaf(p.text_vaddr + off, aarch64_block(p.text_paddr + off, attrs), SIZE_2M)
    for pa in range(p.ram_base, p.ram_base + memory_size, SIZE_2M):
        va = (A64_PAGE_OFFSET + pa - p.header_phys_base) & U64_MASK
        tables.map_leaf(va, aarch64_block(pa, A64_KERNEL_DATA), SIZE_2M)


def _longs32(*values: int) -> bytes:
    """i386 kernel ``unsigned long`` words (little-endian) as they sit in guest memory."""
    return b"".join(v.to_bytes(4, "little") for v in values)


def _i386_vmap_area(store: _PageStore, p: _Placement, memory_size: int) -> list[str]:
    """vmap_area_list -> the first vmap_area, whose va_start is VMALLOC_START: readers (libkdumpfile) end the
    lowmem direct map there (§2.2). Returns its VMCOREINFO keys."""
    head, area = p.text_vaddr + OFF_VMAP_AREA_LIST, p.text_vaddr + OFF_VMAP_AREA
    vmalloc_start = (I386_PAGE_OFFSET + memory_size + I386_VMALLOC_OFFSET) & ~(I386_VMALLOC_OFFSET - 1)
    link = area + I386_VMAP_AREA_LIST_OFFSET
    store.write(p.text_paddr + OFF_VMAP_AREA_LIST, _longs32(link, link))  # list_head {next, prev}
    store.write(p.text_paddr + OFF_VMAP_AREA, _longs32(vmalloc_start, vmalloc_start + 2 * PAGE_SIZE))
    store.write(p.text_paddr + OFF_VMAP_AREA + I386_VMAP_AREA_LIST_OFFSET, _longs32(head, head))
    return [
        f"SYMBOL(vmap_area_list)={head:x}",
        "OFFSET(vmap_area.va_start)=0",
        f"OFFSET(vmap_area.list)={I386_VMAP_AREA_LIST_OFFSET}",
    ]


def _map_i386(tables: RadixTableBuilder, p: _Placement, memory_size: int) -> None:
    """All of (lowmem) RAM at PAGE_OFFSET in 2 MiB pages; the image lies inside it (§2.2)."""
    for pa in range(0, memory_size, SIZE_2M):
        tables.map_leaf(I386_PAGE_OFFSET + pa, pa | PAE_KERNEL_LARGE, SIZE_2M)


def _cpu_notes(arch: Arch, cpus: int, p: _Placement, memory_size: int) -> list[Note]:
    """Per-vCPU CORE notes: NT_PRSTATUS (+ NT_PRFPREG on aarch64, as QEMU writes them; §1.6, §1.8, §2.5)."""
    notes = []
    for cpu in range(cpus):
        pc = p.text_vaddr + 0x3A2E + 0x40 * cpu  # somewhere in the idle loop
        if arch.name == "aarch64":
            stack = (A64_PAGE_OFFSET + p.ram_base + memory_size - (cpu + 1) * 0x4000 - p.header_phys_base) & U64_MASK
            regs = AARCH64_USER_REGS.make(**{f"x{i}": 0 for i in range(31)}, sp=stack, pc=pc & ~3,
                                          pstate=A64_PSTATE_EL1H)  # fmt: skip
            desc = arch.prstatus().pack(ELF_PRSTATUS_AARCH64.make(pr_pid=cpu + 1, pr_reg=regs))
            notes.append(Note(NOTE_NAME_CORE, NoteType.NT_PRSTATUS, desc))
            notes.append(Note(NOTE_NAME_CORE, NoteType.NT_PRFPREG, bytes(FPREG_SIZE)))
        else:
            stack = I386_PAGE_OFFSET + memory_size - (cpu + 1) * 0x2000
            regs = I386_USER_REGS.make(
                ebx=cpu, ecx=1, edx=0, esi=0, edi=0, ebp=stack + 0x40, eax=0, ds=I386_USER_DS, es=I386_USER_DS,
                fs=I386_KERNEL_PERCPU, gs=0, orig_eax=0xFFFFFFFF, eip=pc, cs=I386_KERNEL_CS, eflags=0x246, esp=stack,
                ss=I386_KERNEL_DS,
            )  # fmt: skip
            desc = arch.prstatus().pack(ELF_PRSTATUS_I386.make(pr_pid=cpu + 1, pr_reg=regs))
            notes.append(Note(NOTE_NAME_CORE, NoteType.NT_PRSTATUS, desc))
    return notes


_PLACERS: dict[str, Callable[[int, int | None, int], _Placement]] = {"aarch64": _place_aarch64, "i386": _place_i386}
_TableFactory = Callable[[int, Callable[[], int], Callable[[int, int], None]], RadixTableBuilder]
_BUILDERS: dict[str, _TableFactory] = {"aarch64": aarch64_builder, "i386": i386_pae_builder}
_MAPPERS: dict[str, Callable[[RadixTableBuilder, _Placement, int], None]] = {"aarch64": _map_aarch64, "i386": _map_i386}


def build_arch_image(
    arch: str,
    *,
    memory_size: int = DEFAULT_MEMORY,
    cpus: int = 1,
    phys_base: int | None = None,
    kaslr_offset: int = 0,
    release: str = DEFAULT_RELEASE,
    seed: int = 0,
    vmcoreinfo_in_notes: bool = True,
    filler_fraction: float = 0.15,
    firmware: bool = True,
) -> tuple[DumpModel, SparseMemory, SyntheticTruth]:
    """Build a Linux-like ``arch`` ("aarch64", "i386") memory image and its DumpModel.

    ``phys_base`` is the header meaning (kdfix.arch): aarch64 PHYS_OFFSET (default the DRAM base 0x40000000, a
    multiple of 1 GiB, may wrap below 0 as under KASLR), i386 none (0 only). ``kaslr_offset`` (2 MiB multiple)
    moves the image VA on aarch64, PA and VA together on i386. ``firmware`` adds the PC BIOS ROM below 4 GiB on
    i386 (QEMU dumps it, qemu-dumps.md §5); virt has none in the dump.
    """
    a = _check_common(arch, memory_size, cpus, release)
    p = _PLACERS[arch](memory_size, phys_base, kaslr_offset)
    ram = range(p.ram_base // PAGE_SIZE, (p.ram_base + memory_size) // PAGE_SIZE)
    rng = random.Random(f"kdfix-synthetic-{arch}-{seed}")
    store = _PageStore(ram.stop)
    syms = {
        "_text": p.text_vaddr,
        "_stext": p.stext_vaddr,
        "linux_banner": p.text_vaddr + OFF_BANNER,
        "init_uts_ns": p.text_vaddr + OFF_INIT_UTS_NS,
        "swapper_pg_dir": p.text_vaddr + OFF_PGD,
    }
    pgd_paddr = _write_kernel(a, p, store, rng, release, memory_size)

    image_pfns = set(range(p.text_paddr // PAGE_SIZE, (p.text_paddr + IMAGE_SIZE) // PAGE_SIZE))
    data_pfn, note_pfn = pick_vmcoreinfo_pfns(rng, ram.start + len(ram) // 8, ram.stop, image_pfns)
    if arch == "aarch64":
        generic_keys: list[str] = []
        arch_keys = _aarch64_keys(p, kaslr_offset)
    else:
        generic_keys, arch_keys = _i386_vmap_area(store, p, memory_size), ["CONFIG_X86_PAE=y"]
    text = vmcoreinfo_text(release=release, build_id=rng.randbytes(20).hex(), syms=syms, word_size=a.word_size,
                           generic_keys=generic_keys, arch_keys=arch_keys)  # fmt: skip
    vmcoreinfo_note = place_vmcoreinfo(store, text, data_pfn, note_pfn, a.kdump_abi())

    write_filler(rng, store, ram, image_pfns | {data_pfn, note_pfn}, filler_fraction)
    firmware_seed = seed if firmware and arch == "i386" else None
    memory = image_memory(store, (ram.start, ram.stop), firmware_seed=firmware_seed)
    notes = _cpu_notes(a, cpus, p, memory_size)
    if vmcoreinfo_in_notes:
        notes.append(vmcoreinfo_note)
    model = DumpModel(
        abi=a.kdump_abi(),
        block_size=PAGE_SIZE,
        max_mapnr=memory.max_pfn,
        nr_cpus=cpus,
        # without VMCOREINFO: what QEMU puts there (the lowest RAM address on arm, 0 on x86; qemu-dumps.md §7)
        phys_base=p.header_phys_base if vmcoreinfo_in_notes else a.qemu.phys_base_is_ram_start * p.ram_base,
        dump_level=1,
        notes=tuple(notes),
        vmcoreinfo=text if vmcoreinfo_in_notes else None,
        e_machine=min(a.e_machines),
    )
    model = with_utsname(model, choose_utsname(model, memory))
    truth = SyntheticTruth(
        phys_base=p.header_phys_base,
        kaslr_offset=kaslr_offset,
        text_paddr=p.text_paddr,
        text_vaddr=p.text_vaddr,
        init_uts_ns=syms["init_uts_ns"],
        swapper_pg_dir=syms["swapper_pg_dir"],
        linux_banner=syms["linux_banner"],
        idt_table=0,  # no IDT in these images
        pgd_paddr=pgd_paddr,
        idt_paddr=0,
        vmcoreinfo_note_paddr=note_pfn * PAGE_SIZE,
        vmcoreinfo_data_paddr=data_pfn * PAGE_SIZE,
        release=release,
        vmcoreinfo=text,
        vmlinux_symbols={name: va - kaslr_offset for name, va in syms.items()},
    )
    return model, memory, truth


def _write_kernel(a: Arch, p: _Placement, store: _PageStore, rng: random.Random, release: str, memory_size: int) -> int:
    """Kernel text from _stext, the banner, init_uts_ns and the page tables; the PGD's PA."""

    def kpa(off: int) -> int:
        return p.text_paddr + off

    for i in range(TEXT_PAGES):
        store.write(kpa((p.stext_vaddr - p.text_vaddr) + i * PAGE_SIZE), _code_page(rng))
    store.write(kpa(OFF_BANNER), linux_banner(release))
    store.write(kpa(OFF_INIT_UTS_NS), _utsname_block(a, release))
    alloc = table_allocator(kpa(OFF_TABLES), kpa(OFF_TABLES_END), store.write)
    pgd_paddr = kpa(OFF_PGD)
    store.write(pgd_paddr, bytes(PAGE_SIZE))
    _MAPPERS[a.name](_BUILDERS[a.name](pgd_paddr, alloc, store.write_u64), p, memory_size)
    return pgd_paddr


__all__ = ["SYNTHETIC_ARCHES", "build_arch_image"]
