"""The KDUMP-compressed writer: model + physical memory → a file laid out as in kdump-format.md §1.

Layout per kdump-format.md §1 (formulas), header fields per §3-§4, flags per §5, descriptors and the
shared zero page per §6-§7, VMCOREINFO placement per notes-and-vmcoreinfo.md §5. :func:`plan_layout` and
the header packers take plain values, so the QEMU-style generator writes through them too. Memory use does
not grow with the dump: the descriptor table is reserved from the 2nd-bitmap count, page data is streamed
and descriptors are written in batches.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from kdfix.arch import recognise
from kdfix.codecs import Codec, codec_named
from kdfix.errors import WriteError
from kdfix.format.bitmap import Bitmap
from kdfix.format.constants import (
    COMPRESSION_FLAGS,
    KDUMP_HEADER_VERSION,
    KDUMP_SIGNATURE,
    NOTE_NAME_VMCOREINFO,
    NOTE_TYPE_VMCOREINFO,
)
from kdfix.format.file_layout import FileLayout, plan_file
from kdfix.format.kdump import DISK_DUMP_HEADER, KDUMP_SUB_HEADER, PAGE_DESC, TIMEVAL, Utsname, header_features, since
from kdfix.format.layout import Abi
from kdfix.model import DumpModel, make_utsname
from kdfix.notes.framing import Note, note_offsets, pack_notes
from kdfix.read.memory import PhysicalMemory
from kdfix.write.encode import EncodedPage, is_zero, is_zero_stored, pass_through_pages
from kdfix.write.page_units import plan_memory
from kdfix.write.parallel import compressed_units
from kdfix.write.sink import FileSink, FlattenedSink, Sink, output_path, output_size

Progress = Callable[[int, int], None]
PageSource = Iterable[tuple[int, int, bytes]]

U32_MAX = 0xFFFFFFFF
DESC_BATCH = 4096  # descriptors per write
DATA_BATCH = 1 << 20  # page-data bytes per write


@dataclass(frozen=True)
class KdumpLayout(FileLayout):
    """A :class:`FileLayout` plus what a writer stores after the sub header (notes, VMCOREINFO text)."""

    size_note: int = 0
    offset_vmcoreinfo: int = 0
    size_vmcoreinfo: int = 0
    notes_blob: bytes = b""  # bytes written at offset_note (notes, then a separate VMCOREINFO text if any)
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True)
class WriteResult:
    """What a writer produced."""

    paths: tuple[str, ...]
    size: int  # bytes of output (flattened: stream bytes), summed over parts
    pages: int  # pages stored (descriptors, or ELF pages)
    zero_pages: int  # pages sharing the zero page
    raw_pages: int  # pages stored uncompressed
    compressed_pages: int
    seconds: float
    layout: KdumpLayout | None = None


def plan_kdump(model: DumpModel, max_mapnr: int) -> KdumpLayout:
    """Compute the layout of a KDUMP file for ``model`` with ``max_mapnr`` pfns (no I/O)."""
    can = header_features(model.header_version)
    notes = notes_to_write(model) if can.notes else ()
    in_notes, text = _vmcoreinfo_place(model, notes) if can.vmcoreinfo else (None, None)
    return plan_layout(
        model.abi,
        model.header_version,
        model.block_size,
        max_mapnr,
        pack_notes(notes, model.abi),
        vmcoreinfo_in_notes=in_notes,
        vmcoreinfo_text=text,
        notes=notes,
    )


def plan_layout(
    abi: Abi,
    header_version: int,
    block_size: int,
    max_mapnr: int,
    notes_blob: bytes,
    *,
    vmcoreinfo_in_notes: tuple[int, int] | None = None,
    vmcoreinfo_text: bytes | None = None,
    notes: tuple[Note, ...] = (),
) -> KdumpLayout:
    """The layout of a KDUMP file whose sub header is followed by ``notes_blob`` (packed notes; no I/O).

    VMCOREINFO is either a note's desc inside the blob, ``vmcoreinfo_in_notes`` = (offset in the blob, size),
    or ``vmcoreinfo_text`` stored right after the blob (v3 has no notes; or a text that differs from the note):
    notes-and-vmcoreinfo.md §5. Every KDUMP writer plans through here (kdfix's own, the QEMU-style generator).
    """
    if not 0 <= header_version <= KDUMP_HEADER_VERSION:
        raise WriteError(f"header_version {header_version} is not 0..{KDUMP_HEADER_VERSION}", field="header_version")
    if block_size <= 0 or block_size & (block_size - 1):
        raise WriteError(f"block_size {block_size} is not a power of two", field="block_size")
    blob_offset = block_size + KDUMP_SUB_HEADER.bind(abi, header_version).size  # kdump-format.md §1
    off_vi = size_vi = 0
    blob = notes_blob
    if vmcoreinfo_in_notes is not None:
        off_vi, size_vi = blob_offset + vmcoreinfo_in_notes[0], vmcoreinfo_in_notes[1]
    elif vmcoreinfo_text is not None:
        off_vi, size_vi = blob_offset + len(blob), len(vmcoreinfo_text)
        blob += vmcoreinfo_text
    file = plan_file(abi, header_version, block_size, max_mapnr, after_sub_header=len(blob))
    return KdumpLayout(
        **{f.name: getattr(file, f.name) for f in dataclasses.fields(FileLayout)},
        size_note=len(notes_blob),
        offset_vmcoreinfo=off_vi,
        size_vmcoreinfo=size_vi,
        notes_blob=blob,
        notes=notes,
    )


def _vmcoreinfo_place(model: DumpModel, notes: tuple[Note, ...]) -> tuple[tuple[int, int] | None, bytes | None]:
    """Where ``model``'s VMCOREINFO goes: its note's desc (offset in the packed notes, size) when the note holds
    the text, else the text itself to store after the notes (None when there is no VMCOREINFO)."""
    vmcoreinfo = model.vmcoreinfo
    for note, note_offset in zip(notes, note_offsets(notes), strict=True):
        if note.name == NOTE_NAME_VMCOREINFO:
            if vmcoreinfo is None or vmcoreinfo == note.desc:
                return (note_offset + note.desc_offset, len(note.desc)), None
            break
    return None, vmcoreinfo


def notes_to_write(model: DumpModel) -> tuple[Note, ...]:
    notes = tuple(model.notes)
    if model.vmcoreinfo is not None and model.vmcoreinfo_note() is None:
        notes += (Note(NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO, model.vmcoreinfo),)
    return notes


def header_phys_base(model: DumpModel, *, from_vmcoreinfo: bool = True) -> int:
    """phys_base for the sub header: what VMCOREINFO says for the dump's architecture (x86_64
    ``NUMBER(phys_base)``, aarch64 ``NUMBER(PHYS_OFFSET)``; kdfix.arch) when it says, else the model's."""
    if from_vmcoreinfo:
        info = model.parsed_vmcoreinfo()
        found = recognise(model, info) if info is not None else None
        value = found.arch.header_phys_base(info) if found is not None and info is not None else None
        if value is not None:
            return value
    return model.phys_base


@dataclass(frozen=True)
class HeaderValues:
    """The header fields a writer is given, not derived from the layout (kdump-format.md §3-§4); a field left
    unset is zero, as in a producer that does not fill it (QEMU).

    The names are DumpModel's on purpose (``of`` copies them by name): the QEMU generator has no model to give."""

    signature: bytes = KDUMP_SIGNATURE
    utsname: Utsname = field(default_factory=make_utsname)
    tv_sec: int = 0
    tv_usec: int = 0
    status: int = 0  # flags besides the codec's (DumpModel.status)
    total_ram_blocks: int = 0
    device_blocks: int = 0
    written_blocks: int = 0
    current_cpu: int = 0
    nr_cpus: int = 0
    dump_level: int = 0

    @classmethod
    def of(cls, model: DumpModel) -> HeaderValues:
        """The values ``model`` holds."""
        return cls(**{f.name: getattr(model, f.name) for f in dataclasses.fields(cls)})


def pack_main_header(values: HeaderValues, layout: KdumpLayout, codec_flag: int) -> bytes:
    """The main header bytes (only ``sizeof(header)``; the rest of block 0 stays zero)."""
    record = DISK_DUMP_HEADER.make(
        signature=values.signature,
        header_version=layout.header_version,
        utsname=values.utsname,
        timestamp=TIMEVAL.make(tv_sec=values.tv_sec, tv_usec=values.tv_usec),
        status=codec_flag | (values.status & ~COMPRESSION_FLAGS),
        block_size=layout.block_size,
        sub_hdr_size=layout.sub_hdr_size,
        bitmap_blocks=layout.bitmap_blocks,
        max_mapnr=min(layout.max_mapnr, U32_MAX),
        total_ram_blocks=values.total_ram_blocks,
        device_blocks=values.device_blocks,
        written_blocks=values.written_blocks,
        current_cpu=values.current_cpu,
        nr_cpus=values.nr_cpus,
    )
    return layout.main_header.pack(record)


def pack_sub_header(
    values: HeaderValues,
    layout: KdumpLayout,
    *,
    phys_base: int,
    eraseinfo: tuple[int, int] = (0, 0),
    split_range: tuple[int, int] | None = None,
) -> bytes:
    """The sub header bytes for ``layout.header_version`` (fields of later versions are not written).

    ``eraseinfo`` is (file offset, size) of the eraseinfo text, (0, 0) for none."""
    word_mask = layout.abi.word_mask
    start, end = split_range if split_range is not None else (0, 0)
    offset_eraseinfo, size_eraseinfo = eraseinfo if header_features(layout.header_version).eraseinfo else (0, 0)
    record = KDUMP_SUB_HEADER.make(
        phys_base=phys_base & word_mask,
        dump_level=values.dump_level,
        split=1 if split_range is not None else 0,
        start_pfn=start & word_mask,
        end_pfn=end & word_mask,
        offset_vmcoreinfo=layout.offset_vmcoreinfo,
        size_vmcoreinfo=layout.size_vmcoreinfo,
        offset_note=layout.offset_note,
        size_note=layout.size_note,
        offset_eraseinfo=offset_eraseinfo,
        size_eraseinfo=size_eraseinfo,
        start_pfn_64=start,
        end_pfn_64=end,
        max_mapnr_64=layout.max_mapnr,
    )
    return layout.sub_header.pack(record)


@dataclass
class Bitmaps:
    """The 1st and 2nd bitmaps of a dump, ``bitmap_len`` bytes each (kdump-format.md §7)."""

    valid: Bitmap
    dumped: Bitmap


def build_bitmaps(
    memory: PhysicalMemory, layout: KdumpLayout, *, exclude_zero: bool, exclude: Bitmap | None = None
) -> Bitmaps:
    """1st bitmap = valid pfns (plus dumped), 2nd = dumped pfns, minus all-zero pages with ``exclude_zero``
    and minus the pfns of ``exclude`` (a dump level's filtered pages; they stay valid, as makedumpfile keeps them)."""
    nbits = 8 * layout.bitmap_len
    dumped = Bitmap(memory.dumped.to_bytes(layout.bitmap_len), nbits)
    valid = memory.valid.union(dumped, nbits)
    if exclude is not None:
        dumped = dumped.difference(exclude)
    if exclude_zero:
        dumped = dumped.difference(Bitmap.from_pfns((pfn for pfn, page in memory.iter_pages() if is_zero(page)), nbits))
    return Bitmaps(valid, dumped)


def desc_packer(abi: Abi) -> struct.Struct:
    """The page_desc layout's struct (offset, size, flags, page_flags) for packing descriptors in bulk."""
    return PAGE_DESC.bind(abi).struct


@dataclass
class _Counts:
    pages: int = 0
    zero: int = 0
    raw: int = 0
    compressed: int = 0


def _shared_zero_page(sink: Sink, data_start: int, block_size: int, zero_page: bool) -> tuple[int | None, int]:
    """(offset of the shared zero page or None, where the next page's data goes): with ``zero_page`` the data
    region starts with one all-zero block that every zero page's descriptor points at (kdump-format.md §7)."""
    if not zero_page:
        return None, data_start
    sink.write_at(data_start, bytes(block_size))
    return data_start, data_start + block_size


def write_page_area(
    sink: Sink,
    layout: KdumpLayout,
    pages: Iterator[EncodedPage],
    expected_pfns: Iterator[int],
    total: int,
    *,
    data_start: int,
    zero_page: bool,
    progress: Progress | None = None,
) -> tuple[int, _Counts]:
    """Stream descriptors (from ``layout.data_offset``) and data (from ``data_start``); return the data end."""
    bs = layout.block_size
    packer = desc_packer(layout.abi)
    desc_size = packer.size
    counts = _Counts()
    zero_offset, pos = _shared_zero_page(sink, data_start, bs, zero_page)
    desc_buf = bytearray()
    desc_pos = layout.data_offset
    data_buf = bytearray()
    data_buf_start = pos
    for index, (page, want) in enumerate(_zip_checked(pages, expected_pfns)):
        if page.pfn != want:
            raise WriteError(f"page source yields pfn {page.pfn:#x}, expected {want:#x}", field="page_source")
        if page.zero:
            assert zero_offset is not None
            desc_buf += packer.pack(zero_offset, bs, 0, 0)
            counts.zero += 1
        else:
            if len(page.data) > bs:
                raise WriteError(f"stored page {page.pfn:#x} is {len(page.data)} bytes > {bs}", field="page_source")
            desc_buf += packer.pack(pos, len(page.data), page.flags, 0)
            data_buf += page.data
            pos += len(page.data)
            if page.flags:
                counts.compressed += 1
            else:
                counts.raw += 1
        counts.pages += 1
        if len(data_buf) >= DATA_BATCH:
            sink.write_at(data_buf_start, data_buf)
            data_buf_start, data_buf = pos, bytearray()
        if len(desc_buf) >= DESC_BATCH * desc_size:
            sink.write_at(desc_pos, desc_buf)
            desc_pos += len(desc_buf)
            desc_buf = bytearray()
            if progress is not None:
                progress(index + 1, total)
    if desc_buf:
        sink.write_at(desc_pos, desc_buf)
    if data_buf:
        sink.write_at(data_buf_start, data_buf)
    if counts.pages != total:
        raise WriteError(f"page source ended after {counts.pages} of {total} pages", field="page_source")
    if progress is not None:
        progress(total, total)
    return pos, counts


def write_unit_area(
    sink: Sink,
    layout: KdumpLayout,
    units: Iterable[tuple[bytes | memoryview, bytes | memoryview]],
    total: int,
    *,
    flag: int,
    data_start: int,
    zero_page: bool,
    progress: Progress | None = None,
) -> tuple[int, _Counts]:
    """:func:`write_page_area` for compressed units (``(sizes, stored)`` of a UnitCompressor):
    the same bytes, written in the same batches (so a flattened stream has the same records)."""
    bs = layout.block_size
    packer = desc_packer(layout.abi)
    pack = packer.pack
    desc_limit = DESC_BATCH * packer.size
    counts = _Counts()
    zero_offset, pos = _shared_zero_page(sink, data_start, bs, zero_page)
    zero_desc = pack(zero_offset, bs, 0, 0) if zero_offset is not None else b""
    desc_buf = bytearray()
    desc_pos = layout.data_offset
    data_buf = bytearray()
    data_buf_start = pos
    index = zero = raw = 0
    for sizes_raw, stored_raw in units:
        sizes = array("I")
        sizes.frombytes(sizes_raw)
        if index + len(sizes) > total:
            raise WriteError(f"page source yields more than {total} pages", field="page_source")
        stored = memoryview(stored_raw)
        at = 0
        for size in sizes:
            if size == 0:
                if not zero_page:
                    raise WriteError("an all-zero page was shared without a zero page", field="page_source")
                desc_buf += zero_desc
                zero += 1
            else:
                if size == bs:
                    desc_buf += pack(pos, bs, 0, 0)
                    raw += 1
                else:
                    desc_buf += pack(pos, size, flag, 0)
                data_buf += stored[at : at + size]
                at += size
                pos += size
            index += 1
            if len(data_buf) >= DATA_BATCH:
                sink.write_at(data_buf_start, data_buf)
                data_buf_start, data_buf = pos, bytearray()
            if len(desc_buf) >= desc_limit:
                sink.write_at(desc_pos, desc_buf)
                desc_pos += len(desc_buf)
                desc_buf = bytearray()
                if progress is not None:
                    progress(index, total)
        stored.release()
    if desc_buf:
        sink.write_at(desc_pos, desc_buf)
    if data_buf:
        sink.write_at(data_buf_start, data_buf)
    if index != total:
        raise WriteError(f"page source ended after {index} of {total} pages", field="page_source")
    counts.pages, counts.zero, counts.raw = index, zero, raw
    counts.compressed = index - zero - raw
    if progress is not None:
        progress(total, total)
    return pos, counts


def _zip_checked(pages: Iterator[EncodedPage], pfns: Iterator[int]) -> Iterator[tuple[EncodedPage, int]]:
    for want in pfns:
        page = next(pages, None)
        if page is None:
            return
        yield page, want
    extra = next(pages, None)
    if extra is not None:
        raise WriteError(f"page source yields pfn {extra.pfn:#x}, which is not dumped", field="page_source")


def page_stream(
    bitmaps: Bitmaps,
    codec_name: str,
    page_size: int,
    *,
    zero_page: bool,
    page_source: PageSource,
    start_pfn: int = 0,
    end_pfn: int | None = None,
) -> Iterator[EncodedPage]:
    """Stored pages of ``page_source`` passed through for the 2nd bitmap in ``[start_pfn, end_pfn)``."""
    wanted = (
        (pfn, flags, data)
        for pfn, flags, data in page_source
        if start_pfn <= pfn < (end_pfn if end_pfn is not None else pfn + 1) and bitmaps.dumped.test(pfn)
    )
    return pass_through_pages(wanted, codec_name, page_size, zero_page=zero_page)


def prepare_kdump(
    model: DumpModel,
    memory: PhysicalMemory,
    codec: str,
    *,
    exclude_zero: bool,
    split: bool = False,
    exclude: Bitmap | None = None,
) -> tuple[Codec, KdumpLayout, Bitmaps]:
    """The codec, layout and bitmaps of a KDUMP output (``split``: a split set, which needs a split sub header)."""
    the_codec = codec_named(codec)
    if memory.page_size != model.block_size:
        raise WriteError(
            f"memory page size {memory.page_size} differs from block_size {model.block_size}", field="block_size"
        )
    if split and not header_features(model.header_version).split:
        raise WriteError(
            f"split dumps need header_version >= {since('split')}, not {model.header_version}", field="header_version"
        )
    layout = plan_kdump(model, max(model.max_mapnr, memory.max_pfn))
    return the_codec, layout, build_bitmaps(memory, layout, exclude_zero=exclude_zero, exclude=exclude)


def open_sink(target: str | os.PathLike[str] | Sink, *, flat: bool) -> Sink:
    """``target`` itself when it is a Sink, else a new FlattenedSink (``flat``) or FileSink on the path."""
    if isinstance(target, Sink):
        return target
    return FlattenedSink(target) if flat else FileSink(target)


def write_kdump(
    target: str | os.PathLike[str] | Sink,
    model: DumpModel,
    memory: PhysicalMemory,
    *,
    # the options of write_split too: one keyword list would hide them from type checkers and help()
    codec: str = "zlib",
    flat: bool = False,
    zero_page: bool = True,
    exclude_zero: bool = False,
    workers: int = 1,
    progress: Progress | None = None,
    page_source: PageSource | None = None,
    phys_base_from_vmcoreinfo: bool = True,
    exclude: Bitmap | None = None,
) -> WriteResult:
    """Write ``model`` + ``memory`` as a KDUMP-compressed file (``flat``: a flattened stream) to a path or Sink.

    ``exclude_zero`` drops all-zero pages from the 2nd bitmap (no shared zero page then);
    ``page_source`` yields (pfn, flags, stored bytes) to pass stored pages through; ``workers``
    compress in parallel processes with byte-identical output. ``phys_base_from_vmcoreinfo=False``
    keeps ``model.phys_base`` even when VMCOREINFO has ``NUMBER(phys_base)`` (byte-exact rewrites).
    ``exclude``: pfns left out of the 2nd bitmap (kdfix.kernel.pageflags, a dump level's filtered pages).
    """
    began = time.monotonic()
    the_codec, layout, bitmaps = prepare_kdump(model, memory, codec, exclude_zero=exclude_zero, exclude=exclude)
    zero_page = zero_page and not exclude_zero
    total = bitmaps.dumped.count()
    own_sink = not isinstance(target, Sink)
    sink = open_sink(target, flat=flat)
    try:
        write_header_area(sink, model, layout, int(the_codec.flag), bitmaps)
        if page_source is None:
            end, counts = write_memory_pages(
                sink, layout, memory, bitmaps, codec, total, zero_page=zero_page, workers=workers, progress=progress
            )
        else:
            pages = page_stream(bitmaps, codec, memory.page_size, zero_page=zero_page, page_source=page_source)
            end, counts = write_page_area(
                sink,
                layout,
                pages,
                bitmaps.dumped.iter_set(),
                total,
                data_start=layout.data_start(total),
                zero_page=zero_page,
                progress=progress,
            )
        phys_base = header_phys_base(model, from_vmcoreinfo=phys_base_from_vmcoreinfo)
        end = write_tail(sink, model, layout, end, phys_base=phys_base)
    finally:
        if own_sink:
            sink.close()
    size = output_size(sink, end)
    paths = (output_path(target, sink),)
    return WriteResult(
        paths=tuple(p for p in paths if p),
        size=size,
        pages=counts.pages,
        zero_pages=counts.zero,
        raw_pages=counts.raw,
        compressed_pages=counts.compressed,
        seconds=time.monotonic() - began,
        layout=layout,
    )


def write_memory_pages(
    sink: Sink,
    layout: KdumpLayout,
    memory: PhysicalMemory,
    bitmaps: Bitmaps,
    codec: str,
    total: int,
    *,
    zero_page: bool,
    workers: int,
    progress: Progress | None = None,
    start_pfn: int = 0,
    end_pfn: int | None = None,
    data_start: int | None = None,
) -> tuple[int, _Counts]:
    """Compress the dumped pages of ``memory`` in ``[start_pfn, end_pfn)`` by units (kdfix.write.parallel: page
    cache, ``workers`` processes reading an ELF or a dump file themselves) and write them as write_page_area does.

    ``total`` is the number of dumped pages in the range; page data starts at ``data_start`` (default: right
    after ``total`` descriptors; a split part passes the room for the global count, kdump-format.md §9)."""
    the_codec = codec_named(codec)
    the_codec.require()
    plan = plan_memory(memory, bitmaps.dumped, start_pfn=start_pfn, end_pfn=end_pfn)
    try:
        if plan.units.pages != total:
            raise WriteError(f"bitmap runs hold {plan.units.pages} pages, expected {total}", field="bitmap")
        units = compressed_units(
            plan.units,
            source=plan.source,
            spec=plan.spec,
            codec=codec,
            page_size=memory.page_size,
            workers=workers,
            zero_page=zero_page,
        )
        return write_unit_area(
            sink,
            layout,
            units,
            total,
            flag=int(the_codec.flag),
            data_start=layout.data_start(total) if data_start is None else data_start,
            zero_page=zero_page,
            progress=progress,
        )
    finally:
        plan.close()


def write_header_area(sink: Sink, model: DumpModel, layout: KdumpLayout, codec_flag: int, bitmaps: Bitmaps) -> None:
    """Main header, notes area and both bitmaps (the sub header is written last, once offsets are known)."""
    sink.write_at(0, pack_main_header(HeaderValues.of(model), layout, codec_flag))
    # The sub header needs offset_eraseinfo (the end of the page data), so write_tail writes it once, last.
    if layout.notes_blob:
        sink.write_at(layout.sub_header.size + layout.block_size, layout.notes_blob)
    if layout.bitmap_len:
        sink.write_at(layout.bitmap1_offset, bitmaps.valid.to_bytes(layout.bitmap_len))
        sink.write_at(layout.bitmap2_offset, bitmaps.dumped.to_bytes(layout.bitmap_len))


def write_tail(
    sink: Sink,
    model: DumpModel,
    layout: KdumpLayout,
    data_end: int,
    *,
    phys_base: int,
    split_range: tuple[int, int] | None = None,
) -> int:
    """Eraseinfo after the page data, then the sub header; return the end of the file."""
    end = data_end
    eraseinfo = (0, 0)
    if header_features(layout.header_version).eraseinfo and model.eraseinfo:
        eraseinfo = (data_end, len(model.eraseinfo))
        sink.write_at(data_end, model.eraseinfo)
        end += len(model.eraseinfo)
    sub = pack_sub_header(
        HeaderValues.of(model), layout, phys_base=phys_base, eraseinfo=eraseinfo, split_range=split_range
    )
    sink.write_at(layout.block_size, sub)
    # A dump with no pages and no bitmap bytes (max_mapnr 0) has written nothing past the sub header: pad the file to
    # the end of its header blocks, which readers check against the file size (kdump-format.md §1).
    header_end = layout.bitmap2_offset + layout.bitmap_len
    if not layout.bitmap_len and end <= header_end:
        written = layout.block_size + layout.sub_header.size + len(layout.notes_blob)
        if written < header_end:
            sink.write_at(written, bytes(header_end - written))
    return max(end, header_end)


def normalized_model(model: DumpModel, memory: PhysicalMemory, *, codec: str = "zlib") -> DumpModel:
    """The model a reader should report after ``write_kdump`` (what each header version can hold)."""
    layout = plan_kdump(model, max(model.max_mapnr, memory.max_pfn))
    can = header_features(layout.header_version)
    changes: dict[str, object] = {
        "max_mapnr": layout.max_mapnr,
        "phys_base": header_phys_base(model) & model.abi.word_mask,
        "status": model.status & ~COMPRESSION_FLAGS,
        "notes": layout.notes,
        "vmcoreinfo": _written_vmcoreinfo(layout) if can.vmcoreinfo else None,
        "eraseinfo": model.eraseinfo if can.eraseinfo else b"",
        "dump_level": model.dump_level if can.dump_level else 0,
    }
    return dataclasses.replace(model, **changes)  # type: ignore[arg-type]


def _written_vmcoreinfo(layout: KdumpLayout) -> bytes | None:
    if not layout.offset_vmcoreinfo:
        return None
    start = (
        layout.offset_vmcoreinfo - layout.offset_note
        if header_features(layout.header_version).notes
        else (layout.offset_vmcoreinfo - layout.block_size - layout.sub_header.size)
    )
    return layout.notes_blob[start : start + layout.size_vmcoreinfo]


__all__ = [
    "HeaderValues",
    "KdumpLayout",
    "WriteResult",
    "build_bitmaps",
    "header_phys_base",
    "is_zero_stored",
    "normalized_model",
    "pack_main_header",
    "pack_sub_header",
    "plan_kdump",
    "plan_layout",
    "write_kdump",
]
