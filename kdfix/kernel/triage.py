"""``kdfix triage``: what a support engineer reads first — release, time, the panic and where each CPU was.

Everything comes from the dump itself: VMCOREINFO, the kernel log (printk.py), the CPU notes, and the kernel's
own kallsyms (kallsyms.py, arch-kernels-and-introspection.md §5); no vmlinux is needed.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass, field

from kdfix.arch import Arch
from kdfix.detect.validate import UTSNAME, UTSNAME_SIZE
from kdfix.errors import KdfixError
from kdfix.format.constants import NoteType
from kdfix.kernel.kallsyms import Kallsyms, read_kallsyms
from kdfix.kernel.printk import KernelLog, LogRecord, format_record, read_kernel_log
from kdfix.kernel.view import KernelView, kernel_view
from kdfix.kernel.vmem import Endian, VirtualReader
from kdfix.notes.prstatus import prstatus_registers
from kdfix.read.dump import Dump
from kdfix.read.probe import open_dump
from kdfix.read.readiness import utsname_fields
from kdfix.units import cstr

# The instruction and stack pointer in each PRSTATUS layout kdfix decodes (notes-and-vmcoreinfo.md §2).
IP_REGISTERS = ("rip", "eip", "pc")
SP_REGISTERS = ("rsp", "esp", "sp")
# Kernel stacks are THREAD_SIZE-aligned; scanning up to the next such boundary covers one stack.
STACK_ALIGN = 16 << 10  # THREAD_SIZE of x86_64 and arm64 (16 KiB); i386's 8 KiB stacks end on one too
MAX_STACK_ENTRIES = 64
LAST_LINES = 20

PANIC_RE = re.compile(rb"Kernel panic - not syncing: ?(.*)", re.S)
OOPS_RE = re.compile(rb"^(BUG: .*|Oops: .*|general protection fault.*|kernel BUG at .*|Unable to handle kernel .*"
                     rb"|Internal error: .*|WARNING: CPU: .*)", re.S)  # fmt: skip
CPU_LINE_RE = re.compile(rb"^CPU: (\d+) PID: (\d+) Comm: (\S+)")


@dataclass(frozen=True)
class CpuState:
    """One CPU's registers from its NT_PRSTATUS note, symbolized with the kernel's kallsyms."""

    cpu: int
    pid: int
    ip: int
    sp: int
    ip_symbol: str | None
    ip_function: str | None
    user_mode: bool | None = None  # from the PRSTATUS mode bits (CS on x86, PSTATE on arm64): no kernel IP then


@dataclass(frozen=True)
class StackEntry:
    """A stack word that points into kernel text: where it sits, its value and the symbol it falls in."""

    slot: int
    value: int
    symbol: str
    function: str


@dataclass(frozen=True)
class TriageReport:
    """The summary ``kdfix triage`` prints; ``notes`` says what could not be determined and why."""

    paths: tuple[str, ...]
    vmcoreinfo_source: str
    release: str | None
    version: str | None
    machine: str | None
    crashtime: int | None
    uptime_ns: int | None
    panic_message: str | None
    oops_message: str | None
    panic_cpu: int | None
    panic_pid: int | None
    panic_comm: str | None
    last_lines: tuple[str, ...]
    cpus: tuple[CpuState, ...]
    stack_cpu: int | None
    stack: tuple[StackEntry, ...]
    symbols: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def crashtime_utc(self) -> str | None:
        if self.crashtime is None:
            return None
        return datetime.datetime.fromtimestamp(self.crashtime, datetime.UTC).isoformat()


def find_crash_record(log: KernelLog) -> tuple[LogRecord | None, LogRecord | None]:
    """The first oops-like record and the first ``Kernel panic`` record of the log."""
    oops = next((r for r in log.records if OOPS_RE.match(r.text)), None)
    panic = next((r for r in log.records if PANIC_RE.match(r.text)), None)
    return oops, panic


def crashing_task(log: KernelLog, after: LogRecord) -> tuple[int, int, str] | None:
    """(cpu, pid, comm) from the first ``CPU: n PID: p Comm: c`` line at or after ``after`` (dump_stack's header)."""
    for record in log.records:
        if record.seq < after.seq:
            continue
        m = CPU_LINE_RE.match(record.text)
        if m:
            return int(m.group(1)), int(m.group(2)), m.group(3).decode("latin-1")
    return None


def _message(record: LogRecord | None, pattern: re.Pattern[bytes]) -> str | None:
    if record is None:
        return None
    m = pattern.match(record.text)
    text = m.group(1) if m and pattern is PANIC_RE else record.text
    return text.decode("utf-8", "replace").strip()


def read_utsname(view: KernelView) -> dict[str, str] | None:
    """The kernel's ``init_uts_ns.name`` fields, or None if VMCOREINFO does not locate it or it is unreadable."""
    sym = view.vmcoreinfo.symbol("init_uts_ns")
    if sym is None:
        return None
    try:
        raw = view.memory.read(sym + (view.vmcoreinfo.offset("uts_namespace.name") or 0), UTSNAME_SIZE)
    except KdfixError:
        return None
    return {name: cstr(value) for name, value in utsname_fields(UTSNAME.unpack(raw)).items()}


def cpu_states(dump: Dump, arch: Arch, symbols: Kallsyms | None) -> list[CpuState]:
    """Every NT_PRSTATUS note in order (note i is CPU i, as crash numbers them), with IP and SP."""
    states: list[CpuState] = []
    layout = arch.prstatus(dump.model.abi.byte_order)
    prstatus = [n for n in dump.notes if n.type == NoteType.NT_PRSTATUS and n.name == b"CORE"]
    for cpu, note in enumerate(prstatus):
        if len(note.desc) != arch.prstatus_size:
            continue
        try:
            record = layout.unpack(note.desc, what="elf_prstatus")
        except KdfixError:
            continue
        regs = prstatus_registers(record)
        ip = next((regs[r] for r in IP_REGISTERS if r in regs), 0)
        sp = next((regs[r] for r in SP_REGISTERS if r in regs), 0)
        user = arch.user_mode(regs)
        sym = symbols.lookup(ip) if symbols is not None and not user else None
        states.append(CpuState(cpu, record.pr_pid, ip, sp, str(sym) if sym else None, sym.name if sym else None, user))
    return states


def scan_stack(mem: VirtualReader, symbols: Kallsyms, sp: int, *, word_size: int, endian: Endian) -> list[StackEntry]:
    """Words from ``sp`` up to the end of its stack that point inside kernel text (not at a symbol's start).

    Best effort, like crash's ``bt -t``: return addresses in call order, plus stale values left on the stack.
    """
    word = word_size
    start = sp - sp % word
    end = (sp // STACK_ALIGN + 1) * STACK_ALIGN
    entries: list[StackEntry] = []
    pos = start
    while pos < end and len(entries) < MAX_STACK_ENTRIES:
        take = min(4096 - pos % 4096, end - pos)
        try:
            chunk = mem.read(pos, take)
        except KdfixError:
            break
        for i in range(0, len(chunk) - word + 1, word):
            value = int.from_bytes(chunk[i : i + word], endian)
            if not symbols.is_text(value):
                continue
            sym = symbols.lookup(value)
            if sym is None or sym.offset == 0 or sym.type not in "tTwW":
                continue
            entries.append(StackEntry(pos + i, value, str(sym), sym.name))
            if len(entries) >= MAX_STACK_ENTRIES:
                break
        pos += take
    return entries


def _log_and_symbols(view: KernelView, notes: list[str]) -> tuple[KernelLog | None, Kallsyms | None]:
    """The kernel log and kallsyms, each None (with a note saying why) when it cannot be read."""
    log: KernelLog | None
    try:
        log = read_kernel_log(view.vmcoreinfo, view.memory, word_size=view.word_size, endian=view.endian)
        notes.extend(f"kernel log: {d}" for d in log.damage)
    except KdfixError as exc:
        log = None
        notes.append(f"kernel log unreadable: {exc}")
    symbols: Kallsyms | None
    try:
        symbols = read_kallsyms(view.vmcoreinfo, view.memory, word_size=view.word_size, endian=view.endian)
    except KdfixError as exc:
        symbols = None
        notes.append(f"kallsyms unreadable, addresses are not symbolized: {exc}")
    return log, symbols


def _last_lines(log: KernelLog | None, first: LogRecord | None) -> tuple[str, ...]:
    """The LAST_LINES log lines up to the first crash message (or the log's end), as dmesg prints them."""
    if log is None or not log.records:
        return ()
    upto = first.seq if first is not None else log.records[-1].seq
    before = [r for r in log.records if r.seq <= upto and not r.dataless][-(LAST_LINES + 1) :]
    return tuple(format_record(r) for r in before)


def triage(*paths: str | os.PathLike[str]) -> TriageReport:
    """Summarize the crash in the dump at ``paths`` (several: one split set)."""
    notes: list[str] = []
    with open_dump(*paths) as dump:
        view = kernel_view(dump)
        info = view.vmcoreinfo
        log, symbols = _log_and_symbols(view, notes)
        uts = read_utsname(view)
        if uts is None:
            notes.append("init_uts_ns unreadable: release from VMCOREINFO, version and machine unknown")
        cpus = cpu_states(dump, view.arch, symbols)
        if not cpus:
            notes.append("no NT_PRSTATUS notes: no CPU registers")

        oops, panic = find_crash_record(log) if log is not None else (None, None)
        first = oops or panic
        task = crashing_task(log, first) if log is not None and first is not None else None
        if first is None:
            notes.append("no panic or oops message in the kernel log")
        elif task is None:
            notes.append("the log does not say which CPU crashed (no 'CPU: n PID: p' line after the message)")
        last_lines = _last_lines(log, first)
        panic_cpu = task[0] if task is not None else None
        stack: list[StackEntry] = []
        stack_cpu = next((c.cpu for c in cpus if c.cpu == panic_cpu), None)
        if stack_cpu is not None and symbols is not None:
            stack = scan_stack(view.memory, symbols, cpus[stack_cpu].sp, word_size=view.word_size, endian=view.endian)
        elif panic_cpu is not None:
            notes.append(f"no registers for the crashing CPU {panic_cpu}: no stack scan")
    return TriageReport(
        paths=tuple(os.fspath(p) for p in paths),
        vmcoreinfo_source=view.vmcoreinfo_source,
        release=(uts or {}).get("release") or info.osrelease,
        version=(uts or {}).get("version"),
        machine=(uts or {}).get("machine"),
        crashtime=info.crashtime,
        uptime_ns=log.records[-1].ts_nsec if log is not None and log.records else None,
        panic_message=_message(panic, PANIC_RE),
        oops_message=_message(oops, OOPS_RE),
        panic_cpu=panic_cpu,
        panic_pid=task[1] if task is not None else None,
        panic_comm=task[2] if task is not None else None,
        last_lines=last_lines,
        cpus=tuple(cpus),
        stack_cpu=stack_cpu,
        stack=tuple(stack),
        symbols=len(symbols) if symbols is not None else 0,
        notes=tuple(notes),
    )
