"""Method B: scan page heads for the kernel's own VMCOREINFO (text page or note buffer), phys-base-and-kaslr.md §3B.

Only the first bytes of each page are looked at (zlib pages are inflated for 24 bytes, shared zero pages skipped by
their descriptor). When another method already knows phys_base (the CR3 walk), the scan goes where the kernel
allocates the buffers first (the low end of the highest memory zone, ``scan_ranges``) and stops at the first copy
that agrees and validates, so a fix touches a few thousand pages of a dump of any size.
"""

from __future__ import annotations

import contextlib
import weakref
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

from kdfix.arch import recognise
from kdfix.arch.base import MIN_PAGE_SIZE
from kdfix.detect.candidate import Attempt, Candidate, strategy
from kdfix.detect.validate import confirmed, validate_candidate
from kdfix.errors import CodecError, KdfixError
from kdfix.format.constants import COMPRESSION_FLAGS, NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO, DumpFlag
from kdfix.format.kdump import PAGE_DESC, PAGE_DESC_SIZE
from kdfix.format.layout import LP64_LE
from kdfix.format.notes import NHDR, NHDR_SIZE
from kdfix.format.x86 import ZONE_STARTS
from kdfix.notes.framing import Note, pack_note
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.memory import PhysicalMemory

if TYPE_CHECKING:
    from kdfix.model import DumpModel

METHOD = "vmcoreinfo_scan"
TEXT_MAGIC = b"OSRELEASE="
_NOTE = Note(NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO, b"")
HEAD_SIZE = _NOTE.desc_offset  # Nhdr + padded name (24 bytes); also covers TEXT_MAGIC
NOTE_NAME = pack_note(_NOTE, LP64_LE)[NHDR_SIZE:HEAD_SIZE]  # "VMCOREINFO" padded to 4
_NHDR = NHDR.bind(LP64_LE)  # guest memory of every architecture kdfix translates is little-endian
_COMPRESSION, _ZLIB = int(COMPRESSION_FLAGS), int(DumpFlag.COMPRESSED_ZLIB)  # plain ints: IntFlag & is slow per page
ZLIB_PREFIX = 512  # compressed bytes read first; enough to inflate a head in practice
DESC_BATCH = 4096  # descriptors read at once
DATA_CHUNK = 4 << 20  # page data read at once (sliced per page)
PfnRange = tuple[int, int]


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
        if (
            nhdr.n_namesz == len(NOTE_NAME_VMCOREINFO) + 1
            and nhdr.n_type == NOTE_TYPE_VMCOREINFO
            and (0 < nhdr.n_descsz <= page_size)
        ):
            return "note"
    return None


def scan_ranges(memory: PhysicalMemory, zone_starts: Sequence[int] = ZONE_STARTS) -> list[PfnRange]:
    """Every pfn once, as ranges in the order to scan: from the highest zone start present up to the end, then
    from each lower zone start up to the one above it, then the pages below the lowest start.

    The kernel allocates its VMCOREINFO buffers early, from the low end of the highest zone (see ZONE_STARTS), so
    a scan that stops at the first validated copy finds it after a few thousand pages on guests of any size.
    """
    ps, end = memory.page_size, memory.max_pfn
    starts = sorted({-(-addr // ps) for addr in zone_starts if 0 < -(-addr // ps) < end}, reverse=True)
    ranges: list[PfnRange] = []
    top = end
    for first in starts:
        ranges.append((first, top))
        top = first
    ranges.append((0, top))
    return [r for r in ranges if r[0] < r[1]]


def _heads_of_page(page: bytes, paddr: int, granule: int) -> Iterator[tuple[int, bytes]]:
    for at in range(0, len(page), granule):
        yield paddr + at, page[at : at + HEAD_SIZE]


def _iter_heads_generic(memory: PhysicalMemory, start: int, end: int, granule: int) -> Iterator[tuple[int, bytes]]:
    """(paddr, head) of dumped pages, skipping zero pages when ``is_zero_page`` says so cheaply."""
    ps = memory.page_size
    is_zero = getattr(memory, "is_zero_page", None)
    head_of = head_reader(memory)
    for pfn in memory.dumped.iter_set(start, end):
        if is_zero is not None and is_zero(pfn):
            continue
        try:
            if granule >= ps:
                yield pfn * ps, head_of(pfn)
            else:
                yield from _heads_of_page(memory.page(pfn), pfn * ps, granule)
        except KdfixError:
            continue


def _iter_heads_kdump(container: Any, start: int, end: int, granule: int) -> Iterator[tuple[int, bytes]]:
    """(paddr, head) from a KDUMP container's raw descriptors: shared zero pages skipped by descriptor, raw heads
    sliced from large sequential reads, zlib heads inflated from a prefix, other codecs decoded in full."""
    ps = container.block_size
    start, end = max(start, container.start_pfn), min(end, container.end_pfn)
    if start >= end:
        return
    src = container.source
    size = src.size
    zero_offsets = container.zero_page_offsets()
    unpack = PAGE_DESC.bind(container.abi).struct.iter_unpack
    pfns = container.iter_dumped_pfns(start, end)
    index = container.table_index(start)
    whole = granule < ps
    chunk, chunk_lo, chunk_hi = b"", 0, 0
    while True:
        batch = list(islice(pfns, DESC_BATCH))
        if not batch:
            return
        off = container.data_offset + PAGE_DESC_SIZE * index
        raw = src.read_at(off, PAGE_DESC_SIZE * len(batch)) if off < size else b""
        index += len(batch)
        for pfn, (offset, stored, flags, _) in zip(batch, unpack(raw[: len(raw) - len(raw) % PAGE_DESC_SIZE]),
                                                   strict=False):  # fmt: skip
            if offset in zero_offsets or offset <= 0 or not 0 < stored <= ps or offset + stored > size:
                continue
            compressed = flags & _COMPRESSION
            want = stored if whole or compressed else HEAD_SIZE
            if compressed == _ZLIB and not whole:
                want = min(stored, ZLIB_PREFIX)
            if chunk_lo <= offset and offset + want <= chunk_hi:
                data = chunk[offset - chunk_lo : offset - chunk_lo + want]
            elif offset < chunk_lo:  # out of pfn order: read just this page
                data = src.read_at(offset, want)
            else:
                chunk_lo = offset
                chunk = src.read_at(offset, max(DATA_CHUNK, want))
                chunk_hi = offset + len(chunk)
                data = chunk[:want]
            try:
                if not compressed:
                    if stored != ps:
                        continue
                    if whole:
                        yield from _heads_of_page(data, pfn * ps, granule)
                    else:
                        yield pfn * ps, data
                elif compressed == _ZLIB and not whole:
                    head = zlib.decompressobj().decompress(data, HEAD_SIZE)
                    if len(head) < HEAD_SIZE and stored > want:
                        head = zlib.decompressobj().decompress(src.read_at(offset, stored), HEAD_SIZE)
                    yield pfn * ps, head
                else:
                    yield from _heads_of_page(container.page(pfn), pfn * ps, granule)
            except (KdfixError, zlib.error):
                continue
        if len(raw) < PAGE_DESC_SIZE * len(batch):
            return  # a truncated descriptor table: nothing more to read


def default_granule(memory: PhysicalMemory) -> int:
    """The dump's block size, or MIN_PAGE_SIZE when blocks are larger (the kernel's page is never smaller)."""
    return min(memory.page_size, MIN_PAGE_SIZE)


def iter_granule_heads(memory: PhysicalMemory) -> Iterator[tuple[int, bytes]]:
    """(paddr, head) of every kernel page (``default_granule``) in ascending order."""
    return iter_page_heads(memory)


def iter_page_heads(
    memory: PhysicalMemory, start: int = 0, end: int | None = None, *, granule: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """(paddr, first HEAD_SIZE bytes) at every ``granule`` of every dumped, non-zero block of ``[start, end)``, in
    ascending order (undecodable blocks skipped).

    ``granule`` (default ``default_granule``) is the kernel's page size when it is smaller than the dump's block
    (4 KiB pages in QEMU's 64 KiB aarch64 blocks, arch-kernels-and-introspection.md §1.6): the buffers start at a
    kernel page boundary.
    """
    end = memory.max_pfn if end is None else end
    step = default_granule(memory) if granule is None else granule
    container = getattr(memory, "container", None)
    if (
        not callable(getattr(memory, "page_head", None))
        and callable(getattr(container, "iter_locations", None))
        and hasattr(container, "source")
        and hasattr(container, "zero_page_offsets")
    ):
        yield from _iter_heads_kdump(container, start, end, step)
        return
    yield from _iter_heads_generic(memory, start, end, step)


def iter_vmcoreinfo_pages(
    memory: PhysicalMemory, ranges: Sequence[PfnRange] | None = None, *, granule: int | None = None
) -> Iterator[VmcoreinfoHit]:
    """Yield kernel pages whose head looks like VMCOREINFO (phys-base-and-kaslr.md §3B steps 1-3): in address
    order, or range by range in the order given (e.g. ``scan_ranges(memory)``)."""
    ps = memory.page_size
    step = default_granule(memory) if granule is None else granule
    for start, end in ranges if ranges is not None else [(0, memory.max_pfn)]:
        for paddr, head in iter_page_heads(memory, start, end, granule=step):
            form = match_head(head, max(ps, step))
            if form is None:
                continue
            try:
                if form == "text":
                    text = memory.read(paddr, step).split(b"\0", 1)[0]
                else:
                    descsz = _NHDR.unpack(head).n_descsz
                    text = memory.read(paddr + HEAD_SIZE, descsz).split(b"\0", 1)[0]
            except KdfixError:
                continue
            yield VmcoreinfoHit(paddr // ps, form, text, paddr)


def first_agreeing_copy(
    model: DumpModel,
    memory: PhysicalMemory,
    known: Candidate,
    *,
    zone_starts: Sequence[int] = ZONE_STARTS,
    granule: int | None = None,
) -> tuple[VmcoreinfoHit, Candidate, tuple[Any, ...]] | None:
    """The first in-memory VMCOREINFO, in ``scan_ranges`` order, whose header phys_base and KERNELOFFSET agree with
    ``known`` (another method's answer, e.g. the x86_64 CR3 walk: hence x86_64's zones by default) and whose values
    pass the utsname/page-table checks; the scan stops there.

    Returns (hit, candidate, checks), or None when no copy agrees (the caller then scans everything).
    """
    shared = zone_starts is ZONE_STARTS and granule is None
    hits = (
        iter_scanned_copies(memory)
        if shared
        else iter_vmcoreinfo_pages(memory, scan_ranges(memory, zone_starts), granule=granule)
    )
    for hit in hits:
        info = VmcoreInfo.parse(hit.text)
        found = recognise(model, info)
        if found is None or not info.osrelease:
            continue
        arch = found.arch
        phys_base, kernel_offset = arch.header_phys_base(info), arch.kernel_offset(info)
        if phys_base != known.phys_base:
            continue
        if known.kernel_offset is not None and (kernel_offset or 0) != known.kernel_offset:
            continue
        evidence = (
            f"VMCOREINFO {hit.form} page at {hit.paddr:#x}; architecture {arch.name}; agrees with {known.method} "
            "(first validated copy; the scan stopped there)",
            f"OSRELEASE={info.osrelease} " + " ".join(arch.vmcoreinfo_evidence(info)),
        )
        candidate = Candidate(METHOD, phys_base, kernel_offset, hit.text, evidence, arch.name)
        checks = validate_candidate(candidate, memory, vmcoreinfo=info)
        if confirmed(checks):
            return hit, candidate, checks
    return None


@dataclass(slots=True)
class _ScanState:
    """How far the ``scan_ranges``-order scan of one memory has got: the copies found so far, the ranges left
    (the first one done below ``resume``). It holds no reference to the memory, so caching it per memory object
    keeps nothing alive."""

    hits: list[VmcoreinfoHit]
    ranges: list[PfnRange]
    resume: int | None = None  # paddr: the copies of ranges[0] below it are in ``hits``


_SCANS: weakref.WeakKeyDictionary[Any, _ScanState] = weakref.WeakKeyDictionary()


def _scan_state(memory: PhysicalMemory) -> _ScanState:
    try:
        return _SCANS[memory]
    except (KeyError, TypeError):
        pass
    state = _ScanState([], scan_ranges(memory))
    with contextlib.suppress(TypeError):  # not weak-referenceable: scanned again next time
        _SCANS[memory] = state
    return state


def iter_scanned_copies(memory: PhysicalMemory) -> Iterator[VmcoreinfoHit]:
    """The VMCOREINFO pages of ``memory`` in ``scan_ranges`` order, scanned lazily and at most once per memory
    object: the strategy and the search for every kernel (kernels.py) each stop as soon as they have what they
    need, and whoever goes on starts where the last one stopped."""
    state = _scan_state(memory)
    ps = memory.page_size
    i = 0
    while True:
        while i < len(state.hits):
            yield state.hits[i]
            i += 1
        if not state.ranges:
            return
        start, end = state.ranges[0]
        resume = state.resume
        first = start if resume is None else resume // ps
        for hit in iter_vmcoreinfo_pages(memory, [(first, end)]):
            if resume is not None and hit.paddr < resume:
                continue
            state.hits.append(hit)
            state.resume = hit.paddr + 1
            break
        else:
            state.ranges.pop(0)
            state.resume = None


def vmcoreinfo_pages(memory: PhysicalMemory) -> tuple[VmcoreinfoHit, ...]:
    """Every VMCOREINFO page of ``memory`` (in ``scan_ranges`` order; see iter_scanned_copies)."""
    return tuple(iter_scanned_copies(memory))


@strategy(METHOD)
def find_by_vmcoreinfo_scan(run: Attempt) -> Candidate | None:
    """The first in-memory VMCOREINFO whose values pass the utsname/page-table checks (the live copy)."""
    memory = run.memory
    walk = next((c for c in run.known if c.method == "cr3_walk"), None)
    if walk is not None:  # stop at the first copy agreeing with the vCPUs' page tables (what a fix does)
        early = first_agreeing_copy(run.model, memory, walk)
        if early is not None:
            return early[1]
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
