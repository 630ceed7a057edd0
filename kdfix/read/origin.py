"""identify_origin: which program wrote a dump (qemu-dumps.md §8, tools-and-oracles.md §6, kdfix's KDFIX note)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kdfix.format.constants import NOTE_NAME_CORE, NOTE_NAME_KDFIX, NOTE_NAME_QEMU, NoteType
from kdfix.units import cstr

if TYPE_CHECKING:
    from kdfix.read.dump import Dump

ORIGINS = ("qemu", "makedumpfile", "kdumpling", "kdfix", "unknown")


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
        uts = model.utsname
        if not any(getattr(uts, f).strip(b"\0") for f in ("sysname", "nodename", "release", "version", "domainname")):
            ev.append(f"utsname all zero except machine {cstr(uts.machine)!r}")
        if model.tv_sec == 0 and model.tv_usec == 0:
            ev.append("timestamp 0")
        if model.dump_level == 1:
            ev.append("dump_level 1")
    return ev


def _kdumpling_evidence(dump: Dump) -> list[str]:
    k = dump.kdump
    if k is None:
        return []
    mh, sh = k.main_header, k.sub_header
    ev: list[str] = []
    if cstr(mh.utsname.nodename) == "synthetic":
        ev.append("utsname.nodename 'synthetic'")
    if k.single_bitmap and mh.sub_hdr_size == 1:
        ev.append("bitmap_blocks counts one bitmap (kdumpling mistake 1)")
    if mh.total_ram_blocks and mh.total_ram_blocks == mh.written_blocks:
        ev.append("total_ram_blocks == written_blocks == page count")
    if sh is not None and not k.split and (getattr(sh, "start_pfn", 0) or getattr(sh, "end_pfn", 0)):
        ev.append("start_pfn/end_pfn set although split is 0")
    if mh.status & 0x8 and k.compression == "none":
        ev.append("status 8 (kdumpling's ZSTD value)")
    return ev


def identify_origin(dump: Dump) -> tuple[str, list[str]]:
    """Return (origin, evidence): origin is one of qemu, makedumpfile, kdumpling, kdfix, unknown."""
    model = dump.model
    kdfix_notes = [n for n in model.notes if n.name == NOTE_NAME_KDFIX]
    if kdfix_notes:
        text = kdfix_notes[0].desc.split(b"\0", 1)[0].decode("latin-1", "replace").strip()
        return "kdfix", [f"note KDFIX present: {text[:80]!r}" if text else "note KDFIX present"]
    qemu = _qemu_evidence(dump)
    k = dump.kdump
    if qemu and k is not None and cstr(model.utsname.sysname) == "Linux" and cstr(model.utsname.release):
        # QEMU never fills utsname (qemu-dumps.md §3).  Either makedumpfile re-filtered a QEMU dump, keeping its
        # notes (then dump_level > 1 excluded pages, or it stamped the time), or a fixer filled the header in.
        info = model.parsed_vmcoreinfo()
        stamped = model.tv_sec != 0 and (info is None or info.crashtime != model.tv_sec)  # not CRASHTIME
        if model.dump_level != 1 or k.valid != k.dumped or stamped:
            return "makedumpfile", [
                f"full kernel utsname ({cstr(model.utsname.release)}), which QEMU never writes",
                f"notes copied from a QEMU dump ({qemu[0]})",
                f"dump_level {model.dump_level}" + (", bitmaps differ" if k.valid != k.dumped else ""),
            ]
        qemu = [*qemu, f"utsname filled in after the dump ({cstr(model.utsname.release)}); both bitmaps identical"]
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
