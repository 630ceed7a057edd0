"""Every kernel in a dump, each with a role, and the one choice ``detect`` and ``fix`` share.

A dump taken while a kdump capture kernel runs holds two kernels: the crashed one, intact outside the
``crashkernel=`` reservation, and the capture kernel, relocated into it (arch-kernels-and-introspection.md §3).
Each kernel is found by its own validated VMCOREINFO in memory (phys-base-and-kaslr.md §3B, §4). Its role comes
from evidence, never from the order of the pages:

- ``crashed``: the ELF core header that kexec-tools prepared for the capture kernel (§3.3, the ``elfcorehdr=``
  of its command line) points at this kernel's VMCOREINFO note; failing a header, its VMCOREINFO has the
  ``CRASHTIME`` its panic appended (§3.4).
- ``running``: any other kernel that a vCPU executes (its page-table root maps the kernel's ``_stext`` to
  the kernel's own physical ``_stext``), whose ``_text`` lies inside the reservation the header leaves out, or
  whose own command line (from its log, cmdline.py) carries ``elfcorehdr=``. A ``crashkernel=`` on a kernel's
  command line is reported and checked against the reservation's size (§3.1, §3.6).
- ``only``: the single kernel of an ordinary dump. ``unknown``: a kernel none of the above explains.

The crashed kernel is described as the capture kernel's ``/proc/vmcore`` would (§3.5): its phys_base, its
VMCOREINFO, and NT_PRSTATUS notes from its per-CPU ``crash_notes`` (the registers at panic), found through the
core header's PT_NOTE entries.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from kdfix.arch import recognise
from kdfix.detect.candidate import Candidate
from kdfix.detect.cmdline import Crashkernel, command_line, parse_crashkernel
from kdfix.detect.cpu_hints import CpuRoot, cpu_image_bases, cpu_roots, cpu_runs, kernel_space
from kdfix.detect.validate import confirmed, validate_candidate
from kdfix.detect.vmcoreinfo_scan import iter_granule_heads, iter_page_heads, iter_scanned_copies
from kdfix.errors import FormatError, KdfixError
from kdfix.format.constants import NOTE_NAME_CORE, NOTE_NAME_QEMU, NOTE_NAME_VMCOREINFO, NoteType
from kdfix.format.elf import ELFDATA2MSB, ET_CORE, PT_LOAD, PT_NOTE, ehdr_layout, ident_abi, phdr_layout
from kdfix.format.layout import Abi
from kdfix.model import DumpModel
from kdfix.notes.framing import Note, iter_notes
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.memory import PhysicalMemory
from kdfix.units import to_s64

Role = Literal["crashed", "running", "only", "unknown"]
Wanted = Literal["crashed", "running"]
WANTED: tuple[Wanted, ...] = ("crashed", "running")

MAX_PHNUM = 1024  # kexec-tools writes one PT_NOTE per CPU plus a PT_LOAD per RAM range
MAX_NOTE_SEGMENT = 1 << 16  # a CPU's crash_notes buffer (368 B on x86_64) or the VMCOREINFO note (4132 B)
# kexec-tools places the boot parameters (with the command line) and the core header at the top of the
# reservation; measured: the command line 0x5c00 below the header. Search that far down, not the whole range.
CMDLINE_SEARCH_PAGES = 4096
_ELFCOREHDR = re.compile(rb"elfcorehdr=(?:(?:0[xX][0-9a-fA-F]+|\d+)[KMG]?@)?(0[xX][0-9a-fA-F]+|\d+)([KMG]?)")
_SUFFIX = {b"": 0, b"K": 10, b"M": 20, b"G": 30}
ReadFn = Callable[[int, int], bytes]


@dataclass(frozen=True)
class CoreHeader:
    """An ELF core header found in memory: the crashed kernel as kexec-tools described it (§3.3).

    ``cpu_notes`` are the NT_PRSTATUS notes of each CPU's crash_notes buffer, in CPU order, without the empty
    buffers of CPUs that never saved their registers (as fs/proc/vmcore.c merges them, §3.5).
    """

    paddr: int
    e_machine: int
    loads: tuple[tuple[int, int], ...]  # (p_paddr, p_memsz) of every PT_LOAD
    vmcoreinfo_paddr: int | None  # p_paddr of the PT_NOTE holding a VMCOREINFO note
    vmcoreinfo: bytes | None
    cpu_notes: tuple[Note, ...]
    cmdline: tuple[int, bytes] | None = None  # (PA, text) of a command line whose elfcorehdr= names this header

    def reservation(self) -> tuple[int, int] | None:
        """The hole of the PT_LOADs that holds the header itself: the Crash kernel range [start, end) (§3.3)."""
        below = [start + size for start, size in self.loads if start + size <= self.paddr]
        above = [start for start, _size in self.loads if start > self.paddr]
        if not below or not above or any(s <= self.paddr < s + n for s, n in self.loads):
            return None
        return max(below), min(above)


@dataclass(frozen=True)
class Kernel:
    """One kernel found in memory, with its role and the evidence for it."""

    role: Role
    phys_base: int  # u64 two's complement, as the KDUMP header holds it
    kernel_offset: int | None
    vmcoreinfo: bytes
    vmcoreinfo_paddrs: tuple[int, ...]  # where copies of its VMCOREINFO (note or text page) were found
    text_paddr: int | None  # physical address of its _stext
    cpus: tuple[int, ...]  # vCPUs whose page tables map it (they execute it)
    crashtime: int | None
    core_header: CoreHeader | None  # the header that describes this kernel (the crashed one)
    evidence: tuple[str, ...] = ()
    in_reservation: bool | None = None  # its _text lies inside the reservation the core header leaves out
    cmdline: str | None = None  # its own command line, from its log (cmdline.py; looked for with several kernels)

    @property
    def crashkernel(self) -> list[Crashkernel]:
        """The ``crashkernel=`` parameters of its command line: a kernel that reserved room for a capture kernel."""
        return parse_crashkernel(self.cmdline or "")

    @property
    def elfcorehdr(self) -> int | None:
        """The ``elfcorehdr=`` of its command line (x86: the capture kernel's; arm64 passes it in the DTB)."""
        return parse_elfcorehdr(self.cmdline.encode("latin-1")) if self.cmdline else None

    @property
    def osrelease(self) -> str | None:
        return VmcoreInfo.parse(self.vmcoreinfo).osrelease

    def summary(self) -> str:
        """e.g. ``crashed (phys_base 0x8000000)``; a running kernel is called the capture kernel when it is one."""
        name = "capture" if self.role == "running" and self.in_reservation is True else self.role
        return f"{name} (phys_base {to_s64(self.phys_base):#x})"

    def as_json(self) -> dict[str, Any]:
        header = self.core_header
        return {
            "role": self.role,
            "phys_base": self.phys_base,
            "phys_base_signed": to_s64(self.phys_base),
            "kernel_offset": self.kernel_offset,
            "vmcoreinfo_paddr": self.vmcoreinfo_paddrs[0] if self.vmcoreinfo_paddrs else None,
            "vmcoreinfo_paddrs": list(self.vmcoreinfo_paddrs),
            "text_paddr": self.text_paddr,
            "osrelease": self.osrelease,
            "cpus": list(self.cpus),
            "crashtime": self.crashtime,
            "elfcorehdr": None if header is None else header.paddr,
            "in_reservation": self.in_reservation,
            "cmdline": self.cmdline,
            "crashkernel": [c.as_json() for c in self.crashkernel],
            "evidence": list(self.evidence),
        }


@dataclass(frozen=True)
class Choice:
    """The kernel a dump is described as (``kernel`` None when memory shows none), and why."""

    kernel: Kernel | None
    wanted: Wanted
    reason: str
    ambiguous: bool


@dataclass(frozen=True)
class Kernels:
    """All kernels found, the core headers seen, and the reservation they imply."""

    kernels: tuple[Kernel, ...] = ()
    core_headers: tuple[CoreHeader, ...] = ()
    evidence: tuple[str, ...] = ()

    @property
    def several(self) -> bool:
        return len(self.kernels) > 1

    @property
    def ambiguous(self) -> bool:
        """True unless there is one kernel, or exactly one crashed and one running kernel."""
        if len(self.kernels) <= 1:
            return False
        roles = sorted(k.role for k in self.kernels)
        return roles != ["crashed", "running"]

    def of_role(self, role: Role) -> list[Kernel]:
        return [k for k in self.kernels if k.role == role]

    def choose(self, wanted: Wanted = "crashed", *, file_vmcoreinfo: bytes | None = None) -> Choice:
        """The kernel ``detect`` reports and ``fix`` writes: the crashed one by default, or the running one."""
        if wanted not in WANTED:
            raise KdfixError(f"{wanted!r} is not one of {', '.join(WANTED)}", field="--kernel")
        if not self.kernels:
            return Choice(None, wanted, "no validated VMCOREINFO in memory", False)
        if len(self.kernels) == 1:
            return Choice(self.kernels[0], wanted, "the only kernel in memory", False)
        matches = self.of_role(wanted)
        if len(matches) == 1 and not self.ambiguous:
            return Choice(matches[0], wanted, _why(matches[0]), False)
        # Ambiguous: say so, and fall back on what the file itself names, then on the evidence at hand.
        fallback = matches[0] if len(matches) == 1 else None
        if fallback is None and file_vmcoreinfo is not None:
            fallback = next((k for k in self.kernels if _same_text(k.vmcoreinfo, file_vmcoreinfo)), None)
        if fallback is None and wanted == "crashed":
            fallback = next((k for k in self.kernels if k.crashtime is not None), None)
        if fallback is None:
            fallback = max(self.kernels, key=lambda k: len(k.cpus))
        roles = ", ".join(k.summary() for k in self.kernels)
        return Choice(fallback, wanted, f"ambiguous: {len(self.kernels)} kernels ({roles}); {_why(fallback)}", True)

    def problem(self) -> str | None:
        """The ``info`` problem line for a dump with several kernels, else None."""
        if not self.several:
            return None
        order = {"crashed": 0, "running": 1, "only": 2, "unknown": 3}
        listed = sorted(self.kernels, key=lambda k: order[k.role])
        return f"{_count(len(self.kernels))} kernels in memory: " + " and ".join(k.summary() for k in listed)

    def as_json(self) -> list[dict[str, Any]]:
        return [k.as_json() for k in self.kernels]


def _count(n: int) -> str:
    return {2: "two", 3: "three"}.get(n, str(n))


def _why(kernel: Kernel) -> str:
    header = kernel.core_header
    if kernel.role == "crashed" and header is not None:
        return (
            f"the ELF core header at PA {header.paddr:#x}"
            + (" (the capture kernel's elfcorehdr=)" if header.cmdline is not None else "")
            + " describes it, as the capture kernel's /proc/vmcore would"
        )
    if kernel.role == "crashed":
        return "its VMCOREINFO has the CRASHTIME its panic appended"
    if kernel.role == "running":
        cpus = ", ".join(f"cpu{c}" for c in kernel.cpus) or "no vCPU"
        where = ", from inside the crashkernel reservation" if kernel.in_reservation else ""
        return f"executed by {cpus}{where}; described with QEMU's CPU registers"
    if kernel.role == "only":
        return "the only kernel in memory"
    return f"its role is unknown; a kernel whose role is unknown (phys_base {kernel.phys_base:#x})"


def _same_text(a: bytes, b: bytes) -> bool:
    return a.split(b"\0", 1)[0].rstrip(b"\n") == b.split(b"\0", 1)[0].rstrip(b"\n")


# --------------------------------------------------------------------------------------------------------------
# per-CPU page-table roots. Only x86_64 QEMU dumps carry them (CR3 in the QEMU note, phys-base-and-kaslr.md §3C);
def notes_of_cpus(notes: Sequence[Note], cpus: Iterable[int]) -> tuple[Note, ...]:
    """``notes`` without the per-CPU notes (NT_PRSTATUS, QEMU CPU state) of vCPUs not in ``cpus``.

    The n-th note of each kind belongs to vCPU n, as QEMU writes them (and as cpu_roots numbers them).
    """
    keep, seen = set(cpus), {NOTE_NAME_CORE: 0, NOTE_NAME_QEMU: 0}
    out = []
    for note in notes:
        kind = NOTE_NAME_QEMU if note.name.startswith(NOTE_NAME_QEMU) else note.name
        if kind in seen and (kind != NOTE_NAME_CORE or note.type == NoteType.NT_PRSTATUS):
            cpu, seen[kind] = seen[kind], seen[kind] + 1
            if cpu not in keep:
                continue
        out.append(note)
    return tuple(out)


# --------------------------------------------------------------------------------------------------------------
# ELF core headers in memory (§3.3)


def parse_core_header(read: ReadFn, paddr: int, head: bytes) -> CoreHeader | None:
    """The ELF core header at ``paddr`` (its first bytes ``head``), or None if it is not one kexec-tools wrote.

    A usable header has PT_NOTE entries whose ``p_paddr`` lead to notes (the capture kernel's own /proc/vmcore
    header, with ``p_paddr`` 0 for its merged notes, is skipped).
    """
    abi = ident_abi(head)
    if abi is None:
        return None
    try:
        eh = ehdr_layout(abi)
        hdr = eh.unpack(read(paddr, eh.size))
        if hdr.e_type != ET_CORE or not 0 < hdr.e_phnum <= MAX_PHNUM:
            return None
        ph = phdr_layout(abi)
        if hdr.e_phentsize != ph.size:
            return None
        table = read(paddr + hdr.e_phoff, hdr.e_phnum * ph.size)
    except (KdfixError, FormatError):
        return None
    loads: list[tuple[int, int]] = []
    vmcoreinfo_paddr: int | None = None
    vmcoreinfo: bytes | None = None
    cpu_notes: list[Note] = []
    for i in range(hdr.e_phnum):
        p = ph.unpack(table, i * ph.size)
        if p.p_type == PT_LOAD:
            loads.append((p.p_paddr, p.p_memsz))
        elif p.p_type == PT_NOTE and p.p_paddr and 0 < p.p_filesz <= MAX_NOTE_SEGMENT:
            notes = _segment_notes(read, p.p_paddr, p.p_filesz, abi)
            if notes and notes[0].name == NOTE_NAME_VMCOREINFO:
                vmcoreinfo_paddr, vmcoreinfo = p.p_paddr, notes[0].desc
            else:
                cpu_notes += [n for n in notes if n.name == NOTE_NAME_CORE and n.type == NoteType.NT_PRSTATUS]
    if vmcoreinfo is None and not cpu_notes:
        return None
    return CoreHeader(paddr, hdr.e_machine, tuple(loads), vmcoreinfo_paddr, vmcoreinfo, tuple(cpu_notes))


def _segment_notes(read: ReadFn, paddr: int, size: int, abi: Abi) -> list[Note]:
    """The notes of one PT_NOTE buffer up to its terminating empty note; [] when unreadable or malformed."""
    try:
        blob = read(paddr, size)
    except KdfixError:
        return []
    out: list[Note] = []
    try:
        for note in iter_notes(blob, abi):
            out.append(note)
    except FormatError:
        pass  # the buffer's tail after the empty note, or a CPU that never wrote its note
    return out


def parse_elfcorehdr(text: bytes) -> int | None:
    """The address of an ``elfcorehdr=[size[KMG]@]offset[KMG]`` parameter (§3.5), or None."""
    m = _ELFCOREHDR.search(text)
    if m is None:
        return None
    return int(m.group(1), 0 if m.group(1)[:2].lower() == b"0x" else 10) << _SUFFIX[m.group(2)]


def find_cmdline(memory: PhysicalMemory, header: CoreHeader) -> tuple[int, bytes] | None:
    """A command line in the reservation whose ``elfcorehdr=`` is ``header``'s address: (its PA, its text).

    x86 passes the header this way (§3.2); arm64 passes it in the device tree, so None there is expected.
    """
    region = header.reservation()
    if region is None:
        return None
    ps = memory.page_size
    top, bottom = (region[1] - 1) // ps, region[0] // ps
    for pfn in range(top, max(bottom, top - CMDLINE_SEARCH_PAGES) - 1, -1):
        if pfn >= memory.max_pfn or not memory.present(pfn):
            continue
        try:
            page = memory.page(pfn)
        except KdfixError:
            continue
        at = page.find(b"elfcorehdr=")
        while at >= 0:
            start, end = page.rfind(b"\0", 0, at) + 1, page.find(b"\0", at)
            text = page[start : end if end >= 0 else len(page)].strip()
            if parse_elfcorehdr(page[at : at + 64]) == header.paddr:
                return pfn * ps + start, text
            at = page.find(b"elfcorehdr=", at + 1)
    return None


def find_core_headers(memory: PhysicalMemory) -> list[CoreHeader]:
    """Every 4 KiB kernel page that starts with a usable ELF core header, in address order (kexec-tools places
    it page-aligned; dump blocks may be larger, e.g. QEMU's 64 KiB on aarch64)."""
    out: list[CoreHeader] = []
    for paddr, head in iter_granule_heads(memory):
        header = _core_header_at(memory, paddr, head)
        if header is not None:
            out.append(replace(header, cmdline=find_cmdline(memory, header)))
    return out


def _core_header_at(memory: PhysicalMemory, paddr: int, head: bytes) -> CoreHeader | None:
    """The usable ELF core header on the kernel page at ``paddr`` (its first bytes ``head``), else None."""
    if head[:4] != b"\x7fELF" or len(head) < 18:
        return None
    if int.from_bytes(head[16:18], "big" if head[5] == ELFDATA2MSB else "little") != ET_CORE:
        return None
    return parse_core_header(memory.read, paddr, head)


# --------------------------------------------------------------------------------------------------------------
# the kernels and their roles


@dataclass
class _Found:
    phys_base: int
    kernel_offset: int | None
    texts: list[bytes] = field(default_factory=list)
    paddrs: list[int] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)


def _validated_kernels(
    model: DumpModel,
    memory: PhysicalMemory,
    extra: Iterable[bytes],
    vmlinux_symbols: Mapping[str, int] | None,
    log: list[str],
    expected: set[int] | None = None,
) -> list[_Found]:
    """One entry per distinct validated (phys_base, KERNELOFFSET) among ``extra`` and the VMCOREINFO copies in
    memory.

    ``expected`` (the phys_base values the vCPUs' page tables imply) ends the scan as soon as each has a
    validated copy: the kernel allocates the buffers early, where the scan order looks first (vmcoreinfo_scan.py),
    so a dump of any size is searched in a few thousand page heads. None (nothing tells which kernels run):
    every page head is read.
    """
    found: dict[tuple[int, int | None], _Found] = {}
    verdicts: dict[bytes, tuple[int, int | None] | None] = {}  # text -> its validated key, None when rejected

    def consider(text: bytes, paddr: int | None) -> None:
        if text in verdicts:
            key = verdicts[text]
            if key is not None and paddr is not None:
                found[key].paddrs.append(paddr)
            return
        verdicts[text] = None
        info = VmcoreInfo.parse(text)
        recognised = recognise(model, info)
        if recognised is None or not info.osrelease:
            return
        arch = recognised.arch
        phys_base, kernel_offset = arch.header_phys_base(info), arch.kernel_offset(info)
        if phys_base is None:
            return
        candidate = Candidate("vmcoreinfo_scan", phys_base, kernel_offset, text, (), arch.name)
        checks = validate_candidate(candidate, memory, vmcoreinfo=info, vmlinux_symbols=vmlinux_symbols)
        where = f"{paddr:#x}" if paddr is not None else "the dump's own VMCOREINFO"
        if not confirmed(checks):
            log.append(f"VMCOREINFO at {where} (phys_base {phys_base:#x}) not validated: stale or foreign")
            return
        key = verdicts[text] = (phys_base, kernel_offset)
        entry = found.setdefault(key, _Found(phys_base, kernel_offset))
        entry.texts.append(text)
        entry.paddrs += [paddr] if paddr is not None else []
        entry.evidence.append(f"validated VMCOREINFO at {where}")

    def satisfied() -> bool:
        return bool(expected) and expected <= {k[0] for k in found}  # type: ignore[operator]

    for text in extra:
        consider(text.split(b"\0", 1)[0], None)
    if not satisfied():
        for hit in iter_scanned_copies(memory):
            consider(hit.text, hit.paddr)
            if satisfied():
                log.append("every kernel the vCPUs run has a validated VMCOREINFO: the scan stopped there")
                break
    return sorted(found.values(), key=lambda f: min(f.paddrs, default=1 << 64))


def _best_text(texts: Sequence[bytes]) -> bytes:
    """The fullest copy: the one with CRASHTIME (written at panic, §3.4), else the longest."""
    return max(texts, key=lambda t: (b"\nCRASHTIME=" in b"\n" + t, len(t)))


def _describes(header: CoreHeader, entry: _Found, text: bytes) -> bool:
    if header.vmcoreinfo_paddr is not None and header.vmcoreinfo_paddr in entry.paddrs:
        return True
    return header.vmcoreinfo is not None and _same_text(header.vmcoreinfo, text)


def find_kernels(
    model: DumpModel,
    memory: PhysicalMemory,
    *,
    vmlinux_symbols: Mapping[str, int] | None = None,
    file_vmcoreinfo: bytes | None = None,
) -> Kernels:
    """Every kernel whose VMCOREINFO is in memory (plus the dump's own, if validated), each with its role.

    Which kernels to look for comes from the vCPUs' page-table roots (x86_64 QEMU dumps): the scan for copies
    stops once each of them is validated. Without roots (or when a root's kernel has no copy) every page head is
    read. The ELF core header is looked for only when there are several kernels, first above each kernel's image
    (kexec-tools puts it at the top of the reservation the capture kernel runs in, §3.3).

    Not found: a second kernel no vCPU executes and no VMCOREINFO note of the dump describes (a capture kernel
    alone on a one-vCPU guest, without QEMU's vmcoreinfo device); telling it would mean reading every page.
    """
    log: list[str] = []
    extra = [file_vmcoreinfo] if file_vmcoreinfo is not None else []
    roots = cpu_roots(model)
    expected = cpu_image_bases(model, memory) if roots else set()
    if expected:
        log.append("vCPUs' page tables map phys_base " + ", ".join(f"{b:#x}" for b in sorted(expected)))
    entries = _validated_kernels(model, memory, extra, vmlinux_symbols, log, expected or None)
    if not entries:
        return Kernels((), (), tuple(log))
    headers: list[CoreHeader] = []
    placed = [_placed(model, memory, roots, entry) for entry in entries]
    if len(entries) > 1:
        headers = _core_headers_near(memory, [(p[2], p[1].crashtime) for p in placed])
    log += _header_lines(headers)
    kernels: list[Kernel] = []
    reservation: tuple[int, int] | None = None
    for entry, where in zip(entries, placed, strict=True):
        kernel = _kernel(model, memory, entry, where, headers, several=len(entries) > 1)
        if kernel.core_header is not None:
            reservation = reservation or kernel.core_header.reservation()
        kernels.append(kernel)
    if reservation is not None:
        log.append(f"crashkernel reservation [{reservation[0]:#x}, {reservation[1]:#x}) (the core header's hole)")
    log += _reservation_agrees(kernels, reservation)
    return Kernels(tuple(assign_roles(kernels, reservation)), tuple(headers), tuple(log))


def _header_lines(headers: Sequence[CoreHeader]) -> list[str]:
    """Log lines for the ELF core headers found: their notes and the command line that names them."""
    lines = []
    for h in headers:
        lines.append(
            f"ELF core header at PA {h.paddr:#x}: {len(h.cpu_notes)} CPU note(s), VMCOREINFO note at "
            + (f"{h.vmcoreinfo_paddr:#x}" if h.vmcoreinfo_paddr is not None else "none")
        )
        if h.cmdline is not None:
            shown = h.cmdline[1][-160:].decode("latin-1", "replace")
            lines.append(f"command line at PA {h.cmdline[0]:#x} names it: {shown!r}")
    return lines


def _kernel(
    model: DumpModel,
    memory: PhysicalMemory,
    entry: _Found,
    where: tuple[bytes, VmcoreInfo, int | None, tuple[int, ...]],
    headers: Sequence[CoreHeader],
    *,
    several: bool,
) -> Kernel:
    """One validated kernel with its evidence (the CPUs that run it, the core header describing it, CRASHTIME and,
    among several kernels, its own command line); its role is assigned later."""
    text, info, text_paddr, cpus = where
    header = next((h for h in headers if _describes(h, entry, text)), None)
    evidence = list(entry.evidence)
    if cpus:
        evidence.append(f"executed by {', '.join(f'cpu{c}' for c in cpus)} (page tables map its _stext)")
    if header is not None:
        evidence.append(f"described by the ELF core header at PA {header.paddr:#x}")
    if info.crashtime is not None:
        evidence.append(f"CRASHTIME={info.crashtime}: it panicked")
    cmdline = command_line(model, memory, info) if several else None
    evidence += _cmdline_evidence(cmdline)
    return Kernel(
        "unknown",
        entry.phys_base,
        entry.kernel_offset,
        text,
        tuple(entry.paddrs),
        text_paddr,
        cpus,
        info.crashtime,
        header,
        tuple(evidence),
        cmdline=cmdline,
    )


def _cmdline_evidence(cmdline: str | None) -> list[str]:
    if cmdline is None:
        return []
    out = [f"its log's command line: {cmdline[-200:]!r}"]
    out += [f"{c.text}: it reserved memory for a capture kernel" for c in parse_crashkernel(cmdline)]
    if parse_elfcorehdr(cmdline.encode("latin-1")) is not None:
        out.append("elfcorehdr= on its command line: it is a capture kernel")
    return out


def _reservation_agrees(kernels: Sequence[Kernel], reservation: tuple[int, int] | None) -> list[str]:
    """Evidence lines comparing each ``crashkernel=`` asked for with the reservation the core header implies."""
    out = []
    for k in kernels:
        for c in k.crashkernel:
            if reservation is None or c.size is None:
                continue
            size = reservation[1] - reservation[0]
            verdict = "consistent" if size == c.size else "inconsistent"
            out.append(f"{c.text} of the kernel with phys_base {k.phys_base:#x}; the core header's hole is "
                       f"{size:#x} bytes: {verdict}")  # fmt: skip
    return out


def _placed(
    model: DumpModel, memory: PhysicalMemory, roots: Sequence[CpuRoot], entry: _Found
) -> tuple[bytes, VmcoreInfo, int | None, tuple[int, ...]]:
    """(fullest text, its VMCOREINFO, the PA of its _stext, the vCPUs that execute it) of one found kernel."""
    text = _best_text(entry.texts)
    info = VmcoreInfo.parse(text)
    stext, known = info.symbol("_stext"), kernel_space(model, info)
    space = known[1] if known is not None else None
    text_paddr = space.image_paddr(stext) if space is not None and stext is not None else None
    cpus: tuple[int, ...] = ()
    if space is not None and stext is not None:
        cpus = tuple(r.cpu for r in roots if cpu_runs(memory.read, r, space, stext))
    return text, info, text_paddr, cpus


def _core_headers_near(memory: PhysicalMemory, kernels: Sequence[tuple[int | None, int | None]]) -> list[CoreHeader]:
    """The ELF core header whose reservation holds one of ``kernels`` ((_stext PA, CRASHTIME) each), found by
    reading page heads upward from that kernel's image, kernels without CRASHTIME first (the capture kernel
    never panicked); every page head when none is found so (find_core_headers)."""
    ps = memory.page_size
    order = sorted((k for k in kernels if k[0] is not None), key=lambda k: k[1] is not None)
    for text_paddr, _crashtime in order:
        assert text_paddr is not None
        for paddr, head in iter_page_heads(memory, text_paddr // ps):
            header = _core_header_at(memory, paddr, head)
            if header is None:
                continue
            region = header.reservation()
            if region is not None and region[0] <= text_paddr < region[1]:
                return [replace(header, cmdline=find_cmdline(memory, header))]
            break  # the first header above this kernel leaves it out: it is not the capture kernel
    return find_core_headers(memory)


def assign_roles(kernels: Sequence[Kernel], reservation: tuple[int, int] | None) -> list[Kernel]:
    """Each kernel with its role (the rules of the module docstring); pure, for any architecture."""
    if len(kernels) == 1:
        return [replace(kernels[0], role="only", in_reservation=_inside(kernels[0], reservation))]
    described = [k for k in kernels if k.core_header is not None]
    crashed = described or [k for k in kernels if k.crashtime is not None]
    out = []
    for k in kernels:
        inside = _inside(k, reservation)
        role: Role
        if any(k is c for c in crashed):
            role = "crashed"
        elif k.cpus or inside or k.elfcorehdr is not None:
            role = "running"
        else:
            role = "unknown"
        out.append(replace(k, role=role, in_reservation=inside))
    return out


def _inside(kernel: Kernel, reservation: tuple[int, int] | None) -> bool | None:
    if reservation is None or kernel.text_paddr is None:
        return None
    return reservation[0] <= kernel.text_paddr < reservation[1]


__all__ = [
    "WANTED",
    "Choice",
    "CoreHeader",
    "Kernel",
    "Kernels",
    "Role",
    "Wanted",
    "assign_roles",
    "find_core_headers",
    "find_kernels",
    "notes_of_cpus",
    "parse_core_header",
    "parse_elfcorehdr",
]
