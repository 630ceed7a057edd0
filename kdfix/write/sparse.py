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
    for start, end in data_extents(src_fd, size):
        for a in range(start, end, _CHUNK):
            checkpoint("copy.extent")
            b = min(end, a + _CHUNK)
            _copy_range(src_fd, dst_fd, a, b)
            copied += b - a
            if progress is not None:
                progress(b, size)
    os.ftruncate(dst_fd, size)  # a trailing hole
    if progress is not None:
        progress(size, size)
    return copied


__all__ = ["copy_sparse", "data_extents"]
