"""Fault injection for crash-safety tests: ``checkpoint(name)`` kills the process or fails a write on demand.

Armed by the environment variable ``KDFIX_FAULT``, read once at import (or by :func:`arm`)::

    KDFIX_FAULT="NAME[:N][=ACTION]"[,...]

``NAME`` is a checkpoint name, or ``*`` for every checkpoint; the fault fires at its ``N``-th hit
(1-based, default 1). ``ACTION`` is ``kill`` (SIGKILL this process, the default), ``enospc`` or ``eio``
(raise ``OSError`` with that errno, as a failing ``write(2)`` or ``fsync(2)`` would), or ``stop`` (SIGSTOP this
process, so that a test can act on it at a known point and then SIGCONT or SIGKILL it).
``KDFIX_FAULT_TRACE=PATH`` appends the name of every checkpoint passed to PATH (one per line), so a
test can count the checkpoints of a run and then kill at each one in turn.

Unarmed, ``checkpoint`` is one global lookup and a return: safe to call in per-page loops.
"""

from __future__ import annotations

import errno
import os
import signal

__all__ = ["ENV", "TRACE_ENV", "FaultSpec", "arm", "checkpoint", "disarm", "parse"]

ENV = "KDFIX_FAULT"
TRACE_ENV = "KDFIX_FAULT_TRACE"
ACTIONS = ("kill", "enospc", "eio", "stop")

FaultSpec = tuple[str, int, str]  # (name or "*", hit number, action)

_faults: list[FaultSpec] = []
_hits: dict[str, int] = {}
_trace: str | None = None
_armed = False


def parse(spec: str) -> list[FaultSpec]:
    """Parse a ``KDFIX_FAULT`` value; raises ValueError on a malformed entry."""
    out: list[FaultSpec] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        target, _, action = item.partition("=")
        name, _, count = target.partition(":")
        action = action or "kill"
        if action not in ACTIONS or not name:
            raise ValueError(f"{ENV}: bad entry {item!r} (NAME[:N][=kill|enospc|eio|stop])")
        hit = int(count) if count else 1
        if hit < 1:
            raise ValueError(f"{ENV}: hit number must be >= 1 in {item!r}")
        out.append((name, hit, action))
    return out


def arm(spec: str | None = None, trace: str | None = None) -> None:
    """(Re)arm from ``spec`` and ``trace`` (default: the environment) and reset the hit counters."""
    global _faults, _trace, _armed
    _faults = parse(os.environ.get(ENV, "") if spec is None else spec)
    _trace = os.environ.get(TRACE_ENV) or None if trace is None else trace
    _hits.clear()
    _armed = bool(_faults or _trace)


def disarm() -> None:
    """Turn every fault and the trace off."""
    arm("", "")


def checkpoint(name: str) -> None:
    """A named point where a crash or an I/O error can be injected (no-op unless armed)."""
    if not _armed:
        return
    _fire(name)


def _fire(name: str) -> None:
    if _trace:
        with open(_trace, "a") as f:
            f.write(name + "\n")
    _hits[name] = _hits.get(name, 0) + 1
    _hits["*"] = _hits.get("*", 0) + 1
    for target, hit, action in _faults:
        if target in (name, "*") and _hits[target] == hit:
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if action == "stop":
                os.kill(os.getpid(), signal.SIGSTOP)
                continue
            code = errno.ENOSPC if action == "enospc" else errno.EIO
            raise OSError(code, f"{os.strerror(code)} (injected at {name})")


arm()
