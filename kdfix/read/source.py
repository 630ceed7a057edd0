"""Positional byte sources: the Source protocol and FileSource (pread, no shared seek state)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Protocol, runtime_checkable

from kdfix.errors import FormatError, TruncatedError

MAX_HOLE_READ = 1 << 20  # unwritten bytes tolerated in one read_exact of a flattened stream


@runtime_checkable
class Source(Protocol):
    """Positional bytes of "the file"; ``read_at`` returns short only at EOF."""

    size: int

    def read_at(self, file_offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class FileSource:
    """A regular file read with ``os.pread``: safe to share between threads, never seeks."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below (no effect on files).
        self._fd: int | None = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(self._fd)
            if stat.S_ISDIR(st.st_mode) or stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):
                kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO or socket"
                raise FormatError(f"is {kind}, not a dump file", path=self.path)
            self.size = st.st_size
        except BaseException:
            os.close(self._fd)
            raise

    def fileno(self) -> int:
        """The descriptor, for a reader's tight loop of small preads (a flattened stream's record headers)."""
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        return self._fd

    def read_at(self, file_offset: int, length: int) -> bytes:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        if file_offset < 0 or length < 0:
            raise ValueError(f"bad read {file_offset:#x}+{length:#x}")
        length = max(0, min(length, self.size - file_offset))
        if length == 0:
            return b""
        data = os.pread(self._fd, length, file_offset)
        while len(data) < length:  # pread may return short on some filesystems
            more = os.pread(self._fd, length - len(data), file_offset + len(data))
            if not more:
                break
            data += more
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FileSource({self.path!r}, size={self.size:#x})"


class BytesSource:
    """A Source over an in-memory buffer (tests, small synthetic inputs)."""

    def __init__(self, data: bytes, path: str = "<bytes>") -> None:
        self._data = bytes(data)
        self.size = len(self._data)
        self.path = path

    def read_at(self, file_offset: int, length: int) -> bytes:
        if file_offset < 0 or length < 0:
            raise ValueError(f"bad read {file_offset:#x}+{length:#x}")
        return self._data[file_offset : file_offset + length]

    def close(self) -> None:
        pass


def source_path(source: Source) -> str | None:
    """The file name behind a source, if it has one."""
    return getattr(source, "path", None)


def read_exact(source: Source, file_offset: int, length: int, *, field: str) -> bytes:
    """Read exactly ``length`` bytes or raise TruncatedError naming ``field`` and its offset."""
    if file_offset < 0 or length < 0 or file_offset + length > source.size:
        raise TruncatedError(
            f"{length:#x} bytes needed, file ends at {source.size:#x}", field=field, offset=file_offset
        )
    # A flattened stream's reassembled size comes from untrusted record offsets: never allocate a large
    # read that is mostly bytes no record wrote (writers write every structure they reference).
    hole_bytes = getattr(source, "hole_bytes", None)
    if hole_bytes is not None and length > MAX_HOLE_READ and hole_bytes(file_offset, length) > MAX_HOLE_READ:
        raise TruncatedError(f"{length:#x} bytes needed, more than {MAX_HOLE_READ:#x} of them never written in the "
                             "flattened stream", field=field, offset=file_offset)  # fmt: skip
    data = source.read_at(file_offset, length)
    if len(data) != length:
        raise TruncatedError(f"short read ({len(data):#x} of {length:#x} bytes)", field=field, offset=file_offset)
    return data


def open_source(path: str | Path) -> FileSource:
    return FileSource(path)
