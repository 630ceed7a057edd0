"""One writer at a time: an exclusive advisory lock (flock) on a dump for a whole read, plan, apply and verify.

Every command that modifies a dump in place (``fix --in-place``, ``undo``, ``batch --in-place``) holds
``dump_lock(path)`` from before it first reads the dump until its result is verified; the lock also guards the
dump's journal (``DUMP.kdfix-undo``) and kept original (``DUMP.kdfix-orig``), which are only ever changed under
it. Commands that only read a dump to write another file (``fix -o``, ``convert``, ``batch --out-dir``) hold a
shared lock, so they never copy a dump that an in-place fix is half-way through.

The lock is on the dump's inode. A whole-file replacement (an ELF fixed in place) renames a new inode over the
path, so after taking the lock the path is checked to still name the locked inode, and the lock is taken again
otherwise. The kernel drops a flock when its holder dies (kill -9 included): a crash never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Iterator, Sequence

from kdfix.errors import KdfixError

log = logging.getLogger(__name__)


class LockBusyError(KdfixError):
    """Another process holds the lock and the caller asked not to wait."""


def _holders(st: os.stat_result) -> list[int]:
    """Pids /proc/locks lists for the inode (best effort, for the message only)."""
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: list[int] = []
    with contextlib.suppress(OSError), open("/proc/locks", encoding="ascii", errors="replace") as fh:
        for line in fh:
            fields = line.split()
            if "FLOCK" in fields and want in fields:
                with contextlib.suppress(ValueError, IndexError):
                    pids.append(int(fields[fields.index(want) - 1]))
    return sorted(set(p for p in pids if p != os.getpid()))


def _lock_one(path: str, *, shared: bool, wait: bool) -> int:
    """Open ``path`` and flock it; returns the fd, which names the inode the path names now."""
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    for _ in range(100):  # each retry means another writer replaced the file meanwhile
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise KdfixError(f"cannot open to lock it: {exc.strerror or exc}", path=path) from exc
        try:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                st = os.fstat(fd)
                held = _holders(st)
                who = f" (pid {', '.join(map(str, held))})" if held else ""
                if not wait:
                    raise LockBusyError(f"another kdfix{who} is using this dump; not waiting (--no-wait)",
                                        path=path) from None  # fmt: skip
                log.warning("kdfix: %s: waiting for another kdfix%s to finish with this dump", path, who)
                fcntl.flock(fd, mode)
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
            st = os.fstat(fd)
            if now is not None and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the path names another inode now: lock that one
        if now is None:
            raise KdfixError("the dump was removed while waiting for its lock", path=path)
    raise KdfixError("the dump keeps being replaced; could not lock it", path=path)


@contextlib.contextmanager
def dump_lock(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, shared: bool = False,
              wait: bool = True) -> Iterator[None]:  # fmt: skip
    """Hold an exclusive (or ``shared``) flock on every dump of ``paths`` (symlinks resolved), in a fixed order.

    ``wait=False`` raises :class:`LockBusyError` at once (one line) if another process holds a conflicting lock.
    Reentrant within a process (a fix that undoes itself on a failed verification keeps its lock): a dump this
    process already holds is not locked again (two flocks of one process on one file would block each other).
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    real = sorted({os.path.realpath(os.fspath(p)) for p in items})  # one order: two set-lockers cannot deadlock
    fds: list[tuple[str, int]] = []
    try:
        for p in real:
            if p in _held:
                continue
            fds.append((p, _lock_one(p, shared=shared, wait=wait)))
            _held.add(p)
        yield
    finally:
        for p, fd in reversed(fds):
            _held.discard(p)
            os.close(fd)


_held: set[str] = set()  # real paths this process holds a lock on


__all__ = ["LockBusyError", "dump_lock"]
