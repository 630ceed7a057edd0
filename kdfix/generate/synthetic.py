"""A synthetic x86_64 Linux-like memory image with QEMU-style notes, for tests, benchmarks and oracles.

The image follows the identities of phys-base-and-kaslr.md §1: ``VA(_text) = 0xffffffff81000000 + kaslr_offset``,
``PA(_text) = 0x1000000 + phys_base + kaslr_offset``. It holds what tools look for: kernel page tables at
``init_top_pgt`` (kernel image in 2 MiB pages from ``_text`` up, direct map at PAGE_OFFSET, IDT alias in the
cpu-entry-area), ``linux_banner``, ``init_uts_ns`` (notes-and-vmcoreinfo.md §6), the kernel's VMCOREINFO text page
and note buffer (notes-and-vmcoreinfo.md §4), and per-CPU CORE/QEMU notes as QEMU writes them (qemu-dumps.md §4).
Memory is laid out as QEMU dumps a PC guest: RAM from 0 and the firmware ROM below 4 GiB, with a hole between
(qemu-dumps.md §5; ``firmware``).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from kdfix.format.bitmap import Bitmap
from kdfix.format.constants import (
    DEFAULT_LINK_TEXT,
    EM_X86_64,
    NOTE_NAME_CORE,
    NOTE_NAME_QEMU,
    NOTE_NAME_VMCOREINFO,
    NOTE_TYPE_QEMU,
    NOTE_TYPE_VMCOREINFO,
    QEMU_CPU_STATE_VERSION,
    SYNTHETIC_BIOS_ID,
    SYNTHETIC_BIOS_ID_PADDR,
    SYNTHETIC_NODENAME,
    NoteType,
)
from kdfix.format.kdump import NEW_UTSNAME
from kdfix.format.layout import LP64_LE, Abi
from kdfix.format.notes import (
    ELF_PRSTATUS_X86_64,
    QEMU_CPU_SEGMENT,
    QEMU_CPU_STATE,
    QEMU_CPU_STATE_SIZES,
    X86_64_USER_REGS,
)
from kdfix.format.x86 import pack_gate
from kdfix.generate import kernel_data
from kdfix.generate.pagetables import (
    KERNEL_DATA_LARGE,
    KERNEL_RO_4K,
    KERNEL_TEXT_LARGE,
    SIZE_2M,
    PageTableBuilder,
    pack_u64,
    table_allocator,
)
from kdfix.model import DumpModel, make_utsname
from kdfix.notes.framing import Note, pack_note
from kdfix.read.memory import HeldPages
from kdfix.units import to_s64, to_u64
from kdfix.write.utsname import choose_utsname, with_utsname

PAGE_SIZE = 4096
MiB = 1 << 20
PAGE_OFFSET = 0xFFFF888000000000  # direct map base without memory KASLR
CPU_ENTRY_AREA = 0xFFFFFE0000000000  # IDT alias (notes-and-vmcoreinfo.md §3 sample)
LINK_PHYS_START = 0x1000000  # CONFIG_PHYSICAL_START
KERNEL_IMAGE_SIZE = 1 << 30  # with KASLR configured (phys-base-and-kaslr.md §1)
DEFAULT_RELEASE = "6.1.0-kdfix-synthetic"
DEFAULT_MEMORY = 96 * MiB
# The PC firmware ROM QEMU maps (SeaBIOS: 256 KiB ending at 4 GiB) and dumps with RAM (qemu-dumps.md §5).
FIRMWARE_SIZE = 256 * 1024
FIRMWARE_END = 1 << 32
FIRMWARE_BASE = FIRMWARE_END - FIRMWARE_SIZE  # 0xfffc0000

# The synthetic kernel image, as offsets from _text. Text in the first 2 MiB page, data in the second.
IMAGE_SIZE = 4 * MiB
OFF_DIVIDE_ERROR = 0x100990  # asm_exc_divide_error; gate n points at OFF_DIVIDE_ERROR + 0x20 * n
OFF_BANNER = 0x200100  # linux_banner (rodata)
OFF_INIT_UTS_NS = 0x212B60  # init_uts_ns; uts_namespace.name at offset 0
OFF_IDT_TABLE = 0x214000  # idt_table, page aligned
OFF_INIT_TOP_PGT = 0x220000  # init_top_pgt == swapper_pg_dir, 8 KiB aligned (PTI pair)
OFF_TABLES = 0x222000  # level3/level2 tables and direct-map tables, bump-allocated
OFF_TABLES_END = 0x300000
OFF_PRB = 0x300000  # prb: pointer to printk_rb_static (kernel_data.printk_ring)
OFF_PRINTK_RB_STATIC = 0x300040
OFF_CLEAR_SEQ = 0x300100
OFF_PRB_DESCS = 0x301000  # 2^PRB_COUNT_BITS descriptors
OFF_PRB_INFOS = 0x302000
OFF_PRB_TEXT = 0x304000  # 2^PRB_SIZE_BITS bytes of text ring
PRB_COUNT_BITS, PRB_SIZE_BITS = 5, 13
TEXT_PAGES = 16  # pseudo-code pages at _text

UTS_NODENAME = SYNTHETIC_NODENAME
UTS_VERSION = "#1 SMP PREEMPT_DYNAMIC kdfix synthetic"
UTS_DOMAINNAME = "(none)"


@dataclass(frozen=True)
class SyntheticTruth:
    """Ground truth of a synthetic image: what detection must recover (addresses are VAs unless named paddr)."""

    phys_base: int  # u64 two's complement
    kaslr_offset: int
    text_paddr: int
    text_vaddr: int
    init_uts_ns: int
    swapper_pg_dir: int
    linux_banner: int
    idt_table: int
    pgd_paddr: int
    idt_paddr: int
    vmcoreinfo_note_paddr: int
    vmcoreinfo_data_paddr: int
    release: str
    vmcoreinfo: bytes
    vmlinux_symbols: Mapping[str, int] = field(default_factory=dict)  # link-time (unrelocated) addresses
    log: tuple[str, ...] = ()  # the kernel log records, oldest first
    mem_map_paddr: int = 0  # the vmemmap struct page array (then mem_section's root array and sections)

    @property
    def phys_base_signed(self) -> int:
        return to_s64(self.phys_base)


class SparseMemory(HeldPages):
    """PhysicalMemory whose pfn ``ranges`` are valid and dumped (both bitmaps alike, as QEMU writes them,
    qemu-dumps.md §5); pfns in the holes between ranges are not in the dump. Only non-zero pages are stored.

    ``ranges`` are ``(start, end)`` pfn pairs, ascending and disjoint, within ``[0, max_pfn)``; the default is the
    single range ``[0, max_pfn)``.
    """

    def __init__(
        self,
        pages: Mapping[int, bytes],
        max_pfn: int,
        page_size: int = PAGE_SIZE,
        *,
        ranges: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        self.page_size = page_size
        self.max_pfn = max_pfn
        self._ranges = _check_ranges([(0, max_pfn)] if ranges is None else ranges, max_pfn)
        self._starts = [start for start, _ in self._ranges]
        self._zero = bytes(page_size)
        self._pages: dict[int, bytes] = {}
        for pfn, data in pages.items():
            if not self.present(pfn):
                raise ValueError(f"pfn {pfn:#x} outside the memory ranges {_fmt_ranges(self._ranges)}")
            if len(data) != page_size:
                raise ValueError(f"page {pfn:#x} is {len(data)} bytes, expected {page_size}")
            if any(data):
                self._pages[pfn] = bytes(data)
        self._bitmap = _ranges_bitmap(self._ranges, max_pfn)

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        """The dumped pfn ranges ``(start, end)``, ascending."""
        return self._ranges

    @property
    def valid(self) -> Bitmap:
        return self._bitmap

    @property
    def dumped(self) -> Bitmap:
        return self._bitmap

    @property
    def nonzero_pfns(self) -> list[int]:
        return sorted(self._pages)

    def present(self, pfn: int) -> bool:
        i = bisect_right(self._starts, pfn) - 1
        return i >= 0 and pfn < self._ranges[i][1]

    def is_zero_page(self, pfn: int) -> bool:
        return pfn not in self._pages

    def page(self, pfn: int) -> bytes:
        if not self.present(pfn):
            from kdfix.errors import AddressError

            raise AddressError(f"pfn {pfn:#x} is not in the dump", paddr=pfn * self.page_size)
        return self._pages.get(pfn, self._zero)

    def page_head(self, pfn: int, size: int) -> bytes:
        """The first ``size`` bytes of a page (no copy of the whole page)."""
        if not self.present(pfn):
            return self.page(pfn)  # raises AddressError
        return self._pages.get(pfn, self._zero)[:size]

    def iter_pages(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[tuple[int, bytes]]:
        end = self.max_pfn if end_pfn is None else min(end_pfn, self.max_pfn)
        for lo, hi in self._ranges:
            for pfn in range(max(lo, start_pfn), min(hi, end)):
                yield pfn, self._pages.get(pfn, self._zero)


def _fmt_ranges(ranges: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"[{lo:#x}, {hi:#x})" for lo, hi in ranges)


def _check_ranges(ranges: Sequence[tuple[int, int]], max_pfn: int) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if not 0 <= lo < hi <= max_pfn:
            raise ValueError(f"pfn range [{lo:#x}, {hi:#x}) is empty or outside [0, {max_pfn:#x})")
        if out and lo < out[-1][1]:
            raise ValueError(f"pfn ranges must be ascending and disjoint: {_fmt_ranges(ranges)}")
        out.append((lo, hi))
    return tuple(out)


def _ranges_bitmap(ranges: Sequence[tuple[int, int]], nbits: int) -> Bitmap:
    """A bitmap with every pfn of ``ranges`` set (whole bytes by slice, the partial edge bytes bit by bit)."""
    buf = bytearray((nbits + 7) // 8)
    for lo, hi in ranges:
        first_full, last_full = (lo + 7) // 8, hi // 8
        if first_full < last_full:
            buf[first_full:last_full] = b"\xff" * (last_full - first_full)
            edges = [*range(lo, first_full * 8), *range(last_full * 8, hi)]
        else:
            edges = list(range(lo, hi))
        for pfn in edges:
            buf[pfn >> 3] |= 1 << (pfn & 7)
    return Bitmap(bytes(buf), nbits)


class _PageStore:
    """Mutable pages during the build."""

    def __init__(self, max_pfn: int) -> None:
        self.max_pfn = max_pfn
        self.pages: dict[int, bytearray] = {}

    def write(self, paddr: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            pfn, off = divmod(paddr + pos, PAGE_SIZE)
            if not 0 <= pfn < self.max_pfn:
                raise ValueError(f"write at {paddr + pos:#x} outside memory")
            take = min(PAGE_SIZE - off, len(data) - pos)
            page = self.pages.setdefault(pfn, bytearray(PAGE_SIZE))
            page[off : off + take] = data[pos : pos + take]
            pos += take

    def write_u64(self, paddr: int, value: int) -> None:
        self.write(paddr, pack_u64(value))


def _parse_phys_base(phys_base: int) -> int:
    if not -(1 << 63) <= phys_base < (1 << 64):
        raise ValueError(f"phys_base {phys_base:#x} is not a 64-bit value")
    return to_s64(phys_base)


def _code_page(rng: random.Random) -> bytes:
    """Bytes with the skew of x86 machine code: common opcodes, small immediates, some random bytes."""
    alphabet = b"\x48\x89\x8b\xe8\x0f\x85\x84\x74\x75\xc3\x31\xc0\x83\xec\x55\x41\x5d\xff\x00\x00\x00\x01\x24\x44"
    body = bytearray(rng.choices(alphabet, k=PAGE_SIZE))
    for _ in range(64):
        pos = rng.randrange(PAGE_SIZE - 4)
        body[pos : pos + 4] = rng.randbytes(4)
    return bytes(body)


_WORDS = tuple(
    [
        "kernel",
        "pci",
        "usb",
        "memory",
        "page",
        "cache",
        "device",
        "driver",
        "irq",
        "acpi",
        "cpu",
        "node",
        "zone",
        "dma",
        "timer",
        "clock",
        "sched",
        "task",
        "inode",
        "dentry",
        "ext4",
        "mount",
        "block",
        "queue",
        "request",
        "buffer",
        "net",
        "eth0",
        "link",
        "up",
        "down",
        "tcp",
        "socket",
        "alloc",
        "free",
        "mapping",
        "virtual",
        "physical",
        "address",
        "region",
        "reserved",
        "e820",
        "bios",
        "firmware",
        "console",
        "tty",
        "init",
        "systemd",
    ]
)


def _text_corpus(rng: random.Random, size: int = 96 * 1024) -> bytes:
    """Log-like text, sliced into text pages."""
    lines: list[str] = []
    total = 0
    stamp = 0.0
    while total < size:
        stamp += rng.random() / 7
        words = " ".join(rng.choices(_WORDS, k=rng.randrange(4, 14)))
        line = f"[{stamp:12.6f}] {words} 0x{rng.getrandbits(32):08x}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def _filler_page(rng: random.Random, kind: int, corpus: bytes) -> bytes:
    if kind == 0:  # incompressible
        return rng.randbytes(PAGE_SIZE)
    if kind == 1:  # a partly used page: some random bytes, then zeros
        used = rng.randrange(64, PAGE_SIZE // 2)
        return rng.randbytes(used) + bytes(PAGE_SIZE - used)
    start = rng.randrange(len(corpus) - PAGE_SIZE)
    return corpus[start : start + PAGE_SIZE]


def _firmware_pages(seed: int) -> dict[int, bytes]:
    """A seeded pseudo-BIOS for ``[FIRMWARE_BASE, 4 GiB)``: zero padding below, code-like pages above, an ID
    string, and the reset vector ``jmp far f000:e05b`` at 0xfffffff0 (aliased at 0xffff0), BIOS date and model byte.

    Its own generator: the RAM contents of an image do not depend on ``firmware``.
    """
    rng = random.Random(f"kdfix-synthetic-bios-{seed}")
    rom = bytearray(FIRMWARE_SIZE)
    code_from = FIRMWARE_SIZE // 2  # the lower half is padding, as in a 256 KiB SeaBIOS image
    for off in range(code_from, FIRMWARE_SIZE, PAGE_SIZE):
        if rng.random() < 0.8:
            rom[off : off + PAGE_SIZE] = _code_page(rng)
    ident = SYNTHETIC_BIOS_ID + b" (SeaBIOS-like) " + rng.randbytes(4).hex().encode() + b"\0"
    at = SYNTHETIC_BIOS_ID_PADDR - FIRMWARE_BASE  # where kdfix info looks for it (kdfix.read.origin)
    rom[at : at + len(ident)] = ident
    rom[FIRMWARE_SIZE - 16 :] = b"\xea\x5b\xe0\x00\xf0" + b"01/01/11" + b"\x00\xfc\x00"  # model byte 0xfc: PC/AT
    base = FIRMWARE_BASE // PAGE_SIZE
    return {base + i: bytes(rom[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]) for i in range(FIRMWARE_SIZE // PAGE_SIZE)}


def _utsname_block(release: str) -> bytes:
    """``struct new_utsname`` as the kernel keeps it in init_uts_ns."""
    uts = make_utsname(sysname="Linux", nodename=UTS_NODENAME, release=release, version=UTS_VERSION,
                       machine="x86_64", domainname=UTS_DOMAINNAME)  # fmt: skip
    return NEW_UTSNAME.bind(LP64_LE).pack(uts)


def _idt_page(text_vaddr: int) -> bytes:
    """256 interrupt gates pointing into kernel text (phys-base-and-kaslr.md §3D step 3)."""
    return b"".join(pack_gate(text_vaddr + OFF_DIVIDE_ERROR + 0x20 * vector) for vector in range(256))


# struct page and friends as VMCOREINFO prints them, by word size (§6.7 measured 6.1 values)
PAGE_KEYS = {
    8: ("SIZE(page)=64", "SIZE(list_head)=16", "OFFSET(page.flags)=0", "OFFSET(page.lru)=8",
        "OFFSET(page.mapping)=24", "OFFSET(list_head.next)=0", "OFFSET(list_head.prev)=8"),
    4: ("SIZE(page)=40", "SIZE(list_head)=8", "OFFSET(page.flags)=0", "OFFSET(page.lru)=4",
        "OFFSET(page.mapping)=12", "OFFSET(list_head.next)=0", "OFFSET(list_head.prev)=4"),
}  # fmt: skip


def vmcoreinfo_text(
    *,
    release: str,
    build_id: str,
    syms: Mapping[str, int],
    word_size: int,
    generic_keys: Sequence[str] = (),
    arch_keys: Sequence[str] = (),
) -> bytes:
    """The kernel's VMCOREINFO text: the generic keys in kernel order, then the arch block (notes-and-vmcoreinfo.md
    §4); every synthetic architecture writes it through here."""
    lines = [
        f"OSRELEASE={release}",
        f"BUILD-ID={build_id}",
        f"PAGESIZE={PAGE_SIZE}",
        f"SYMBOL(init_uts_ns)={syms['init_uts_ns']:x}",
        "OFFSET(uts_namespace.name)=0",
        f"SYMBOL(swapper_pg_dir)={syms['swapper_pg_dir']:x}",
        f"SYMBOL(_stext)={syms['_stext']:x}",
        *PAGE_KEYS[word_size],
        *generic_keys,
        "NUMBER(PG_lru)=4",
        "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129",
        *arch_keys,
    ]
    return ("\n".join(lines) + "\n").encode()


def _x86_64_keys(syms: Mapping[str, int], *, phys_base: int, kaslr_offset: int) -> list[str]:
    """The x86_64 block of VMCOREINFO (phys-base-and-kaslr.md §2)."""
    return [
        f"NUMBER(phys_base)={to_s64(phys_base)}",
        f"SYMBOL(init_top_pgt)={syms['init_top_pgt']:x}",
        "NUMBER(pgtable_l5_enabled)=0",
        f"KERNELOFFSET={kaslr_offset:x}",
        f"NUMBER(KERNEL_IMAGE_SIZE)={KERNEL_IMAGE_SIZE}",
        "NUMBER(sme_mask)=0",
    ]


def _boot_log(release: str, memory_size: int, banner: str) -> list[kernel_data.LogRecord]:
    """What the synthetic kernel logged; the last line says where the dump came from."""
    lines = [
        banner,
        "Command line: console=ttyS0 panic=-1",
        f"Memory: {memory_size // 1024}K available",
        f"kdfix: synthetic kernel {release}, log written by kdfix generate (not a running kernel)",
    ]
    return [kernel_data.LogRecord(text, ts_nsec=1_000_000 * i) for i, text in enumerate(lines)]


def _memmap_region(memory_size: int, image: range, size: int) -> int:
    """The highest 2 MiB-aligned PA range of ``size`` bytes in RAM above 2 MiB that misses the kernel image (where
    memblock puts vmemmap, the mem_section arrays after it)."""
    start = (memory_size - size) // SIZE_2M * SIZE_2M
    while start >= SIZE_2M:
        if start + size <= image.start or start >= image.stop:
            return start
        start -= SIZE_2M
    raise ValueError(f"memory size {memory_size:#x} leaves no room for the struct page array ({size:#x} bytes)")


def pick_vmcoreinfo_pfns(rng: random.Random, first: int, stop: int, reserved: Container[int]) -> tuple[int, int]:
    """VMCOREINFO text page and note page, two pages apart (as measured in phys-base-and-kaslr.md §3B), the text
    page in ``[first, stop - 2)`` and neither in ``reserved``."""
    for _ in range(10_000):
        text_pfn = rng.randrange(first, stop - 2)
        if text_pfn not in reserved and text_pfn + 2 not in reserved:
            return text_pfn, text_pfn + 2
    raise ValueError("no room for the VMCOREINFO pages")


def place_vmcoreinfo(store: _PageStore, text: bytes, data_pfn: int, note_pfn: int, abi: Abi) -> Note:
    """Write the VMCOREINFO text page and the kernel's note buffer holding it (notes-and-vmcoreinfo.md §4), as
    ``crash_save_vmcoreinfo`` leaves them; returns the note."""
    if len(text) >= PAGE_SIZE:
        raise ValueError("VMCOREINFO text does not fit in one page")
    store.write(data_pfn * PAGE_SIZE, text)
    note = Note(NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO, text)
    store.write(note_pfn * PAGE_SIZE, pack_note(note, abi) + bytes(12))  # and the empty note that ends the buffer
    return note


def _cpu_notes(cpus: int, *, text_vaddr: int, cr3: int, cr4: int, memory_size: int) -> tuple[list[Note], list[Note]]:
    """Per-CPU CORE/NT_PRSTATUS and QEMU notes, as QEMU writes them (qemu-dumps.md §4)."""
    prstatus = ELF_PRSTATUS_X86_64.bind(LP64_LE)
    qemu = QEMU_CPU_STATE.bind(LP64_LE, QEMU_CPU_STATE_VERSION)
    seg = QEMU_CPU_SEGMENT.make
    core_notes, qemu_notes = [], []
    for cpu in range(cpus):
        rip = text_vaddr + 0x3A2E + 0x40 * cpu  # somewhere in the idle loop
        rsp = 0xFFFFC90000013E90 + 0x4000 * cpu
        gs_base = PAGE_OFFSET + memory_size - (cpus - cpu) * 0x40000
        gprs = {"rax": 0, "rbx": cpu, "rcx": 1, "rdx": 0, "rsi": 0, "rdi": 0, "rbp": rsp + 0x40, "rsp": rsp}
        regs = X86_64_USER_REGS.make(
            **{k: v for k, v in gprs.items()},
            rip=rip,
            cs=0x10,
            eflags=0x246,
            ss=0x18,
            gs_base=gs_base,
        )
        core_notes.append(
            Note(
                NOTE_NAME_CORE,
                NoteType.NT_PRSTATUS,
                prstatus.pack(ELF_PRSTATUS_X86_64.make(pr_pid=cpu + 1, pr_reg=regs)),
            )
        )
        state = QEMU_CPU_STATE.make(
            version=QEMU_CPU_STATE_VERSION,
            size=QEMU_CPU_STATE_SIZES[QEMU_CPU_STATE_VERSION],
            **gprs,
            **{f"r{i}": 0 for i in range(8, 16)},
            rip=rip,
            rflags=0x246,
            cs=seg(selector=0x10, limit=0xFFFFFFFF, flags=0x00AF9B00),
            ds=seg(selector=0x18, limit=0xFFFFFFFF, flags=0x00CF9300),
            es=seg(selector=0x18, limit=0xFFFFFFFF, flags=0x00CF9300),
            ss=seg(selector=0x18, limit=0xFFFFFFFF, flags=0x00CF9300),
            fs=seg(),
            gs=seg(base=gs_base),
            ldt=seg(),
            tr=seg(selector=0x40, limit=0x206F, flags=0x8B00, base=CPU_ENTRY_AREA + 0x3000 + 0x3B000 * cpu),
            gdt=seg(limit=0x7F, base=CPU_ENTRY_AREA + 0x1000 + 0x3B000 * cpu),
            idt=seg(limit=0xFFF, base=CPU_ENTRY_AREA),
            cr0=0x80050033,
            cr2=0,
            cr3=cr3,
            cr4=cr4,
            kernel_gs_base=0,
        )
        qemu_notes.append(Note(NOTE_NAME_QEMU, NOTE_TYPE_QEMU, qemu.pack(state)))
    return core_notes, qemu_notes


def build_linux_image(
    *,
    memory_size: int = DEFAULT_MEMORY,
    cpus: int = 1,
    phys_base: int = 0,
    kaslr_offset: int = 0,
    release: str = DEFAULT_RELEASE,
    seed: int = 0,
    vmcoreinfo_in_notes: bool = True,
    pti: bool = False,
    filler_fraction: float = 0.15,
    qemu_header_bug: bool = False,
    firmware: bool = True,
) -> tuple[DumpModel, SparseMemory, SyntheticTruth]:
    """Build a Linux-like x86_64 memory image of ``memory_size`` bytes and its QEMU-style DumpModel.

    ``firmware`` lays memory out as QEMU dumps a PC guest (qemu-dumps.md §5): RAM ``[0, memory_size)`` plus the
    256 KiB firmware ROM at ``0xfffc0000``, so ``max_mapnr`` is 0x100000 and the bitmaps have a hole in between
    (RAM must end below the ROM). Without it, memory is the RAM alone and ``max_mapnr`` = its page count.

    ``phys_base`` is signed or u64 two's complement; it and ``kaslr_offset`` must be multiples of 2 MiB, and
    ``PA(_text) = 0x1000000 + phys_base + kaslr_offset`` must leave the 4 MiB image inside memory.
    ``pti`` points every CPU's CR3 at the user half of the PGD pair (bit 12 set, PCID bits, CR4.PCIDE).
    ``qemu_header_bug`` stores QEMU's hex misparse of ``NUMBER(phys_base)`` in the header (qemu-dumps.md §6).
    """
    pb = _check_x86_64_request(memory_size, cpus, release, phys_base, kaslr_offset, firmware=firmware)
    text_paddr = LINK_PHYS_START + pb + kaslr_offset
    img = _X86Image(memory_size, text_paddr, DEFAULT_LINK_TEXT + kaslr_offset, random.Random(seed),
                    _PageStore(memory_size // PAGE_SIZE))  # fmt: skip
    syms = {name: va + kaslr_offset for name, va in X86_64_LINK_SYMBOLS.items()}
    log, ring = _write_kernel_text(img, release)
    memmap_pa, memmap_bytes, sparse = _write_mem_map(img)
    pgd_paddr, cr3, cr4 = _write_page_tables(img, memmap_pa, memmap_bytes, pti=pti)

    image_pfns = range(text_paddr // PAGE_SIZE, (text_paddr + IMAGE_SIZE) // PAGE_SIZE)
    memmap_pfns = range(memmap_pa // PAGE_SIZE, (memmap_pa + memmap_bytes + SIZE_2M) // PAGE_SIZE)
    keys = (*_x86_64_keys(syms, phys_base=to_u64(pb), kaslr_offset=kaslr_offset), *sparse.vmcoreinfo,
            *ring.vmcoreinfo)  # fmt: skip
    text, data_pfn, note_pfn = _write_vmcoreinfo(img, set(image_pfns) | set(memmap_pfns), release, syms, keys)
    vmcoreinfo_note = Note(NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO, text)

    reserved = set(image_pfns) | set(memmap_pfns) | {data_pfn, note_pfn}
    write_filler(img.rng, img.store, range(img.ram_pfns), reserved, filler_fraction)
    memory = image_memory(img.store, (0, img.ram_pfns), firmware_seed=seed if firmware else None)
    core_notes, qemu_notes = _cpu_notes(cpus, text_vaddr=img.text_vaddr, cr3=cr3, cr4=cr4, memory_size=memory_size)
    notes = [*core_notes, *qemu_notes, *([vmcoreinfo_note] if vmcoreinfo_in_notes else [])]
    model = DumpModel(
        utsname=make_utsname(machine="x86_64"),  # QEMU 7.2's header (qemu-dumps.md §6.2)
        block_size=PAGE_SIZE,
        max_mapnr=memory.max_pfn,
        nr_cpus=cpus,
        phys_base=_x86_64_header_phys_base(pb, vmcoreinfo_in_notes, qemu_header_bug=qemu_header_bug),
        dump_level=1,
        notes=tuple(notes),
        vmcoreinfo=text if vmcoreinfo_in_notes else None,
        e_machine=EM_X86_64,
    )
    # the header utsname as every kdfix writer fills it: the kernel's init_uts_ns when VMCOREINFO locates it
    model = with_utsname(model, choose_utsname(model, memory))
    truth = SyntheticTruth(
        phys_base=to_u64(pb),
        kaslr_offset=kaslr_offset,
        text_paddr=text_paddr,
        text_vaddr=img.text_vaddr,
        init_uts_ns=syms["init_uts_ns"],
        swapper_pg_dir=syms["swapper_pg_dir"],
        linux_banner=syms["linux_banner"],
        idt_table=syms["idt_table"],
        pgd_paddr=pgd_paddr,
        idt_paddr=img.kpa(OFF_IDT_TABLE),
        vmcoreinfo_note_paddr=note_pfn * PAGE_SIZE,
        vmcoreinfo_data_paddr=data_pfn * PAGE_SIZE,
        release=release,
        vmcoreinfo=text,
        vmlinux_symbols=dict(X86_64_LINK_SYMBOLS),
        log=tuple(r.text for r in log),
        mem_map_paddr=memmap_pa,
    )
    return model, memory, truth


def _write_vmcoreinfo(img: _X86Image, taken: set[int], release: str, syms: dict[str, int],
                      keys: tuple[str, ...]) -> tuple[bytes, int, int]:  # fmt: skip
    """The VMCOREINFO text page and note buffer, on two RAM pages outside ``taken``: (text, text pfn, note pfn)."""
    data_pfn, note_pfn = pick_vmcoreinfo_pfns(img.rng, min(0x100, img.ram_pfns // 4), img.ram_pfns, taken)
    build_id = img.rng.randbytes(20).hex()
    text = vmcoreinfo_text(release=release, build_id=build_id, syms=syms, word_size=8, arch_keys=keys)
    place_vmcoreinfo(img.store, text, data_pfn, note_pfn, LP64_LE)
    return text, data_pfn, note_pfn


# The x86_64 image's symbols at the link address (KASLR adds its offset to each).
X86_64_LINK_SYMBOLS = {
    "_text": DEFAULT_LINK_TEXT,
    "_stext": DEFAULT_LINK_TEXT,
    "asm_exc_divide_error": DEFAULT_LINK_TEXT + OFF_DIVIDE_ERROR,
    "linux_banner": DEFAULT_LINK_TEXT + OFF_BANNER,
    "init_uts_ns": DEFAULT_LINK_TEXT + OFF_INIT_UTS_NS,
    "idt_table": DEFAULT_LINK_TEXT + OFF_IDT_TABLE,
    "init_top_pgt": DEFAULT_LINK_TEXT + OFF_INIT_TOP_PGT,
    "swapper_pg_dir": DEFAULT_LINK_TEXT + OFF_INIT_TOP_PGT,
}


def _check_x86_64_request(
    memory_size: int, cpus: int, release: str, phys_base: int, kaslr_offset: int, *, firmware: bool
) -> int:
    """The signed phys_base of a request that fits (ValueError naming what does not)."""
    if memory_size <= 0 or memory_size % PAGE_SIZE:
        raise ValueError(f"memory size {memory_size:#x} must be a positive multiple of {PAGE_SIZE}")
    if memory_size < 8 * MiB:
        raise ValueError("memory size must be at least 8 MiB")
    if firmware and memory_size >= FIRMWARE_BASE:
        raise ValueError(
            f"memory size {memory_size:#x} reaches the firmware ROM at {FIRMWARE_BASE:#x}; "
            "use less than 4 GiB - 256 KiB, or firmware=False (--no-firmware)"
        )
    if not 1 <= cpus <= 1024:
        raise ValueError(f"cpus must be 1..1024, got {cpus}")
    if len(release.encode()) > 64 or not release:
        raise ValueError("release must be 1..64 bytes")
    pb = _parse_phys_base(phys_base)
    if pb % SIZE_2M:
        raise ValueError(f"phys_base {pb:#x} is not a multiple of 2 MiB")
    if kaslr_offset % SIZE_2M or not 0 <= kaslr_offset < KERNEL_IMAGE_SIZE - IMAGE_SIZE - LINK_PHYS_START:
        raise ValueError(
            f"kaslr_offset {kaslr_offset:#x} must be a multiple of 2 MiB in "
            f"[0, {KERNEL_IMAGE_SIZE - IMAGE_SIZE - LINK_PHYS_START:#x})"
        )
    text_paddr = LINK_PHYS_START + pb + kaslr_offset
    if text_paddr < 0 or text_paddr + IMAGE_SIZE > memory_size:
        raise ValueError(
            f"kernel image at PA {text_paddr:#x} (0x1000000 + phys_base {pb:#x} + kaslr_offset {kaslr_offset:#x}) "
            f"does not fit in {memory_size:#x} bytes of memory"
        )
    return pb


@dataclass
class _X86Image:
    """The x86_64 image being built: where its kernel sits, the page store and the RNG every stage draws from
    in turn (the order of draws is the image: the same seed gives the same bytes)."""

    memory_size: int
    text_paddr: int
    text_vaddr: int
    rng: random.Random
    store: _PageStore

    @property
    def ram_pfns(self) -> int:
        return self.memory_size // PAGE_SIZE

    def kva(self, off: int) -> int:
        return self.text_vaddr + off

    def kpa(self, off: int) -> int:
        return self.text_paddr + off


def _write_kernel_text(img: _X86Image, release: str) -> tuple[list[kernel_data.LogRecord], kernel_data.Placed]:
    """Kernel text, exception handlers, banner, init_uts_ns, the IDT and the printk ring; (log, ring)."""
    store, kpa, kva = img.store, img.kpa, img.kva
    for i in range(TEXT_PAGES):
        store.write(kpa(i * PAGE_SIZE), _code_page(img.rng))
    for i in range(3):
        store.write(kpa((OFF_DIVIDE_ERROR & ~0xFFF) + i * PAGE_SIZE), _code_page(img.rng))
    for vector in range(256):  # endbr64; push $-1; jmp — recognisable handler heads
        store.write(kpa(OFF_DIVIDE_ERROR + 0x20 * vector), b"\xf3\x0f\x1e\xfa\x6a\xff\xe9" + bytes(4))
    banner = linux_banner(release)
    store.write(kpa(OFF_BANNER), banner)
    store.write(kpa(OFF_INIT_UTS_NS), _utsname_block(release))
    store.write(kpa(OFF_IDT_TABLE), _idt_page(img.text_vaddr))
    log = _boot_log(release, img.memory_size, banner.decode().rstrip("\n\0"))
    ring = kernel_data.printk_ring(
        log, prb=kva(OFF_PRB), rb=kva(OFF_PRINTK_RB_STATIC), clear_seq=kva(OFF_CLEAR_SEQ), descs=kva(OFF_PRB_DESCS),
        infos=kva(OFF_PRB_INFOS), data=kva(OFF_PRB_TEXT), count_bits=PRB_COUNT_BITS, size_bits=PRB_SIZE_BITS,
    )  # fmt: skip
    for va, blob in ring.blobs.items():
        store.write(kpa(va - img.text_vaddr), blob)
    return log, ring


def _write_mem_map(img: _X86Image) -> tuple[int, int, kernel_data.Placed]:
    """SPARSEMEM_EXTREME (arch-kernels-and-introspection.md §6.2): vmemmap struct pages, then the root array and
    section pages (reached through the direct map), in one region of RAM outside the image; (PA, size, blobs)."""
    image_pas = range(img.text_paddr, img.text_paddr + IMAGE_SIZE)
    memmap_bytes = kernel_data.memmap_size(img.ram_pfns)
    memmap_pa = _memmap_region(img.memory_size, image_pas, memmap_bytes + SIZE_2M)
    root_pa = memmap_pa + memmap_bytes
    sparse = kernel_data.sparse_mem_map(
        img.ram_pfns, root=PAGE_OFFSET + root_pa, sections=PAGE_OFFSET + root_pa + kernel_data.ROOT_ARRAY_SIZE
    )
    for va, blob in sparse.blobs.items():
        img.store.write(memmap_pa if va == kernel_data.VMEMMAP_BASE else va - PAGE_OFFSET, blob)  # else: direct map
    return memmap_pa, memmap_bytes, sparse


def _write_page_tables(img: _X86Image, memmap_pa: int, memmap_bytes: int, *, pti: bool) -> tuple[int, int, int]:
    """Page tables (phys-base-and-kaslr.md §3C): the image in 2 MiB pages from _text, the direct map, vmemmap and
    the cpu-entry-area IDT; (PGD PA, CR3, CR4)."""
    store, kpa, kva = img.store, img.kpa, img.kva
    alloc = table_allocator(kpa(OFF_TABLES), kpa(OFF_TABLES_END), store.write)
    pgd_paddr = kpa(OFF_INIT_TOP_PGT)
    store.write(pgd_paddr, bytes(2 * PAGE_SIZE))
    tables = PageTableBuilder(pgd_paddr, alloc, store.write_u64)
    for off in range(0, IMAGE_SIZE, SIZE_2M):
        flags = KERNEL_TEXT_LARGE if off < SIZE_2M else KERNEL_DATA_LARGE
        tables.map_2m(kva(off), kpa(off), flags)
    for paddr in range(0, img.memory_size, SIZE_2M):
        tables.map_2m(PAGE_OFFSET + paddr, paddr, KERNEL_DATA_LARGE)
    for off in range(0, memmap_bytes, SIZE_2M):
        tables.map_2m(kernel_data.VMEMMAP_BASE + off, memmap_pa + off, KERNEL_DATA_LARGE)
    tables.map_4k(CPU_ENTRY_AREA, kpa(OFF_IDT_TABLE), KERNEL_RO_4K)
    cr3, cr4 = pgd_paddr, 0x6B0
    if pti:  # user PGD = kernel PGD + 4 KiB; only the cpu-entry-area is shared
        cea_index = (CPU_ENTRY_AREA >> 39) & 511
        entry = bytes(store.pages[pgd_paddr // PAGE_SIZE][8 * cea_index : 8 * cea_index + 8])
        store.write(pgd_paddr + PAGE_SIZE + 8 * cea_index, entry)
        cr3 = pgd_paddr | 0x1000 | 0x801
        cr4 |= 1 << 17
    return pgd_paddr, cr3, cr4


def linux_banner(release: str) -> bytes:
    """``linux_banner`` as the synthetic kernels hold it: Debian's compiler line, NUL-terminated."""
    return (
        f"Linux version {release} (kdfix@synthetic) (gcc (Debian 12.2.0-14) 12.2.0, "
        f"GNU ld (GNU Binutils for Debian) 2.40) {UTS_VERSION}\n\0"
    ).encode()


def write_filler(rng: random.Random, store: _PageStore, ram: range, reserved: set[int], fraction: float) -> None:
    """Filler over the pfns ``ram``: zero pages mostly, some random and text-like pages."""
    corpus = _text_corpus(rng)
    for pfn in rng.sample(ram, int(len(ram) * fraction)):
        if pfn not in reserved and pfn not in store.pages:
            store.pages[pfn] = bytearray(_filler_page(rng, rng.randrange(4), corpus))


def image_memory(store: _PageStore, ram: tuple[int, int], *, firmware_seed: int | None) -> SparseMemory:
    """The built pages over the pfn range ``ram``, and the PC firmware ROM below 4 GiB when given its seed
    (qemu-dumps.md §5)."""
    pages = {pfn: bytes(page) for pfn, page in store.pages.items()}
    ranges = [ram]
    if firmware_seed is not None:
        pages.update(_firmware_pages(firmware_seed))
        ranges.append((FIRMWARE_BASE // PAGE_SIZE, FIRMWARE_END // PAGE_SIZE))
    return SparseMemory(pages, ranges[-1][1], ranges=ranges)


def _x86_64_header_phys_base(pb: int, vmcoreinfo_in_notes: bool, *, qemu_header_bug: bool) -> int:
    """The header phys_base QEMU writes: from VMCOREINFO's NUMBER(phys_base), else 0 (qemu-dumps.md §6)."""
    if not vmcoreinfo_in_notes:
        return 0
    if qemu_header_bug:
        from kdfix.detect.vmcoreinfo_note import qemu_misparse

        return qemu_misparse(str(pb)) or 0  # unparsable: QEMU keeps 0 (qemu-dumps.md §6 bug 1)
    return to_u64(pb)


def kernel_text_paddr(phys_base: int, kaslr_offset: int) -> int:
    """PA(_text) for a phys_base (signed or u64) and KASLR offset (phys-base-and-kaslr.md §1)."""
    return LINK_PHYS_START + to_s64(phys_base) + kaslr_offset


__all__ = [
    "CPU_ENTRY_AREA",
    "FIRMWARE_BASE",
    "FIRMWARE_END",
    "IMAGE_SIZE",
    "PAGE_OFFSET",
    "SparseMemory",
    "SyntheticTruth",
    "build_linux_image",
    "kernel_text_paddr",
]
