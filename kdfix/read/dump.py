"""Dump: one opened crash dump (kdump, flattened, ELF or split set) with its model, notes and memory."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kdfix.errors import KdfixError
from kdfix.format.constants import (
    COMPRESSION_FLAGS,
    NOTE_NAME_ERASEINFO,
    NOTE_NAME_VMCOREINFO,
    DumpFlag,
    NoteType,
)
from kdfix.format.kdump import PAGE_DESC_SIZE
from kdfix.format.layout import Abi
from kdfix.model import DumpModel
from kdfix.notes.framing import Note
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.elf import ElfContainer
from kdfix.read.flattened import FlattenedSource
from kdfix.read.kdump import KdumpContainer, status_flag_names
from kdfix.read.memory import PhysicalMemory
from kdfix.read.missing import DESCRIPTORS, PAGE_DATA, MissingRun, RunCollector, merge_runs
from kdfix.read.page_check import check_pages
from kdfix.read.source import Source
from kdfix.read.split import SplitContainer
from kdfix.units import ceil_div

CONTAINERS = ("kdump", "flattened", "elf", "split")


class Dump:
    """An opened dump. Use as a context manager, or call ``close()``.

    ``container`` is "kdump", "flattened", "elf" or "split". ``kdump`` is the KdumpContainer (part 0 for
    a split set, whose parts are in ``split.parts``); ``elf`` is the ElfContainer for ELF input.
    """

    def __init__(
        self,
        paths: tuple[str, ...],
        container: str,
        *,
        kdump: KdumpContainer | None = None,
        elf: ElfContainer | None = None,
        split: SplitContainer | None = None,
        file_sources: tuple[Source, ...] = (),
        problems: list[str] | None = None,
    ) -> None:
        assert container in CONTAINERS
        self.paths = paths
        self.path = paths[0]
        self.container = container
        self.kdump = kdump
        self.elf = elf
        self.split = split
        self.file_sources = file_sources
        self.problems: list[str] = list(problems or [])
        if split is not None:
            self.problems.extend(split.problems)
            self.kdump = kdump = split.first
            self.memory: PhysicalMemory = split.memory
        elif kdump is not None:
            self.problems.extend(kdump.problems)
            self.memory = kdump.memory
        else:
            assert elf is not None
            self.problems.extend(elf.problems)
            self.memory = elf.memory
        self.vmcoreinfo: VmcoreInfo | None = None
        self.model = self._build_model()

    # ---- header views -------------------------------------------------------------------------------

    @property
    def source(self) -> Source:
        """Positional bytes of part 0 (for flattened input: the reassembled file)."""
        if self.kdump is not None:
            return self.kdump.source
        assert self.elf is not None
        return self.elf.source

    @property
    def signature(self) -> bytes | None:
        return self.kdump.signature if self.kdump is not None else None

    @property
    def abi(self) -> Abi:
        return self.kdump.abi if self.kdump is not None else self.elf.abi  # type: ignore[union-attr]

    @property
    def main_header(self) -> Any:
        return self.kdump.main_header if self.kdump is not None else None

    @property
    def sub_header(self) -> Any:
        return self.kdump.sub_header if self.kdump is not None else None

    @property
    def header_version(self) -> int | None:
        return self.kdump.header_version if self.kdump is not None else None

    @property
    def compression(self) -> str:
        """Codec named by the header status (zlib/lzo/snappy/zstd/none); "none" for ELF."""
        return self.kdump.compression if self.kdump is not None else "none"

    @property
    def notes(self) -> tuple[Note, ...]:
        return self.model.notes

    @property
    def eraseinfo(self) -> bytes:
        return self.model.eraseinfo

    @property
    def page_size(self) -> int:
        return self.memory.page_size

    @property
    def kdump_parts(self) -> list[KdumpContainer]:
        """The KDUMP containers in pfn order: the one file, or every part of a split set given; [] for ELF."""
        if self.split is not None:
            return sorted(self.split.parts, key=lambda p: p.start_pfn)
        return [self.kdump] if self.kdump is not None else []

    @property
    def status_flags(self) -> list[str]:
        if self.kdump is not None:
            return status_flag_names(self.kdump.status, diskdump=self.kdump.is_diskdump)
        assert self.elf is not None
        return ["incomplete"] if self.elf.incomplete else []

    @property
    def incomplete(self) -> bool:
        return self.kdump.incomplete if self.kdump is not None else bool(self.elf and self.elf.incomplete)

    # ---- model ----------------------------------------------------------------------------------------

    def _build_model(self) -> DumpModel:
        if self.kdump is not None:
            k = self.kdump
            raw, problems = k.vmcoreinfo_text()
            self.problems.extend(problems)
            self.vmcoreinfo = VmcoreInfo.parse(raw) if raw is not None else None
            mh = k.main_header
            eraseinfo = k.eraseinfo
            if self.split is not None:  # makedumpfile --reassemble concatenates eraseinfo (§9)
                eraseinfo = b"".join(p.eraseinfo for p in self.split.parts)
            status = mh.status if k.is_diskdump else mh.status & ~COMPRESSION_FLAGS
            if k.dialect == "kdumpling":  # its status holds only its own codec number (8 is its zstd)
                status = 0
            if self.split is not None and any(p.incomplete for p in self.split.parts):
                status |= DumpFlag.COMPRESSED_INCOMPLETE
            return DumpModel(
                abi=k.sub_abi,  # i386 "pack" vs ARM32 "pad" (kdump-format.md §12)
                signature=mh.signature,
                header_version=mh.header_version,
                utsname=mh.utsname,
                tv_sec=mh.timestamp.tv_sec,
                tv_usec=mh.timestamp.tv_usec,
                status=int(status),
                block_size=k.block_size,
                max_mapnr=k.max_mapnr,
                total_ram_blocks=mh.total_ram_blocks,
                device_blocks=mh.device_blocks,
                written_blocks=mh.written_blocks,
                current_cpu=mh.current_cpu,
                nr_cpus=mh.nr_cpus,
                phys_base=k.phys_base,
                dump_level=k.dump_level,
                notes=k.notes,
                vmcoreinfo=k.vmcoreinfo_raw,
                eraseinfo=eraseinfo,
            )
        e = self.elf
        assert e is not None
        note = next((n for n in e.notes if n.name == NOTE_NAME_VMCOREINFO), None)
        self.vmcoreinfo = VmcoreInfo.parse(note.desc) if note is not None else None
        erase = next((n for n in e.notes if n.name == NOTE_NAME_ERASEINFO), None)
        phys_base = self.vmcoreinfo.phys_base if self.vmcoreinfo is not None else None
        return DumpModel(
            abi=e.abi,
            status=int(DumpFlag.COMPRESSED_INCOMPLETE) if e.incomplete else 0,
            block_size=e.page_size,
            max_mapnr=e.max_pfn,
            nr_cpus=sum(1 for n in e.notes if n.type == NoteType.NT_PRSTATUS),
            phys_base=phys_base or 0,
            notes=e.notes,
            vmcoreinfo=note.desc if note is not None else None,
            eraseinfo=erase.desc if erase is not None else b"",
            e_machine=e.e_machine,
        )

    # ---- lifetime -------------------------------------------------------------------------------------

    def close(self) -> None:
        if self.split is not None:
            self.split.close()
        elif self.kdump is not None:
            self.kdump.close()
        elif self.elf is not None:
            self.elf.close()
        for src in self.file_sources:
            src.close()

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Dump({self.path!r}, container={self.container!r})"


# ---- verification -------------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_dump`: ``ok`` only if no error and no bad page was found."""

    format: str
    pages_checked: int = 0
    bad_pages: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing: list[MissingRun] = field(default_factory=list)  # pages cut off or never written, as runs

    @property
    def missing_pages(self) -> int:
        return sum(run.pages for run in self.missing)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.bad_pages and not self.missing


def part_structure_errors(part: KdumpContainer, name: str) -> list[str]:
    """One KDUMP file's structural errors, each after ``name``: INCOMPLETE, a flattened stream without its end
    marker, a descriptor table cut by the end of the file, bitmaps (verify and every recheck use these)."""
    errors: list[str] = []
    if part.incomplete:
        errors.append(f"{name}status INCOMPLETE is set")
    if isinstance(part.source, FlattenedSource) and not part.source.end_marker:
        errors.append(f"{name}flattened stream has no end marker (truncated)")
    if part.descriptors_end > part.source.size:
        errors.append(f"{name}descriptor table ends past the end of the file")
    return errors + _bitmap_subset_errors(part, name)


def _bitmap_subset_errors(part: KdumpContainer, name: str, limit: int = 16) -> list[str]:
    """The 2nd bitmap must be a subset of the 1st, and no bit may be set at or above max_mapnr (§7)."""
    errors: list[str] = []
    if part.single_bitmap:
        return errors
    b1 = part.valid.to_bytes()
    b2 = part.dumped.to_bytes()
    extra = int.from_bytes(b2, "little") & ~int.from_bytes(b1, "little")
    if extra:
        pfns: list[int] = []
        while extra and len(pfns) < limit:
            low = extra & -extra
            pfns.append(low.bit_length() - 1)
            extra ^= low
        more = f" and {extra.bit_count()} more" if extra else ""
        errors.append(f"{name}2nd bitmap has pfns missing from the 1st: {', '.join(hex(p) for p in pfns)}{more}")
    nbits = part.dumped.nbits
    for which, offset in (("1st", part.bitmap1_offset), ("2nd", part.bitmap2_offset)):
        tail = int.from_bytes(part.source.read_at(offset, part.bitmap_len), "little") >> nbits
        if tail:
            errors.append(f"{name}{which} bitmap has {tail.bit_count()} bits set at or above max_mapnr {nbits:#x}")
    return errors


def verify_dump(dump: Dump, progress: Callable[[int, int], None] | None = None, *, workers: int = 1) -> VerifyReport:
    """Decode every dumped page and check the structure; every bad page is reported, not only the first.

    ``workers`` > 1 decodes KDUMP pages in that many processes (each reopens the dump by path).
    """
    report = VerifyReport(format=dump.container)
    report.warnings.extend(dump.problems)
    if dump.kdump is not None:
        _verify_kdump(dump, report, progress, workers)
    else:
        assert dump.elf is not None
        _verify_elf(dump.elf, report, progress)
    return report


def _verify_kdump(dump: Dump, report: VerifyReport, progress: Callable[[int, int], None] | None, workers: int) -> None:
    """Every part's structure, then its pages; runs of unreadable pages are missing, a few amid sound ones bad."""
    assert dump.kdump is not None
    parts = dump.split.parts if dump.split is not None else (dump.kdump,)
    total = sum(p.num_dumped for p in parts)
    report.errors.extend(_kdump_structure_errors(dump, parts))
    done = 0
    lost: list[MissingRun] = []
    for checked, bad, cut in _check_kdump_pages(dump, parts, workers):
        done += checked
        report.bad_pages.extend(bad)
        lost.extend(cut)
        if progress is not None:
            progress(done, total)
    by_path = {part.path or "": part for part in parts}
    for run in merge_runs(lost, lambda path, a, b: by_path[path].dumped.count(a, b)):
        part = by_path[run.path]
        inside = run.closed or part.dumped.count(run.end_pfn, part.end_pfn) > 0
        if inside and run.pages <= len(run.samples):  # a few pages amid sound ones: corrupt, not cut off
            report.bad_pages.extend(run.samples)
        else:
            report.missing.append(run)
    report.bad_pages.sort(key=lambda b: b["pfn"])
    report.pages_checked = done
    if progress is not None:
        progress(done, total)


def _kdump_structure_errors(dump: Dump, parts: Sequence[KdumpContainer]) -> list[str]:
    """Split-set gaps, INCOMPLETE, a flattened stream without its end marker, a cut descriptor table, bitmaps."""
    errors: list[str] = []
    if dump.split is not None:  # pages of a part not given are missing: the set is readable, not whole
        first = dump.split.first
        for a, b in dump.split.gaps:
            if uncovered := first.dumped.count(a, b):
                errors.append(f"pfns [{a:#x}, {b:#x}) are in no part: {uncovered} dumped pages missing")
    for part in parts:
        errors.extend(part_structure_errors(part, f"{part.path}: "))
    return errors


def _verify_elf(elf: ElfContainer, report: VerifyReport, progress: Callable[[int, int], None] | None) -> None:
    """PT_LOADs cut by the end of the file, then every page whose bytes are all in the file."""
    if elf.incomplete:
        report.errors.append("e_flags DUMP_ELF_INCOMPLETE is set")
    for seg in elf.segments:
        if seg.file_offset + seg.filesz > elf.source.size:
            missing = seg.file_offset + seg.filesz - max(seg.file_offset, elf.source.size)
            report.errors.append(f"PT_LOAD at paddr {seg.paddr:#x} ends past the end of the file "
                                 f"({missing:#x} bytes missing)")  # fmt: skip
    # Pages with all their bytes in the file are read; the others are missing runs computed from the
    # program headers (time is bounded by the file size, not by declared sizes). A memsz > filesz tail
    # reads as zero by definition.
    report.missing = _elf_missing_runs(elf)
    runs = _subtract(_elf_file_runs(elf), [(r.start_pfn, r.end_pfn) for r in report.missing])
    total = sum(b - a for a, b in runs) + report.missing_pages
    done = report.missing_pages
    for a, b in runs:
        pfn = a
        while pfn < b:
            try:
                for _p, _page in elf.iter_pages(pfn, b):
                    done += 1
                    pfn = _p + 1
                    if progress is not None and done % 4096 == 0:
                        progress(done, total)
            except KdfixError:
                # A chunk read failed: find its bad pages one by one, then read in chunks again.
                for p in range(pfn, min(b, pfn + _ELF_RECHECK_PAGES)):
                    done += 1
                    try:
                        elf.page(p)
                    except KdfixError as exc:
                        report.bad_pages.append({"pfn": p, "error": str(exc)})
                pfn = min(b, pfn + _ELF_RECHECK_PAGES)
    report.pages_checked = done
    if progress is not None:
        progress(done, total)


_ELF_RECHECK_PAGES = 256  # pages read one at a time after a failed chunk read (the reader's chunk size)


def _elf_file_runs(elf: ElfContainer) -> list[tuple[int, int]]:
    """Merged pfn ranges of PT_LOAD pages that have at least one byte of data inside the file."""
    ps = elf.page_size
    spans = []
    for seg in elf.segments:
        present = max(0, min(seg.filesz, elf.source.size - seg.file_offset))
        if present:
            spans.append((seg.paddr // ps, ceil_div(seg.paddr + present, ps)))
    return _merge_spans(spans)


def _merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if runs and a <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], b))
        else:
            runs.append((a, b))
    return runs


def _subtract(runs: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``runs`` without the pfns of ``holes`` (both lists of [start, end) ranges)."""
    out: list[tuple[int, int]] = []
    holes = _merge_spans(holes)
    for a, b in runs:
        for h0, h1 in holes:
            if h1 <= a or h0 >= b:
                continue
            if h0 > a:
                out.append((a, h0))
            a = max(a, h1)
        if a < b:
            out.append((a, b))
    return out


def _elf_missing_runs(elf: ElfContainer) -> list[MissingRun]:
    """Per PT_LOAD, the pages whose file data (p_offset .. p_offset + p_filesz) the file does not reach.

    The pages are contiguous: from the page holding the byte at the end of the file to the segment's
    last page with file data; the run starts at that page's first byte of data in the file.
    """
    ps, size = elf.page_size, elf.source.size
    runs: list[MissingRun] = []
    for seg in elf.segments:
        data_end = seg.paddr + seg.filesz
        cut = seg.paddr + max(0, size - seg.file_offset)  # paddr whose data would sit at the end of the file
        if not seg.filesz or cut >= data_end:
            continue
        first = max(cut, seg.paddr) // ps
        last = ceil_div(data_end, ps)
        offset = seg.file_offset + max(first * ps, seg.paddr) - seg.paddr
        runs.append(MissingRun(elf.path or "", f"PT_LOAD data (paddr {seg.paddr:#x})", first, last, last - first,
                               offset, size))  # fmt: skip
    return sorted(runs, key=lambda r: r.start_pfn)


_CHUNK_PAGES = 16384  # dumped pages per parallel verify task, at most
_MIN_CHUNK_PAGES = 2048  # and at least: a task costs a round trip to a worker
_TASKS_PER_WORKER = 4
_worker_dump: Dump | None = None


def _pfn_chunks(part: KdumpContainer, pages: int) -> list[tuple[int, int]]:
    """Split ``[start_pfn, end_pfn)`` into pfn ranges of about ``pages`` dumped pages each."""
    bitmap, start, end = part.dumped, part.start_pfn, part.end_pfn
    base = bitmap.rank(start)
    bounds = [start]
    for target in range(pages, bitmap.count(start, end), pages):
        bounds.append(bitmap.select(base + target - 1) + 1)  # the first pfn with `target` dumped pages before it
    bounds.append(end)
    return list(itertools.pairwise(bounds))


def _check_range(part: KdumpContainer, start: int, end: int) -> tuple[int, list[dict[str, Any]], list[MissingRun]]:
    """Decode the dumped pages of ``[start, end)``: (pages checked, bad pages, runs of missing pages).

    Sound ranges take the hot loop (kdfix.read.page_check); anything it finds wrong is
    checked again page by page, so bad and missing pages are reported by ``_check_range_pages``.
    """
    src = part.source
    if part.descriptors_end <= src.size:
        checked, bad = check_pages(part, start, end)
        if not bad:
            return checked, [], []
    return _check_range_pages(part, start, end)


def _check_range_pages(
    part: KdumpContainer, start: int, end: int
) -> tuple[int, list[dict[str, Any]], list[MissingRun]]:
    """Decode the dumped pages of ``[start, end)``: (pages checked, bad pages, runs of missing pages).

    A page is missing, not bad, when its descriptor or data lies past the end of the file or, in a
    flattened stream, in bytes no record wrote (kdump-format.md §11): what a cut dump lacks.
    """
    checked, bad = 0, []
    src = part.source
    stream = src if isinstance(src, FlattenedSource) and src.has_holes else None
    collector = RunCollector(part.path or "", src.size)
    bs = part.block_size
    zero = bytes(bs)
    for loc, result in part.iter_page_results(start, end):
        if isinstance(loc, int):  # the descriptor table ends early: every later descriptor is missing
            stop = min(end, part.end_pfn)
            count = part.dumped.count(loc, stop) if loc >= 0 else 0
            offset = result.offset if isinstance(result, KdfixError) and result.offset is not None else src.size
            if count:
                collector.missing(loc, DESCRIPTORS, offset, pages=count, end_pfn=stop)
            checked += count
            continue
        checked += 1
        d = loc.desc
        error = str(result) if isinstance(result, KdfixError) else None
        if stream is not None and stream.hole_bytes(loc.descriptor_offset, PAGE_DESC_SIZE):
            collector.missing(loc.pfn, DESCRIPTORS, loc.descriptor_offset, error=error)
            continue
        if (
            d.offset > 0
            and d.size <= bs
            and (d.offset + d.size > src.size or (stream is not None and stream.hole_bytes(d.offset, d.size)))
        ):
            collector.missing(loc.pfn, PAGE_DATA, d.offset, error=error)
            continue
        if collector.open and isinstance(result, bytes) and result == zero:
            collector.zero_page(loc.pfn)
            continue
        collector.close()
        if isinstance(result, KdfixError):
            bad.append({"pfn": loc.pfn, "error": str(result)})
    return checked, bad, collector.finish()


def _check_range_in_worker(
    paths: tuple[str, ...], part_index: int, start: int, end: int
) -> tuple[int, list[dict[str, Any]], list[MissingRun]]:
    global _worker_dump
    if _worker_dump is None or _worker_dump.paths != paths:
        from kdfix.read.probe import open_dump

        _worker_dump = open_dump(*paths)
    parts = _worker_dump.split.parts if _worker_dump.split is not None else (_worker_dump.kdump,)
    return _check_range(parts[part_index], start, end)  # type: ignore[arg-type]


def _check_kdump_pages(
    dump: Dump, parts: tuple[KdumpContainer, ...] | list[KdumpContainer], workers: int
) -> Iterator[tuple[int, list[dict[str, Any]], list[MissingRun]]]:
    """Yield (pages checked, bad pages, missing runs) per chunk; in ``workers`` processes when that is worth it."""
    import multiprocessing  # here: a process pool is not worth its import for commands that read a few pages
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if (
        workers <= 1
        or sum(p.num_dumped for p in parts) < 2 * _CHUNK_PAGES
        or "fork" not in (multiprocessing.get_all_start_methods())
    ):
        for part in parts:
            yield _check_range(part, part.start_pfn, part.end_pfn)
        return
    # a few tasks per worker, so that none is left with the last big one while the others wait
    total = sum(p.num_dumped for p in parts)
    chunk = max(_MIN_CHUNK_PAGES, min(_CHUNK_PAGES, -(-total // (workers * _TASKS_PER_WORKER))))
    tasks = [(i, a, b) for i, part in enumerate(parts) for a, b in _pfn_chunks(part, chunk)]
    context = multiprocessing.get_context("fork")
    global _worker_dump
    _worker_dump = dump  # forked workers inherit the open dump (its indexes built, pread shares the descriptors)
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(_check_range_in_worker, tuple(dump.paths), i, a, b) for i, a, b in tasks]
            for future in as_completed(futures):
                yield future.result()
    finally:
        _worker_dump = None


def default_workers() -> int:
    """Worker processes for page checks: the CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
