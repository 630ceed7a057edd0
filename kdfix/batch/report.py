"""The batch report: one JSON line per file, flushed as each finishes; it doubles as the --resume journal.

Every line is an object with at least ``path`` (relative to the walked root), ``status``
(fixed | ok | skipped | failed), ``edits``, ``error``, ``size_bytes`` and ``seconds``. A file is
written only once its outcome is final, so a killed run leaves a report whose complete lines are
exactly the finished files; a last line cut short by the kill is dropped on resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from kdfix.errors import WriteError

STATUSES = ("fixed", "ok", "skipped", "failed")
_FSYNC_INTERVAL = 1.0  # seconds between fsyncs of the report (every line is flushed)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The final result for one file (or split set) of a batch, as written to the report."""

    path: str
    status: str
    kind: str | None = None
    files: tuple[str, ...] = ()
    edits: tuple[dict[str, Any], ...] = ()
    error: str | None = None
    messages: tuple[str, ...] = ()
    size_bytes: int = 0
    output: str | None = None
    dry_run: bool = False
    started: float = 0.0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record.update(record.pop("extra"))
        return record


def read_report(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Finished records by relative path (the last line for a path wins); unparsable lines are ignored."""
    done: dict[str, dict[str, Any]] = {}
    try:
        with open(path, "rb") as fh:
            for line in fh:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict) and isinstance(record.get("path"), str) and (
                        record.get("status") in STATUSES):  # fmt: skip
                        done[record["path"]] = record
    except FileNotFoundError:
        pass
    return done


def _drop_partial_line(path: str) -> None:
    """Truncate a report after its last newline (the tail a kill cut short)."""
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        pos = size
        while pos > 0:
            step = min(65536, pos)
            fh.seek(pos - step)
            chunk = fh.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                cut = pos - step + nl + 1
                if cut != size:
                    fh.truncate(cut)
                return
            pos -= step
        fh.truncate(0)


class ReportWriter:
    """Appends outcome lines to the report, flushing each and fsyncing at most once a second (and on close)."""

    def __init__(self, path: str | os.PathLike[str], *, append: bool) -> None:
        self.path = os.fspath(path)
        try:
            if append and os.path.exists(self.path):
                _drop_partial_line(self.path)
            self._fh = open(self.path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise WriteError(f"cannot write the report: {exc.strerror or exc}", path=self.path) from exc
        self._synced = time.monotonic()

    def write(self, outcome: Outcome) -> None:
        line = json.dumps(outcome.to_json(), sort_keys=False, default=str) + "\n"
        try:
            self._fh.write(line)
            self._fh.flush()
            if time.monotonic() - self._synced > _FSYNC_INTERVAL:
                os.fsync(self._fh.fileno())
                self._synced = time.monotonic()
        except OSError as exc:
            raise WriteError(f"cannot write the report: {exc.strerror or exc}", path=self.path) from exc

    def close(self) -> None:
        if self._fh.closed:
            return
        with contextlib.suppress(OSError):
            self._fh.flush()
            os.fsync(self._fh.fileno())
        self._fh.close()

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(slots=True)
class Summary:
    """Counts, bytes and reasons per status over the outcomes of one run (resumed files counted apart)."""

    counts: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    resumed: int = 0
    resumed_failed: int = 0
    interrupted: bool = False
    not_done: int = 0
    seconds: float = 0.0

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.status] += 1
        self.bytes[outcome.status] += outcome.size_bytes
        if outcome.status in ("skipped", "failed"):
            self.reasons[(outcome.status, reason_class(outcome.error or ""))] += 1
        if outcome.status == "failed":
            self.failures.append((outcome.path, outcome.error or ""))

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": {s: self.counts[s] for s in STATUSES},
            "bytes": {s: self.bytes[s] for s in STATUSES},
            "reasons": [{"status": s, "reason": r, "count": n} for (s, r), n in sorted(self.reasons.items())],
            "failures": [{"path": p, "error": e} for p, e in self.failures],
            "resumed": self.resumed,
            "resumed_failed": self.resumed_failed,
            "interrupted": self.interrupted,
            "not_done": self.not_done,
            "seconds": round(self.seconds, 3),
        }


def reason_class(error: str) -> str:
    """A reason without the per-file part (path prefix, hex offsets), so that equal causes group together."""
    words = error.split(": ")
    if len(words) > 1 and ("/" in words[0] or os.sep in words[0]):
        words = words[1:]
    return ": ".join(words)[:200]
