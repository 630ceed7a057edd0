"""Early write-out of a large output: the disk writes the copy while the copy is still being made.

Every output is fsynced before it is published (kdfix.write.atomic). For a copy of a GiB or more that fsync
would wait for the whole file's write-out after the copy. Asking the kernel to start writing each finished
stretch (``sync_file_range(SYNC_FILE_RANGE_WRITE)``: it starts the write-out and waits for nothing) overlaps
the two, so the final fsync finds little left. Durability still comes from that fsync alone; where the call is
missing (not Linux) or refused, this does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable

STEP = 64 << 20  # bytes written between two requests: few calls, yet the disk starts early
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start write-out of dirty pages not already under write-out

_start: Callable[[int, int, int], bool] | None = None


def _load() -> Callable[[int, int, int], bool]:
    """The libc call, loaded on first use (ctypes is not imported by commands that never copy much)."""
    try:
        import ctypes

        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return lambda fd, offset, length: False
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int

    def start(fd: int, offset: int, length: int) -> bool:
        return bool(call(fd, offset, length, _SYNC_FILE_RANGE_WRITE) == 0)

    return start


def start_writeout(fd: int, offset: int, length: int) -> bool:
    """Ask the kernel to start writing ``fd[offset, offset + length)`` to disk; False if it cannot be asked."""
    global _start
    if _start is None:
        _start = _load() if os.uname().sysname == "Linux" else (lambda fd, offset, length: False)
    return _start(fd, offset, length)


class Writeout:
    """Paces :func:`start_writeout` behind a writer: ``advance(upto)`` after writing below ``upto``."""

    def __init__(self, fd: int, step: int = STEP) -> None:
        self.fd, self.step, self.done = fd, step, 0
        self.enabled = True

    def advance(self, upto: int) -> None:
        if self.enabled and upto - self.done >= self.step:
            self.enabled = start_writeout(self.fd, self.done, upto - self.done)
            self.done = upto

    def finish(self) -> None:
        """Start the write-out of everything after the last request, from a thread: the request itself waits
        while ext4 allocates the blocks and the disk queue fills, so the caller verifies the copy meanwhile
        instead of waiting in its fsync. The thread works on its own descriptor (the caller may close its own)."""
        if not self.enabled:
            return
        import threading

        fd, offset = os.dup(self.fd), self.done

        def run() -> None:
            try:
                start_writeout(fd, offset, 0)  # length 0: to the end of the file
            finally:
                os.close(fd)

        threading.Thread(target=run, name="kdfix-writeout", daemon=True).start()


__all__ = ["STEP", "Writeout", "start_writeout"]
