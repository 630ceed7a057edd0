"""``kdfix generate --style qemu``: the kdump file QEMU's ``dump-guest-memory`` would write for the same memory.

The guest is taken from QEMU's own ELF dump (its PT_LOADs are QEMU's guest-physical blocks and its PT_NOTE holds
QEMU's notes verbatim) or from any dump kdfix can open. This module holds QEMU's policy (qemu-dumps.md §2-§7,
§9): note order, header values per QEMU version, the phys_base misparse, record order and chunking. The layout
and header packing are kdfix's one KDUMP writer's (:mod:`kdfix.write.kdump`, kdump-format.md §1, §3-§4); the page
half lives in :mod:`kdfix.generate.qemu_stream`. Written from that description; no QEMU code is used.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from kdfix.arch import ARCHES, Arch, arch_of_e_machine, get_arch, identify
from kdfix.arch.base import QEMU_UNKNOWN_MACHINE
from kdfix.codecs import codec_named
from kdfix.errors import FormatError, KdfixError, UnsupportedError
from kdfix.format.constants import (
    NOTE_NAME_CORE,
    NOTE_NAME_KDFIX,
    NOTE_NAME_QEMU,
    NOTE_NAME_VMCOREINFO,
    NOTE_TYPE_KDFIX,
    NOTE_TYPE_QEMU,
    NOTE_TYPE_VMCOREINFO,
    NoteType,
)
from kdfix.format.elf import PN_XNUM, PT_LOAD, PT_NOTE, ehdr_layout, ident_abi, phdr_layout, shdr_layout
from kdfix.format.layout import LP64_LE, Abi
from kdfix.format.notes import (
    ELF_PRSTATUS_X86_64,
    NHDR,
    NHDR_SIZE,
    QEMU_CPU_SEGMENT,
    QEMU_CPU_STATE,
    QEMU_CPU_STATE_SIZES,
    QEMU_GPRS,
    QEMU_SEGMENTS,
)
from kdfix.model import make_utsname
from kdfix.notes.framing import Note, iter_notes, pack_note
from kdfix.notes.vmcoreinfo import qemu_misparse
from kdfix.units import cstr, pad4
from kdfix.write.kdump import HeaderValues, KdumpLayout, pack_main_header, pack_sub_header, plan_layout

if TYPE_CHECKING:
    from kdfix.model import DumpModel
    from kdfix.write.records import RecordOut

from .qemu_stream import (
    FileRangeSource,
    FlatRecordOut,
    GuestBlock,
    MemorySource,
    PageEmitter,
    PageSource,
    RawRecordOut,
    SourceSpec,
    UnitTable,
    bitmap_chunks,
    compressed_units,
    page_runs,
)

QEMU_DUMP_LEVEL = 1
QEMU_CACHE_PAGES = 4  # QEMU's descriptor and data write caches hold four pages each (qemu-dumps.md §2)
QEMU_HEADER_VERSION = 6
QEMU_COMPRESSORS = ("zlib", "lzo", "snappy")
DEFAULT_QEMU_VERSION = "7.2"


# --------------------------------------------------------------------------------------------------------------
# QEMU versions (qemu-dumps.md §9)


@dataclass(frozen=True, order=True)
class QemuVersion:
    """A QEMU release to imitate; only the behaviour that changed between releases is modelled."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> QemuVersion:
        m = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.\d+)?\s*", text)
        if not m:
            raise UnsupportedError(f"bad QEMU version {text!r}; expected MAJOR.MINOR, e.g. 7.2", field="qemu_version")
        version = cls(int(m.group(1)), int(m.group(2)))
        if version < cls(2, 0):
            raise UnsupportedError(f"QEMU {text} has no kdump output (kdump-* exists from 2.0)", field="qemu_version")
        return version

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def machine_uname(self, arch: Arch) -> bytes:
        """utsname.machine: the target's name up to 7.2, "Unknown" from 8.0 (qemu-dumps.md §6.2; kdfix.arch)."""
        return arch.qemu.machine((self.major, self.minor)).encode()

    @property
    def has_raw(self) -> bool:
        """kdump-raw-* formats exist from 8.2 (qemu-dumps.md §1)."""
        return self >= QemuVersion(8, 2)

    @property
    def has_guest_note(self) -> bool:
        """The vmcoreinfo device (guest note, phys_base parse) exists from 2.11 (qemu-dumps.md §7)."""
        return self >= QemuVersion(2, 11)


# --------------------------------------------------------------------------------------------------------------
# QEMU's phys_base misparse (qemu-dumps.md §6.1)


def qemu_phys_base(vmcoreinfo: bytes, arch: Arch | str, default: int = 0) -> int:
    """The sub-header phys_base QEMU derives from a guest VMCOREINFO desc (bug included, qemu-dumps.md §6.1, §7).

    The dump's architecture (QEMU's d_machine) decides the line parsed (x86_64 ``NUMBER(phys_base)``, aarch64
    ``NUMBER(PHYS_OFFSET)``, none
    elsewhere). The text ends at its first NUL; the first line with the prefix decides, and when it does not
    parse QEMU keeps ``default`` (the value it had before: 0, or the lowest RAM address on ARM).
    """
    key = (get_arch(arch) if isinstance(arch, str) else arch).qemu.phys_base_key
    if key is None:
        return default
    prefix = key.encode() + b"="
    text = vmcoreinfo.split(b"\0", 1)[0]
    for line in text.split(b"\n"):
        if line.startswith(prefix):
            value = qemu_misparse(line[len(prefix) :])
            return default if value is None else value
    return default


# --------------------------------------------------------------------------------------------------------------
# The guest as QEMU saw it


@dataclass
class QemuGuest:
    """What QEMU would dump: memory blocks, vCPU notes and the guest note (if the vmcoreinfo device had one).

    ``cpu_notes`` is the packed CORE x n + QEMU x n notes, ``guest_note`` the packed guest note exactly as QEMU
    copies it (padding included). ``page_source`` reads block bytes; ``spec`` lets worker processes reopen it.
    """

    blocks: tuple[GuestBlock, ...]
    arch: Arch
    nr_cpus: int
    cpu_notes: bytes
    guest_note: bytes | None
    page_source: PageSource
    spec: SourceSpec | None = None
    elf_class64: bool = True
    close: Callable[[], None] = field(default=lambda: None)
    target: Arch | None = None  # the qemu-system-<arch> binary, when it is not the dump's architecture

    @property
    def qemu_target(self) -> Arch:
        """The QEMU binary's target: by default the dump's own architecture (see :func:`choose_target`)."""
        return self.arch if self.target is None else self.target

    @property
    def abi(self) -> Abi:
        # QEMU picks the 32-bit headers only for an ELFCLASS32 dump (qemu-dumps.md §3).
        return LP64_LE if self.elf_class64 else self.arch.kdump_abi()

    @property
    def page_size(self) -> int:
        """QEMU's block size for the target; the guest's PAGESIZE is ignored (qemu-dumps.md §3)."""
        return self.arch.qemu.block_size

    @property
    def default_phys_base(self) -> int:
        """The phys_base before any guest note is parsed: 0, or the lowest block start on ARM (§7; kdfix.arch)."""
        return self.blocks[0].paddr if self.arch.qemu.phys_base_is_ram_start else 0


def choose_target(guest: QemuGuest, name: str | None) -> Arch:
    """The QEMU target ``name`` (None: the dump's architecture), checked against what that target can dump.

    The ELF does not record the binary: an EM_386 dump comes from qemu-system-i386 or, for a guest not in long
    mode, from qemu-system-x86_64; only utsname.machine of QEMU < 8.0 differs (qemu-dumps.md §3, §4).
    """
    if name is None:
        return guest.arch
    target = get_arch(name)
    if target is not guest.arch and guest.arch.name not in target.qemu.also_dumps:
        raise UnsupportedError(f"qemu-system-{target.name} does not write {guest.arch.name} dumps", field="qemu_target")
    return target


def _split_qemu_notes(arch: Arch, blob: bytes) -> tuple[bytes, int, bytes | None] | None:
    """If ``blob`` is QEMU's note layout, return its parts (CPU notes, vCPU count, guest note), else None.

    QEMU writes the CORE notes of every vCPU (NT_PRSTATUS, plus NT_PRFPREG on ARM), then one QEMU note per vCPU
    on x86 targets, then at most one guest note (qemu-dumps.md §4; arch-kernels-and-introspection.md §1.6).
    """
    notes = list(iter_notes(blob, LP64_LE))
    c = 0
    while c < len(notes) and notes[c].name == NOTE_NAME_CORE:
        c += 1
    n = sum(1 for note in notes[:c] if note.type == NoteType.NT_PRSTATUS)
    if n == 0 or notes[0].type != NoteType.NT_PRSTATUS:
        return None
    q = c
    while q < len(notes) and notes[q].name == NOTE_NAME_QEMU:
        q += 1
    if q - c != (n if arch.qemu.cpu_state_notes else 0):
        return None
    rest = notes[q:]
    if len(rest) > 1:
        return None
    cpu_end = notes[q].offset if rest else notes[-1].offset + _packed_len(blob, notes[-1].offset)
    guest = None
    if rest:
        start = rest[0].offset
        guest = blob[start : start + _packed_len(blob, start)]
    return blob[:cpu_end], n, guest


def _packed_len(blob: bytes, offset: int) -> int:
    hdr = NHDR.bind(LP64_LE).unpack(blob, offset)
    return NHDR_SIZE + pad4(hdr.n_namesz) + pad4(hdr.n_descsz)


def _qemu_note_from_prstatus(note: Note) -> Note:
    """A QEMUCPUState (version 1, 440 bytes) from an x86_64 prstatus: registers and selectors only."""
    st = QEMU_CPU_STATE.bind(LP64_LE, 1)
    regs = ELF_PRSTATUS_X86_64.bind(LP64_LE).unpack(note.desc).pr_reg
    seg = QEMU_CPU_SEGMENT.make
    values = {r: getattr(regs, r) for r in QEMU_GPRS}
    values |= {"rip": regs.rip, "rflags": regs.eflags}
    values |= {s: seg(selector=getattr(regs, s) & 0xFFFF) if hasattr(regs, s) else seg() for s in QEMU_SEGMENTS}
    record = QEMU_CPU_STATE.make(version=1, size=QEMU_CPU_STATE_SIZES[1], **values)
    return Note(NOTE_NAME_QEMU, NOTE_TYPE_QEMU, st.pack(record))


def _rebuild_notes(arch: Arch, notes: list[Note], vmcoreinfo: bytes | None) -> tuple[bytes, int, bytes | None]:
    """QEMU's note layout from arbitrary notes: CORE notes (NT_PRSTATUS, and NT_PRFPREG where QEMU wrote them, as
    on ARM, in their order), QEMU notes on targets that write them (made from an x86_64 prstatus if absent; other
    registers are not invented), VMCOREINFO."""
    core = [n for n in notes if n.name == NOTE_NAME_CORE and n.type in (NoteType.NT_PRSTATUS, NoteType.NT_PRFPREG)]
    prstatus = [n for n in core if n.type == NoteType.NT_PRSTATUS]
    qemu = [n for n in notes if n.name == NOTE_NAME_QEMU] if arch.qemu.cpu_state_notes else []
    x86_64_size = ELF_PRSTATUS_X86_64.bind(LP64_LE).size
    if arch.qemu.cpu_state_notes and not qemu and prstatus and all(len(n.desc) == x86_64_size for n in prstatus):
        qemu = [_qemu_note_from_prstatus(n) for n in prstatus]
    if len(qemu) != len(prstatus):
        qemu = qemu[: len(prstatus)]
    vmci = next((n for n in notes if n.name == NOTE_NAME_VMCOREINFO), None)
    if vmci is None and vmcoreinfo is not None:
        vmci = Note(NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO, vmcoreinfo)
    cpu = b"".join(pack_note(n, LP64_LE) for n in [*core, *qemu])
    return cpu, len(prstatus), (pack_note(vmci, LP64_LE) if vmci is not None else None)


def _read_exact(f: BinaryIO, offset: int, length: int, what: str, path: str) -> bytes:
    if offset + length > os.fstat(f.fileno()).st_size:  # checked first: a hostile length must not be allocated
        raise FormatError(f"{length} bytes wanted, past the end of the file", field=what, offset=offset, path=path)
    f.seek(offset)
    data = f.read(length)
    if len(data) != length:
        raise FormatError(f"{length} bytes wanted, past the end of the file", field=what, offset=offset, path=path)
    return data


def _elf_segments(f: BinaryIO, path: str) -> tuple[int, bool, list, bytes]:
    """``(e_machine, class64, PT_LOAD phdrs, PT_NOTE bytes)`` of a little-endian ELF core (parsed directly, no
    pyelftools: it is the slowest part of starting a run). PN_XNUM counts come from section header 0."""
    ident = _read_exact(f, 0, 16, "e_ident", path)
    abi = ident_abi(ident)
    if abi is None:
        raise FormatError("not a usable ELF dump: bad ELF magic or class", field="e_ident", offset=4, path=path)
    if abi.byte_order != "<":
        raise UnsupportedError("big-endian ELF dumps are not supported", field="e_ident", offset=5, path=path)
    class64 = abi.is_64bit
    eh_layout = ehdr_layout(abi)
    ehdr = eh_layout.unpack(_read_exact(f, 0, eh_layout.size, "elf_ehdr", path))
    ph_layout = phdr_layout(abi)
    phnum = ehdr.e_phnum
    if phnum == PN_XNUM:  # the real count is sh_info of section header 0
        sh_layout = shdr_layout(abi)
        phnum = sh_layout.unpack(_read_exact(f, ehdr.e_shoff, sh_layout.size, "elf_shdr", path)).sh_info
    if phnum and ehdr.e_phentsize < ph_layout.size:
        raise FormatError(f"e_phentsize {ehdr.e_phentsize} is too small", field="e_phentsize", path=path)
    table = _read_exact(f, ehdr.e_phoff, phnum * ehdr.e_phentsize, "e_phoff", path)
    loads, notes = [], b""
    for i in range(phnum):
        ph = ph_layout.unpack(table, i * ehdr.e_phentsize)
        if ph.p_type == PT_LOAD and ph.p_memsz:
            loads.append(ph)
        elif ph.p_type == PT_NOTE and ph.p_filesz:
            notes += _read_exact(f, ph.p_offset, ph.p_filesz, "PT_NOTE", path)
    return ehdr.e_machine, class64, loads, notes


def guest_from_elf(path: str | os.PathLike[str]) -> QemuGuest:
    """The guest behind an ELF dump: PT_LOADs in paddr order are the blocks; PT_NOTE gives the notes."""
    spath = os.fspath(path)
    with open(spath, "rb") as f:
        e_machine, class64, loads, blob = _elf_segments(f, spath)
    try:
        arch = arch_of_e_machine(e_machine)
    except KdfixError as exc:
        raise exc.with_context(offset=18, path=spath) from None
    blocks = [GuestBlock(h.p_paddr, h.p_memsz, h.p_offset, min(h.p_filesz, h.p_memsz)) for h in loads]
    if not blocks:
        raise FormatError("the ELF dump has no PT_LOAD with memory", field="PT_LOAD", path=spath)
    blocks.sort(key=lambda b: b.paddr)
    try:
        parts = _split_qemu_notes(arch, blob)
        if parts is None:
            parts = _rebuild_notes(arch, list(iter_notes(blob, LP64_LE)), None)
    except KdfixError as exc:
        raise exc.with_context(path=spath) from None
    cpu_notes, nr_cpus, guest_note = parts
    source = FileRangeSource(spath)
    return QemuGuest(
        blocks=tuple(blocks),
        arch=arch,
        nr_cpus=nr_cpus,
        cpu_notes=cpu_notes,
        guest_note=guest_note,
        page_source=source,
        spec=SourceSpec("elf", spath),
        elf_class64=class64,
        close=source.close,
    )


def guest_from_memory(
    memory: object, notes: list[Note], *, arch: Arch | str, vmcoreinfo: bytes | None = None
) -> QemuGuest:
    """The guest behind a PhysicalMemory: every run of dumped pages is a block (nothing is invented).

    The source's pages may be smaller than QEMU's block for the target (a 4 KiB-page dump of an aarch64 guest):
    QEMU's enumeration then covers each block in its own page size, zero-filling partial pages (§5).
    """
    chosen = get_arch(arch) if isinstance(arch, str) else arch
    ps = memory.page_size  # type: ignore[attr-defined]
    if chosen.qemu.block_size % ps:
        raise UnsupportedError(
            f"QEMU {chosen.name} dumps use {chosen.qemu.block_size}-byte blocks, which {ps}-byte source pages do "
            "not divide",
            field="block_size",
        )
    blocks = tuple(
        GuestBlock(a * ps, (b - a) * ps, a * ps, (b - a) * ps)
        for a, b in memory.dumped.iter_runs()  # type: ignore[attr-defined]
    )
    if not blocks:
        raise FormatError("the source has no dumped pages", field="bitmap")
    cpu_notes, nr_cpus, guest_note = _rebuild_notes(chosen, notes, vmcoreinfo)
    class64 = chosen.qemu.class64(blocks[-1].end)
    return QemuGuest(blocks, chosen, nr_cpus, cpu_notes, guest_note, MemorySource(memory), elf_class64=class64)


def guest_from_path(path: str | os.PathLike[str]) -> QemuGuest:
    """ELF dumps are read directly (file offsets, so workers can pread); anything else through kdfix.open_dump."""
    spath = os.fspath(path)
    with open(spath, "rb") as f:
        ident = f.read(16)
    if ident_abi(ident) is not None:
        return guest_from_elf(spath)
    from kdfix import open_dump  # type: ignore[attr-defined]

    dump = open_dump(spath)
    model = dump.model
    closer = getattr(dump, "close", None)
    try:
        arch = _dumped_arch(model)
        guest = guest_from_memory(dump.memory, list(model.notes), arch=arch, vmcoreinfo=model.vmcoreinfo)
        guest.target = _header_target(model, arch)
    except KdfixError as exc:
        if callable(closer):
            closer()
        raise exc.with_context(path=spath) from None
    guest.spec = SourceSpec("dump", spath)
    if callable(closer):
        guest.close = closer
    return guest


def _dumped_arch(model: DumpModel) -> Arch:
    """The architecture QEMU chose for a dump with no e_machine: its NT_PRSTATUS layout is that choice (an EM_386
    dump of qemu-system-x86_64 has i386 notes), else whatever kdfix.arch recognises."""
    if model.e_machine is not None:
        return arch_of_e_machine(model.e_machine)
    sizes = {len(n.desc) for n in model.notes if n.name == NOTE_NAME_CORE and n.type == NoteType.NT_PRSTATUS}
    matches = [a for a in ARCHES.values() if sizes == {a.prstatus_size}]
    return matches[0] if len(matches) == 1 else identify(model)


def _header_target(model: DumpModel, arch: Arch) -> Arch | None:
    """The QEMU binary named by a kdump header's utsname.machine (QEMU < 8.0 writes its target's), if any."""
    machine = cstr(bytes(getattr(model.utsname, "machine", b"")))
    for target in ARCHES.values():
        named = machine == target.qemu.machine_uname != QEMU_UNKNOWN_MACHINE
        if named and (target is arch or arch.name in target.qemu.also_dumps):
            return target
    return None


# --------------------------------------------------------------------------------------------------------------
# Headers: QEMU's values through kdfix.write's layout and header packing (qemu-dumps.md §3, kdump-format.md §1)


@dataclass(frozen=True)
class QemuPlan:
    """The layout of a QEMU-style file and QEMU's numbers that are not layout."""

    layout: KdumpLayout
    phys_base: int  # the sub header's, after QEMU's misparse (§6.1)
    num_dumpable: int  # pages the 2nd bitmap marks


def _kdfix_note(version: QemuVersion) -> bytes:
    desc = f"generator=kdfix\nstyle=qemu\nqemu_version={version}\n".encode()
    return pack_note(Note(NOTE_NAME_KDFIX, NOTE_TYPE_KDFIX, desc), LP64_LE)


def build_notes(guest: QemuGuest, version: QemuVersion, *, mark: bool) -> tuple[bytes, int | None]:
    """The notes blob and the offset of the guest note in it (qemu-dumps.md §4)."""
    blob = guest.cpu_notes
    guest_at = None
    if guest.guest_note is not None and version.has_guest_note:
        guest_at = len(blob)
        blob += guest.guest_note
    if mark:
        blob += _kdfix_note(version)
    return blob, guest_at


def _guest_vmcoreinfo(notes: bytes, guest_at: int | None) -> tuple[int, int] | None:
    """(offset in ``notes``, size) of the guest note's desc when that note is VMCOREINFO, which QEMU then points
    offset_vmcoreinfo at (qemu-dumps.md §7); the note is read as QEMU copied it, padding included."""
    if guest_at is None:
        return None
    hdr = NHDR.bind(LP64_LE).unpack(notes, guest_at)
    name_at = guest_at + NHDR_SIZE
    if notes[name_at : name_at + hdr.n_namesz] != NOTE_NAME_VMCOREINFO + b"\0":
        return None
    return name_at + pad4(hdr.n_namesz), hdr.n_descsz


def plan_qemu(guest: QemuGuest, notes: bytes, guest_at: int | None, runs: list) -> QemuPlan:
    """Layout, phys_base and page count of QEMU's file for ``guest`` with ``notes`` after the sub header."""
    ps = guest.page_size
    max_mapnr = guest.blocks[-1].end // ps  # dump_paddr_to_pfn of the last block end
    desc = _guest_vmcoreinfo(notes, guest_at)
    layout = plan_layout(guest.abi, QEMU_HEADER_VERSION, ps, max_mapnr, notes, vmcoreinfo_in_notes=desc)
    phys_base = guest.default_phys_base
    if desc is not None:
        at, size = desc
        phys_base = qemu_phys_base(notes[at : at + size], guest.arch, phys_base)
    if not guest.elf_class64:
        phys_base &= 0xFFFFFFFF  # an ELFCLASS32 dump stores it in 32 bits, whatever the header ABI
    return QemuPlan(layout, phys_base, sum(end - first for first, end, _ in runs))


def build_headers(guest: QemuGuest, plan: QemuPlan, version: QemuVersion, codec_flag: int) -> tuple[bytes, bytes]:
    """The main header (464/452 bytes) and sub header (104/80 bytes) as QEMU fills them: signature, version 6,
    only utsname.machine, the codec's status flag, nr_cpus, dump_level 1; timestamps and counters stay zero."""
    values = HeaderValues(
        utsname=make_utsname(machine=version.machine_uname(guest.qemu_target)),
        nr_cpus=guest.nr_cpus,
        dump_level=QEMU_DUMP_LEVEL,
    )
    main = pack_main_header(values, plan.layout, codec_flag)
    return main, pack_sub_header(values, plan.layout, phys_base=plan.phys_base)


# --------------------------------------------------------------------------------------------------------------
# Generation


@dataclass(frozen=True)
class QemuResult:
    """What was written."""

    path: str
    format: str  # kdump-zlib, kdump-raw-lzo, …
    qemu_version: str
    file_size: int  # output file (stream) size
    dump_size: int  # size of the (reassembled) kdump file
    records: int
    pages: int
    zero_pages: int
    raw_pages: int
    compressed_pages: int
    max_mapnr: int
    nr_cpus: int
    note_size: int
    phys_base: int
    vmcoreinfo: bool
    marked: bool
    workers: int
    arch: str  # the dump's architecture (kdfix.arch name)
    qemu_target: str  # the qemu-system-<arch> imitated


def write_qemu_kdump(
    guest: QemuGuest,
    out_path: str | os.PathLike[str],
    *,
    compress: str = "zlib",
    raw: bool = False,
    qemu_version: str | QemuVersion = DEFAULT_QEMU_VERSION,
    workers: int = 1,
    mark: bool = False,
    qemu_target: str | None = None,
) -> QemuResult:
    """Write the file QEMU ``dump-guest-memory -format kdump-[raw-]<compress>`` would write for ``guest``.

    ``qemu_target``: the qemu-system-<arch> that took the dump, when not the dump's architecture (x86_64 for
    an EM_386 dump of a guest that was not in long mode).
    """
    version = qemu_version if isinstance(qemu_version, QemuVersion) else QemuVersion.parse(qemu_version)
    _check_request(compress, raw, version, workers)
    if qemu_target is not None:
        guest = dataclasses.replace(guest, target=choose_target(guest, qemu_target))
    ps = guest.page_size
    codec = codec_named(compress)
    codec.compress(bytes(ps))  # fail early when the codec library is missing

    runs = page_runs(guest.blocks, ps)
    notes, guest_at = build_notes(guest, version, mark=mark)
    plan = plan_qemu(guest, notes, guest_at, runs)
    lay = plan.layout
    main, sub = build_headers(guest, plan, version, int(codec.flag))

    path = os.fspath(out_path)
    out = RawRecordOut(path) if raw else FlatRecordOut(path)
    try:
        out.record(0, main)  # qemu-dumps.md §2 items 1-3
        out.record(ps, sub)
        out.record(lay.offset_note, lay.notes_blob)
        for chunk, data in bitmap_chunks(runs, ps):  # item 4, 1st and 2nd in lockstep
            out.record(lay.bitmap1_offset + chunk * ps, data)
            out.record(lay.bitmap2_offset + chunk * ps, data)
        emitter, end = _write_pages(out, guest, plan, runs, compress, int(codec.flag), workers)  # items 5-6
        out.close()  # item 7 (flattened end marker)
    except BaseException:
        out.abort()
        raise
    if emitter.pages != plan.num_dumpable:
        raise FormatError(f"enumerated {emitter.pages} pages, expected {plan.num_dumpable}", field="bitmap")
    return QemuResult(
        path=path,
        format=f"kdump-{'raw-' if raw else ''}{compress}",
        qemu_version=str(version),
        file_size=Path(path).stat().st_size,
        dump_size=max(end, out.size),
        records=out.records,
        pages=emitter.pages,
        zero_pages=emitter.zero_pages,
        raw_pages=emitter.raw_pages,
        compressed_pages=emitter.pages - emitter.zero_pages - emitter.raw_pages,
        max_mapnr=lay.max_mapnr,
        nr_cpus=guest.nr_cpus,
        note_size=lay.size_note,
        phys_base=plan.phys_base,
        vmcoreinfo=lay.size_vmcoreinfo > 0,
        marked=mark,
        workers=workers,
        arch=guest.arch.name,
        qemu_target=guest.qemu_target.name,
    )


def _check_request(compress: str, raw: bool, version: QemuVersion, workers: int) -> None:
    """Refuse what the QEMU version cannot write (qemu-dumps.md §9) and a worker count below one."""
    if compress not in QEMU_COMPRESSORS:
        raise UnsupportedError(
            f"QEMU compresses with {', '.join(QEMU_COMPRESSORS)}, not {compress!r}", field="compress"
        )
    if raw and not version.has_raw:
        raise UnsupportedError(f"kdump-raw-* formats exist from QEMU 8.2, not {version}", field="raw")
    if workers < 1:
        raise UnsupportedError("--workers must be at least 1", field="workers")


def _write_pages(out: RecordOut, guest: QemuGuest, plan: QemuPlan, runs: list[tuple[int, int, list[GuestBlock]]],
                 compress: str, flag: int, workers: int) -> tuple[PageEmitter, int]:  # fmt: skip
    """Descriptors and page data through QEMU's two four-page write caches (qemu-dumps.md §2 items 5-6), the
    pages compressed by units in ``workers`` processes; returns the finished emitter and the data's end."""
    ps = guest.page_size
    emitter = PageEmitter(out, data_offset=plan.layout.data_offset, num_dumpable=plan.num_dumpable, page_size=ps,
                          flag=flag, abi=guest.abi, cache_bytes=QEMU_CACHE_PAGES * ps)  # fmt: skip
    units = UnitTable(runs, ps)
    for sizes, stored in compressed_units(
        units, source=guest.page_source, spec=guest.spec, codec=compress, page_size=ps, workers=workers
    ):
        emitter.add(sizes, stored)
    return emitter, emitter.finish()


def generate_qemu(
    source: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    compress: str = "zlib",
    raw: bool = False,
    qemu_version: str = DEFAULT_QEMU_VERSION,
    workers: int = 1,
    mark: bool = False,
    qemu_target: str | None = None,
) -> QemuResult:
    """``kdfix generate --style qemu --from SOURCE -o OUT``: read SOURCE, write QEMU's kdump file for it."""
    version = QemuVersion.parse(qemu_version)
    if raw and not version.has_raw:
        raise UnsupportedError(f"kdump-raw-* formats exist from QEMU 8.2, not {version}", field="raw")
    if os.path.exists(out_path) and os.path.samefile(source, out_path):
        raise UnsupportedError("the output would overwrite the source", field="output", path=os.fspath(out_path))
    from kdfix.write.atomic import atomic_output
    from kdfix.write.recheck import recheck

    guest = guest_from_path(source)
    try:
        with atomic_output(out_path, mode_from=source) as tmp:
            result = write_qemu_kdump(
                guest,
                tmp,
                compress=compress,
                raw=raw,
                qemu_version=version,
                workers=workers,
                mark=mark,
                qemu_target=qemu_target,
            )
            # reopened, but not held to verify: the output is byte-identical to QEMU's, quirks included
            recheck(tmp, what="the generated dump", pages=0)
    finally:
        guest.close()
    return dataclasses.replace(result, path=os.fspath(out_path))
