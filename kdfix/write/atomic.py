"""Crash-safe output: write a temp file beside the target, fsync, rename over it, fsync the directory."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator

from kdfix.errors import KdfixError, WriteError
from kdfix.faults import checkpoint

DEFAULT_MODE = 0o644


def output_mode(mode_from: str | os.PathLike[str] | None) -> int:
    """Permission bits for a new output: those of ``mode_from``, or 0644."""
    if mode_from is None:
        return DEFAULT_MODE
    try:
        return stat.S_IMODE(os.stat(mode_from).st_mode)
    except OSError:
        return DEFAULT_MODE


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, mode_from: str | os.PathLike[str] | None = None) -> Iterator[str]:
    """Yield a temp path beside ``path``; on success fsync it, rename it over ``path`` and fsync the directory.

    The result keeps the file mode of ``mode_from`` (or 0644). On any exception the temp file is
    removed and ``path`` is untouched; ENOSPC, EIO and other OSErrors become a one-line WriteError.
    """
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    mode = output_mode(mode_from)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".kdfix-tmp", dir=directory)
    except OSError as exc:
        raise WriteError(f"cannot create a file in {directory}: {exc.strerror or exc}", path=target) from exc
    os.close(fd)
    try:
        yield tmp
        _finish(tmp, target, directory, mode)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, KdfixError):
            raise WriteError(_reason(exc), path=target) from exc
        raise


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EIO:
        return "I/O error"
    return exc.strerror or str(exc)


def fsync_path(path: str) -> None:
    """fsync the file or directory at ``path`` (opened read-only for it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish(tmp: str, target: str, directory: str, mode: int) -> None:
    checkpoint("atomic.before_fsync")
    fsync_path(tmp)
    os.chmod(tmp, mode)
    checkpoint("atomic.before_rename")
    os.replace(tmp, target)
    checkpoint("atomic.after_rename")
    fsync_path(directory)
