"""Method B: scan page heads for the kernel's own VMCOREINFO (text page or note buffer), phys-base-and-kaslr.md §3B."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from kdfix.detect.candidate import Candidate, miss
from kdfix.detect.validate import confirmed, validate_candidate
from kdfix.errors import KdfixError
from kdfix.model import DumpModel
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.memory import PhysicalMemory
from kdfix.units import to_s64

METHOD = "vmcoreinfo_scan"
TEXT_MAGIC = b"OSRELEASE="
NOTE_NAME = b"VMCOREINFO\0\0"
HEAD_SIZE = 24  # Nhdr (12) + padded name (12); also covers TEXT_MAGIC


@dataclass(frozen=True, slots=True)
class VmcoreinfoHit:
    """One page that starts like the kernel's VMCOREINFO: ``form`` is "text" or "note"."""

    pfn: int
    form: str
    text: bytes


def _head_reader(memory: PhysicalMemory) -> Callable[[int], bytes]:
    page_head = getattr(memory, "page_head", None)
    if callable(page_head):
        return lambda pfn: page_head(pfn, HEAD_SIZE)
    return lambda pfn: memory.page(pfn)[:HEAD_SIZE]


def match_head(head: bytes, page_size: int) -> str | None:
    """ "text", "note" or None for the first bytes of a page (§3B steps 2-3)."""
    if head.startswith(TEXT_MAGIC):
        return "text"
    if len(head) >= HEAD_SIZE and head[12:24] == NOTE_NAME:
        namesz, descsz, ntype = struct.unpack_from("<III", head)
        if namesz == 11 and ntype == 0 and 0 < descsz <= page_size:
            return "note"
    return None


def iter_vmcoreinfo_pages(
    memory: PhysicalMemory, *, progress: Callable[[int, int], None] | None = None
) -> Iterator[VmcoreinfoHit]:
    """Yield pages whose head looks like VMCOREINFO, in pfn order; zero and undecodable pages are skipped."""
    is_zero = getattr(memory, "is_zero_page", None)
    head_of = _head_reader(memory)
    ps = memory.page_size
    total = memory.dumped.count() if progress else 0
    for done, pfn in enumerate(memory.dumped.iter_set()):
        if progress and done % 4096 == 0:
            progress(done, total)
        if is_zero is not None and is_zero(pfn):
            continue
        try:
            head = head_of(pfn)
            form = match_head(head, ps)
            if form is None:
                continue
            if form == "text":
                text = memory.page(pfn).split(b"\0", 1)[0]
            else:
                descsz = struct.unpack_from("<I", head, 4)[0]
                text = memory.read(pfn * ps + HEAD_SIZE, descsz).split(b"\0", 1)[0]
        except KdfixError:
            continue
        yield VmcoreinfoHit(pfn, form, text)
    if progress:
        progress(total, total)


def find_by_vmcoreinfo_scan(
    model: DumpModel,
    memory: PhysicalMemory,
    *,
    vmlinux_symbols: Mapping[str, int] | None = None,
    log: list[str] | None = None,
    known: Sequence[Candidate] = (),
) -> Candidate | None:
    """The first in-memory VMCOREINFO whose values pass the utsname/page-table checks (the live copy)."""
    by_text: dict[bytes, list[VmcoreinfoHit]] = {}
    for hit in iter_vmcoreinfo_pages(memory):
        by_text.setdefault(hit.text, []).append(hit)
    if not by_text:
        return miss(log, METHOD, "no page starts with a VMCOREINFO note or OSRELEASE= text")
    rejected: list[str] = []
    chosen: Candidate | None = None
    others: list[str] = []
    for text, hits in by_text.items():
        where = ", ".join(f"{h.form} page {h.pfn * memory.page_size:#x}" for h in hits)
        info = VmcoreInfo.parse(text)
        phys_base, kernel_offset = info.phys_base, info.kernel_offset
        if phys_base is None or not info.osrelease:
            rejected.append(f"{where}: no OSRELEASE or NUMBER(phys_base)")
            continue
        evidence = (
            f"VMCOREINFO at {where}",
            f"OSRELEASE={info.osrelease} NUMBER(phys_base)={to_s64(phys_base)} KERNELOFFSET={kernel_offset or 0:x}",
        )
        candidate = Candidate(METHOD, phys_base, kernel_offset, text, evidence)
        checks = validate_candidate(candidate, memory, vmlinux_symbols=vmlinux_symbols)
        if not confirmed(checks):
            failed = "; ".join(str(c) for c in checks if c.passed is False) or "no decisive check passed"
            rejected.append(f"{where}: stale or foreign copy ({failed})")
        elif chosen is None:
            chosen = candidate
        elif (phys_base, kernel_offset) != (chosen.phys_base, chosen.kernel_offset):
            others.append(f"another validated VMCOREINFO at {where} (phys_base {phys_base:#x}): two kernels?")
    if chosen is None:
        for line in rejected:
            miss(log, METHOD, line)
        return miss(log, METHOD, f"{len(by_text)} VMCOREINFO copies found, none validated")
    extra = tuple(f"ignored {line}" for line in rejected) + tuple(others)
    return Candidate(METHOD, chosen.phys_base, chosen.kernel_offset, chosen.vmcoreinfo, chosen.evidence + extra)
