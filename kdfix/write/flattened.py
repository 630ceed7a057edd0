"""Flattened output and its inverse: ``reassemble`` is the streaming equivalent of ``makedumpfile -R``.

Flattened output itself is ``write_kdump(..., flat=True)``, which writes through
:class:`kdfix.write.sink.FlattenedSink` (kdump-format.md §11).
"""

from __future__ import annotations

import os

from kdfix.errors import FormatError, TruncatedError
from kdfix.format.constants import FLAT_END_OFFSET, FLAT_END_SIZE, FLAT_HEADER_SIZE, FLAT_SIGNATURE, FLAT_TYPE
from kdfix.format.flattened import FLAT_HEADER_BOUND, FLAT_RECORD_BOUND, FLAT_RECORD_SIZE
from kdfix.write.sink import FileSink, Sink

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
            left = buf_size
            out = offset
            if isinstance(sink, FileSink):  # the kernel copies the payload: no pass through this process
                copied = sink.copy_from(fd, pos, out, left)
                pos, out, left = pos + copied, out + copied, left - copied
            while left:
                chunk = os.pread(fd, min(left, COPY_CHUNK), pos)
                if not chunk:
                    raise TruncatedError(
                        f"record payload needs {left} more bytes", field="record.buf_size", offset=pos, path=path
                    )
                sink.write_at(out, chunk)
                out += len(chunk)
                left -= len(chunk)
                pos += len(chunk)
            size = max(size, offset + buf_size)


def reassemble(flat_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> int:
    """Write the reassembled file of a flattened stream to ``out_path`` (``makedumpfile -R``); return its size."""
    sink = FileSink(out_path)
    try:
        size = reassemble_into(flat_path, sink)
        os.truncate(sink.path, size)
    finally:
        sink.close()
    return size
