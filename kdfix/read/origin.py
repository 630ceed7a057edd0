"""identify_origin: which program wrote a dump (qemu-dumps.md §8, tools-and-oracles.md §6, kdfix's KDFIX note)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kdfix.arch import recognise
from kdfix.arch.base import MIN_PAGE_SIZE
from kdfix.errors import KdfixError
from kdfix.format import kdumpling
from kdfix.format.constants import (
    NOTE_NAME_CORE,
    NOTE_NAME_KDFIX,
    NOTE_NAME_QEMU,
    SYNTHETIC_BIOS_ID,
    SYNTHETIC_BIOS_ID_PADDR,
    SYNTHETIC_NODENAME,
    NoteType,
)
from kdfix.model import DumpModel
from kdfix.units import cstr

if TYPE_CHECKING:
    from kdfix.read.dump import Dump
    from kdfix.read.kdump import KdumpContainer

QEMU_STYLE_GENERATED = "qemu-style (generated?)"
ORIGINS = ("qemu", QEMU_STYLE_GENERATED, "makedumpfile", "kdumpling", "kdfix", "unknown")


def _qemu_evidence(dump: Dump) -> list[str]:
    model = dump.model
    ev: list[str] = []
    qemu = [n for n in model.notes if n.name.startswith(NOTE_NAME_QEMU)]
    core = [n for n in model.notes if n.type == NoteType.NT_PRSTATUS and n.name == NOTE_NAME_CORE]
    if not qemu:
        return ev
    ev.append(f"{len(qemu)} QEMU CPU-state notes")
    if len(qemu) == len(core):
        ev.append(f"one QEMU note per CORE note ({len(core)})")
    if dump.kdump is not None:
        ev.extend(_qemu_header_defaults(model))
    return ev


def _qemu_header_defaults(model: DumpModel) -> list[str]:
    """The header values QEMU hard-codes: empty utsname but for the machine, timestamp 0, dump_level 1."""
    ev = []
    uts = model.utsname
    if not any(getattr(uts, f).strip(b"\0") for f in ("sysname", "nodename", "release", "version", "domainname")):
        ev.append(f"utsname all zero except machine {cstr(uts.machine)!r}")
    if model.tv_sec == 0 and model.tv_usec == 0:
        ev.append("timestamp 0")
    if model.dump_level == 1:
        ev.append("dump_level 1")
    return ev


def _kdumpling_evidence(dump: Dump) -> list[str]:
    ev: list[str] = []
    short = [n for n in dump.model.notes if n.name == NOTE_NAME_CORE and n.type == NoteType.NT_PRSTATUS
             and len(n.desc) == kdumpling.PRSTATUS_SIZE]  # fmt: skip
    if short:
        ev.append(f"{len(short)} NT_PRSTATUS notes of {kdumpling.PRSTATUS_SIZE} bytes (kdumpling's short elf_prstatus)")
    k = dump.kdump
    if k is None:
        e = dump.elf
        if e is not None and e.segments and all(s.vaddr == s.paddr for s in e.segments):
            ev.append("PT_LOAD p_vaddr == p_paddr (kdumpling's ELF; a kernel's vmcore has kernel addresses)")
        if e is not None and any(s.file_offset % e.page_size for s in e.segments):
            ev.append("PT_LOAD data not page-aligned in the file (kdumpling packs it after the notes)")
        return ev
    mh, sh = k.main_header, k.sub_header
    if cstr(mh.utsname.nodename) == "synthetic":
        ev.append("utsname.nodename 'synthetic'")
    if k.dialect == "kdumpling" or (k.single_bitmap and mh.sub_hdr_size == 1):
        ev.append("bitmap_blocks counts one bitmap (kdumpling mistake 1)")
    if mh.total_ram_blocks and mh.total_ram_blocks == mh.written_blocks:
        ev.append("total_ram_blocks == written_blocks == page count")
    if sh is not None and not k.split and (sh.start_pfn or sh.end_pfn):
        ev.append("start_pfn/end_pfn set although split is 0")
    if mh.status == 0x8 and (k.dialect == "kdumpling" or k.compression == "none"):
        ev.append("status 8 (kdumpling's ZSTD value)")
    return ev


# PC guests (the only ones with QEMU notes: they are x86 CPU state, qemu-dumps.md §4) have no RAM in
# [3 GiB, 4 GiB): QEMU's i440fx and q35 machine types put RAM above 4 GiB from 3 GiB (q35: 2 GiB) on.  QEMU dumps
# every RAM-backed block there too: VRAM at 0xfd000000 and the BIOS ROM at 0xfffc0000 (SeaBIOS), OVMF's VGA memory
# at 0xc0000000; makedumpfile keeps System RAM only (qemu-dumps.md §5 and §8 signal 5; measured: makedumpfile
# output of a 128 MiB SeaBIOS guest has max_mapnr 0x8000 and no bit above pfn 0x8000, QEMU's has 0x100000).
PC_HOLE_START = 0xC0000000
PC_HOLE_END = 1 << 32


def _pc_hole_pages(k: KdumpContainer) -> int:
    """Pages in the 1st bitmap within [3 GiB, 4 GiB), the PC's firmware/PCI hole."""
    return k.valid.count(PC_HOLE_START // k.block_size, PC_HOLE_END // k.block_size)


def _filled_qemu_dump(dump: Dump, k: KdumpContainer, qemu: list[str]) -> tuple[str, list[str]]:
    """QEMU notes + a full kernel utsname, which QEMU never writes (qemu-dumps.md §3): either a fixer filled the
    header of a QEMU dump in, or makedumpfile rewrote one (keeping its notes).  Signals QEMU never produces decide
    first; then a repair trail or QEMU's memory coverage; otherwise the dump covers RAM only, as makedumpfile's do."""
    model = dump.model
    release = cstr(model.utsname.release)
    info = model.parsed_vmcoreinfo()
    stamped = model.tv_sec != 0 and (info is None or info.crashtime != model.tv_sec)  # not CRASHTIME
    base = [f"full kernel utsname ({release}), which QEMU never writes", f"notes copied from a QEMU dump ({qemu[0]})"]
    if model.dump_level != 1:
        return "makedumpfile", [*base, f"dump_level {model.dump_level} (QEMU always writes 1)"]
    if k.valid != k.dumped:
        return "makedumpfile", [*base, "the bitmaps differ (QEMU writes two identical bitmaps)"]
    if stamped:
        return "makedumpfile", [*base, f"timestamp {model.tv_sec} set and not CRASHTIME (QEMU writes 0)"]
    filled = f"utsname filled in after the dump ({release}); both bitmaps identical"
    if k.notes_offset and k.notes_offset >= k.descriptors_end:
        moved = f"notes area at {k.notes_offset:#x}, past the page data (relocated by a later repair)"
        return "qemu", [*qemu, filled, moved]
    hole = _pc_hole_pages(k)
    if hole:
        coverage = (
            f"{hole} pages dumped in [{PC_HOLE_START:#x}, {PC_HOLE_END:#x}) (firmware ROM/VRAM: QEMU dumps them, "
            f"makedumpfile keeps RAM only); max_mapnr {k.max_mapnr:#x}"
        )
        return "qemu", [*qemu, filled, coverage]
    return "makedumpfile", [
        *base,
        f"1st bitmap covers RAM only (nothing in [{PC_HOLE_START:#x}, {PC_HOLE_END:#x}), max_mapnr "
        f"{k.max_mapnr:#x}); QEMU dumps the firmware ROM and VRAM there",
    ]


def _qemu_block_evidence(dump: Dump) -> list[str]:
    """QEMU signals of a dump without QEMU CPU notes (aarch64 writes only NT_PRSTATUS): the target's 64 KiB
    block size, machine "Unknown", timestamp 0, dump_level 1 and phys_base = the RAM start (qemu-dumps.md §3,
    arch-kernels-and-introspection.md §1.6). Three or more, the block size among them, name QEMU."""
    k, model = dump.kdump, dump.model
    found = recognise(model)
    if k is None or k.is_diskdump or found is None or k.block_size <= MIN_PAGE_SIZE:
        return []
    if k.block_size != found.arch.qemu_block_size:
        return []
    ev = [f"block_size {k.block_size}: QEMU's {found.arch.name} block, whatever the guest's page size"]
    ev.extend(_qemu_header_defaults(model))
    first = next(iter(k.valid.iter_set()), None)
    if first is not None and model.phys_base == first * k.block_size:
        ev.append(f"phys_base {model.phys_base:#x} = the lowest dumped address (QEMU without the vmcoreinfo device)")
    return ev if len(ev) >= 4 else []


def _generated_evidence(dump: Dump) -> list[str]:
    """What ``kdfix generate --style linux`` puts in its guest (kdfix.format.constants): a QEMU-style file holding
    kdfix's synthetic kernel or BIOS was most likely generated, though its headers and notes are QEMU's."""
    ev = []
    if cstr(dump.model.utsname.nodename) == SYNTHETIC_NODENAME:
        ev.append(f"utsname.nodename {SYNTHETIC_NODENAME!r}: kdfix's synthetic kernel")
    try:
        rom = dump.memory.read(SYNTHETIC_BIOS_ID_PADDR, len(SYNTHETIC_BIOS_ID))
    except KdfixError:
        rom = b""
    if rom == SYNTHETIC_BIOS_ID:
        ev.append(f"{SYNTHETIC_BIOS_ID.decode()!r} at PA {SYNTHETIC_BIOS_ID_PADDR:#x}: kdfix's pseudo-BIOS")
    return ev


def identify_origin(dump: Dump) -> tuple[str, list[str]]:
    """Return (origin, evidence): origin is one of ORIGINS.

    A dump whose headers and notes are QEMU's but which holds kdfix's synthetic guest is "qemu-style (generated?)":
    ``kdfix generate`` without ``--mark`` writes exactly what QEMU would, so only the contents hint otherwise.
    Without those hints (``--no-firmware --no-vmcoreinfo``) a generated dump still reads as qemu.
    """
    origin, evidence = _identify(dump)
    if origin == "qemu":
        generated = _generated_evidence(dump)
        if generated:
            return QEMU_STYLE_GENERATED, [*evidence, *generated]
    return origin, evidence


def _identify(dump: Dump) -> tuple[str, list[str]]:
    model = dump.model
    kdfix_notes = [n for n in model.notes if n.name == NOTE_NAME_KDFIX]
    if kdfix_notes:
        text = kdfix_notes[0].desc.split(b"\0", 1)[0].decode("latin-1", "replace").strip()
        return "kdfix", [f"note KDFIX present: {text[:80]!r}" if text else "note KDFIX present"]
    qemu = _qemu_evidence(dump) or _qemu_block_evidence(dump)
    k = dump.kdump
    if qemu and k is not None and cstr(model.utsname.sysname) == "Linux" and cstr(model.utsname.release):
        return _filled_qemu_dump(dump, k, qemu)
    if qemu:
        return "qemu", qemu
    ling = _kdumpling_evidence(dump)
    if len(ling) >= 2:
        return "kdumpling", ling
    if k is not None and not k.is_diskdump:
        uts = model.utsname
        ev = []
        if cstr(uts.sysname) == "Linux" and cstr(uts.release):
            ev.append(f"full kernel utsname ({cstr(uts.release)})")
        if model.tv_sec:
            ev.append("timestamp set")
        if k.split:
            ev.append("split part (only makedumpfile --split writes them)")
        if dump.container == "flattened":
            ev.append("flattened stream without QEMU notes (makedumpfile -F)")
        if ev and not ling:
            return "makedumpfile", ev
        if ling:
            return "unknown", ling
    return "unknown", []
