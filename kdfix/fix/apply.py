"""Apply a Plan: positional writes to the file (journal first), a patched copy (-o), or an ELF rewrite.

For a flattened stream (kdump-format.md §11) a header patch is applied inside the payload of every record that
covers the patched bytes (normally one), so whichever copy a reader picks (crash's binary search, ``-R``'s last
write) holds the new value. A stream where more than ``MAX_COVERING`` records cover a field (valid, but built to
make a fix do work proportional to their number) gets the new value as one new record instead (last write wins,
as ``makedumpfile -R`` and the reader resolve it), so a fix stays O(1) and its journal small. Appended data
becomes new records written over the end marker, followed by a new end marker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kdfix.arch import recognise
from kdfix.codecs import CODECS_BY_NAME
from kdfix.errors import FormatError, JournalError, KdfixError, UnsupportedError, WriteError
from kdfix.faults import checkpoint
from kdfix.fix import journal as _journal
from kdfix.fix.diagnose import elf_vaddr
from kdfix.fix.journal import Write, pread_full, pwrite_all
from kdfix.fix.plan import Edit, Plan
from kdfix.format.constants import COMPRESSION_FLAGS, FLAT_HEADER_SIZE, NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO
from kdfix.format.flattened import FLAT_RECORD_BOUND, FLAT_RECORD_SIZE
from kdfix.notes.framing import Note
from kdfix.read.dump import Dump
from kdfix.read.flattened import FlattenedSource
from kdfix.read.memory import DictMemory, PhysicalMemory
from kdfix.read.probe import open_dump
from kdfix.read.reblock import ReblockedMemory
from kdfix.write.atomic import reason
from kdfix.write.flattened import reassemble, reassemble_extents
from kdfix.write.sink import flat_record_header, open_emptied
from kdfix.write.sparse import SparseFileSink, copy_extents, copy_sparse, data_extents
from kdfix.write.utsname import utsname_record

Progress = Callable[[int, int], None]
_END_MARKER = b"\xff" * FLAT_RECORD_SIZE
_RECORD = FLAT_RECORD_BOUND.struct
_SCAN = 1 << 20
MAX_APPEND_RECORD = 1 << 20
MAX_COVERING = 4  # records covering one patched field that are patched in place; past that, a new record


@dataclass(frozen=True, slots=True)
class FlatRecord:
    header_offset: int  # stream offset of the 16-byte record header
    dump_offset: int
    size: int

    @property
    def payload(self) -> int:
        return self.header_offset + FLAT_RECORD_SIZE


def scan_flat_records(fd: int, size: int) -> tuple[list[FlatRecord], int | None]:
    """Every record of a flattened stream in stream order, and the stream offset of the end marker (or None)."""
    records: list[FlatRecord] = []
    pos = FLAT_HEADER_SIZE
    buf, buf_at = b"", pos
    while pos + FLAT_RECORD_SIZE <= size:
        rel = pos - buf_at
        if rel < 0 or rel + FLAT_RECORD_SIZE > len(buf):
            buf, buf_at, rel = os.pread(fd, _SCAN, pos), pos, 0
            if len(buf) < FLAT_RECORD_SIZE:
                break
        offset, length = _RECORD.unpack_from(buf, rel)
        if offset == -1 and length == -1:
            return records, pos
        if offset < 0 or length <= 0 or pos + FLAT_RECORD_SIZE + length > size:
            break
        records.append(FlatRecord(pos, offset, length))
        pos += FLAT_RECORD_SIZE + length
    return records, None


def _unchanged_write(fd: int, edit: Edit, path: str) -> Write:
    """The write of ``edit`` at its dump offset, after checking the file still holds ``edit.old`` there."""
    if pread_full(fd, edit.dump_offset, len(edit.old)) != edit.old:
        raise FormatError("file changed while fixing", field=edit.field, offset=edit.dump_offset, path=path)
    return Write(edit.dump_offset, edit.old, edit.new)


@dataclass(frozen=True)
class PhysicalPlan:
    """The file writes of a plan, and for each edit the file offset where its first copy goes."""

    writes: tuple[Write, ...]
    file_offsets: dict[str, int]
    original_size: int


def physical_writes(path: str, container: str, plan: Plan) -> PhysicalPlan:
    """Map the plan's dump offsets to writes in the file (identity for a plain file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        writes: list[Write] = []
        offsets: dict[str, int] = {}
        if container == "kdump":
            for e in plan.edits:
                writes.append(_unchanged_write(fd, e, path))
                offsets[e.field] = e.dump_offset
            if plan.append is not None:
                a = plan.append
                writes.append(Write(a.dump_offset, b"", a.new))
                offsets[a.field] = a.dump_offset
            return PhysicalPlan(tuple(writes), offsets, size)
        if container != "flattened":
            raise UnsupportedError(f"no in-place patching for {container} files")
        records, end_marker = scan_flat_records(fd, size)
        if end_marker is None:
            raise UnsupportedError("flattened stream has no end marker (truncated); convert it with -o first",
                                   field="flat_record", path=path)  # fmt: skip
        extra: list[tuple[int, bytes]] = []  # (dump offset, bytes) to append as new records (last write wins)
        for e in plan.edits:
            lo, hi = e.dump_offset, e.dump_offset + len(e.new)
            covering = [r for r in records if r.dump_offset < hi and lo < r.dump_offset + r.size]
            if len(covering) > MAX_COVERING:  # a hostile stream: keep the fix O(1), one new record
                extra.append((lo, e.new))
                continue
            covered = bytearray(hi - lo)
            for r in covering:
                first, end = max(lo, r.dump_offset), min(hi, r.dump_offset + r.size)
                at = r.payload + (first - r.dump_offset)
                old = pread_full(fd, at, end - first)
                writes.append(Write(at, old, e.new[first - lo : end - lo]))
                offsets.setdefault(e.field, at)
                covered[first - lo : end - lo] = b"\1" * (end - first)
            start = None
            for i in range(len(covered) + 1):
                if i < len(covered) and not covered[i]:
                    start = i if start is None else start
                elif start is not None:
                    extra.append((lo + start, e.new[start:i]))
                    start = None
        for e in plan.stream_edits:
            writes.append(_unchanged_write(fd, e, path))
            offsets[e.field] = e.dump_offset
        if plan.append is not None:
            extra.append((plan.append.dump_offset, plan.append.new))
        if extra:
            tail = bytearray()
            for dump_offset, data in extra:
                for i in range(0, len(data), MAX_APPEND_RECORD):
                    chunk = data[i : i + MAX_APPEND_RECORD]
                    tail += flat_record_header(dump_offset + i, len(chunk)) + chunk
            tail += _END_MARKER
            old = pread_full(fd, end_marker, min(len(tail), size - end_marker))
            writes.append(Write(end_marker, old, bytes(tail)))
            if plan.append is not None:
                offsets.setdefault(plan.append.field, end_marker)
        return PhysicalPlan(tuple(writes), offsets, size)
    finally:
        os.close(fd)


def _write_all(fd: int, writes: tuple[Write, ...]) -> int:
    written = 0
    for w in writes:
        checkpoint("fix.patch")
        pwrite_all(fd, w.new, w.file_offset)
        written += len(w.new)
    return written


def apply_in_place(path: str, physical: PhysicalPlan) -> tuple[int, str]:
    """Journal the writes (fsynced), then write them and fsync; returns (bytes written, journal path)."""
    if not physical.writes:
        return 0, ""
    try:
        journal = _journal.begin(path, physical.writes, physical.original_size)
    except OSError as exc:
        if isinstance(exc, KdfixError):
            raise
        raise WriteError(f"cannot write the undo journal {_journal.journal_path(path)}: {reason(exc)}; the dump "
                         "is untouched", path=path) from exc  # fmt: skip
    checkpoint("fix.journal_saved")
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        raise WriteError(f"cannot open for writing: {exc.strerror or exc}", path=path) from exc
    try:
        written = _write_all(fd, physical.writes)
        checkpoint("fix.before_fsync")
        os.fsync(fd)
        checkpoint("fix.after_fsync")
    except OSError as exc:
        os.close(fd)
        with contextlib.suppress(JournalError):
            _journal.undo(path, force=True)
        raise WriteError(f"writing the fix into {path} failed ({reason(exc)}); its original bytes were restored "
                         "from the journal", path=path) from exc  # fmt: skip
    os.close(fd)
    return written, _journal.journal_path(journal.path)


def copy_and_patch(src: str, dst: str, physical: PhysicalPlan, progress: Progress | None = None) -> int:
    """Copy ``src`` to ``dst`` (an atomic_output temp or scratch path) keeping its holes, then apply the writes
    there; returns the apparent bytes written (the size copied plus the patches). Not fsynced here: the atomic
    output is when published, so the disk writes it while the caller verifies it."""
    with open(src, "rb") as fin:
        fd = open_emptied(dst)
        try:
            size = os.fstat(fin.fileno()).st_size
            copy_sparse(fin.fileno(), fd, size, progress)
            written = size + _write_all(fd, physical.writes)
        finally:
            os.close(fd)
    return written


def reassemble_and_patch(src: str, dst: str, plan: Plan, source: FlattenedSource | None = None) -> int:
    """Write the reassembled file of the flattened stream ``src`` to ``dst`` (``makedumpfile -R``; the kernel
    copies the record payloads, from the extent index of ``source``, the reader of ``src`` that built one, if
    given), then apply ``plan`` at its dump offsets, which are that file's own offsets; returns the apparent
    bytes written. ``dst`` is an atomic_output temp file, fsynced when published: the disk writes it while the
    caller verifies it."""
    if source is not None:
        size = reassemble_extents(src, source.iter_extents(), source.size, dst)
    else:
        size = reassemble(src, dst)
    physical = physical_writes(dst, "kdump", plan)
    fd = os.open(dst, os.O_WRONLY)
    try:
        written = size + _write_all(fd, physical.writes)
    finally:
        os.close(fd)
    return written


def rewrite_elf(dump: Dump, plan: Plan, tmp: str, progress: Progress | None = None) -> int:
    """Write the ELF vmcore anew (Ehdr, Phdrs, notes incl. VMCOREINFO, the same PT_LOADs) into ``tmp``.

    The headers are written first over holes; then each segment's bytes are copied from the input file extent by
    extent (SEEK_DATA), so holes stay holes and the time follows the data, not the segments' size.
    """
    from kdfix.write.elf import LoadSegment, write_elf  # here: a header patch needs no writer

    assert dump.elf is not None
    model = dump.model
    if plan.elf_notes is not None:  # several kernels: the chosen kernel's notes, VMCOREINFO among them
        model = dataclasses.replace(model, notes=plan.elf_notes, vmcoreinfo=plan.elf_vmcoreinfo)
    elif plan.elf_vmcoreinfo is not None and model.vmcoreinfo is None:
        model = dataclasses.replace(model, vmcoreinfo=plan.elf_vmcoreinfo)
    found = recognise(model, model.vmcoreinfo)
    elf = dump.elf
    segments = []
    for s in elf.segments:
        vaddr = None if found is None else elf_vaddr(found.arch, s.paddr, s.memsz, elf.abi.word_size)
        segments.append(LoadSegment(s.paddr, s.vaddr if vaddr is None else vaddr, s.memsz))
    nothing = DictMemory({}, page_size=dump.memory.page_size, max_pfn=dump.memory.max_pfn)
    sink = SparseFileSink(tmp)
    try:
        result = write_elf(sink, model, nothing, segments=segments)
    finally:
        sink.close()
    with open_dump(tmp) as out:
        placed = [s.file_offset for s in out.elf.segments]  # type: ignore[union-attr]
    src_fd = os.open(dump.path, os.O_RDONLY)
    try:
        size = os.fstat(src_fd).st_size
        extents = list(data_extents(src_fd, size))
        total = sum(max(0, min(s.filesz, size - s.file_offset)) for s in elf.segments)
        done = 0
        with open(tmp, "r+b") as fout:
            for seg, at in zip(elf.segments, placed, strict=True):
                present = max(0, min(seg.filesz, size - seg.file_offset))
                copy_extents(src_fd, seg.file_offset, present, fout.fileno(), at, extents)
                done += present
                if progress is not None:
                    progress(done, total)
            os.fsync(fout.fileno())
    finally:
        os.close(src_fd)
    return max(result.size, sink.size)


def rewrite_kdump(dump: Dump, plan: Plan, tmp: str, progress: Progress | None = None) -> int:
    """Write the KDUMP file anew into ``tmp`` (plain, not flattened) with the plan's header values, in blocks of
    ``block_size`` (re-blocked from larger ones) and the plan's header ABI; returns the bytes written."""
    from kdfix.write.kdump import write_kdump  # here: a header patch needs no writer

    rw = plan.rewrite_kdump
    assert rw is not None and dump.kdump is not None
    model = dump.model
    notes, vmcoreinfo = model.notes, model.vmcoreinfo
    note = model.vmcoreinfo_note()
    if rw.notes is not None:  # the chosen kernel's notes replace the dump's (kernels.py), VMCOREINFO among them
        notes = rw.notes
        note = next((n for n in notes if n.name == NOTE_NAME_VMCOREINFO), None)
        vmcoreinfo = note.desc if note is not None else vmcoreinfo
    elif rw.vmcoreinfo is not None and note is None:
        notes += (Note(NOTE_NAME_VMCOREINFO, NOTE_TYPE_VMCOREINFO, rw.vmcoreinfo),)
        vmcoreinfo = rw.vmcoreinfo
    elif note is not None:
        vmcoreinfo = note.desc  # the writer points offset_vmcoreinfo at the note
    memory: PhysicalMemory = dump.memory
    max_mapnr = model.max_mapnr
    if rw.block_size != memory.page_size:
        memory = ReblockedMemory(memory, rw.block_size)
        max_mapnr *= dump.memory.page_size // rw.block_size
    changes: dict[str, Any] = {"abi": rw.abi, "block_size": rw.block_size, "max_mapnr": max_mapnr, "notes": notes,
                               "vmcoreinfo": vmcoreinfo}  # fmt: skip
    if rw.phys_base is not None:
        changes["phys_base"] = rw.phys_base
    if rw.utsname is not None:
        changes["utsname"] = utsname_record(rw.utsname)
    if rw.tv_sec is not None:
        changes["tv_sec"] = rw.tv_sec
    if rw.status is not None:
        changes["status"] = rw.status & ~int(COMPRESSION_FLAGS)
    codec = dump.compression if dump.compression in CODECS_BY_NAME else "zlib"
    result = write_kdump(tmp, dataclasses.replace(model, **changes), memory, codec=codec,
                         phys_base_from_vmcoreinfo=False, progress=progress)  # fmt: skip
    return result.size


def check_writable(path: str) -> None:
    """Refuse in-place changes to a read-only file (QEMU creates dumps 0400), even for root."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise UnsupportedError("not a regular file: cannot fix in place", path=path)
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        raise UnsupportedError("the file system is mounted read-only: use -o OUT on a writable one", path=path)
    if not st.st_mode & 0o222 or not os.access(path, os.W_OK):
        raise UnsupportedError(
            f"the file is read-only (mode {stat.S_IMODE(st.st_mode):04o}; QEMU creates dumps 0400): "
            "use -o OUT, or make it writable (chmod u+w) to fix it in place",
            path=path,
        )


def edit_rows(p: Plan, physical: PhysicalPlan | None) -> list[dict[str, Any]]:
    """One row {field, file_offset, dump_offset, old, new} per edit of ``p`` (``dump_offset`` None for stream edits)."""
    rows = []
    offsets = physical.file_offsets if physical is not None else {}
    for e in p.all_edits():
        stream = e in p.stream_edits
        file_offset = offsets.get(e.field, e.dump_offset)
        dump_offset = None if stream else e.dump_offset
        row = {"field": e.field, "file_offset": file_offset, "dump_offset": dump_offset}
        rows.append(row | {"old": e.old_value, "new": e.new_value})
    if p.rewrite_elf:
        rows.append({"field": "elf", "file_offset": 0, "dump_offset": 0, "old": "QEMU/other layout",
                     "new": p.rewrite_reason})  # fmt: skip
    if p.rewrite_kdump is not None:
        rows.append({"field": "kdump", "file_offset": 0, "dump_offset": 0, "old": "the whole file",
                     "new": f"rewritten: {p.rewrite_kdump.reason}"})  # fmt: skip
    return rows


__all__ = [
    "PhysicalPlan",
    "apply_in_place",
    "check_writable",
    "copy_and_patch",
    "edit_rows",
    "physical_writes",
    "rewrite_elf",
    "rewrite_kdump",
    "scan_flat_records",
]
