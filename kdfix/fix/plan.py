"""Turn a Diagnosis into a Plan: header field patches (offsets from the layouts) and one appended notes blob.

Pure: no I/O. Offsets are in the KDUMP file (for a flattened stream, the reassembled file); ``apply`` maps them
to the stream. Relocating the notes blob to EOF follows notes-and-vmcoreinfo.md §5 option (b).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from kdfix.fix.diagnose import FLAT_HINT_OFFSET, REWRITE_KINDS, Diagnosis, Finding, KdumpFacts
from kdfix.format.constants import KDUMP_HEADER_VERSION, NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO
from kdfix.format.kdump import header_features
from kdfix.format.layout import Abi, BoundLayout
from kdfix.notes.framing import Note, note_offsets, pack_note, pack_notes
from kdfix.units import align_up, cstr

APPEND_ALIGN = 8


@dataclass(frozen=True, slots=True)
class Edit:
    """One change: ``old`` are the bytes there now (empty for appended data), ``new`` what replaces them."""

    field: str
    dump_offset: int
    old: bytes
    new: bytes
    old_value: str
    new_value: str


@dataclass(frozen=True)
class KdumpRewrite:
    """A KDUMP file written anew: the target header values (None: keep the dump's) and the new blocking/ABI."""

    reason: str
    block_size: int
    abi: Abi
    phys_base: int | None = None
    utsname: dict[str, bytes] | None = None
    vmcoreinfo: bytes | None = None  # added as a note when the dump has none
    notes: tuple[Note, ...] | None = None  # the whole notes area anew (several kernels: the chosen kernel's notes)
    tv_sec: int | None = None
    status: int | None = None


@dataclass(frozen=True)
class Plan:
    """Patches of existing header bytes, an optional blob appended at ``append.dump_offset``, or an ELF rewrite."""

    container: str
    edits: tuple[Edit, ...] = ()
    append: Edit | None = None
    stream_edits: tuple[Edit, ...] = ()  # flattened only: ``dump_offset`` is the stream file offset
    rewrite_elf: bool = False
    elf_vmcoreinfo: bytes | None = None
    rewrite_reason: str = ""
    rewrite_kdump: KdumpRewrite | None = None
    elf_notes: tuple[Note, ...] | None = None  # the notes the rewritten ELF carries (None: the dump's own)

    @property
    def empty(self) -> bool:
        return (
            not self.edits
            and self.append is None
            and not self.rewrite_elf
            and not self.stream_edits
            and self.rewrite_kdump is None
        )

    @property
    def rewrites(self) -> bool:
        """The file is written anew (ELF rewrite or KDUMP re-blocking), not patched."""
        return self.rewrite_elf or self.rewrite_kdump is not None

    def all_edits(self) -> tuple[Edit, ...]:
        return self.edits + ((self.append,) if self.append is not None else ()) + self.stream_edits


class _Patcher:
    """Collects field patches for one header (main or sub), the last value per field winning."""

    def __init__(self, prefix: str, layout: BoundLayout, base: int, raw: bytes) -> None:
        self.prefix, self.layout, self.base, self.raw = prefix, layout, base, raw
        self.values: dict[str, tuple[bytes, str]] = {}

    def set(self, path: str, value: int | bytes, shown: str | None = None) -> None:
        if isinstance(value, int) and value < 0:
            value &= (1 << (8 * self.layout.size_of(path))) - 1  # two's complement in an unsigned field
        elif isinstance(value, int) and self.layout.size_of(path) < 8:
            value &= (1 << (8 * self.layout.size_of(path))) - 1  # u64 phys_base in a 32-bit ulong
        new = self.layout.pack_field(path, value)
        self.values[path] = (new, shown if shown is not None else _show(value))

    def edits(self) -> list[Edit]:
        out = []
        for path, (new, shown) in self.values.items():
            off = self.layout.offset_of(path)
            old = self.raw[off : off + len(new)].ljust(len(new), b"\0")
            if old != new:
                old_value = _raw_show(old, path, self.layout.abi.endian)
                out.append(Edit(f"{self.prefix}.{path}", self.base + off, old, new, old_value, shown))
        return out


def _show(value: int | bytes) -> str:
    return cstr(value) if isinstance(value, bytes) else f"{value:#x}"


def _raw_show(raw: bytes, path: str, endian: str) -> str:
    if path.startswith("utsname."):
        return cstr(raw)
    if path == "timestamp.tv_sec":
        return str(int.from_bytes(raw, endian, signed=True))  # type: ignore[arg-type]
    return f"{int.from_bytes(raw, endian):#x}"  # type: ignore[arg-type]


def plan_kdump_rewrite(diag: Diagnosis) -> Plan:
    """A whole-file rewrite carrying every finding's value (re-blocking or a new header ABI)."""
    facts = diag.facts
    assert isinstance(facts, KdumpFacts)
    values: dict[str, Any] = {"block_size": facts.block_size, "abi": facts.sub.abi}
    reasons = []
    for f in diag.findings:
        if f.kind == "block_size":
            values["block_size"] = f.value
            reasons.append(f.message)
        elif f.kind == "header_abi":
            values["abi"] = f.value
            reasons.append(f.message)
        elif f.kind == "phys_base":
            values["phys_base"] = f.value
        elif f.kind == "vmcoreinfo_note":
            values["vmcoreinfo"] = f.value
        elif f.kind == "notes":
            values["notes"] = tuple(f.value)
        elif f.kind == "utsname":
            values["utsname"] = dict(f.value)
        elif f.kind == "timestamp":
            values["tv_sec"] = f.value
        elif f.kind == "status":
            values["status"] = f.value
    return Plan(diag.container, rewrite_kdump=KdumpRewrite("; ".join(reasons), **values))


def plan_kdump(diag: Diagnosis) -> Plan:
    facts = diag.facts
    assert isinstance(facts, KdumpFacts)
    if any(f.kind in REWRITE_KINDS for f in diag.findings):
        return plan_kdump_rewrite(diag)
    bs = facts.block_size
    main = _Patcher("main_header", facts.main, 0, facts.main_raw)
    sub = _Patcher("sub_header", facts.sub, bs, facts.sub_raw)
    append: Edit | None = None
    stream: list[Edit] = []
    for f in diag.findings:
        if f.kind == "phys_base":
            sub.set("phys_base", f.value)
        elif f.kind == "vmcoreinfo_pointer":
            offset, size = f.value
            sub.set("offset_vmcoreinfo", offset)
            sub.set("size_vmcoreinfo", size)
        elif f.kind in ("vmcoreinfo_note", "notes"):
            append = _append_notes(f, facts, main, sub)
        elif f.kind == "utsname":
            for name, raw in f.value.items():
                main.set(f"utsname.{name}", raw)
        elif f.kind == "timestamp":
            main.set("timestamp.tv_sec", f.value, str(f.value))
        elif f.kind == "status":
            main.set("status", f.value)
        elif f.kind == "flat_osrelease_hint":
            stream.append(Edit("flat_header.osrelease_hint", FLAT_HINT_OFFSET, bytes(len(f.value)), f.value, "",
                               f.value.decode("latin-1").strip()))  # fmt: skip
    edits = sorted(main.edits() + sub.edits(), key=lambda e: e.dump_offset)
    return Plan(diag.container, tuple(edits), append, tuple(stream))


def _append_notes(f: Finding, facts: KdumpFacts, main: _Patcher, sub: _Patcher) -> Edit:
    """A notes area appended at the end of the file (the old notes + a VMCOREINFO note, or a kernel's notes anew),
    the sub header pointed at it; a header without notes is upgraded to the current version first."""
    can = header_features(facts.header_version)
    if not can.notes:
        _upgrade_header(facts, main, sub)
    at = align_up(facts.file_size, APPEND_ALIGN)
    if f.kind == "notes":  # the whole notes area anew (several kernels: the chosen kernel's notes)
        notes: tuple[Note, ...] = f.value
        blob = pack_notes(notes, facts.main.abi)
        index = next(i for i, n in enumerate(notes) if n.name == NOTE_NAME_VMCOREINFO)
        note = notes[index]
        desc_at = at + note_offsets(notes)[index] + note.desc_offset
        shown = f"{len(blob)} bytes ({len(notes) - 1} CPU notes + VMCOREINFO {len(note.desc)})"
    else:
        note = Note(NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO, f.value)
        blob = facts.notes_raw + pack_note(note, facts.main.abi)
        desc_at = at + len(facts.notes_raw) + note.desc_offset
        shown = f"{len(blob)} bytes (+VMCOREINFO {len(f.value)})"
    old_note = _field_value(facts.sub_raw, facts.sub, "size_note", facts.main.abi.endian) if can.notes else 0
    sub.set("offset_note", at)
    sub.set("size_note", len(blob))
    sub.set("offset_vmcoreinfo", desc_at)
    sub.set("size_vmcoreinfo", len(note.desc))
    return Edit("notes", at, b"", blob, f"{old_note} bytes", shown)


def _upgrade_header(facts: KdumpFacts, main: _Patcher, sub: _Patcher) -> None:
    """The header at the current version: the fields the old one did not have each get a defined value."""
    can = header_features(facts.header_version)
    main.set("header_version", KDUMP_HEADER_VERSION)
    split = facts.sub_header.split if can.split else 0
    start = facts.sub_header.start_pfn if can.split else 0
    end = facts.sub_header.end_pfn if can.split else 0
    for path, value in (("split", split), ("start_pfn", start), ("end_pfn", end),
                        ("offset_eraseinfo", 0), ("size_eraseinfo", 0),
                        ("start_pfn_64", start if split else 0), ("end_pfn_64", end if split else 0),
                        ("max_mapnr_64", facts.max_mapnr)):  # fmt: skip
        if facts.sub.has(path) and (not can.split or path not in ("split", "start_pfn", "end_pfn")):
            sub.set(path, value)


def _field_value(raw: bytes, layout: BoundLayout, path: str, order: Literal["little", "big"]) -> int:
    """A field's value as the header bytes ``raw`` hold it."""
    off = layout.offset_of(path)
    return int.from_bytes(raw[off : off + layout.size_of(path)], order)


def plan_elf(diag: Diagnosis) -> Plan:
    f = diag.finding("elf_rewrite")
    if f is None:
        return Plan(diag.container)
    notes = diag.finding("notes")
    return Plan(diag.container, rewrite_elf=True, elf_vmcoreinfo=f.value, rewrite_reason=f.message,
                elf_notes=notes.value if notes is not None else None)  # fmt: skip


def plan(diag: Diagnosis) -> Plan:
    """The Plan for a Diagnosis (an empty Plan when nothing needs changing)."""
    return plan_elf(diag) if diag.container == "elf" else plan_kdump(diag)


__all__ = ["APPEND_ALIGN", "Edit", "KdumpRewrite", "Plan", "plan"]
