"""Copy a file keeping its holes: only the data extents (SEEK_DATA/SEEK_HOLE) are read and written.

A sparse dump (a guest with a large unpopulated range, written with holes) stays sparse in every copy kdfix
makes, and the copy takes time in proportion to its data, not its apparent size.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator

from kdfix.faults import checkpoint
from kdfix.write.sink import FileSink, write_error
from kdfix.write.writeback import Writeout

Progress = Callable[[int, int], None]
_CHUNK = 64 << 20


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each data extent of ``fd`` below ``size``; the whole file where holes cannot be asked for."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from pos to the end
                return
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield pos, size
                return
            raise
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        pos = end


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    pos = start
    while pos < end:
        n = 0
        with contextlib.suppress(OSError):
            n = os.copy_file_range(src, dst, min(end - pos, _CHUNK), pos, pos)
        if n <= 0:  # not supported across these files, or a short read: plain copy of this piece
            data = os.pread(src, min(end - pos, 8 << 20), pos)
            if not data:
                raise OSError(errno.EIO, "the source ended early")
            view, done = memoryview(data), 0
            while done < len(view):
                done += os.pwrite(dst, view[done:], pos + done)
            n = len(data)
        pos += n


def copy_sparse(src_fd: int, dst_fd: int, size: int, progress: Progress | None = None) -> int:
    """Copy the first ``size`` bytes of ``src_fd`` to ``dst_fd`` (empty), holes kept; returns bytes of data copied."""
    copied = 0
    writeout = Writeout(dst_fd)  # the disk writes the copy as it grows: the caller's fsync finds little left
    for start, end in data_extents(src_fd, size):
        for a in range(start, end, _CHUNK):
            checkpoint("copy.extent")
            b = min(end, a + _CHUNK)
            _copy_range(src_fd, dst_fd, a, b)
            copied += b - a
            writeout.advance(b)
            if progress is not None:
                progress(b, size)
    os.ftruncate(dst_fd, size)  # a trailing hole
    writeout.finish()
    if progress is not None:
        progress(size, size)
    return copied


def copy_extents(src_fd: int, start: int, length: int, dst_fd: int, dst_start: int,
                 extents: list[tuple[int, int]]) -> int:  # fmt: skip
    """Copy the data of ``src_fd[start, start+length)`` to ``dst_fd`` at ``dst_start``, skipping holes
    (``extents``: the source's data extents, from :func:`data_extents`); returns the data bytes copied."""
    copied = 0
    for a, b in extents:
        a, b = max(a, start), min(b, start + length)
        pos = a
        while pos < b:
            checkpoint("copy.extent")
            n = min(b - pos, _CHUNK)
            done = 0
            with contextlib.suppress(OSError):
                done = os.copy_file_range(src_fd, dst_fd, n, pos, dst_start + pos - start)
            if done <= 0:
                data = os.pread(src_fd, min(n, 8 << 20), pos)
                if not data:
                    raise OSError(errno.EIO, "the source ended early")
                view, w = memoryview(data), 0
                while w < len(view):
                    w += os.pwrite(dst_fd, view[w:], dst_start + pos - start + w)
                done = len(data)
            pos += done
            copied += done
    return copied


class SparseFileSink(FileSink):
    """A FileSink that leaves all-zero writes as holes (the file is extended to its full size on close)."""

    _zero = b""

    def write_at(self, file_offset: int, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if len(self._zero) != n:
            self._zero = bytes(n)
        if (data.tobytes() if isinstance(data, memoryview) else data) == self._zero:
            self.size = max(self.size, file_offset + n)
            return
        super().write_at(file_offset, data)

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, self.size)
            except OSError as exc:
                raise write_error(exc, self.path) from exc
        super().close()


__all__ = ["SparseFileSink", "copy_extents", "copy_sparse", "data_extents"]
