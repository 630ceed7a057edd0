"""KdumpContainer: KDUMP/DISKDUMP headers, bitmaps and the descriptor index, exposed as PhysicalMemory.

Layout and lookup rules: kdump-format.md §1-§8. Every offset and size taken from the file is checked
against the file size before it is used; nothing is allocated from an unchecked field.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kdfix.codecs.base import codec_for_flags, decode_page
from kdfix.errors import AddressError, CodecError, FormatError, KdfixError, TruncatedError
from kdfix.format import kdumpling
from kdfix.format.abi import choose_sub_header_abi, probe_abi
from kdfix.format.bitmap import Bitmap
from kdfix.format.constants import (
    COMPRESSION_FLAGS,
    DISKDUMP_SIGNATURE,
    KDUMP_HEADER_VERSION,
    KDUMP_SIGNATURES,
    NOTE_NAME_VMCOREINFO,
    DumpFlag,
)
from kdfix.format.file_layout import FileLayout
from kdfix.format.kdump import (
    DISK_DUMP_HEADER,
    KDUMP_SUB_HEADER,
    PAGE_DESC,
    PAGE_DESC_SIZE,
    PageDesc,
    header_features,
    pfn_range,
    pfn_range_fields,
)
from kdfix.format.layout import LP64_LE, Abi
from kdfix.notes.framing import Note, notes_read_size, read_notes
from kdfix.read.memory import ContainerMemory, ZeroRun, mask_runs, zero_runs_over
from kdfix.read.runs import Backing, Run, RunBuilder, RunKind, bitmap_runs
from kdfix.read.source import Source, read_exact, source_path
from kdfix.units import align_up

log = logging.getLogger(__name__)

_DESC_BATCH = 2048  # descriptors read per pread in the streaming path
_DATA_SPAN = 8 << 20  # read a batch's page data in one pread when it spans at most this many bytes
_COMPRESSION_MASK = int(COMPRESSION_FLAGS)
_ZERO_BATCH = 1 << 16  # descriptors zero_runs tests at once (1.5 MiB of table)
PAGE_CODEC_SAMPLE = 1 << 16  # descriptors info reads to name the codecs in use (1.5 MiB of table)
_ZLIB = int(DumpFlag.COMPRESSED_ZLIB)
_DISKDUMP_COMPRESSED = 0x8  # legacy DISKDUMP status bits (kdump-format.md §2)
_DISKDUMP_INCOMPLETE = 0x1


@dataclass(frozen=True, slots=True)
class PageLocation:
    """Where one dumped page lives: its descriptor's file offset and the descriptor."""

    pfn: int
    descriptor_offset: int
    desc: PageDesc


def status_flag_names(status: int, *, diskdump: bool = False) -> list[str]:
    """Names of the bits set in a header ``status`` (unknown bits as hex)."""
    if diskdump:
        names = []
        if status & _DISKDUMP_INCOMPLETE:
            names.append("INCOMPLETED")
        if status & _DISKDUMP_COMPRESSED:
            names.append("COMPRESSED")
        rest = status & ~(_DISKDUMP_INCOMPLETE | _DISKDUMP_COMPRESSED)
        return names + ([f"{rest:#x}"] if rest else [])
    names = [f.name for f in DumpFlag if status & f and f.name]
    rest = status & ~sum(DumpFlag)
    return [n.lower() for n in names] + ([f"{rest:#x}"] if rest else [])


class KdumpContainer:
    """A KDUMP-compressed (or DISKDUMP) file over a Source: headers, notes, bitmaps, descriptors, pages.

    For a part of a split set, only pfns in ``[start_pfn, end_pfn)`` have descriptors here.
    """

    def __init__(self, source: Source) -> None:
        self.source = source
        self.path = source_path(source)
        self.problems: list[str] = []
        try:
            self._parse()
        except KdfixError as exc:
            raise exc.with_context(path=self.path) from None

    # ---- parsing ---------------------------------------------------------------------------------------

    def _parse(self) -> None:
        """Read the file's structure in the order its regions depend on each other (kdump-format.md §1)."""
        version = self._parse_main_header()
        self._parse_sub_header(version)
        self._resolve_max_mapnr(version)
        self._parse_bitmaps()
        self._parse_split_range(version)
        self._locate_descriptors()
        self._parse_status()
        self._read_notes(version)

    def _parse_main_header(self) -> int:
        """The main header (§2, §3); returns the header version the rest is read as."""
        src = self.source
        head = src.read_at(0, 512)
        abi = probe_abi(head)
        if abi is None:
            if head[:8] not in KDUMP_SIGNATURES:
                raise FormatError("no KDUMP or DISKDUMP signature", field="main_header.signature", offset=0)
            if len(head) < DISK_DUMP_HEADER.bind(LP64_LE).size:
                raise TruncatedError("file ends inside the main header", field="main_header", offset=0)
            raise FormatError(
                "no plausible ABI: block_size is not a power of two in [4096, 262144] or the bitmap is too small "
                "for max_mapnr", field="main_header.block_size", offset=0,
            )  # fmt: skip
        self.abi: Abi = abi
        main = DISK_DUMP_HEADER.bind(abi)
        self._main_layout = main
        self.main_header = main.unpack(head, what="main_header")
        mh = self.main_header
        self.signature: bytes = mh.signature
        self.is_diskdump = mh.signature == DISKDUMP_SIGNATURE
        self.header_version: int = mh.header_version
        self.block_size = mh.block_size
        if self.header_version > KDUMP_HEADER_VERSION:
            self.problems.append(f"header_version {self.header_version} is newer than {KDUMP_HEADER_VERSION}; "
                                 "read as version 6")  # fmt: skip
        if mh.sub_hdr_size < 0 or FileLayout.from_header(abi, mh).bitmap1_offset > src.size:
            raise FormatError(f"sub_hdr_size {mh.sub_hdr_size} blocks does not fit the file ({src.size:#x} bytes)",
                              field="main_header.sub_hdr_size", offset=main.offset_of("sub_hdr_size"))  # fmt: skip
        return min(self.header_version, KDUMP_HEADER_VERSION)

    def _parse_sub_header(self, version: int) -> None:
        """The sub header (§4); DISKDUMP has none (§2)."""
        mh, bs = self.main_header, self.block_size
        self.sub_header = None
        self.sub_abi = self.abi
        if not self.is_diskdump:
            sub_block = self.source.read_at(bs, 512)
            self.sub_abi = choose_sub_header_abi(self.abi, version, sub_block, bs, mh.sub_hdr_size)
            sub = KDUMP_SUB_HEADER.bind(self.sub_abi, version)
            self._sub_layout = sub
            if len(sub_block) < sub.size:
                raise TruncatedError("file ends inside the sub header", field="sub_header", offset=bs)
            self.sub_header = sub.unpack(sub_block, what="sub_header")
        sh = self.sub_header
        self.phys_base = sh.phys_base if sh is not None else 0
        self.dump_level = sh.dump_level if sh is not None else 0  # 0 below version 1: the record's default

    def _resolve_max_mapnr(self, version: int) -> None:
        """max_mapnr: the sub header's 64-bit field from v6 wins over the main header's 32 bits (§4)."""
        mh, sh = self.main_header, self.sub_header
        self.max_mapnr = mh.max_mapnr
        if sh is None or not header_features(version).pfn64:
            return
        if sh.max_mapnr_64:
            self.max_mapnr = sh.max_mapnr_64
            if mh.max_mapnr != min(sh.max_mapnr_64, 0xFFFFFFFF):
                self.problems.append(f"main_header.max_mapnr {mh.max_mapnr:#x} disagrees with "
                                     f"sub_header.max_mapnr_64 {sh.max_mapnr_64:#x}")  # fmt: skip
        else:
            self.problems.append("sub_header.max_mapnr_64 is 0; using the 32-bit max_mapnr")

    def _parse_bitmaps(self) -> None:
        """The bitmaps (§1, §7): two halves, one bitmap for old diskdump files, or kdumpling's dialect."""
        mh, src = self.main_header, self.source
        total = mh.bitmap_blocks * self.block_size
        regions = FileLayout.from_header(self.abi, mh, max_mapnr=self.max_mapnr)
        self.bitmap1_offset = regions.bitmap1_offset
        if self.bitmap1_offset + total > src.size:
            raise TruncatedError(
                f"bitmaps ({mh.bitmap_blocks} blocks at {self.bitmap1_offset:#x}) end past the end of the file "
                f"({src.size:#x})", field="main_header.bitmap_blocks",
                offset=self._main_layout.offset_of("bitmap_blocks"),
            )  # fmt: skip
        self.single_bitmap = regions.counts_one_bitmap()
        self.dialect: str | None = None  # "kdumpling": read in that writer's dialect (kdfix.format.kdumpling)
        self.data_offset = regions.data_offset
        if self.single_bitmap and self._kdumpling_layout(mh, total):
            self.single_bitmap = False
            self.dialect = "kdumpling"
            self.bitmap_len = total
            self.bitmap2_offset = self.bitmap1_offset + total
            self.data_offset = self.bitmap2_offset + total
            self.problems.append(
                "bitmap_blocks counts one bitmap and the page flags are kdumpling's (tools-and-oracles.md §6): read "
                f"as kdumpling wrote it (2nd bitmap at {self.bitmap2_offset:#x}, descriptors at "
                f"{self.data_offset:#x}); `kdfix fix` rewrites it for other readers"
            )
        elif self.single_bitmap:
            self.bitmap_len = total
            self.bitmap2_offset = self.bitmap1_offset
            self.problems.append("bitmap_blocks is too small for two bitmaps: read as a single bitmap (old diskdump)")
        else:
            self.bitmap_len = total // 2
            self.bitmap2_offset = self.bitmap1_offset + self.bitmap_len
        if self.max_mapnr > self.bitmap_len * 8:
            self.problems.append(f"max_mapnr {self.max_mapnr:#x} exceeds the bitmap ({self.bitmap_len * 8:#x} bits); "
                                 "using the bitmap's size")  # fmt: skip
            self.max_mapnr = self.bitmap_len * 8  # no pfn past the bitmap can exist; never size buffers by it
        nbits = min(self.max_mapnr, self.bitmap_len * 8)
        raw1 = read_exact(src, self.bitmap1_offset, self.bitmap_len, field="bitmap1")
        raw2 = raw1 if self.single_bitmap else read_exact(src, self.bitmap2_offset, self.bitmap_len, field="bitmap2")
        self.valid = Bitmap(raw1, nbits)
        self.dumped = Bitmap(raw2, nbits)

    def _parse_split_range(self, version: int) -> None:
        """The part's pfn range of a split set (§9); the whole bitmap otherwise."""
        sh = self.sub_header
        nbits = self.dumped.nbits
        self.split = bool(sh is not None and header_features(version).split and sh.split)
        self.start_pfn, self.end_pfn = 0, nbits
        if not self.split:
            return
        assert sh is not None
        start, end = pfn_range(sh, version)
        if not 0 <= start <= end <= max(nbits, self.max_mapnr):
            start_field = pfn_range_fields(version)[0]
            raise FormatError(f"split range [{start:#x}, {end:#x}) is not within [0, max_mapnr {nbits:#x})",
                              field=f"sub_header.{start_field}",
                              offset=self.block_size + self._sub_layout.offset_of(start_field))  # fmt: skip
        self.start_pfn, self.end_pfn = start, min(end, nbits)

    def _locate_descriptors(self) -> None:
        """Where this part's descriptor table ends, and where the shared zero page may sit after it (§7)."""
        self._rank_base = self.dumped.rank(self.start_pfn)
        self.num_dumped = self.dumped.count(self.start_pfn, self.end_pfn)
        self.descriptors_end = self.data_offset + PAGE_DESC_SIZE * self.num_dumped
        if self.descriptors_end > self.source.size:
            self.problems.append(
                f"descriptor table ends at {self.descriptors_end:#x}, past the end of the file "
                f"({self.source.size:#x}): truncated"
            )
        self._zero_candidates = {self.descriptors_end, self.data_offset + PAGE_DESC_SIZE * self.dumped.count()}
        self._zero_offsets: set[int] | None = None

    def _parse_status(self) -> None:
        """Compression and completeness from the header status (§5, §8), per dialect."""
        mh = self.main_header
        self.status = mh.status
        if self.dialect == "kdumpling":
            self.compression = codec_for_flags(kdumpling.STATUS_CODECS.get(mh.status, 0)).name
            self.incomplete = False
        elif self.is_diskdump:
            self.compression = "zlib" if mh.status & _DISKDUMP_COMPRESSED else "none"
            self.incomplete = bool(mh.status & _DISKDUMP_INCOMPLETE)
        else:
            try:
                self.compression = codec_for_flags(mh.status).name
            except CodecError:
                self.compression = "invalid"
                self.problems.append(f"status {mh.status:#x} names more than one compression method")
            self.incomplete = bool(mh.status & DumpFlag.COMPRESSED_INCOMPLETE)
        if self.incomplete:
            self.problems.append("status flag INCOMPLETE: the dump was not completely written")

    def _sub_field(self, name: str) -> tuple[str, int]:
        return f"sub_header.{name}", self.block_size + self._sub_layout.offset_of(name)

    def _blob(self, offset: int, size: int, offset_name: str, size_name: str, *, take: int | None = None) -> bytes:
        """Read a blob referenced by a sub-header (offset, size) pair, checking both against the file.

        ``take`` reads only the blob's first bytes (a bounded prefix of a huge one).
        """
        if offset < 0 or offset > self.source.size:
            field, at = self._sub_field(offset_name)
            raise FormatError(f"{offset:#x} is outside the file ({self.source.size:#x} bytes)", field=field, offset=at)
        if size < 0 or offset + size > self.source.size:
            field, at = self._sub_field(size_name)
            raise FormatError(f"{size:#x} bytes at {offset:#x} exceed the file size {self.source.size:#x}",
                              field=field, offset=at)  # fmt: skip
        return read_exact(self.source, offset, size if take is None else min(take, size), field=size_name)

    def _read_notes(self, version: int) -> None:
        sh = self.sub_header
        self.notes_offset = 0
        self.notes_size = 0
        self.notes: tuple[Note, ...] = ()
        self.vmcoreinfo_raw: bytes | None = None  # text at offset_vmcoreinfo
        self.vmcoreinfo_source: str | None = None
        self.eraseinfo = b""
        if sh is None:
            return
        can = header_features(version)
        if can.notes and sh.size_note:
            self.notes_offset, self.notes_size = sh.offset_note, sh.size_note
            take, problems = notes_read_size(sh.size_note)
            blob = self._blob(sh.offset_note, sh.size_note, "offset_note", "size_note", take=take)
            self.notes, found = read_notes(blob, self.abi, base_offset=sh.offset_note)
            self.problems.extend(problems + found)
        if can.vmcoreinfo and (sh.offset_vmcoreinfo or sh.size_vmcoreinfo):
            try:
                self.vmcoreinfo_raw = self._blob(
                    sh.offset_vmcoreinfo, sh.size_vmcoreinfo, "offset_vmcoreinfo", "size_vmcoreinfo"
                )
            except KdfixError as exc:
                if not can.notes:
                    raise
                self.problems.append(f"vmcoreinfo pointer: {exc}")
        if can.eraseinfo and (sh.offset_eraseinfo or sh.size_eraseinfo):
            self.eraseinfo = self._blob(sh.offset_eraseinfo, sh.size_eraseinfo, "offset_eraseinfo", "size_eraseinfo")

    def vmcoreinfo_text(self) -> tuple[bytes | None, list[str]]:
        """VMCOREINFO as the readers find it (notes-and-vmcoreinfo.md §5) and the problems seen on the way."""
        problems: list[str] = []
        note = next((n for n in self.notes if n.name == NOTE_NAME_VMCOREINFO), None)
        pointer = self.vmcoreinfo_raw
        if header_features(self.header_version).notes and not self.is_diskdump:
            if note is not None:
                if pointer is not None and pointer != note.desc:
                    problems.append("offset_vmcoreinfo/size_vmcoreinfo do not reference the VMCOREINFO note's text")
                elif pointer is None:
                    problems.append("VMCOREINFO note present but offset_vmcoreinfo is 0 (crash and makedumpfile "
                                    "will not find it)")  # fmt: skip
                return note.desc, problems
            if pointer is not None:
                problems.append("VMCOREINFO only at offset_vmcoreinfo, no note (libkdumpfile/drgn will not find it)")
            return pointer, problems
        return pointer, problems

    # ---- descriptors -------------------------------------------------------------------------------------

    def _check_pfn(self, pfn: int) -> None:
        if not 0 <= pfn < self.max_mapnr or not self.valid.test(pfn):
            raise AddressError(f"pfn {pfn:#x} does not exist in the dump", paddr=pfn * self.block_size)
        if not self.dumped.test(pfn):
            raise AddressError(f"pfn {pfn:#x} is excluded from the dump", paddr=pfn * self.block_size)
        if not self.start_pfn <= pfn < self.end_pfn:
            raise AddressError(
                f"pfn {pfn:#x} is outside this part's range [{self.start_pfn:#x}, {self.end_pfn:#x})",
                paddr=pfn * self.block_size,
            )

    def table_index(self, pfn: int) -> int:
        """Index in this file's descriptor table of the first dumped pfn at or after ``pfn``: its rank in the 2nd
        bitmap, counted from this part's start (§7, §9)."""
        return self.dumped.rank(pfn) - self._rank_base

    def descriptor_offset(self, pfn: int) -> int:
        """File offset of the page descriptor of a dumped pfn (rank in the 2nd bitmap, §7)."""
        self._check_pfn(pfn)
        return self.data_offset + PAGE_DESC_SIZE * self.table_index(pfn)

    def descriptor(self, pfn: int) -> PageDesc:
        """The page descriptor of a dumped pfn."""
        off = self.descriptor_offset(pfn)
        raw = read_exact(self.source, off, PAGE_DESC_SIZE, field=f"page_desc[pfn {pfn:#x}]")
        return self._make_desc(*PAGE_DESC.bind(self.abi).struct.unpack(raw))

    def _make_desc(self, offset: int, size: int, flags: int, page_flags: int) -> PageDesc:
        """A descriptor as the format means it (a kdumpling descriptor's flags translated)."""
        if self.dialect == "kdumpling":
            flags = kdumpling.page_flags(flags, self.status)
            offset, size = kdumpling.stored_block(offset, size, flags)
        return PageDesc(offset, size, flags, page_flags)

    def _kdumpling_layout(self, mh: Any, total: int) -> bool:
        """True if the file is laid out as kdumpling writes it: a second bitmap after the first, then a
        block-padded descriptor table whose first descriptor points right after it, with kdumpling's flags."""
        bs, src = self.block_size, self.source
        if mh.sub_hdr_size != kdumpling.SUB_HDR_SIZE:
            return False
        bitmap2_offset = self.bitmap1_offset + total
        data_offset = bitmap2_offset + total
        if data_offset + PAGE_DESC_SIZE > src.size or total > src.size:
            return False
        dumped = Bitmap(src.read_at(bitmap2_offset, total), total * 8).count()
        if not dumped:
            return False
        first = PAGE_DESC.bind(self.abi).unpack(src.read_at(data_offset, PAGE_DESC_SIZE))
        table_end = data_offset + align_up(dumped * PAGE_DESC_SIZE, bs)
        return first.offset == table_end and first.flags in kdumpling.PAGE_FLAGS and 0 < first.size <= bs

    def present(self, pfn: int) -> bool:
        """True if the page has data in this part (dumped and inside the split range)."""
        return self.start_pfn <= pfn < self.end_pfn and self.dumped.test(pfn)

    def iter_dumped_pfns(self, start: int = 0, end: int | None = None) -> Iterator[int]:
        """Dumped pfns of this container in ascending order."""
        start = max(start, self.start_pfn)
        end = self.end_pfn if end is None else min(end, self.end_pfn)
        yield from self.dumped.iter_set(start, end)

    def iter_locations(self, start: int = 0, end: int | None = None) -> Iterator[PageLocation]:
        """(pfn, descriptor offset, descriptor) of dumped pages in order, reading descriptors in batches."""
        start = max(start, self.start_pfn)
        end = self.end_pfn if end is None else min(end, self.end_pfn)
        if start >= end:
            return
        unpack = PAGE_DESC.bind(self.abi).struct.iter_unpack
        make = self._make_desc
        index = self.table_index(start)
        pfns = self.iter_dumped_pfns(start, end)
        src = self.source
        while True:
            batch = [p for _, p in zip(range(_DESC_BATCH), pfns, strict=False)]
            if not batch:
                return
            off = self.data_offset + PAGE_DESC_SIZE * index
            raw = src.read_at(off, PAGE_DESC_SIZE * len(batch)) if off < src.size else b""
            have = len(raw) // PAGE_DESC_SIZE
            for i, values in enumerate(unpack(raw[: have * PAGE_DESC_SIZE])):
                yield PageLocation(batch[i], off + PAGE_DESC_SIZE * i, make(*values))
            if have < len(batch):
                raise TruncatedError(f"descriptor of pfn {batch[have]:#x} is past the end of the file",
                                     field="page_desc", offset=off + PAGE_DESC_SIZE * have, path=self.path)  # fmt: skip
            index += len(batch)

    def page_codecs(self, limit: int = PAGE_CODEC_SAMPLE) -> tuple[dict[str, int], int]:
        """Codecs the page flags of the first ``limit`` dumped pages name ({name: pages}; "none" for raw), and how
        many descriptors were read: what the pages use, whatever the header's status says (kdump-format.md §5).

        The table is read in one piece and only the distinct flag values are decoded (``info`` runs this on
        every dump; a cut table counts what the file has)."""
        wanted = min(limit, self.num_dumped)
        raw = (
            self.source.read_at(self.data_offset, PAGE_DESC_SIZE * wanted)
            if self.data_offset < self.source.size
            else b""
        )
        seen = len(raw) // PAGE_DESC_SIZE
        per_flags = Counter(
            desc[2] for desc in PAGE_DESC.bind(self.abi).struct.iter_unpack(raw[: seen * PAGE_DESC_SIZE])
        )
        counts: dict[str, int] = {}
        for flags, pages in per_flags.items():
            try:
                name = codec_for_flags(self._make_desc(0, 0, flags, 0).flags).name
            except CodecError:
                name = "invalid"
            counts[name] = counts.get(name, 0) + pages
        return counts, seen

    def iter_descriptors(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, PageDesc]]:
        """(pfn, descriptor) of dumped pages in ascending pfn order."""
        for loc in self.iter_locations(start, end):
            yield loc.pfn, loc.desc

    # ---- pages -------------------------------------------------------------------------------------------

    def _check_desc(self, pfn: int, desc_off: int, desc: PageDesc) -> None:
        """Validate a descriptor in crash's order (§7 steps 3-4) and against the file size."""
        if desc.size > self.block_size:
            raise FormatError(f"pfn {pfn:#x}: stored size {desc.size:#x} exceeds block_size {self.block_size:#x}",
                              field="page_desc.size", offset=desc_off + 8, path=self.path)  # fmt: skip
        if desc.offset == 0:
            raise FormatError(f"pfn {pfn:#x}: page incomplete (descriptor offset 0)", field="page_desc.offset",
                              offset=desc_off, path=self.path)  # fmt: skip
        if desc.offset < 0 or desc.offset + desc.size > self.source.size:
            raise TruncatedError(
                f"pfn {pfn:#x}: data {desc.offset:#x}+{desc.size:#x} is outside the file ({self.source.size:#x})",
                field="page_desc.offset", offset=desc_off, path=self.path,
            )  # fmt: skip

    def raw_page(self, pfn: int) -> tuple[int, bytes]:
        """(flags, stored bytes) of a dumped page, without decoding (writers pass them through)."""
        off = self.descriptor_offset(pfn)
        desc = self.descriptor(pfn)
        self._check_desc(pfn, off, desc)
        return desc.flags, read_exact(self.source, desc.offset, desc.size, field=f"page data of pfn {pfn:#x}")

    def page(self, pfn: int) -> bytes:
        """The decoded page (§7 crash order); AddressError, FormatError or CodecError otherwise."""
        flags, data = self.raw_page(pfn)
        try:
            return decode_page(data, flags, self.block_size, pfn=pfn)
        except KdfixError as exc:
            raise exc.with_context(path=self.path) from None

    def zero_page_offsets(self) -> set[int]:
        """Offsets of the shared zero page (§7): candidate positions whose bs bytes are all zero."""
        if self._zero_offsets is None:
            found = set()
            for off in self._zero_candidates:
                if off + self.block_size <= self.source.size:
                    data = self.source.read_at(off, self.block_size)
                    if not any(data):
                        found.add(off)
            self._zero_offsets = found
        return self._zero_offsets

    def is_zero_page(self, pfn: int) -> bool:
        """Cheap hint: the page's descriptor points at the shared zero page (only the descriptor is read)."""
        try:
            desc = self.descriptor(pfn)
        except KdfixError:
            return False
        return self._desc_is_zero(desc)

    def _desc_is_zero(self, desc: PageDesc) -> bool:
        return (
            desc.size == self.block_size
            and not desc.flags & COMPRESSION_FLAGS
            and desc.offset in self.zero_page_offsets()
        )

    def zero_runs(self, start: int, end: int) -> Iterator[ZeroRun]:
        """Maximal runs ``(first, end, zero)`` over ``[start, end)``, ``zero`` where :meth:`is_zero_page` says so,
        from the descriptor table read in batches and tested at C speed (a map of millions of pages)."""
        lo, hi = max(start, self.start_pfn), min(end, self.end_pfn)
        dumped = (d for v in self.valid.iter_runs(lo, hi) for d in self.dumped.iter_runs(*v))
        return zero_runs_over(start, end, ((a, b, self._zero_batches(a, b)) for a, b in dumped))

    def _zero_batches(self, start: int, end: int) -> Iterator[ZeroRun]:
        """Runs of a range of dumped pfns; descriptors past the end of the file are not zero, as one by one."""
        import numpy as np

        bs, src = self.block_size, self.source
        zero_offsets = np.fromiter(self.zero_page_offsets(), dtype=np.int64)
        table_type = PAGE_DESC.bind(self.abi).numpy_dtype()
        index = self.table_index(start)
        for first in range(start, end, _ZERO_BATCH):
            n = min(_ZERO_BATCH, end - first)
            off = self.data_offset + PAGE_DESC_SIZE * (index + first - start)
            raw = src.read_at(off, PAGE_DESC_SIZE * n) if off < src.size else b""
            have = len(raw) // PAGE_DESC_SIZE
            zero = np.zeros(n, dtype=bool)
            if self.dialect == "kdumpling":  # flags translated one by one, as descriptor() does
                descs = PAGE_DESC.bind(self.abi).struct.iter_unpack(raw[: have * PAGE_DESC_SIZE])
                zero[:have] = [self._desc_is_zero(self._make_desc(*values)) for values in descs]
            else:
                table = np.frombuffer(raw, dtype=table_type, count=have)
                zero[:have] = ((table["size"] == bs) & (table["flags"] & _COMPRESSION_MASK == 0)
                               & np.isin(table["offset"], zero_offsets))  # fmt: skip
            yield from mask_runs(zero, first)

    def iter_page_results(
        self, start: int = 0, end: int | None = None
    ) -> Iterator[tuple[PageLocation | int, bytes | KdfixError]]:
        """Decode dumped pages in pfn order; yield (location, page) or (location, error) without stopping.

        If the descriptor table itself ends early, one (pfn, TruncatedError) is yielded for the first
        missing descriptor and the iteration ends.
        """
        bs = self.block_size
        zero_offsets = self.zero_page_offsets()
        zero = bytes(bs)
        src = self.source
        locations = self.iter_locations(start, end)
        while True:
            batch: list[PageLocation] = []
            try:
                for loc in locations:
                    batch.append(loc)
                    if len(batch) >= _DESC_BATCH:
                        break
            except TruncatedError as exc:
                trunc: KdfixError | None = exc
            else:
                trunc = None
            if not batch and trunc is None:
                return
            # One read for the batch's page data when it is compact (QEMU and makedumpfile write in pfn order).
            lo, hi = None, 0
            for loc in batch:
                d = loc.desc
                if d.offset > 0 and d.size <= bs and d.offset not in zero_offsets:
                    lo = d.offset if lo is None else min(lo, d.offset)
                    hi = max(hi, d.offset + d.size)
            span = b""
            if lo is not None and hi - lo <= _DATA_SPAN and hi <= src.size:
                span = src.read_at(lo, hi - lo)
            else:
                lo = None
            for loc in batch:
                d = loc.desc
                pfn = loc.pfn
                if d.offset in zero_offsets and d.size == bs and not d.flags & _COMPRESSION_MASK:
                    yield loc, zero
                    continue
                try:
                    self._check_desc(pfn, loc.descriptor_offset, d)
                    if lo is not None:
                        data = span[d.offset - lo : d.offset - lo + d.size]
                    else:
                        data = read_exact(src, d.offset, d.size, field=f"page data of pfn {pfn:#x}")
                    if d.flags == _ZLIB:  # fast path; anything unusual goes through decode_page for its error
                        z = zlib.decompressobj()
                        try:
                            page = z.decompress(data, bs)
                        except zlib.error:
                            page = b""
                        if len(page) == bs and z.eof:
                            yield loc, page
                            continue
                    yield loc, decode_page(data, d.flags, bs, pfn=pfn)
                except KdfixError as exc:
                    yield loc, exc.with_context(path=self.path, offset=d.offset)
            if trunc is not None:
                missing = next(self.iter_dumped_pfns(batch[-1].pfn + 1 if batch else start, end), None)
                yield (missing if missing is not None else -1), trunc
                return

    def runs(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[Run]:
        """Runs covering ``[start_pfn, end_pfn)`` of ``[0, max_mapnr)`` (kdfix.read.runs): the descriptors' stored
        blocks coalesced where they lie back to back, shared zero pages as ZERO (§7), pfns outside this part's
        range MISSING. A descriptor that cannot locate its bytes raises, as reading its page does."""
        end = self.max_mapnr if end_pfn is None else min(end_pfn, self.max_mapnr)
        return bitmap_runs(self.dumped, start_pfn, end, self._dumped_runs)

    def _dumped_runs(self, first: int, end: int) -> Iterator[Run]:
        """Runs of the dumped pfns ``[first, end)``: MISSING outside ``[start_pfn, end_pfn)``."""
        lo, hi = max(first, self.start_pfn), min(end, self.end_pfn)
        if lo >= hi:
            yield Run(first, end - first, RunKind.MISSING)
            return
        if first < lo:
            yield Run(first, lo - first, RunKind.MISSING)
        yield from self._stored_runs(lo, hi)
        if hi < end:
            yield Run(hi, end - hi, RunKind.MISSING)

    def _stored_runs(self, first: int, end: int) -> Iterator[Run]:
        """Coalesced runs of the consecutive dumped pfns ``[first, end)``, descriptors read in batches."""
        bs, src = self.block_size, self.source
        zero_offsets = self.zero_page_offsets()
        unpack = PAGE_DESC.bind(self.abi).struct.iter_unpack
        translate = self._make_desc if self.dialect == "kdumpling" else None
        table = self.data_offset + PAGE_DESC_SIZE * self.table_index(first)
        run: RunBuilder | None = None
        for batch in range(first, end, _DESC_BATCH):
            n = min(_DESC_BATCH, end - batch)
            at = table + PAGE_DESC_SIZE * (batch - first)
            raw = src.read_at(at, PAGE_DESC_SIZE * n) if at < src.size else b""
            have = len(raw) // PAGE_DESC_SIZE
            for i, values in enumerate(unpack(raw[: have * PAGE_DESC_SIZE])):
                if translate is not None:
                    d = translate(*values)
                    values = (d.offset, d.size, d.flags, d.page_flags)
                offset, size, flags, _ = values
                if offset in zero_offsets and size == bs and not flags & _COMPRESSION_MASK:
                    if run is not None and not run.add_zero():
                        yield run.build()
                        run = None
                    if run is None:
                        run = RunBuilder(batch + i, src, zero=True)
                    continue
                if size > bs or offset <= 0 or offset + size > src.size:
                    self._check_desc(batch + i, at + PAGE_DESC_SIZE * i, PageDesc(offset, size, flags, 0))
                if run is not None and not run.add(offset, size, flags):
                    yield run.build()
                    run = None
                if run is None:
                    run = RunBuilder(batch + i, src, offset=offset, size=size, flags=flags, page_size=bs)
            if have < n:
                raise TruncatedError(f"descriptor of pfn {batch + have:#x} is past the end of the file",
                                     field="page_desc", offset=at + PAGE_DESC_SIZE * have, path=self.path)  # fmt: skip
        if run is not None:
            yield run.build()

    def iter_pages(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(pfn, page) of dumped pages in ascending order; raises at the first page that cannot be read."""
        for loc, result in self.iter_page_results(start_pfn, end_pfn):
            if isinstance(result, KdfixError):
                raise result
            yield loc.pfn, result  # type: ignore[union-attr]

    @property
    def backing(self) -> Backing | None:
        """A one-file dump (plain or flattened) that ``kdfix.open_dump`` reopens as this memory; None for a part of
        a split set or a source that is not a regular file."""
        if self.split or not isinstance(self.path, str) or not os.path.isfile(self.path):
            return None
        return Backing(self.path, raw=False)

    @property
    def memory(self) -> KdumpMemory:
        return KdumpMemory(self)

    def close(self) -> None:
        self.source.close()


class KdumpMemory(ContainerMemory):
    """PhysicalMemory of one KDUMP container."""

    container: KdumpContainer

    def __init__(self, container: KdumpContainer) -> None:
        super().__init__(container, container.block_size, container.max_mapnr)
