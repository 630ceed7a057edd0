"""Flattened output and its inverse: ``reassemble`` is the streaming equivalent of ``makedumpfile -R``.

Flattened output itself is ``write_kdump(..., flat=True)``, which writes through
:class:`kdfix.write.sink.FlattenedSink` (kdump-format.md §11).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from kdfix.errors import FormatError, TruncatedError
from kdfix.faults import checkpoint
from kdfix.format.constants import FLAT_END_OFFSET, FLAT_END_SIZE, FLAT_HEADER_SIZE, FLAT_SIGNATURE, FLAT_TYPE
from kdfix.format.flattened import FLAT_HEADER_BOUND, FLAT_RECORD_BOUND, FLAT_RECORD_SIZE
from kdfix.write.sink import FileSink, Sink
from kdfix.write.writeback import Writeout

COPY_CHUNK = 1 << 20


def is_flattened(head: bytes) -> bool:
    """True if ``head`` starts a makedumpfile flattened stream (signature and type; kdump-format.md §11)."""
    if len(head) < FLAT_HEADER_BOUND.size:
        return False
    hdr = FLAT_HEADER_BOUND.unpack(head)
    return hdr.signature.rstrip(b"\0") == FLAT_SIGNATURE and hdr.type == FLAT_TYPE


def reassemble_into(flat_path: str | os.PathLike[str], sink: Sink) -> int:
    """Replay the records of a flattened file into ``sink`` (last write wins); return the reassembled size."""
    path = os.fspath(flat_path)
    size = 0
    with open(path, "rb", buffering=0) as f:
        head = f.read(FLAT_HEADER_SIZE)
        if not is_flattened(head):
            raise FormatError(
                "not a makedumpfile flattened stream", field="makedumpfile_header.signature", offset=0, path=path
            )
        if len(head) < FLAT_HEADER_SIZE:
            raise TruncatedError("flattened header shorter than 4096 bytes", offset=0, path=path)
        pos = FLAT_HEADER_SIZE
        fd = f.fileno()
        unpack = FLAT_RECORD_BOUND.struct.unpack  # (offset, buf_size)
        writeout = Writeout(sink.fileno()) if isinstance(sink, FileSink) else None
        while True:
            raw = os.pread(fd, FLAT_RECORD_SIZE, pos)
            if len(raw) < FLAT_RECORD_SIZE:
                raise TruncatedError(
                    "flattened stream ends without its end marker", field="record", offset=pos, path=path
                )
            offset, buf_size = unpack(raw)
            if offset < 0 or buf_size <= 0:
                if (offset, buf_size) != (FLAT_END_OFFSET, FLAT_END_SIZE):
                    raise FormatError(
                        f"bad record {{{offset}, {buf_size}}}", field="record.offset", offset=pos, path=path
                    )
                return size
            pos += FLAT_RECORD_SIZE
            _copy_payload(fd, pos, sink, offset, buf_size, path)
            pos += buf_size
            size = max(size, offset + buf_size)
            if writeout is not None:
                writeout.advance(size)


def _copy_payload(fd: int, pos: int, sink: Sink, out: int, left: int, path: str) -> None:
    """Copy ``left`` bytes of the stream ``fd`` at ``pos`` to ``out`` in ``sink``: by the kernel into a file
    (no pass through this process), else, or for what the kernel did not copy, through a buffer."""
    if isinstance(sink, FileSink):
        copied = sink.copy_from(fd, pos, out, left)
        pos, out, left = pos + copied, out + copied, left - copied
    while left:
        chunk = os.pread(fd, min(left, COPY_CHUNK), pos)
        if not chunk:
            raise TruncatedError(f"record payload needs {left} more bytes", field="record.buf_size", offset=pos,
                                 path=path)  # fmt: skip
        sink.write_at(out, chunk)
        out += len(chunk)
        left -= len(chunk)
        pos += len(chunk)


def reassemble_extents(flat_path: str | os.PathLike[str], extents: Iterable[tuple[int, int, int]], size: int,
                       out_path: str | os.PathLike[str]) -> int:  # fmt: skip
    """``reassemble`` from the stream's extent index, already built by its reader (FlattenedSource.iter_extents:
    disjoint (logical start, logical end, stream offset), ascending; the last write of every byte): the record
    headers are not read again, the kernel copies each extent, and the disk writes the file out as it grows
    (kdfix.write.writeback); returns ``size``, the reassembled file's size."""
    path = os.fspath(flat_path)
    sink = FileSink(out_path)
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            out_fd = sink.fileno()
            writeout = Writeout(out_fd)
            copy = getattr(os, "copy_file_range", None)
            for start, end, src in extents:
                checkpoint("sink.write")
                try:  # the common case, inline: one kernel copy of the whole extent
                    done = copy(fd, out_fd, end - start, src, start) if copy is not None else 0
                except OSError:
                    done = 0  # not across these files: the general path copies it (and names any error)
                if done != end - start:
                    _copy_payload(fd, src + done, sink, start + done, end - start - done, path)
                writeout.advance(end)
            sink.size = max(sink.size, size)
        finally:
            os.close(fd)
        os.truncate(sink.path, size)
        writeout.finish()
    finally:
        sink.close()
    return size


def reassemble(flat_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> int:
    """Write the reassembled file of a flattened stream to ``out_path`` (``makedumpfile -R``); return its size."""
    sink = FileSink(out_path)
    try:
        size = reassemble_into(flat_path, sink)
        os.truncate(sink.path, size)
    finally:
        sink.close()
    return size
