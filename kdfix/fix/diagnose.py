"""Diagnose what a dump needs so that crash, makedumpfile, libkdumpfile and drgn all read it.

One Finding per problem (wrong phys_base, VMCOREINFO missing or not where readers look, insane utsname, zero
timestamp with a CRASHTIME, requested status flags, ELF layout). Values come from the dump's VMCOREINFO when it
has one, else from a file, else from memory through ``kdfix.detect`` (phys-base-and-kaslr.md §5 "Consequences").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from kdfix.arch import Arch, recognise
from kdfix.arch.base import NO_VADDR
from kdfix.detect.combine import detect
from kdfix.detect.cpu_hints import foreign_cpus
from kdfix.detect.kernels import Choice, Kernels, notes_of_cpus
from kdfix.detect.validate import validate_candidate
from kdfix.detect.vmcoreinfo_note import find_by_vmcoreinfo_note
from kdfix.errors import UnsupportedError
from kdfix.fix.options import FixOptions, status_mask
from kdfix.format.constants import NOTE_NAME_QEMU, NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO
from kdfix.format.elf import ehdr_layout, phdr_layout
from kdfix.format.kdump import DISK_DUMP_HEADER, KDUMP_SUB_HEADER, header_features
from kdfix.format.layout import BoundLayout
from kdfix.notes.framing import Note
from kdfix.notes.vmcoreinfo import VmcoreInfo, read_vmcoreinfo_file
from kdfix.read.dump import Dump
from kdfix.units import to_s64
from kdfix.write import utsname as uts

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
Status = Literal["fixed", "ok", "undetermined"]  # the outcome of a fix (FixResult, SplitFixResult)
FindingKind = Literal[
    "phys_base",
    "vmcoreinfo_note",
    "vmcoreinfo_pointer",
    "utsname",
    "timestamp",
    "status",
    "elf_rewrite",
    "flat_osrelease_hint",
    "block_size",
    "header_abi",
    "notes",
]

# crash --osrelease on a flattened stream reads no header: it takes `strings -n 10 FILE` and stops after about
# 100 lines (measured with crash 8.0.2: a hit on line 91 is found, on line 100 not). The flattened file header's
# padding (bytes 32..4095, zero, ignored by every reader, kdump-format.md §11) can carry an "OSRELEASE=" line.
CRASH_STRINGS_MIN = 10
CRASH_STRINGS_LINES = 90
FLAT_HINT_OFFSET = 64
FLAT_HINT_MAX = 1024
_PRINTABLE_MAP = bytes(int(b == 0x09 or 0x20 <= b < 0x7F) for b in range(256))  # byte -> 1 printable, 0 not


def early_strings(head: bytes, *, minimum: int = CRASH_STRINGS_MIN, lines: int = CRASH_STRINGS_LINES) -> list[bytes]:
    """The first ``lines`` runs of at least ``minimum`` printable bytes, as ``strings -n`` prints them.

    A run still open at the end of ``head`` is not counted: ``head`` is a prefix of the file and the run may go on.
    Runs are found with bytes.find over a 0/1 map of the bytes (C speed: this reads a MiB of every flattened
    stream that is fixed, and of its output when the fix is verified).
    """
    out: list[bytes] = []
    marks = head.translate(_PRINTABLE_MAP)
    run = b"\1" * max(minimum, 1)
    pos = 0
    while len(out) < lines:
        first = marks.find(run, pos)  # pos is 0 or just after a run: a match starts a run
        if first < 0:
            break
        stop = marks.find(b"\0", first)
        if stop < 0:
            break
        out.append(head[first:stop])
        pos = stop
    return out


@dataclass(frozen=True)
class Finding:
    """One thing to change: ``value`` is the wanted value (kind-specific)."""

    kind: FindingKind
    message: str
    value: Any = None


@dataclass(frozen=True)
class KdumpFacts:
    """Header facts of a KDUMP file that the planner needs (offsets are in the kdump file, not the stream)."""

    main: BoundLayout
    sub: BoundLayout  # bound at version 6: offsets of every field (fields only ever get appended)
    block_size: int
    header_version: int
    main_header: Any
    sub_header: Any
    main_raw: bytes  # the main header's bytes as they are in the file
    sub_raw: bytes  # sub.size bytes at block_size, as they are in the file (v6 extent, whatever the version)
    file_size: int  # the (reassembled) kdump file's size
    notes_offset: int
    notes_raw: bytes  # the notes blob up to the end of its last note
    vmcoreinfo_note: Note | None
    max_mapnr: int


@dataclass(frozen=True)
class ElfFacts:
    e_phoff: int
    e_ehsize: int
    e_shoff: int
    e_shnum: int
    notes_offset: int
    expected_notes_offset: int


@dataclass
class Diagnosis:
    """Findings, what could not be determined (``missing``), and the values the fix is based on."""

    container: str
    findings: list[Finding] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    phys_base: int | None = None
    vmcoreinfo: bytes | None = None
    detect: dict[str, Any] = field(default_factory=dict)
    facts: KdumpFacts | ElfFacts | None = None
    kernels: Kernels | None = None  # set when memory holds several kernels
    choice: Choice | None = None  # the one the fix describes

    def finding(self, kind: str) -> Finding | None:
        return next((f for f in self.findings if f.kind == kind), None)


def _detect_summary(result: Any) -> dict[str, Any]:
    choice = result.choice
    return {
        "method": result.method,
        "confidence": result.confidence,
        "phys_base": None if result.phys_base is None else f"{result.phys_base:#x}",
        "kernel_offset": None if result.kernel_offset is None else f"{result.kernel_offset:#x}",
        "evidence": list(result.evidence),
        "kernels": result.kernels.as_json() if result.kernels is not None else [],
        "kernel": None if choice is None or choice.kernel is None else choice.kernel.role,
        "kernel_reason": None if choice is None else choice.reason,
    }


def _quick_detect(dump: Dump) -> dict[str, Any] | None:
    """Method A alone, validated (cheap: reads a few pages); None when it gives no candidate."""
    evidence: list[str] = []
    candidate = find_by_vmcoreinfo_note(dump.model, dump.memory, log=evidence)
    if candidate is None:
        return None
    checks = validate_candidate(candidate, dump.memory, vmcoreinfo=VmcoreInfo.parse(candidate.vmcoreinfo or b""))
    evidence += list(candidate.evidence) + [str(c) for c in checks if c.passed is not None]
    return {
        "method": candidate.method,
        "confidence": "high" if any(c.passed and c.decisive for c in checks) else "low",
        "phys_base": f"{candidate.phys_base:#x}",
        "kernel_offset": None if candidate.kernel_offset is None else f"{candidate.kernel_offset:#x}",
        "evidence": evidence,
    }


def _resolve_vmcoreinfo_and_phys_base(
    dump: Dump,
    existing: bytes | None,
    options: FixOptions,
    diag: Diagnosis,
    progress: Progress | None,
    *,
    need_phys_base: bool = True,
) -> None:
    """Fill diag.vmcoreinfo (final text) and diag.phys_base, running detect() only when needed.

    ``need_phys_base`` False (ELF: no header phys_base) never reports a missing phys_base.
    """
    text = _given_vmcoreinfo(existing, options, diag)
    info = VmcoreInfo.parse(text) if text is not None else None
    want_text = text is None and options.vmcoreinfo == "auto"
    want_pb = need_phys_base and options.phys_base == "auto" and header_phys_base(dump, info) is None
    result = None
    # The dump's own VMCOREINFO stands unless vCPUs run another kernel (a running kdump capture kernel), or
    # the running kernel is asked for: then every kernel in memory is found, as `kdfix detect` does.
    foreign = foreign_cpus(dump.model, dump.memory, existing) if existing is not None and not want_pb else None
    search = existing is not None and (bool(foreign) or options.kernel == "running")
    if foreign:
        diag.messages.append(f"{', '.join(f'cpu{c}' for c in foreign)} run(s) another kernel than the dump's "
                             "VMCOREINFO describes: searching memory for every kernel")  # fmt: skip
    if want_text or want_pb or search:
        result = detect(dump.model, dump.memory, progress=progress, kernel=options.kernel)
        diag.detect = _detect_summary(result)
        if result.kernels is not None and result.kernels.several and result.choice is not None:
            text, info = _choose_kernel(result.kernels, result.choice, text, options, diag)
        if want_text:
            if result.vmcoreinfo is not None and result.found:
                text = result.vmcoreinfo
                info = VmcoreInfo.parse(text)
                diag.messages.append(f"VMCOREINFO recovered from memory ({result.method}, {result.confidence})")
            else:
                diag.missing.append(
                    "VMCOREINFO: not in the dump and not found in memory (give --vmcoreinfo FILE, e.g. from "
                    "`makedumpfile -g FILE -x vmlinux`, or --vmcoreinfo none)"
                )
    elif existing is not None:
        diag.detect = _quick_detect(dump) or {}
    diag.vmcoreinfo = text
    _choose_phys_base(dump, info, options, result, diag, need_phys_base)


def _given_vmcoreinfo(existing: bytes | None, options: FixOptions, diag: Diagnosis) -> bytes | None:
    """The dump's own VMCOREINFO, else the text of ``--vmcoreinfo FILE`` (which never replaces the dump's)."""
    if options.vmcoreinfo in ("auto", "none"):
        return existing
    if existing is not None:
        diag.messages.append(f"the dump already carries VMCOREINFO; {options.vmcoreinfo} not used")
        return existing
    diag.messages.append(f"VMCOREINFO from {options.vmcoreinfo}")
    return read_vmcoreinfo_file(options.vmcoreinfo)


def _choose_phys_base(
    dump: Dump, info: VmcoreInfo | None, options: FixOptions, result: Any, diag: Diagnosis, need_phys_base: bool
) -> None:
    """diag.phys_base: the user's value, else what VMCOREINFO implies, else detection's (phys-base-and-kaslr.md §5)."""
    arch = dump_arch(dump, info)
    from_info = header_phys_base(dump, info)
    if options.phys_base != "auto":
        diag.phys_base = int(options.phys_base)
        if from_info is not None and from_info != diag.phys_base and arch is not None:
            diag.messages.append(
                f"--phys-base {diag.phys_base:#x} differs from VMCOREINFO {arch.phys_base_meaning} {from_info:#x} "
                "(crash, libkdumpfile and drgn use VMCOREINFO)"
            )
    elif from_info is not None:
        diag.phys_base = from_info
    elif result is not None and result.found:
        diag.phys_base = result.phys_base
        if result.confidence == "low":
            diag.messages.append(f"phys_base {result.phys_base:#x} from {result.method} alone (low confidence)")
    elif need_phys_base:
        key = arch.phys_base_meaning if arch is not None else "value (architecture unknown)"
        diag.missing.append(f"phys_base: no VMCOREINFO {key} and detection found no validated value "
                            "(give --phys-base N)")  # fmt: skip


def elf_vaddr(arch: Arch, paddr: int, size: int, word_size: int) -> int | None:
    """``arch``'s /proc/vmcore p_vaddr for a PT_LOAD (NO_VADDR as all ones in the file's word), or None."""
    vaddr = arch.elf_load_vaddr(paddr, size)
    if vaddr == NO_VADDR:
        return (1 << (8 * word_size)) - 1
    return vaddr


def dump_arch(dump: Dump, info: VmcoreInfo | None = None) -> Arch | None:
    """The dump's architecture from its headers, notes and ``info`` (kdfix.arch), or None when nothing tells."""
    found = recognise(dump.model, info)
    return None if found is None else found.arch


def header_phys_base(dump: Dump, info: VmcoreInfo | None) -> int | None:
    """The header phys_base ``info`` implies for the dump's architecture (x86_64 phys_base, aarch64 PHYS_OFFSET,
    i386 0), or None when ``info`` does not say or the architecture is unknown."""
    if info is None:
        return None
    arch = dump_arch(dump, info)
    return None if arch is None else arch.header_phys_base(info)


def _choose_kernel(
    kernels: Kernels, choice: Choice, text: bytes | None, options: FixOptions, diag: Diagnosis
) -> tuple[bytes | None, VmcoreInfo | None]:
    """Take the kernel detect chose (several in memory): its VMCOREINFO replaces one describing another kernel."""
    chosen = choice.kernel
    assert chosen is not None
    diag.kernels, diag.choice = kernels, choice
    diag.messages.append(f"{kernels.problem()}; the fix describes the {chosen.role} kernel: {choice.reason}")
    if options.vmcoreinfo != "auto":  # the user's --vmcoreinfo FILE or none stands
        return text, VmcoreInfo.parse(text) if text is not None else None
    if text is not None and text.split(b"\0", 1)[0].rstrip(b"\n") != chosen.vmcoreinfo.rstrip(b"\n"):
        diag.messages.append(f"the dump's VMCOREINFO is not the {chosen.role} kernel's: replaced")
    elif text is not None:
        return text, VmcoreInfo.parse(text)
    return chosen.vmcoreinfo, VmcoreInfo.parse(chosen.vmcoreinfo)


def wanted_notes(notes: Sequence[Note], diag: Diagnosis) -> tuple[Note, ...] | None:
    """The notes a dump with several kernels should carry for the chosen kernel, or None (one kernel).

    Crashed: as the capture kernel's /proc/vmcore (arch-kernels-and-introspection.md §3.5): each CPU's NT_PRSTATUS
    from the crashed kernel's crash_notes, then its VMCOREINFO. Running: the dump's notes (QEMU's registers) of the
    vCPUs that execute it (the others are parked in the crashed kernel, and readers such as libkdumpfile take the
    page-table root of the first vCPU), with the running kernel's VMCOREINFO.
    """
    choice, text = diag.choice, diag.vmcoreinfo
    if choice is None or choice.kernel is None or text is None:
        return None
    vmcoreinfo = Note(NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO, text)
    header = choice.kernel.core_header
    if choice.kernel.role == "crashed" and header is not None and header.cpu_notes:
        return (*header.cpu_notes, vmcoreinfo)
    kept = notes_of_cpus(notes, choice.kernel.cpus) if choice.kernel.cpus else tuple(notes)
    return (*(n for n in kept if n.name != NOTE_NAME_VMCOREINFO), vmcoreinfo)


def _notes_finding(notes: Sequence[Note], diag: Diagnosis) -> Finding | None:
    wanted = wanted_notes(notes, diag)
    if wanted is None or tuple(notes) == wanted:
        return None
    assert diag.choice is not None and diag.choice.kernel is not None
    kernel = diag.choice.kernel
    header = kernel.core_header
    if kernel.role == "crashed" and header is not None and header.cpu_notes:
        what = f"{len(header.cpu_notes)} NT_PRSTATUS from crash_notes (ELF core header at PA {header.paddr:#x})"
    else:
        what = f"QEMU's notes of {', '.join(f'cpu{c}' for c in kernel.cpus) or 'every vCPU'}"
    return Finding("notes", f"notes of the {kernel.summary()}: {what} + its VMCOREINFO", wanted)


def _kdump_facts(dump: Dump) -> KdumpFacts:
    k = dump.kdump
    assert k is not None
    main = DISK_DUMP_HEADER.bind(k.abi)
    sub = KDUMP_SUB_HEADER.bind(k.sub_abi, 6)
    notes_raw = b""
    vmci = None
    if k.notes_size:
        end = max((n.offset + n.packed_size for n in k.notes), default=k.notes_offset)
        notes_raw = k.source.read_at(k.notes_offset, end - k.notes_offset)
        vmci = next((n for n in k.notes if n.name == NOTE_NAME_VMCOREINFO), None)
    return KdumpFacts(
        main=main,
        sub=sub,
        block_size=k.block_size,
        header_version=k.header_version,
        main_header=k.main_header,
        sub_header=k.sub_header,
        main_raw=k.source.read_at(0, main.size),
        sub_raw=k.source.read_at(k.block_size, sub.size),
        file_size=k.source.size,
        notes_offset=k.notes_offset,
        notes_raw=notes_raw,
        vmcoreinfo_note=vmci,
        max_mapnr=k.max_mapnr,
    )


def _diagnose_kdump(dump: Dump, options: FixOptions, diag: Diagnosis, progress: Progress | None) -> None:
    k = dump.kdump
    assert k is not None
    if k.is_diskdump or k.sub_header is None:
        raise UnsupportedError("legacy DISKDUMP files have no sub header to fix", field="main_header.signature",
                               offset=0, path=dump.path)  # fmt: skip
    facts = _kdump_facts(dump)
    diag.facts = facts
    existing, _problems = k.vmcoreinfo_text()
    _resolve_vmcoreinfo_and_phys_base(dump, existing, options, diag, progress)
    info = VmcoreInfo.parse(diag.vmcoreinfo) if diag.vmcoreinfo is not None else None

    # phys_base (kdump-format.md §4; QEMU's misparse, qemu-dumps.md §6).
    if diag.phys_base is not None and diag.phys_base != k.phys_base:
        diag.findings.append(Finding("phys_base", f"header phys_base {k.phys_base:#x} → {diag.phys_base:#x} "
                                     f"({to_s64(diag.phys_base)})", diag.phys_base))  # fmt: skip
    # Several kernels: the chosen kernel's notes (kernels.py), which also places VMCOREINFO.
    notes = _notes_finding(dump.model.notes, diag)
    if notes is not None:
        diag.findings.append(notes)
    elif diag.vmcoreinfo is not None:
        _vmcoreinfo_placement(facts, diag.vmcoreinfo, existing, diag)
    if options.utsname != "none":
        _utsname_finding(dump, facts, info, diag)
    # timestamp: CRASHTIME when the header has none; tv_usec is never written (kdump-format.md §12).
    crashtime = info.crashtime if info is not None else None
    if crashtime and facts.main_header.timestamp.tv_sec == 0 and crashtime > 0:
        diag.findings.append(Finding("timestamp", f"timestamp.tv_sec 0 → CRASHTIME {crashtime}", crashtime))
    if dump.container == "flattened" and info is not None and info.osrelease:
        _flat_osrelease_hint(dump, info.osrelease, diag)
    _diagnose_kdump_layout(dump, info, diag)
    status = facts.main_header.status
    new_status = (status | status_mask(options.set_flags, "--set-flag")) & ~status_mask(
        options.clear_flags, "--clear-flag"
    )
    if new_status != status:
        diag.findings.append(Finding("status", f"status {status:#x} → {new_status:#x}", new_status))


def _vmcoreinfo_placement(facts: KdumpFacts, text: bytes, existing: bytes | None, diag: Diagnosis) -> None:
    """VMCOREINFO where every reader looks: a note, and the header pointer at its text (notes-and-vmcoreinfo.md §5)."""
    note = facts.vmcoreinfo_note
    version = facts.header_version
    can = header_features(version)
    if note is not None and can.notes:
        desc_offset = note.offset + note.desc_offset
        sh = facts.sub_header
        if (sh.offset_vmcoreinfo, sh.size_vmcoreinfo) != (desc_offset, len(note.desc)):
            diag.findings.append(Finding("vmcoreinfo_pointer", "offset_vmcoreinfo/size_vmcoreinfo do not point at "
                                         "the VMCOREINFO note", (desc_offset, len(note.desc))))  # fmt: skip
    elif can.vmcoreinfo and not can.notes and existing is not None:
        pass  # a version with the pointer but no notes: every reader takes offset_vmcoreinfo
    else:
        why = "no VMCOREINFO note in the notes area" if can.notes else f"header_version {version} has no notes"
        diag.findings.append(Finding("vmcoreinfo_note", f"{why}: append notes + VMCOREINFO note", text))


def _utsname_finding(dump: Dump, facts: KdumpFacts, info: VmcoreInfo | None, diag: Diagnosis) -> None:
    """An insane header utsname filled as every writer fills it (kdfix.write.utsname, notes-and-vmcoreinfo.md §6)."""
    current = uts.utsname_fields(facts.main_header.utsname)
    if uts.is_sane(current):
        return
    # memory only with a phys_base detection trusts (the header's may be QEMU's misparse)
    memory = dump.memory if diag.phys_base is not None else None
    choice = uts.choose_utsname(dump.model, memory, info, phys_base=diag.phys_base, arch=dump_arch(dump, info))
    diag.messages.extend(choice.messages)
    if choice.fields is None:
        diag.messages.append(f"header utsname is not sane and cannot be filled: {choice.source}")
    elif choice.fields != current:
        diag.findings.append(Finding("utsname", f"header utsname filled from {choice.source}", choice.fields))


def _flat_osrelease_hint(dump: Dump, osrelease: str, diag: Diagnosis) -> None:
    """crash --osrelease of a flattened stream sees only its first strings (see CRASH_STRINGS_LINES)."""
    assert dump.kdump is not None
    stream = getattr(dump.kdump.source, "stream", None)
    head = stream.read_at(0, 1 << 20) if stream is not None else b""
    if any(b"OSRELEASE=" in line for line in early_strings(head)):
        return
    hint = f"OSRELEASE={osrelease}\n".encode("latin-1")
    pad = head[FLAT_HINT_OFFSET : FLAT_HINT_OFFSET + FLAT_HINT_MAX]
    if len(hint) < FLAT_HINT_MAX and not any(pad):
        diag.findings.append(Finding("flat_osrelease_hint", "OSRELEASE line in the flattened header's padding "
                                     "(crash --osrelease scans only the first strings)", hint))  # fmt: skip
    else:
        diag.messages.append("crash --osrelease will not find OSRELEASE in this flattened stream")


def _diagnose_kdump_layout(dump: Dump, info: VmcoreInfo | None, diag: Diagnosis) -> None:
    """Findings that need the KDUMP file rewritten: blocks larger than the kernel's pages (QEMU's 64 KiB aarch64
    blocks, arch-kernels-and-introspection.md §1.6) and a header ABI the architecture's tools do not read (QEMU's
    64-bit header for i386 guests, §2.6)."""
    k = dump.kdump
    assert k is not None
    arch = dump_arch(dump, info)
    if arch is not None:
        wanted = arch.kdump_abi(dump.model.abi.byte_order)
        if dump.model.abi != wanted:
            diag.findings.append(Finding("header_abi", f"header layout {dump.model.abi.name} → {wanted.name}: "
                                         f"{arch.name} makedumpfile and crash read the {wanted.word_size * 8}-bit "
                                         "header", wanted))  # fmt: skip
    page_size = info.page_size if info is not None else None
    if page_size and page_size != k.block_size:
        if k.block_size > page_size and k.block_size % page_size == 0:
            diag.findings.append(Finding("block_size", f"block_size {k.block_size} → {page_size} (the kernel's "
                                         "PAGESIZE): libkdumpfile and makedumpfile take the page size from "
                                         "block_size", page_size))  # fmt: skip
        else:
            diag.messages.append(f"block_size {k.block_size} differs from PAGESIZE {page_size}; not re-blocked")
    if any(f.kind in REWRITE_KINDS for f in diag.findings):
        diag.messages.append("the KDUMP file is rewritten whole (every page re-encoded: time and space grow with "
                             "the dump): -o writes the new file; --in-place replaces it atomically and keeps the "
                             "original for kdfix undo")  # fmt: skip


REWRITE_KINDS = frozenset({"block_size", "header_abi"})


def _diagnose_elf(dump: Dump, options: FixOptions, diag: Diagnosis, progress: Progress | None) -> None:
    e = dump.elf
    assert e is not None
    eh = ehdr_layout(e.abi)
    hdr = eh.unpack(e.source.read_at(0, eh.size))
    phdr_size = phdr_layout(e.abi).size
    facts = ElfFacts(hdr.e_phoff, hdr.e_ehsize, hdr.e_shoff, hdr.e_shnum, e.notes_offset,
                     eh.size + hdr.e_phnum * phdr_size)  # fmt: skip
    diag.facts = facts
    note = next((n for n in e.notes if n.name == NOTE_NAME_VMCOREINFO), None)
    existing = note.desc if note is not None else None
    _resolve_vmcoreinfo_and_phys_base(dump, existing, options, diag, progress, need_phys_base=False)
    reasons = []
    if existing is None and diag.vmcoreinfo is not None:
        reasons.append("add a VMCOREINFO note")
    if facts.e_phoff != eh.size or facts.e_ehsize != eh.size or facts.e_shoff or facts.e_shnum:
        whose = "QEMU's header" if any(n.name.startswith(NOTE_NAME_QEMU) for n in e.notes) else "the file's header"
        reasons.append(f"restore the /proc/vmcore layout ({whose}: e_phoff {facts.e_phoff}, e_ehsize "
                       f"{facts.e_ehsize}, e_shnum {facts.e_shnum}; /proc/vmcore's: e_phoff {eh.size}, e_ehsize "
                       f"{eh.size}, e_shnum 0)")  # fmt: skip
    elif len(e.note_segments) > 1 or facts.notes_offset != facts.expected_notes_offset:
        reasons.append("put the notes right after the program headers")
    arch = dump_arch(dump, VmcoreInfo.parse(diag.vmcoreinfo) if diag.vmcoreinfo is not None else None)
    if arch is not None and any(elf_vaddr(arch, s.paddr, s.memsz, e.abi.word_size) not in (None, s.vaddr)
                                for s in e.segments):  # fmt: skip
        reasons.append(f"give the PT_LOADs the virtual addresses /proc/vmcore gives them on {arch.name}")
    notes = _notes_finding(dump.model.notes, diag)
    if notes is not None:
        diag.findings.append(notes)
        reasons.append(notes.message)
    elif existing is not None and diag.vmcoreinfo is not None and existing != diag.vmcoreinfo:
        reasons.append("replace the VMCOREINFO note")
    if reasons:
        diag.findings.append(Finding("elf_rewrite", "rewrite the ELF: " + "; ".join(reasons), diag.vmcoreinfo))
    if options.set_flags or options.clear_flags:
        diag.messages.append("--set-flag/--clear-flag apply to KDUMP headers only; ignored for ELF")
    if options.phys_base != "auto":
        diag.messages.append("an ELF dump has no header phys_base; readers take NUMBER(phys_base) from VMCOREINFO")


def diagnose(dump: Dump, options: FixOptions, *, progress: Progress | None = None) -> Diagnosis:
    """Findings for an opened dump (kdump, flattened, ELF, or a split set diagnosed as one kdump over all parts)."""
    diag = Diagnosis(container="kdump" if dump.container == "split" else dump.container)
    if dump.container == "elf":
        _diagnose_elf(dump, options, diag, progress)
    else:
        _diagnose_kdump(dump, options, diag, progress)
    return diag


class DiagnosedResult(Protocol):
    """What FixResult and SplitFixResult share of a diagnosis."""

    status: Status
    phys_base: str | None
    missing: list[str]
    messages: list[str]


def report_diagnosis(result: DiagnosedResult, diag: Diagnosis) -> bool:
    """Give ``result`` the phys_base the fix is based on; True (and "undetermined") when a needed value is missing."""
    result.phys_base = None if diag.phys_base is None else f"{diag.phys_base:#x}"
    if not diag.missing:
        return False
    result.status = "undetermined"
    result.missing = list(diag.missing)
    result.messages.append("nothing written: " + "; ".join(diag.missing))
    return True


def verification_options(diag: Diagnosis, options: FixOptions) -> FixOptions:
    """Options that diagnose a fixed dump again with the values just written (nothing may be left to change)."""
    return FixOptions(
        phys_base=diag.phys_base if diag.phys_base is not None else "auto",
        vmcoreinfo="auto" if diag.vmcoreinfo is not None else "none",
        utsname=options.utsname,
        set_flags=options.set_flags,
        clear_flags=options.clear_flags,
        kernel=options.kernel,
    )


__all__ = [
    "Diagnosis",
    "ElfFacts",
    "Finding",
    "KdumpFacts",
    "diagnose",
    "report_diagnosis",
    "verification_options",
    "wanted_notes",
]
