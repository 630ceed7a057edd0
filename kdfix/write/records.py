"""Record output: every write of a dump as one positioned record, to a flattened stream (one record per write,
never coalesced) or in place to a raw file (kdump-format.md §11; qemu-dumps.md §1-§2).

Unlike :class:`kdfix.write.sink.FlattenedSink`, which coalesces adjacent writes, each ``record`` call here is
exactly one record, so a producer that must reproduce another tool's record sequence (QEMU) controls it.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from kdfix.errors import WriteError
from kdfix.format.flattened import FLAT_RECORD_BOUND
from kdfix.write.sink import FLAT_END_MARKER, FileSink, flat_header, write_error
from kdfix.write.writeback import Writeout


class RecordOut(Protocol):
    """Where a dump's records go, in the order the producer makes them."""

    def record(self, file_offset: int, data: bytes | bytearray | memoryview) -> None: ...

    def close(self) -> None: ...


_FLAT_RECORD_HEADER = FLAT_RECORD_BOUND.struct.pack  # (offset, buf_size) in one call, for the hot loop
_WRITEBACK_EVERY = 8 << 20  # start the output's write-out every 8 MiB


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
        self._writeout = Writeout(self._out.fileno(), _WRITEBACK_EVERY)
        self._unsynced = 0  # bytes written since write-out was last started

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
        if self._unsynced >= _WRITEBACK_EVERY and self._writeout.enabled:
            self._writeback()

    def _writeback(self) -> None:
        """Hand the buffer to the kernel and start (not wait for) its write-out (kdfix.write.writeback)."""
        try:
            self._out.flush()
        except OSError as exc:
            raise write_error(exc, self.path) from exc
        self._writeout.advance(self._out.tell())
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
