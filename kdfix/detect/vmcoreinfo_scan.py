"""Method B: scan page heads for the kernel's own VMCOREINFO (text page or note buffer), phys-base-and-kaslr.md §3B."""

from __future__ import annotations

import contextlib
import weakref
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kdfix.arch import recognise
from kdfix.arch.base import MIN_PAGE_SIZE
from kdfix.detect.candidate import Attempt, Candidate, strategy
from kdfix.detect.validate import confirmed, validate_candidate
from kdfix.errors import CodecError, KdfixError
from kdfix.format.constants import COMPRESSION_FLAGS, NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO, DumpFlag
from kdfix.format.layout import LP64_LE
from kdfix.format.notes import NHDR, NHDR_SIZE
from kdfix.notes.framing import Note, pack_note
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.memory import PhysicalMemory

METHOD = "vmcoreinfo_scan"
TEXT_MAGIC = b"OSRELEASE="
_NOTE = Note(NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO, b"")
HEAD_SIZE = _NOTE.desc_offset  # Nhdr + padded name (24 bytes); also covers TEXT_MAGIC
NOTE_NAME = pack_note(_NOTE, LP64_LE)[NHDR_SIZE:HEAD_SIZE]  # "VMCOREINFO" padded to 4
_NHDR = NHDR.bind(LP64_LE)  # guest memory of every architecture kdfix translates is little-endian
_COMPRESSION, _ZLIB = int(COMPRESSION_FLAGS), int(DumpFlag.COMPRESSED_ZLIB)  # plain ints: IntFlag & is slow per page
ZLIB_PREFIX = 512  # compressed bytes read first; enough to inflate a head in practice


@dataclass(frozen=True, slots=True)
class VmcoreinfoHit:
    """One kernel page that starts like the kernel's VMCOREINFO: ``form`` is "text" or "note".

    ``pfn`` is the dump block holding it and ``paddr`` the page start: the kernel's pages (4 KiB or more) can sit
    inside larger dump blocks (QEMU's 64 KiB blocks on aarch64, arch-kernels-and-introspection.md §1.6).
    """

    pfn: int
    form: str
    text: bytes
    paddr: int


def head_reader(memory: PhysicalMemory, size: int = HEAD_SIZE) -> Callable[[int], bytes]:
    """A function returning the first ``size`` bytes of a page as cheaply as the memory object allows.

    Uses ``memory.page_head(pfn, n)`` when offered; for a KDUMP container exposing ``raw_page`` it inflates
    only the head of zlib pages and slices raw ones; otherwise it decodes the whole page.
    """
    page_head = getattr(memory, "page_head", None)
    if callable(page_head):
        return lambda pfn: page_head(pfn, size)
    raw_page = getattr(getattr(memory, "container", None), "raw_page", None)
    if not callable(raw_page):
        return lambda pfn: memory.page(pfn)[:size]

    def head(pfn: int) -> bytes:
        flags, data = raw_page(pfn)
        if flags & DumpFlag.COMPRESSED_ZLIB:
            try:
                return zlib.decompressobj().decompress(data, size)
            except zlib.error as exc:
                raise CodecError(f"zlib: {exc}", pfn=pfn) from exc
        if not flags & COMPRESSION_FLAGS and len(data) == memory.page_size:
            return data[:size]
        return memory.page(pfn)[:size]

    return head


def match_head(head: bytes, page_size: int) -> str | None:
    """ "text", "note" or None for the first bytes of a page (§3B steps 2-3)."""
    if head.startswith(TEXT_MAGIC):
        return "text"
    if len(head) >= HEAD_SIZE and head[12:24] == NOTE_NAME:
        nhdr = _NHDR.unpack(head)
        if nhdr.n_namesz == len(NOTE_NAME_VMCOREINFO) + 1 and nhdr.n_type == NOTE_TYPE_VMCOREINFO and (
            0 < nhdr.n_descsz <= page_size
        ):
            return "note"
    return None


def _iter_heads_generic(memory: PhysicalMemory) -> Iterator[tuple[int, bytes]]:
    """(pfn, head) of dumped pages, skipping zero pages when ``is_zero_page`` says so cheaply."""
    is_zero = getattr(memory, "is_zero_page", None)
    head_of = head_reader(memory)
    for pfn in memory.dumped.iter_set():
        if is_zero is not None and is_zero(pfn):
            continue
        try:
            yield pfn, head_of(pfn)
        except KdfixError:
            continue


def _iter_heads_kdump(container: Any, page_size: int) -> Iterator[tuple[int, bytes]]:
    """(pfn, head) from a KDUMP container's batched descriptors: zlib heads inflated from a prefix, raw pages
    read for HEAD_SIZE bytes (the shared zero page once), other codecs decoded in full."""
    src = container.source
    raw_heads: dict[int, bytes] = {}
    for loc in container.iter_locations():
        desc = loc.desc
        try:
            if desc.offset <= 0 or desc.size <= 0 or desc.size > page_size:
                continue
            if not desc.flags & _COMPRESSION:
                if desc.size != page_size:
                    continue
                head = raw_heads.get(desc.offset)
                if head is None:
                    head = raw_heads[desc.offset] = src.read_at(desc.offset, HEAD_SIZE)
            elif desc.flags & _ZLIB:
                inflater = zlib.decompressobj()
                head = inflater.decompress(src.read_at(desc.offset, min(desc.size, ZLIB_PREFIX)), HEAD_SIZE)
                if len(head) < HEAD_SIZE and desc.size > ZLIB_PREFIX:
                    head = zlib.decompressobj().decompress(src.read_at(desc.offset, desc.size), HEAD_SIZE)
            else:
                head = container.page(loc.pfn)[:HEAD_SIZE]
        except (KdfixError, zlib.error):
            continue
        yield loc.pfn, head


def iter_page_heads(memory: PhysicalMemory) -> Iterator[tuple[int, bytes]]:
    """(pfn, first HEAD_SIZE bytes) of every dumped, non-zero page in ascending pfn order (undecodable skipped)."""
    container = getattr(memory, "container", None)
    if (
        not callable(getattr(memory, "page_head", None))
        and callable(getattr(container, "iter_locations", None))
        and hasattr(container, "source")
    ):
        try:
            yield from _iter_heads_kdump(container, memory.page_size)
            return
        except KdfixError:  # a truncated descriptor table: fall back to per-page reads
            pass
    yield from _iter_heads_generic(memory)


def iter_granule_heads(memory: PhysicalMemory) -> Iterator[tuple[int, bytes]]:
    """(paddr, head) of every 4 KiB kernel page in ascending order: block heads when blocks are 4 KiB, else each
    4 KiB slice of every dumped, non-zero block (the kernel's page size is never below MIN_PAGE_SIZE)."""
    ps = memory.page_size
    if ps <= MIN_PAGE_SIZE:
        for pfn, head in iter_page_heads(memory):
            yield pfn * ps, head
        return
    is_zero = getattr(memory, "is_zero_page", None)
    for pfn in memory.dumped.iter_set():
        if is_zero is not None and is_zero(pfn):
            continue
        try:
            block = memory.page(pfn)
        except KdfixError:
            continue
        for offset in range(0, ps, MIN_PAGE_SIZE):
            yield pfn * ps + offset, block[offset : offset + HEAD_SIZE]


def iter_vmcoreinfo_pages(memory: PhysicalMemory) -> Iterator[VmcoreinfoHit]:
    """Yield kernel pages whose head looks like VMCOREINFO, in address order (phys-base-and-kaslr.md §3B)."""
    ps = memory.page_size
    for paddr, head in iter_granule_heads(memory):
        form = match_head(head, max(ps, MIN_PAGE_SIZE))
        if form is None:
            continue
        try:
            if form == "text":
                text = memory.read(paddr, MIN_PAGE_SIZE).split(b"\0", 1)[0]
            else:
                descsz = _NHDR.unpack(head).n_descsz
                text = memory.read(paddr + HEAD_SIZE, descsz).split(b"\0", 1)[0]
        except KdfixError:
            continue
        yield VmcoreinfoHit(paddr // ps, form, text, paddr)


_SCANNED: weakref.WeakKeyDictionary[Any, tuple[VmcoreinfoHit, ...]] = weakref.WeakKeyDictionary()


def vmcoreinfo_pages(memory: PhysicalMemory) -> tuple[VmcoreinfoHit, ...]:
    """Every VMCOREINFO page of ``memory`` (iter_vmcoreinfo_pages), scanned once per memory object: the
    strategy and the search for every kernel (kernels.py) share one pass over the page heads."""
    try:
        return _SCANNED[memory]
    except (KeyError, TypeError):
        pass
    hits = tuple(iter_vmcoreinfo_pages(memory))
    with contextlib.suppress(TypeError):  # not weak-referenceable: scan again next time
        _SCANNED[memory] = hits
    return hits


@strategy(METHOD)
def find_by_vmcoreinfo_scan(run: Attempt) -> Candidate | None:
    """The first in-memory VMCOREINFO whose values pass the utsname/page-table checks (the live copy)."""
    memory = run.memory
    by_text: dict[bytes, list[VmcoreinfoHit]] = {}
    for hit in vmcoreinfo_pages(memory):
        by_text.setdefault(hit.text, []).append(hit)
    if not by_text:
        run.miss("no page starts with a VMCOREINFO note or OSRELEASE= text")
        return None
    rejected: list[str] = []
    chosen: Candidate | None = None
    others: list[str] = []
    for text, hits in by_text.items():
        where = ", ".join(f"{h.form} page {h.paddr:#x}" for h in hits)
        info = VmcoreInfo.parse(text)
        found = recognise(run.model, info)
        if found is None or not info.osrelease:
            rejected.append(f"{where}: no OSRELEASE, or the architecture is unknown")
            continue
        arch = found.arch
        phys_base, kernel_offset = arch.header_phys_base(info), arch.kernel_offset(info)
        if phys_base is None:
            rejected.append(f"{where}: no {arch.phys_base_key or arch.phys_base_meaning}")
            continue
        evidence = (
            f"VMCOREINFO at {where}; architecture {arch.name}",
            f"OSRELEASE={info.osrelease} " + " ".join(arch.vmcoreinfo_evidence(info)),
        )
        candidate = Candidate(METHOD, phys_base, kernel_offset, text, evidence, arch.name)
        checks = validate_candidate(candidate, memory, vmlinux_symbols=run.vmlinux_symbols)
        if not confirmed(checks):
            failed = "; ".join(str(c) for c in checks if c.passed is False) or "no decisive check passed"
            rejected.append(f"{where}: stale or foreign copy ({failed})")
        elif chosen is None:
            chosen = candidate
        elif (phys_base, kernel_offset) != (chosen.phys_base, chosen.kernel_offset):
            others.append(f"another validated VMCOREINFO at {where} (phys_base {phys_base:#x}): two kernels?")
    if chosen is None:
        run.miss(f"{len(by_text)} VMCOREINFO copies found, none validated", details=rejected)
        return None
    extra = tuple(f"ignored {line}" for line in rejected) + tuple(others)
    return Candidate(METHOD, chosen.phys_base, chosen.kernel_offset, chosen.vmcoreinfo, chosen.evidence + extra,
                     chosen.arch)  # fmt: skip
