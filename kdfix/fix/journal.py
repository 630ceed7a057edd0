"""The undo journal of an in-place fix: written and fsynced beside the dump before its first byte changes.

A journal (``DUMP.kdfix-undo``, JSON) records the file's original size and, for every write in order, the file
offset and the bytes it replaced. ``undo(path)`` replays the writes backwards, truncates the appended data away,
checks the restored bytes against the recorded checksum, and removes the journal.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from kdfix.errors import JournalError
from kdfix.faults import checkpoint
from kdfix.write.atomic import fsync_path

JOURNAL_SUFFIX = ".kdfix-undo"
JOURNAL_VERSION = 1
ORIGINAL_SUFFIX = ".kdfix-orig"  # a hard link to the original of a dump replaced whole (an ELF fixed in place)


@dataclass(frozen=True, slots=True)
class Write:
    """One positional write of an in-place fix: ``old`` is what the file held at ``file_offset`` before it."""

    file_offset: int
    old: bytes
    new: bytes


def journal_path(path: str | os.PathLike[str]) -> str:
    """Where the undo journal of ``path`` lives."""
    return os.fspath(path) + JOURNAL_SUFFIX


def original_path(path: str | os.PathLike[str]) -> str:
    """Where the original of a dump replaced whole is kept (hard link)."""
    return os.fspath(path) + ORIGINAL_SUFFIX


def keep_original(path: str | os.PathLike[str]) -> str:
    """Before ``path`` is replaced whole, keep its inode under ``original_path`` (a hard link: no copy, O(1)).

    The link is fsynced into the directory before the caller may replace the file; ``undo`` renames it back.
    """
    path = os.fspath(path)
    keep = original_path(path)
    if os.path.lexists(keep) or os.path.exists(journal_path(path)):
        raise JournalError("an earlier in-place fix is still recorded beside the dump: run kdfix undo first, "
                           "or remove it to keep the fixed file", path=keep)  # fmt: skip
    try:
        os.link(path, keep)
    except OSError as exc:
        raise JournalError(f"cannot keep the original as a hard link: {exc.strerror or exc}", path=keep) from exc
    checkpoint("journal.original_linked")
    fsync_path(os.path.dirname(os.path.abspath(keep)) or ".")
    return keep


def _undo_replace(path: str, keep: str) -> None:
    """Put back the original a whole-file replacement kept, then fsync the directory."""
    checkpoint("undo.restore")
    os.replace(keep, path)
    fsync_path(os.path.dirname(os.path.abspath(path)) or ".")


def pread_full(fd: int, file_offset: int, length: int) -> bytes:
    """``length`` bytes at ``file_offset`` (fewer only at end of file), however many preads that takes."""
    data = b""
    while len(data) < length:
        more = os.pread(fd, length - len(data), file_offset + len(data))
        if not more:
            break
        data += more
    return data


def pwrite_all(fd: int, data: bytes, file_offset: int) -> None:
    """Write all of ``data`` at ``file_offset``, however many pwrites that takes."""
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        n = os.pwrite(fd, view[pos:], file_offset + pos)
        if n <= 0:
            raise OSError("short write")
        pos += n


def original_bytes(writes: Sequence[Write], original_size: int) -> dict[int, int]:
    """Byte map {file offset: original byte} of every offset below ``original_size`` a write touched."""
    out: dict[int, int] = {}
    for w in writes:
        for i, b in enumerate(w.old):
            off = w.file_offset + i
            if off < original_size and off not in out:
                out[off] = b
    return out


def _digest(byte_map: dict[int, int]) -> str:
    h = hashlib.sha256()
    for off in sorted(byte_map):
        h.update(off.to_bytes(8, "little") + bytes((byte_map[off],)))
    return h.hexdigest()


def _final_bytes(writes: Sequence[Write]) -> dict[int, int]:
    out: dict[int, int] = {}
    for w in writes:
        for i, b in enumerate(w.new):
            out[w.file_offset + i] = b
    return out


@dataclass(frozen=True)
class Journal:
    """The undo record of one dump: original size, the writes in order, and checksums of both states."""

    path: str
    original_size: int
    writes: tuple[Write, ...]

    @property
    def original_sha256(self) -> str:
        return _digest(original_bytes(self.writes, self.original_size))

    @property
    def fixed_sha256(self) -> str:
        return _digest(_final_bytes(self.writes))

    def to_json(self) -> str:
        return json.dumps(
            {
                "kdfix_undo": JOURNAL_VERSION,
                "path": os.path.abspath(self.path),
                "original_size": self.original_size,
                "writes": [{"offset": w.file_offset, "old": w.old.hex(), "new": w.new.hex()} for w in self.writes],
                "original_sha256": self.original_sha256,
                "fixed_sha256": self.fixed_sha256,
            },
            indent=1,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Journal:
        jpath = journal_path(path)
        try:
            with open(jpath, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            raise JournalError("no undo journal (nothing to undo)", path=jpath) from None
        except (OSError, ValueError) as exc:
            raise JournalError(f"unreadable undo journal: {exc}", path=jpath) from exc
        try:
            if data["kdfix_undo"] != JOURNAL_VERSION:
                raise JournalError(f"journal version {data['kdfix_undo']} is not {JOURNAL_VERSION}", path=jpath)
            writes = tuple(
                Write(int(w["offset"]), bytes.fromhex(w["old"]), bytes.fromhex(w["new"])) for w in data["writes"]
            )
            journal = cls(os.fspath(path), int(data["original_size"]), writes)
            ok = journal.original_sha256 == data["original_sha256"] and journal.fixed_sha256 == data["fixed_sha256"]
        except (KeyError, TypeError, ValueError) as exc:
            raise JournalError(f"corrupt undo journal: {exc}", path=jpath) from exc
        if not ok:
            raise JournalError("corrupt undo journal: checksums do not match its contents", path=jpath)
        return journal

    def save(self) -> str:
        """Write the journal beside the dump: temp file, fsync, rename, fsync the directory."""
        jpath = journal_path(self.path)
        directory = os.path.dirname(os.path.abspath(jpath))
        fd, tmp = tempfile.mkstemp(prefix=".kdfix-undo.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self.to_json())
                fh.flush()
                checkpoint("journal.before_fsync")
                os.fsync(fh.fileno())
            checkpoint("journal.before_rename")
            os.replace(tmp, jpath)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_path(directory)
        return jpath


def begin(path: str | os.PathLike[str], writes: Sequence[Write], original_size: int) -> Journal:
    """Record ``writes`` before they happen; extends an existing journal (its original size is kept)."""
    if os.path.exists(journal_path(path)):
        previous = Journal.load(path)
        journal = Journal(os.fspath(path), previous.original_size, previous.writes + tuple(writes))
    else:
        journal = Journal(os.fspath(path), original_size, tuple(writes))
    journal.save()
    return journal


def undo(path: str | os.PathLike[str], *, force: bool = False) -> Journal:
    """Restore the bytes an in-place fix changed, truncate appended data, verify, and remove the journal.

    Refuses (JournalError) when the file no longer holds the bytes the fix wrote, unless ``force``.
    """
    path = os.fspath(path)
    keep = original_path(path)
    if not os.path.exists(journal_path(path)) and os.path.exists(keep):
        _undo_replace(path, keep)
        return Journal(path, os.stat(path).st_size, ())
    journal = Journal.load(path)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as exc:
        raise JournalError(f"cannot open the dump for writing: {exc.strerror or exc}", path=path) from exc
    try:
        if not force:
            # A fix killed part-way leaves each byte original or written by one of the journal's writes.
            allowed: dict[int, set[int]] = {}
            for w in journal.writes:
                for i, b in enumerate(w.old):
                    allowed.setdefault(w.file_offset + i, set()).add(b)
            for w in journal.writes:
                for i, b in enumerate(w.new):
                    allowed.setdefault(w.file_offset + i, set()).add(b)
            for w in journal.writes:
                now = pread_full(fd, w.file_offset, len(w.new))
                if any(b not in allowed[w.file_offset + i] for i, b in enumerate(now)):
                    raise JournalError(
                        "the file changed since the fix (bytes differ from what the fix wrote); not undoing",
                        offset=w.file_offset,
                        path=path,
                    )
        for w in reversed(journal.writes):
            if w.file_offset < journal.original_size:
                checkpoint("undo.restore")
                keep = w.old[: journal.original_size - w.file_offset]
                pwrite_all(fd, keep, w.file_offset)
        os.ftruncate(fd, journal.original_size)
        os.fsync(fd)
        checkpoint("undo.before_unlink")
        restored = original_bytes(journal.writes, journal.original_size)
        check: dict[int, int] = {}
        for w in journal.writes:
            end = min(w.file_offset + len(w.old), journal.original_size)
            if w.file_offset < end:
                now = pread_full(fd, w.file_offset, end - w.file_offset)
                check.update(zip(range(w.file_offset, w.file_offset + len(now)), now, strict=False))
        check = {off: check[off] for off in restored if off in check}
        if _digest(check) != journal.original_sha256 or os.fstat(fd).st_size != journal.original_size:
            raise JournalError("restored bytes do not match the journal's checksum", path=path)
    finally:
        os.close(fd)
    os.unlink(journal_path(path))
    fsync_path(os.path.dirname(os.path.abspath(path)) or ".")
    return journal


__all__ = [
    "JOURNAL_SUFFIX",
    "ORIGINAL_SUFFIX",
    "Journal",
    "Write",
    "begin",
    "journal_path",
    "keep_original",
    "original_path",
    "pread_full",
    "pwrite_all",
    "undo",
]
