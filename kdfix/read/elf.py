"""ElfContainer: ELF vmcores (/proc/vmcore style, makedumpfile ELF, QEMU ELF) as PhysicalMemory.

Structure comes from pyelftools; notes from PT_NOTE, pages from PT_LOAD (qemu-dumps.md §6.3 for QEMU's
layout: section headers at 64, phdrs at 192, e_ehsize 8). A page only partly covered by segments is
zero-filled, and the ``memsz > filesz`` tail of a segment reads as zero.
"""

from __future__ import annotations

import bisect
import io
import itertools
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kdfix.errors import AddressError, FormatError, KdfixError, TruncatedError, UnsupportedError
from kdfix.format.bitmap import Bitmap
from kdfix.format.constants import ELF_INCOMPLETE_FLAG, XC_CORE_SECTIONS
from kdfix.format.elf import ELF_EHDR, ELFCLASS64, ident_abi
from kdfix.format.layout import Abi
from kdfix.notes.framing import MAX_KEPT_NOTES, Note, notes_read_size, read_notes
from kdfix.read.memory import ContainerMemory
from kdfix.read.runs import Backing, Run, RunKind, bitmap_runs
from kdfix.read.source import FileSource, Source, read_exact, source_path
from kdfix.units import ceil_div

PT_LOAD = 1
PT_NOTE = 4
_CHUNK_PAGES = 256  # pages read per pread when streaming a segment
_MIN_BITMAP_LIMIT = 1 << 20


def probe_elf(head: bytes) -> bool:
    """True if ``head`` starts with an ELF identification of a known class and data encoding."""
    return ident_abi(head) is not None


@dataclass(frozen=True, slots=True)
class ElfSegment:
    """One PT_LOAD: physical address, file offset, bytes in the file, bytes in memory, virtual address."""

    paddr: int
    file_offset: int
    filesz: int
    memsz: int
    vaddr: int

    @property
    def end(self) -> int:
        return self.paddr + self.memsz


class _SourceIO(io.RawIOBase):
    """A read-only, seekable file object over a Source, for pyelftools."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._source.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._source.read_at(self._pos, len(buffer))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


class ElfContainer:
    """An ELF core file: PT_NOTE notes and PT_LOAD memory."""

    def __init__(self, source: Source, *, page_size: int = 4096) -> None:
        self.source = source
        self.path = source_path(source)
        self.problems: list[str] = []
        self.page_size = page_size
        try:
            self._parse()
        except KdfixError as exc:
            raise exc.with_context(path=self.path) from None

    def _parse(self) -> None:
        """The ELF header, then the program headers: notes from PT_NOTE, memory from PT_LOAD."""
        phdrs, phentsize = self._parse_headers()
        self.phdrs_follow_ehdr = self.e_phoff == ELF_EHDR.bind(self.abi).size
        self.incomplete = bool(self.e_flags & ELF_INCOMPLETE_FLAG)
        if self.incomplete:
            self.problems.append("e_flags has DUMP_ELF_INCOMPLETE: the dump was not completely written")
        segments: list[ElfSegment] = []
        notes: list[Note] = []
        self.note_segments: list[tuple[int, int]] = []
        for i, ph in enumerate(phdrs):
            if ph["p_type"] in ("PT_NOTE", PT_NOTE):
                notes.extend(self._note_segment(i, int(ph["p_offset"]), int(ph["p_filesz"]), len(notes)))
            elif ph["p_type"] in ("PT_LOAD", PT_LOAD):
                segment = self._load_segment(i, ph, phentsize)
                if segment is not None:
                    segments.append(segment)
        self._index_segments(segments)
        self.notes: tuple[Note, ...] = tuple(notes)
        self.page_size = _vmcoreinfo_page_size(self.notes) or self.page_size
        self.notes_offset, self.notes_size = self.note_segments[0] if self.note_segments else (0, 0)
        end = max((s.end for s in segments), default=0)
        self.max_pfn = ceil_div(end, self.page_size)
        if self.max_pfn // 8 > max(self.source.size, _MIN_BITMAP_LIMIT):
            raise FormatError(f"PT_LOAD segments reach paddr {end:#x}: a bitmap for that is larger than the file",
                              field="phdr.p_paddr", offset=self.e_phoff)  # fmt: skip
        self._bitmap: Bitmap | None = None

    def _parse_headers(self) -> tuple[list[Any], int]:
        """The ELF header's fields kdfix keeps, and the program headers (pyelftools; any of its errors is ours)."""
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile

        src = self.source
        head = src.read_at(0, 64)
        if not probe_elf(head):
            raise FormatError("not an ELF file of class 32/64", field="e_ident", offset=0)
        self.ei_class = head[4]
        abi = ident_abi(head)
        assert abi is not None  # probe_elf passed
        self.abi: Abi = abi
        ehdr = ELF_EHDR.bind(abi)
        if len(head) < ehdr.size:
            raise TruncatedError("file ends inside the ELF header", field="elf_header", offset=0)
        self.e_machine = ehdr.unpack(head).e_machine
        try:
            elf = ELFFile(_SourceIO(src))  # type: ignore[arg-type]  # a seekable binary file object
            hdr = elf.header
            self.e_flags = int(hdr["e_flags"])
            self.e_type = hdr["e_type"]
            self.e_phoff = int(hdr["e_phoff"])
            self.e_ehsize = int(hdr["e_ehsize"])
            phnum = elf.num_segments()
            phentsize = int(hdr["e_phentsize"])
            if phnum and self.e_phoff + phnum * phentsize > src.size:
                raise TruncatedError(
                    f"{phnum} program headers of {phentsize} bytes end past the end of the file ({src.size:#x})",
                    field="elf_header.e_phnum", offset=self.e_phoff,
                )  # fmt: skip
            phdrs = [elf.get_segment(i).header for i in range(phnum)]
            if _xen_sections(elf, src.size):
                raise UnsupportedError("Xen xc_core dump: not supported", field="elf_section .note.Xen",
                                       offset=int(hdr["e_shoff"]))  # fmt: skip
        except KdfixError:
            raise
        except (ELFError, struct.error, ValueError, KeyError, OSError) as exc:
            raise FormatError(f"unreadable ELF structure: {exc}", field="elf_header", offset=0) from exc
        except Exception as exc:  # pyelftools raises construct errors of many kinds on garbage
            raise FormatError(f"unreadable ELF structure: {exc}", field="elf_header", offset=0) from exc
        return phdrs, phentsize

    def _note_segment(self, i: int, offset: int, filesz: int, kept_so_far: int) -> list[Note]:
        """The notes of PT_NOTE ``i`` (as far as the file and the kept-notes bound allow), problems recorded."""
        src = self.source
        self.note_segments.append((offset, filesz))
        avail = max(0, min(filesz, src.size - offset))
        if avail < filesz:
            self.problems.append(f"PT_NOTE {i} ({filesz:#x} bytes at {offset:#x}) is cut by the end of file")
        take, problems = notes_read_size(avail)
        blob = src.read_at(offset, take) if take else b""
        kept, found = read_notes(blob, self.abi, base_offset=offset, limit=MAX_KEPT_NOTES - kept_so_far)
        self.problems.extend(f"PT_NOTE {i}: {p}" for p in problems + found)
        return list(kept)

    def _load_segment(self, i: int, ph: Any, phentsize: int) -> ElfSegment | None:
        """PT_LOAD ``i`` as a segment (None when it has no memory); p_filesz > p_memsz is a FormatError."""
        offset, filesz, memsz = int(ph["p_offset"]), int(ph["p_filesz"]), int(ph["p_memsz"])
        if memsz < filesz:
            raise FormatError(f"PT_LOAD {i}: p_filesz {filesz:#x} > p_memsz {memsz:#x}",
                              field=f"phdr[{i}].p_filesz", offset=self.e_phoff + i * phentsize)  # fmt: skip
        if offset + filesz > self.source.size:
            self.problems.append(f"PT_LOAD {i} (paddr {int(ph['p_paddr']):#x}) ends past the end of the file "
                                 "(truncated)")  # fmt: skip
        if not memsz:
            return None
        return ElfSegment(int(ph["p_paddr"]), offset, filesz, memsz, int(ph["p_vaddr"]))

    def _index_segments(self, segments: list[ElfSegment]) -> None:
        """Segments in paddr order with the lookup arrays ``_segments_for`` bisects."""
        segments.sort(key=lambda s: s.paddr)
        self.segments: tuple[ElfSegment, ...] = tuple(segments)
        self._starts = [s.paddr for s in segments]
        # _reach[i]: the highest end of segments[0..i] (overlapping segments in hostile files, see _segments_for).
        self._reach = list(itertools.accumulate((s.end for s in segments), max))

    # ---- memory --------------------------------------------------------------------------------------

    def _pfn_runs(self) -> list[tuple[int, int]]:
        """Merged pfn ranges touched by segments."""
        ps = self.page_size
        runs: list[tuple[int, int]] = []
        for s in self.segments:
            a, b = s.paddr // ps, ceil_div(s.end, ps)
            if runs and a <= runs[-1][1]:
                runs[-1] = (runs[-1][0], max(runs[-1][1], b))
            else:
                runs.append((a, b))
        return runs

    @property
    def dumped(self) -> Bitmap:
        if self._bitmap is None:
            buf = bytearray(ceil_div(self.max_pfn, 8))
            for a, b in self._pfn_runs():
                head = min(b, ceil_div(a, 8) * 8)  # bits before the first whole byte
                tail = max(head, b // 8 * 8)  # bits after the last whole byte
                for pfn in (*range(a, head), *range(tail, b)):
                    buf[pfn >> 3] |= 1 << (pfn & 7)
                buf[head >> 3 : tail >> 3] = b"\xff" * ((tail - head) >> 3)
            self._bitmap = Bitmap(bytes(buf), self.max_pfn)
        return self._bitmap

    def _segments_for(self, paddr: int, end: int) -> list[ElfSegment]:
        i = bisect.bisect_right(self._starts, paddr) - 1
        i = max(i, 0)
        # segments may overlap in odd files: scan back while any earlier one still reaches paddr
        while i > 0 and self._reach[i - 1] > paddr:
            i -= 1
        out = []
        for s in self.segments[i:]:
            if s.paddr >= end:
                break
            if s.end > paddr:
                out.append(s)
        return out

    def runs(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[Run]:
        """Runs covering ``[start_pfn, end_pfn)`` of ``[0, max_pfn)`` (kdfix.read.runs): raw STORED where a page lies
        in one segment's file bytes, ZERO in its ``memsz > filesz`` tail, PARTIAL for a page that is not inside
        one segment (pieces as ``page()`` fills them), EXCLUDED where no PT_LOAD reaches."""
        end = self.max_pfn if end_pfn is None else min(end_pfn, self.max_pfn)
        return bitmap_runs(self.dumped, start_pfn, end, self._touched_runs)

    def _touched_runs(self, first: int, end: int) -> Iterator[Run]:
        """Runs of ``[first, end)``, every page of which some segment touches."""
        ps = self.page_size
        pfn = first
        while pfn < end:
            lo = pfn * ps
            segs = self._segments_for(lo, lo + ps)
            if len(segs) == 1:
                s = segs[0]
                after = bisect.bisect_right(self._starts, s.paddr)
                # pages before the next segment's first page are this segment's alone
                limit = min(end, self._starts[after] // ps if after < len(self._starts) else end)
                file_end = s.paddr + s.filesz
                if s.paddr <= lo and lo + ps <= file_end:
                    stop = min(limit, file_end // ps)
                    yield Run(pfn, stop - pfn, RunKind.STORED, s.file_offset + lo - s.paddr, source=self.source)
                    pfn = stop
                    continue
                if file_end <= lo and lo + ps <= s.end:
                    stop = min(limit, s.end // ps)
                    yield Run(pfn, stop - pfn, RunKind.ZERO)
                    pfn = stop
                    continue
            yield self._page_run(pfn, segs)
            pfn += 1

    def _page_run(self, pfn: int, segs: list[ElfSegment]) -> Run:
        """One page not inside a single segment's file bytes or tail: the pieces ``_fill`` copies, in its order."""
        ps = self.page_size
        lo = pfn * ps
        pieces = []
        for s in segs:
            a, b = max(lo, s.paddr), min(lo + ps, s.paddr + s.filesz)
            if a < b:
                pieces.append((a - lo, s.file_offset + a - s.paddr, b - a))
        if not pieces:
            return Run(pfn, 1, RunKind.ZERO)
        return Run(pfn, 1, RunKind.PARTIAL, pieces=tuple(pieces), source=self.source)

    @property
    def backing(self) -> Backing | None:
        """The regular file whose PT_LOAD bytes are the pages (read with pread at file offsets), if there is one."""
        if isinstance(self.source, FileSource) and os.path.isfile(self.source.path):
            return Backing(self.source.path, raw=True)
        return None

    @property
    def valid(self) -> Bitmap:
        """Every page a PT_LOAD touches exists; ELF records no others (the 1st bitmap is the 2nd)."""
        return self.dumped

    def present(self, pfn: int) -> bool:
        ps = self.page_size
        return 0 <= pfn < self.max_pfn and bool(self._segments_for(pfn * ps, pfn * ps + ps))

    def is_zero_page(self, pfn: int) -> bool:
        """ELF has no shared zero page; the hint is always False."""
        return False

    def zero_runs(self, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
        """:meth:`is_zero_page` over ``[start, end)``: one run, never zero."""
        if start < end:
            yield start, end, False

    def _fill(self, paddr: int, size: int, segs: list[ElfSegment]) -> bytes:
        end = paddr + size
        if len(segs) == 1:
            s = segs[0]
            if s.paddr <= paddr and end <= s.paddr + s.filesz:
                off = s.file_offset + paddr - s.paddr
                return read_exact(self.source, off, size, field=f"PT_LOAD data at paddr {paddr:#x}")
        buf = bytearray(size)
        for s in segs:
            a = max(paddr, s.paddr)
            b = min(end, s.paddr + s.filesz)
            if a < b:
                data = read_exact(self.source, s.file_offset + a - s.paddr, b - a,
                                  field=f"PT_LOAD data at paddr {a:#x}")  # fmt: skip
                buf[a - paddr : b - paddr] = data
        return bytes(buf)

    def page(self, pfn: int) -> bytes:
        """One page; parts not covered by a segment's file data are zero."""
        ps = self.page_size
        paddr = pfn * ps
        segs = self._segments_for(paddr, paddr + ps) if 0 <= pfn < self.max_pfn else []
        if not segs:
            raise AddressError(f"pfn {pfn:#x} is not in any PT_LOAD segment", paddr=paddr, path=self.path)
        try:
            return self._fill(paddr, ps, segs)
        except KdfixError as exc:
            raise exc.with_context(path=self.path) from None

    def iter_pages(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(pfn, page) in ascending order, reading up to 256 pages per pread inside a segment."""
        ps = self.page_size
        end_pfn = self.max_pfn if end_pfn is None else min(end_pfn, self.max_pfn)
        for a, b in self._pfn_runs():
            a, b = max(a, start_pfn), min(b, end_pfn)
            pfn = a
            while pfn < b:
                stop = min(b, pfn + _CHUNK_PAGES)
                segs = self._segments_for(pfn * ps, stop * ps)
                one = segs[0] if len(segs) == 1 else None
                if one is not None and one.paddr <= pfn * ps and stop * ps <= one.paddr + one.filesz:
                    data = self.page_chunk(pfn, stop, segs)
                    for i in range(stop - pfn):
                        yield pfn + i, data[i * ps : (i + 1) * ps]
                elif one is not None and one.paddr + one.filesz <= pfn * ps and stop * ps <= one.end:
                    zero = bytes(ps)  # inside the memsz > filesz tail: nothing to read
                    for p in range(pfn, stop):
                        yield p, zero
                else:
                    for p in range(pfn, stop):
                        yield p, self.page(p)
                pfn = stop

    def page_chunk(self, start_pfn: int, end_pfn: int, segs: list[ElfSegment]) -> bytes:
        ps = self.page_size
        try:
            return self._fill(start_pfn * ps, (end_pfn - start_pfn) * ps, segs)
        except KdfixError as exc:
            raise exc.with_context(path=self.path) from None

    @property
    def pointer_size(self) -> int:
        return pointer_size(self.ei_class, self.e_machine)

    @property
    def memory(self) -> ElfMemory:
        return ElfMemory(self)

    def close(self) -> None:
        self.source.close()


_MAX_SECTIONS = 256  # an xc_core file has a handful; more is not worth parsing for a name


def _xen_sections(elf: Any, size: int) -> bool:
    """True if the section headers name Xen's xc_core sections (a bad section table is not our concern)."""
    hdr = elf.header
    shnum, shoff, shentsize = int(hdr["e_shnum"]), int(hdr["e_shoff"]), int(hdr["e_shentsize"])
    if not 0 < shnum <= _MAX_SECTIONS or shoff + shnum * shentsize > size:
        return False
    try:
        return any(elf.get_section(i).name in XC_CORE_SECTIONS for i in range(shnum))
    except Exception:  # pyelftools raises many kinds on a garbage string table
        return False


def pointer_size(ei_class: int, e_machine: int) -> int:
    """Bytes in a pointer of the dumped kernel: its architecture's word size, else the ELF class's.

    QEMU writes ELF64 cores with EM_386 for x86 guests not in long mode (tools-and-oracles.md §5):
    the class describes the file, the machine the kernel.
    """
    from kdfix.arch import ARCHES

    for arch in ARCHES.values():
        if e_machine in arch.e_machines:
            return arch.word_size
    return 8 if ei_class == ELFCLASS64 else 4


def _vmcoreinfo_page_size(notes: tuple[Note, ...]) -> int | None:
    """PAGESIZE from a VMCOREINFO note, if it is a sane power of two."""
    from kdfix.format.constants import NOTE_NAME_VMCOREINFO
    from kdfix.notes.vmcoreinfo import VmcoreInfo

    for note in notes:
        if note.name == NOTE_NAME_VMCOREINFO:
            size = VmcoreInfo.parse(note.desc).page_size
            if size and 4096 <= size <= 1 << 18 and not size & (size - 1):
                return size
    return None


class ElfMemory(ContainerMemory):
    """PhysicalMemory of an ELF core: every page touched by a PT_LOAD is valid and dumped."""

    container: ElfContainer

    def __init__(self, container: ElfContainer) -> None:
        super().__init__(container, container.page_size, container.max_pfn)
