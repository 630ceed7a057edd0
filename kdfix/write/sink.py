"""Output sinks: positional writes to a file, or a makedumpfile flattened stream (kdump-format.md §11)."""

from __future__ import annotations

import errno
import os
from typing import BinaryIO, Protocol, runtime_checkable

from kdfix.errors import WriteError
from kdfix.faults import checkpoint
from kdfix.format.constants import FLAT_END_OFFSET, FLAT_END_SIZE, FLAT_HEADER_SIZE, FLAT_SIGNATURE, FLAT_TYPE
from kdfix.format.constants import FLAT_VERSION as FLAT_STREAM_VERSION
from kdfix.format.flattened import FLAT_HEADER, FLAT_HEADER_BOUND, FLAT_RECORD, FLAT_RECORD_BOUND

# A flattened record grows by coalescing adjacent writes up to this many payload bytes.
MAX_RECORD_SIZE = 1 << 20


@runtime_checkable
class Sink(Protocol):
    """Where a writer puts bytes: ``write_at(file_offset, data)`` in the (reassembled) file, then ``close()``."""

    def write_at(self, file_offset: int, data: bytes | bytearray | memoryview) -> None: ...

    def close(self) -> None: ...


def output_path(target: str | os.PathLike[str] | Sink, sink: Sink) -> str:
    """The path a writer reports: the path it was given, else the caller's sink's ``path`` ('' if it has none)."""
    if isinstance(target, Sink):
        return str(getattr(sink, "path", "") or "")
    return os.fspath(target)


def output_size(sink: Sink, default: int) -> int:
    """Bytes a writer reports: a flattened stream's length, else the sink's file size, else ``default``."""
    value = getattr(sink, "stream_size", None) or getattr(sink, "size", None)
    return default if value is None else int(value)


def write_error(exc: OSError, path: str | os.PathLike[str] | None) -> WriteError:
    """Turn an OSError (ENOSPC, EIO, EACCES …) into a one-line WriteError."""
    reason = exc.strerror or str(exc)
    return WriteError(f"cannot write: {reason}", path=str(path) if path is not None else None)


def flat_header() -> bytes:
    """The 4096-byte flattened-stream header."""
    record = FLAT_HEADER.make(signature=FLAT_SIGNATURE, type=FLAT_TYPE, version=FLAT_STREAM_VERSION)
    return FLAT_HEADER_BOUND.pack(record).ljust(FLAT_HEADER_SIZE, b"\0")


def flat_record_header(file_offset: int, size: int) -> bytes:
    """The ``{BE offset, BE size}`` header of one flattened record."""
    return FLAT_RECORD_BOUND.pack(FLAT_RECORD.make(offset=file_offset, buf_size=size))


FLAT_END_MARKER = FLAT_RECORD_BOUND.pack(FLAT_RECORD.make(offset=FLAT_END_OFFSET, buf_size=FLAT_END_SIZE))


_NO_COPY_RANGE = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM}


def open_emptied(path: str) -> int:
    """Open ``path`` for writing, created or emptied, and return the descriptor.

    Truncated only when not empty already (an atomic temp file is empty): on ext4 truncating even an empty file
    marks it for block allocation and write-out at close, and the close then waits for the disk.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size:
            os.ftruncate(fd, 0)
    except OSError:
        os.close(fd)
        raise
    return fd


class FileSink:
    """Positional writes (pwrite) into a regular file; unwritten ranges stay holes that read as zero."""

    def __init__(self, path: str | os.PathLike[str], *, truncate: bool = True) -> None:
        self.path = os.fspath(path)
        try:
            fd = open_emptied(self.path) if truncate else os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_error(exc, self.path) from exc
        self._fd: int | None = fd
        self.size = 0  # length of the file so far (highest byte written + 1)

    def write_at(self, file_offset: int, data: bytes | bytearray | memoryview) -> None:
        if self._fd is None:
            raise WriteError("sink is closed", path=self.path)
        view = memoryview(data)
        pos = 0
        try:
            checkpoint("sink.write")
            while pos < len(view):
                pos += os.pwrite(self._fd, view[pos:], file_offset + pos)
        except OSError as exc:
            raise write_error(exc, self.path) from exc
        self.size = max(self.size, file_offset + len(view))

    def fileno(self) -> int:
        if self._fd is None:
            raise WriteError("sink is closed", path=self.path)
        return self._fd

    def copy_from(self, src_fd: int, src_offset: int, file_offset: int, length: int) -> int:
        """Copy ``length`` bytes of the file ``src_fd`` from ``src_offset`` to ``file_offset`` inside the kernel
        (copy_file_range); returns how many were copied: fewer when the file systems cannot (the caller copies
        the rest through write_at) or at the source's end."""
        if self._fd is None:
            raise WriteError("sink is closed", path=self.path)
        copy = getattr(os, "copy_file_range", None)
        done = 0
        try:
            checkpoint("sink.write")
            while copy is not None and done < length:
                n = copy(src_fd, self._fd, length - done, src_offset + done, file_offset + done)
                if n <= 0:
                    break
                done += n
        except OSError as exc:
            if exc.errno not in _NO_COPY_RANGE:
                raise write_error(exc, self.path) from exc
        self.size = max(self.size, file_offset + done) if done else self.size
        return done

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as exc:
                raise write_error(exc, self.path) from exc

    def __enter__(self) -> FileSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FlattenedSink:
    """Emits a makedumpfile flattened stream: header, ``{offset, size}`` records, end marker.

    Consecutive writes (each starting where the previous ended) are coalesced into one record of at
    most ``MAX_RECORD_SIZE`` bytes. ``target`` is a path or a writable binary stream (e.g. stdout).
    """

    def __init__(self, target: str | os.PathLike[str] | BinaryIO, *, max_record_size: int = MAX_RECORD_SIZE) -> None:
        if isinstance(target, str | os.PathLike):
            self.path: str | None = os.fspath(target)
            try:
                self._out: BinaryIO = open(self.path, "wb")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise write_error(exc, self.path) from exc
            self._owns = True
        else:
            self.path = getattr(target, "name", None) if isinstance(getattr(target, "name", None), str) else None
            self._out = target
            self._owns = False
        self._max = max_record_size
        self._start = -1
        self._pending = bytearray()
        self._closed = False
        self.size = 0  # length of the reassembled file
        self.stream_size = 0  # bytes of the flattened stream
        self.records = 0
        self._emit(flat_header())

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        try:
            checkpoint("sink.write")
            self._out.write(data)
        except OSError as exc:
            raise write_error(exc, self.path) from exc
        self.stream_size += len(data)

    def _flush(self) -> None:
        if self._pending:
            self._emit(flat_record_header(self._start, len(self._pending)))
            self._emit(self._pending)
            self.records += 1
            self._pending = bytearray()
        self._start = -1

    def write_at(self, file_offset: int, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise WriteError("sink is closed", path=self.path)
        view = memoryview(data)
        if not len(view):
            return
        if file_offset < 0:
            raise WriteError(f"negative file offset {file_offset}", path=self.path)
        self.size = max(self.size, file_offset + len(view))
        if self._pending and file_offset != self._start + len(self._pending):
            self._flush()
        pos = 0
        while pos < len(view):
            if not self._pending:
                self._start = file_offset + pos
            take = min(self._max - len(self._pending), len(view) - pos)
            self._pending += view[pos : pos + take]
            pos += take
            if len(self._pending) >= self._max:
                self._flush()

    def close(self) -> None:
        if self._closed:
            return
        self._flush()
        self._emit(FLAT_END_MARKER)
        self._closed = True
        try:
            self._out.flush()
            if self._owns:
                self._out.close()
        except OSError as exc:
            raise write_error(exc, self.path) from exc

    def __enter__(self) -> FlattenedSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemorySink:
    """Collects writes in a bytearray (small outputs and tests); ``getvalue()`` is the file."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.size = 0

    def write_at(self, file_offset: int, data: bytes | bytearray | memoryview) -> None:
        end = file_offset + len(data)
        if end > len(self.buffer):
            self.buffer.extend(bytes(end - len(self.buffer)))
        self.buffer[file_offset:end] = data
        self.size = max(self.size, end)

    def close(self) -> None:
        pass

    def getvalue(self) -> bytes:
        return bytes(self.buffer)
