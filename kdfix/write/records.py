"""Record output: every write of a dump as one positioned record, to a flattened stream (one record per write,
never coalesced) or in place to a raw file (kdump-format.md §11; qemu-dumps.md §1-§2).

Unlike :class:`kdfix.write.sink.FlattenedSink`, which coalesces adjacent writes, each ``record`` call here is
exactly one record, so a producer that must reproduce another tool's record sequence (QEMU) controls it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Protocol

from kdfix.errors import WriteError
from kdfix.format.flattened import FLAT_RECORD_BOUND
from kdfix.write.sink import FLAT_END_MARKER, FileSink, flat_header, write_error


class RecordOut(Protocol):
    """Where a dump's records go, in the order the producer makes them."""

    def record(self, file_offset: int, data: bytes | bytearray | memoryview) -> None: ...

    def close(self) -> None: ...


_FLAT_RECORD_HEADER = FLAT_RECORD_BOUND.struct.pack  # (offset, buf_size) in one call, for the hot loop
_WRITEBACK_EVERY = 8 << 20  # start writing back the output every 8 MiB


def _writeback_starter() -> Callable[[int, int, int, int], int] | None:
    """libc ``sync_file_range`` (Linux), used with SYNC_FILE_RANGE_WRITE to start writing back what is already
    written, so the final fsync of the output (kdfix.write.atomic) has little left to wait for; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


class FlatRecordOut:
    """One flattened record per QEMU write, never coalesced (kdump-format.md §11)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._out = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise write_error(exc, path) from exc
        self.records = 0
        self.size = 0
        self._write(flat_header())
        self._start_writeback = _writeback_starter()
        self._unsynced = 0  # bytes written since writeback was last started
        self._synced = 0  # stream offset up to which writeback was started

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._out.write(data)
        except OSError as exc:
            raise write_error(exc, self.path) from exc

    def record(self, file_offset: int, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        try:
            self._out.write(_FLAT_RECORD_HEADER(file_offset, size))
            self._out.write(data)
        except OSError as exc:
            raise write_error(exc, self.path) from exc
        self.records += 1
        if file_offset + size > self.size:
            self.size = file_offset + size
        self._unsynced += size + 16
        if self._unsynced >= _WRITEBACK_EVERY and self._start_writeback is not None:
            self._writeback()

    def _writeback(self) -> None:
        """Hand the buffer to the kernel and start (not wait for) its writeback; advisory, errors are ignored."""
        try:
            self._out.flush()
        except OSError as exc:
            raise write_error(exc, self.path) from exc
        end = self._out.tell()
        self._start_writeback(self._out.fileno(), self._synced, end - self._synced, 2)  # type: ignore[misc]
        self._synced = end
        self._unsynced = 0

    def close(self) -> None:
        self._write(FLAT_END_MARKER)
        try:
            self._out.close()
        except OSError as exc:
            raise write_error(exc, self.path) from exc

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._out.close()


class RawRecordOut:
    """QEMU >= 8.2 ``kdump-raw-*``: the same records written in place (holes stay sparse)."""

    def __init__(self, path: str) -> None:
        self._sink = FileSink(path)
        self.records = 0
        self.size = 0

    def record(self, file_offset: int, data: bytes | bytearray | memoryview) -> None:
        self._sink.write_at(file_offset, data)
        self.records += 1
        self.size = max(self.size, file_offset + len(data))

    def close(self) -> None:
        self._sink.close()

    def abort(self) -> None:
        with contextlib.suppress(WriteError):
            self._sink.close()
