"""Crash-safe output: write a temp file beside the target, fsync, rename over it, fsync the directory.

The output takes the metadata of the file it is made from (``mode_from``): permission bits always, and owner,
group and extended attributes (POSIX ACLs are the ``system.posix_acl_*`` attributes) where the process may set
them, so that a dump rewritten as root still belongs to, and is readable by, whoever owned it.
"""

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


def copy_metadata(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Give ``dst`` the owner, group, mode and extended attributes of ``src``, as far as this process may.

    Owner and group: both if allowed (root), else the group alone (a member may), else left as they are.
    Extended attributes the process may not set (``trusted.*`` as a user, read-only ``security.*``) are skipped.
    """
    st = os.stat(src)
    now = os.stat(dst)
    if (now.st_uid, now.st_gid) != (st.st_uid, st.st_gid):
        try:
            os.chown(dst, st.st_uid, st.st_gid)
        except OSError:
            with contextlib.suppress(OSError):
                os.chown(dst, -1, st.st_gid)
    os.chmod(dst, stat.S_IMODE(st.st_mode))  # after chown, which may clear set-id bits
    if not hasattr(os, "listxattr"):
        return
    try:
        names = os.listxattr(src)
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):
            os.setxattr(dst, name, os.getxattr(src, name))


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, mode_from: str | os.PathLike[str] | None = None) -> Iterator[str]:
    """Yield a temp path beside ``path``; on success fsync it, rename it over ``path`` and fsync the directory.

    The result keeps the metadata of ``mode_from`` (:func:`copy_metadata`; without it, mode 0644). On any
    exception the temp file is removed and ``path`` is untouched; ENOSPC, EIO and other OSErrors become a
    one-line WriteError naming the file written and what was left untouched.
    """
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    existed = os.path.lexists(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".kdfix-tmp", dir=directory)
    except OSError as exc:
        raise WriteError(f"cannot create a file in {directory}: {exc.strerror or exc}", path=target) from exc
    os.close(fd)
    try:
        yield tmp
        _finish(tmp, target, directory, mode_from)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        kept = "kept its old content" if existed else "was not created"
        if isinstance(exc, OSError) and not isinstance(exc, KdfixError):
            source = f"; {os.fspath(mode_from)} is untouched" if mode_from is not None else ""
            raise WriteError(f"writing failed: {reason(exc)}; the partial temp file was removed, {target} {kept}"
                             f"{source}", path=target) from exc  # fmt: skip
        if isinstance(exc, KdfixError) and exc.path == tmp:  # e.g. the recheck of what was written: the temp file
            exc.path = target  # is gone, so the error names the output, which the user knows
            exc.message = f"{exc.message.replace(tmp, target)}; {target} {kept}"
        raise


def reason(exc: OSError) -> str:
    """A short reason for a failed write ("no space left on device", "I/O error", ...)."""
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    if exc.errno == errno.EIO:
        return "I/O error"
    return exc.strerror or str(exc)


_reason = reason


def fsync_path(path: str) -> None:
    """fsync the file or directory at ``path`` (opened read-only for it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish(tmp: str, target: str, directory: str, mode_from: str | os.PathLike[str] | None) -> None:
    checkpoint("atomic.before_fsync")
    if mode_from is not None and os.path.exists(mode_from):
        copy_metadata(mode_from, tmp)
    else:
        os.chmod(tmp, output_mode(mode_from))
    fsync_path(tmp)
    checkpoint("atomic.before_rename")
    os.replace(tmp, target)
    checkpoint("atomic.after_rename")
    fsync_path(directory)
