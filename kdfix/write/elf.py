"""The ELF vmcore writer: /proc/vmcore layout (Ehdr, Phdrs, one PT_NOTE with all notes, PT_LOADs, data).

Notes follow the program headers; VMCOREINFO is a note (notes-and-vmcoreinfo.md §1), eraseinfo an
``ERASEINFO`` note (kdump-format.md §10). One PT_LOAD per run of stored pfns (or per given segment,
keeping its paddr/vaddr, for ELF → ELF); page data starts page-aligned and is streamed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from kdfix.arch import recognise
from kdfix.errors import WriteError
from kdfix.format.bitmap import Bitmap
from kdfix.format.constants import (
    ELF_INCOMPLETE_FLAG,
    EM_NONE,
    NOTE_NAME_ERASEINFO,
    DumpFlag,
)
from kdfix.format.elf import (
    ELF_EHDR,
    ET_CORE,
    EV_CURRENT,
    PF_R,
    PF_W,
    PF_X,
    PN_XNUM,
    PT_LOAD,
    PT_NOTE,
    e_ident,
    ehdr_layout,
    phdr_layout,
)
from kdfix.format.layout import Abi
from kdfix.model import DumpModel
from kdfix.notes.framing import Note, pack_notes
from kdfix.read.memory import PhysicalMemory
from kdfix.units import align_up
from kdfix.write.encode import is_zero
from kdfix.write.kdump import Progress, WriteResult, notes_to_write
from kdfix.write.sink import FileSink, Sink, output_path

COPY_PAGES = 256


@dataclass(frozen=True, slots=True)
class LoadSegment:
    """A PT_LOAD to write: physical and virtual start, size in bytes."""

    paddr: int
    vaddr: int
    size: int


def default_machine(model: DumpModel) -> int:
    """e_machine: the model's, else its architecture's (kdfix.arch: NT_PRSTATUS size, utsname, VMCOREINFO keys),
    else EM_NONE: no architecture is claimed that nothing in the dump supports."""
    if model.e_machine is not None:
        return model.e_machine
    found = recognise(model)
    return min(found.arch.e_machines) if found is not None else EM_NONE


def elf_notes(model: DumpModel) -> tuple[Note, ...]:
    """Notes of the PT_NOTE segment: the model's, plus VMCOREINFO and ERASEINFO notes when needed."""
    notes = notes_to_write(model)
    if model.eraseinfo and not any(n.name == NOTE_NAME_ERASEINFO for n in notes):
        notes += (Note(NOTE_NAME_ERASEINFO, 0, model.eraseinfo),)
    return notes


def runs_of(memory: PhysicalMemory, *, exclude_zero: bool = False, exclude: Bitmap | None = None) -> list[LoadSegment]:
    """One segment per run of stored pfns (p_vaddr = p_paddr); all-zero pages split runs with ``exclude_zero``,
    and so do the pfns of ``exclude`` (a dump level's filtered pages)."""
    ps = memory.page_size
    bitmap = memory.dumped
    if exclude is not None:
        bitmap = bitmap.difference(exclude)
    if exclude_zero:
        zero = (pfn for pfn, page in memory.iter_pages() if is_zero(page))
        bitmap = bitmap.difference(Bitmap.from_pfns(zero, bitmap.nbits))
    return [LoadSegment(a * ps, a * ps, (b - a) * ps) for a, b in bitmap.iter_runs()]


def _checked_loads(loads: list[LoadSegment], abi: Abi) -> list[LoadSegment]:
    """The PT_LOADs to write: at least one, each within the ABI's words, fewer than PN_XNUM in all."""
    if not loads:  # a dump with no pages: readers (libkdumpfile, drgn) want at least one PT_LOAD, an empty one does
        loads = [LoadSegment(0, 0, 0)]
    limit = abi.word_mask
    for seg in loads:
        if seg.paddr + seg.size - 1 > limit or seg.vaddr > limit:
            raise WriteError(f"segment at {seg.paddr:#x} does not fit an Elf32 file", field="p_paddr")
    phnum = 1 + len(loads)
    if phnum >= PN_XNUM:
        raise WriteError(f"{phnum} program headers exceed the ELF limit of {PN_XNUM - 1}", field="e_phnum")
    return loads


def _pack_headers(
    model: DumpModel, loads: list[LoadSegment], notes_offset: int, notes_size: int, data_offset: int
) -> tuple[bytes, list[tuple[LoadSegment, int]]]:
    """The ELF header and program headers (PT_NOTE, then the PT_LOADs laid out from ``data_offset``), and where
    each segment's data goes, as /proc/vmcore lays them out."""
    abi = model.abi
    ehdr = ehdr_layout(abi)
    phdr = phdr_layout(abi)
    header = ELF_EHDR.make(
        e_ident=e_ident(abi),
        e_type=ET_CORE,
        e_machine=default_machine(model),
        e_version=EV_CURRENT,
        e_phoff=ehdr.size,
        e_flags=ELF_INCOMPLETE_FLAG if model.status & DumpFlag.COMPRESSED_INCOMPLETE else 0,
        e_ehsize=ehdr.size,
        e_phentsize=phdr.size,
        e_phnum=1 + len(loads),
    )
    record = phdr.layout.make  # ELF64_PHDR or ELF32_PHDR
    phdrs = [phdr.pack(record(p_type=PT_NOTE, p_offset=notes_offset, p_filesz=notes_size))]
    pos = data_offset
    placed: list[tuple[LoadSegment, int]] = []
    for seg in loads:
        phdrs.append(phdr.pack(record(p_type=PT_LOAD, p_flags=PF_R | PF_W | PF_X, p_offset=pos, p_vaddr=seg.vaddr,
                                      p_paddr=seg.paddr, p_filesz=seg.size, p_memsz=seg.size)))  # fmt: skip
        placed.append((seg, pos))
        pos += seg.size
    return ehdr.pack(header) + b"".join(phdrs), placed


def write_elf(
    target: str | os.PathLike[str] | Sink,
    model: DumpModel,
    memory: PhysicalMemory,
    *,
    progress: Progress | None = None,
    segments: Sequence[LoadSegment] | None = None,
    exclude_zero: bool = False,
    exclude: Bitmap | None = None,
) -> WriteResult:
    """Write an ELF vmcore (Elf64, or Elf32 for 32-bit ABIs) of ``memory`` with ``model``'s notes."""
    began = time.monotonic()
    abi = model.abi
    ps = memory.page_size
    loads = _checked_loads(
        list(segments) if segments is not None else runs_of(memory, exclude_zero=exclude_zero, exclude=exclude), abi
    )
    ehdr = ehdr_layout(abi)
    blob = pack_notes(elf_notes(model), abi)
    notes_offset = ehdr.size + (1 + len(loads)) * phdr_layout(abi).size
    data_offset = align_up(notes_offset + len(blob), ps)
    headers, placed = _pack_headers(model, loads, notes_offset, len(blob), data_offset)
    pos = data_offset + sum(seg.size for seg in loads)  # the end of the last segment's data
    total = sum(seg.size for seg in loads)
    own = not isinstance(target, Sink)
    sink: Sink = target if isinstance(target, Sink) else FileSink(target)
    pages = 0
    try:
        sink.write_at(0, headers)
        sink.write_at(notes_offset, blob)
        done = 0
        for seg, offset in placed:
            for chunk in _segment_chunks(memory, seg, ps):
                sink.write_at(offset, chunk)
                offset += len(chunk)
                done += len(chunk)
                pages += len(chunk) // ps
                if progress is not None:
                    progress(done, total)
    finally:
        if own:
            sink.close()
    return WriteResult(
        paths=(output_path(target, sink),) if own else (),
        size=max(pos, notes_offset + len(blob)),
        pages=pages,
        zero_pages=0,
        raw_pages=pages,
        compressed_pages=0,
        seconds=time.monotonic() - began,
    )


def _zero_chunks(size: int, ps: int) -> Iterator[bytes]:
    """``size`` zero bytes in chunks of at most COPY_PAGES pages (never one allocation of a whole gap)."""
    chunk = bytes(min(size, COPY_PAGES * ps))
    while size > 0:
        yield chunk if size >= len(chunk) else bytes(size)
        size -= len(chunk)


def _segment_chunks(memory: PhysicalMemory, seg: LoadSegment, ps: int) -> Iterator[bytes]:
    """The bytes of one segment in chunks; page-aligned runs stream pages, others read byte ranges."""
    if seg.paddr % ps == 0 and seg.size % ps == 0:
        first = seg.paddr // ps
        end = first + seg.size // ps
        buf = bytearray()
        expect = first
        for pfn, page in memory.iter_pages(first, end):
            if pfn != expect:  # pages missing inside a given segment read as zero: chunks a sink may skip
                if buf:
                    yield bytes(buf)
                    buf = bytearray()
                yield from _zero_chunks((pfn - expect) * ps, ps)
            buf += page
            expect = pfn + 1
            if len(buf) >= COPY_PAGES * ps:
                yield bytes(buf)
                buf = bytearray()
        if buf:
            yield bytes(buf)
        if expect < end:
            yield from _zero_chunks((end - expect) * ps, ps)
        return
    pos = seg.paddr
    end = seg.paddr + seg.size
    while pos < end:
        take = min(COPY_PAGES * ps, end - pos)
        yield memory.read(pos, take, zero_fill=True)
        pos += take


__all__ = ["LoadSegment", "default_machine", "elf_notes", "runs_of", "write_elf"]
