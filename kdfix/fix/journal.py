"""The undo journal of an in-place fix: written and fsynced beside the dump before its first byte changes.

A journal (``DUMP.kdfix-undo``, JSON) knows the file it was made for and what the fix did to it:

- the file's identity: device and inode, the size before the fix (``original_size``) and after (``fixed_size``);
- every write in order (file offset, the bytes it replaced, the bytes it wrote);
- digests of the regions the undo depends on: the header blocks around the patches (the bytes the fix did not
  write there), the patched bytes before and after, and the tail the fix appended.

``undo(path)`` checks all of it against the file first and refuses, in one line and touching nothing, for any
other file, for a file that grew past ``fixed_size``, or for a tail that holds bytes the fix did not write; only
then does it put the old bytes back, truncate the appended tail and check the result. A journal is bounded by
what a fix can write (``MAX_PATCH_BYTES`` of patches, ``MAX_TAIL_BYTES`` appended); anything bigger is refused
before it is parsed.

An ELF fixed in place is replaced whole (a new inode renamed over the path): its record (``kind: replace``)
names the inode of the kept original (``DUMP.kdfix-orig``, a hard link) and of the fixed file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kdfix.errors import JournalError
from kdfix.faults import checkpoint
from kdfix.lock import dump_lock
from kdfix.write.atomic import fsync_path

JOURNAL_SUFFIX = ".kdfix-undo"
JOURNAL_VERSION = 2
ORIGINAL_SUFFIX = ".kdfix-orig"  # a hard link to the original of a dump replaced whole (an ELF fixed in place)

MAX_PATCH_BYTES = 64 << 10  # bytes a fix may patch below the original size (header fields: well under this)
MAX_TAIL_BYTES = 8 << 20  # bytes a fix may append (the notes blob with VMCOREINFO, flattened record headers)
MAX_WRITES = 4096
MAX_JOURNAL_BYTES = 2 * (2 * MAX_PATCH_BYTES + MAX_TAIL_BYTES) + (256 << 10)  # hex text and JSON overhead
CONTEXT_BLOCK = 4096  # header blocks around each patch whose unwritten bytes identify the file


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


# ---- bytes on disk ------------------------------------------------------------------------------------


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


def _map_digest(byte_map: dict[int, int]) -> str:
    h = hashlib.sha256()
    for off in sorted(byte_map):
        h.update(off.to_bytes(8, "little") + bytes((byte_map[off],)))
    return h.hexdigest()


# ---- what the writes do -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Effect:
    """The writes seen as states: per patched offset (below ``original_size``) its original and every value it may
    hold mid-fix; the final tail image; per tail offset the values an interrupted fix may have left there."""

    original: dict[int, int]
    allowed: dict[int, set[int]]
    final_patch: dict[int, int]
    tail: bytes
    tail_extra: dict[int, set[int]]


def _effect(writes: Sequence[Write], original_size: int, fixed_size: int) -> _Effect:
    original: dict[int, int] = {}
    allowed: dict[int, set[int]] = {}
    final_patch: dict[int, int] = {}
    tail = bytearray(fixed_size - original_size)
    covered = bytearray(len(tail))
    tail_extra: dict[int, set[int]] = {}
    for w in writes:
        end = w.file_offset + len(w.new)
        for i in range(max(0, min(len(w.old), original_size - w.file_offset))):
            off = w.file_offset + i
            original.setdefault(off, w.old[i])
            allowed.setdefault(off, set()).add(w.old[i])
        for off in range(w.file_offset, min(end, original_size)):
            b = w.new[off - w.file_offset]
            allowed.setdefault(off, set()).add(b)
            final_patch[off] = b
        lo = max(w.file_offset, original_size)
        if lo < end:
            a, b = lo - original_size, end - original_size
            data = w.new[lo - w.file_offset :]
            if covered.count(1, a, b):  # an earlier write of this journal wrote here (a second fix's end marker)
                for i in range(a, b):
                    if covered[i]:
                        tail_extra.setdefault(i, set()).add(tail[i])
            tail[a:b] = data
            covered[a:b] = b"\1" * (b - a)
    return _Effect(original, allowed, final_patch, bytes(tail), tail_extra)


def _context_blocks(writes: Sequence[Write], original_size: int) -> list[int]:
    """Start offsets of the header blocks the patches touch, and block 0 (the headers)."""
    blocks = {0} if original_size else set()
    for w in writes:
        end = min(w.file_offset + len(w.new), original_size)
        for start in range(w.file_offset - w.file_offset % CONTEXT_BLOCK, end, CONTEXT_BLOCK):
            blocks.add(start)
    return sorted(blocks)


def _context_digest(fd: int, writes: Sequence[Write], original_size: int) -> str:
    """Digest of the bytes of the context blocks the fix does not write: the same before, during and after it."""
    written: set[int] = set()
    for w in writes:
        written.update(range(w.file_offset, min(w.file_offset + len(w.new), original_size)))
    h = hashlib.sha256()
    for start in _context_blocks(writes, original_size):
        block = bytearray(pread_full(fd, start, min(CONTEXT_BLOCK, original_size - start)))
        for off in range(start, start + len(block)):
            if off in written:
                block[off - start] = 0
        h.update(start.to_bytes(8, "little") + bytes(block))
    return h.hexdigest()


def _patch_bytes(writes: Iterable[Write], original_size: int) -> int:
    return sum(max(0, min(w.file_offset + len(w.new), original_size) - w.file_offset) for w in writes)


def _tail_bytes(writes: Iterable[Write], original_size: int) -> int:
    return max([0] + [w.file_offset + len(w.new) - original_size for w in writes])


def check_bounds(writes: Sequence[Write], original_size: int, *, where: str) -> None:
    """Refuse writes larger than an in-place fix makes (the journal bound), before anything is written."""
    if len(writes) > MAX_WRITES:
        raise JournalError(f"{len(writes)} writes, more than an in-place fix makes ({MAX_WRITES})", path=where)
    if any(w.file_offset < 0 for w in writes):
        raise JournalError("a write at a negative offset", path=where)
    patch = _patch_bytes(writes, original_size)
    if patch > MAX_PATCH_BYTES:
        raise JournalError(f"{patch} bytes of patches, more than an in-place fix writes ({MAX_PATCH_BYTES})",
                           path=where)  # fmt: skip
    tail = _tail_bytes(writes, original_size)
    if tail > MAX_TAIL_BYTES:
        raise JournalError(f"{tail} bytes appended, more than an in-place fix appends ({MAX_TAIL_BYTES})",
                           path=where)  # fmt: skip


# ---- the journal --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Journal:
    """The undo record of one dump: its identity, original size, the writes in order, and digests of both states."""

    path: str
    original_size: int
    writes: tuple[Write, ...]
    device: int = 0
    inode: int = 0
    context_sha256: str = ""

    @property
    def fixed_size(self) -> int:
        return max([self.original_size] + [w.file_offset + len(w.new) for w in self.writes])

    def effect(self) -> _Effect:
        return _effect(self.writes, self.original_size, self.fixed_size)

    def digests(self) -> dict[str, str]:
        e = self.effect()
        return {
            "original_sha256": _map_digest(e.original),
            "fixed_sha256": _map_digest(e.final_patch),
            "tail_sha256": hashlib.sha256(e.tail).hexdigest(),
        }

    def to_json(self) -> str:
        return json.dumps(
            {
                "kdfix_undo": JOURNAL_VERSION,
                "kind": "patch",
                "path": os.path.abspath(self.path),
                "device": self.device,
                "inode": self.inode,
                "original_size": self.original_size,
                "fixed_size": self.fixed_size,
                "context_sha256": self.context_sha256,
                "writes": [{"offset": w.file_offset, "old": w.old.hex(), "new": w.new.hex()} for w in self.writes],
            }
            | self.digests(),
            indent=1,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Journal:
        data = _read_record(path)
        jpath = journal_path(path)
        if data.get("kind") != "patch":
            raise JournalError("the journal records a whole-file replacement, not patches", path=jpath)
        try:
            raw = data["writes"]
            if not isinstance(raw, list) or len(raw) > MAX_WRITES:
                raise JournalError(f"more than {MAX_WRITES} writes: not a journal a fix writes", path=jpath)
            writes = tuple(Write(int(w["offset"]), bytes.fromhex(w["old"]), bytes.fromhex(w["new"])) for w in raw)
            journal = cls(os.fspath(path), int(data["original_size"]), writes, int(data["device"]),
                          int(data["inode"]), str(data["context_sha256"]))  # fmt: skip
            if journal.original_size < 0:
                raise ValueError("negative original_size")
            check_bounds(writes, journal.original_size, where=jpath)
            ok = journal.fixed_size == int(data["fixed_size"]) and all(
                data[k] == v for k, v in journal.digests().items()
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise JournalError(f"corrupt undo journal: {exc}", path=jpath) from exc
        if not ok:
            raise JournalError("corrupt undo journal: checksums do not match its contents", path=jpath)
        return journal

    def save(self) -> str:
        """Write the journal beside the dump: temp file, fsync, rename, fsync the directory."""
        return _save_record(self.path, self.to_json())


def _read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed journal of ``path``: bounded in size and version-checked before anything trusts it."""
    jpath = journal_path(path)
    try:
        with open(jpath, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_JOURNAL_BYTES:
                raise JournalError(f"{size} bytes, bigger than any journal a fix writes ({MAX_JOURNAL_BYTES}): "
                                   "not undoing", path=jpath)  # fmt: skip
            text = fh.read(MAX_JOURNAL_BYTES + 1)
        data = json.loads(text)
    except FileNotFoundError:
        raise JournalError("no undo journal (nothing to undo)", path=jpath) from None
    except (OSError, ValueError) as exc:
        raise JournalError(f"unreadable undo journal: {exc}", path=jpath) from exc
    if not isinstance(data, dict):
        raise JournalError("corrupt undo journal: not an object", path=jpath)
    if data.get("kdfix_undo") != JOURNAL_VERSION:
        raise JournalError(f"journal version {data.get('kdfix_undo')!r} is not {JOURNAL_VERSION}", path=jpath)
    return data


def _save_record(path: str, text: str) -> str:
    jpath = journal_path(path)
    directory = os.path.dirname(os.path.abspath(jpath))
    fd, tmp = tempfile.mkstemp(prefix=".kdfix-undo.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
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


# ---- does this journal belong to this file? -----------------------------------------------------------


def _refuse(path: str, reason: str, offset: int | None = None) -> JournalError:
    return JournalError(f"{reason}; nothing changed", offset=offset, path=path)


def check_file(fd: int, journal: Journal, *, force: bool = False, exact: bool = False) -> None:
    """Raise JournalError unless the open file is the one ``journal`` was made for, in a state the fix can have
    left (original, partly patched, or fixed; ``exact``: fixed only).

    ``force`` accepts another inode (a copy whose bytes prove it is the fixed file) and patched bytes changed
    since; it never accepts a different size, tail or header context: undo may not shorten a file below bytes the
    fix did not write, nor write past what it recorded.
    """
    path = journal.path
    st = os.fstat(fd)
    size, fixed = st.st_size, journal.fixed_size
    other_inode = (st.st_dev, st.st_ino) != (journal.device, journal.inode)
    if other_inode and not force:
        raise _refuse(path, f"the journal was made for another file (device {journal.device:#x} inode "
                            f"{journal.inode}; this is device {st.st_dev:#x} inode {st.st_ino})")  # fmt: skip
    exact = exact or other_inode
    if size > fixed:
        raise _refuse(path, f"{size - fixed} bytes follow the end of the fixed file ({fixed} bytes): "
                            "the fix did not write them", offset=fixed)  # fmt: skip
    if size < journal.original_size or (exact and size != fixed):
        raise _refuse(path, f"the file is {size} bytes; the fix made it {fixed} from {journal.original_size}",
                      offset=size)  # fmt: skip
    if journal.context_sha256 != _context_digest(fd, journal.writes, journal.original_size):
        raise _refuse(path, "the header blocks around the patches are not those of the file the journal was made "
                            "for", offset=0)  # fmt: skip
    effect = journal.effect()
    now = pread_full(fd, journal.original_size, size - journal.original_size)
    want = effect.tail[: len(now)]
    if now != want:
        if exact:
            raise _refuse(path, "the appended tail is not the one the fix wrote", offset=journal.original_size)
        for i, b in enumerate(now):  # only an interrupted fix gets here: unwritten (0) or an earlier write's byte
            if b != want[i] and b != 0 and b not in effect.tail_extra.get(i, ()):
                raise _refuse(path, "the tail past the original end holds bytes the fix did not write",
                              offset=journal.original_size + i)  # fmt: skip
    if force and not other_inode:
        return
    for off, values in sorted(effect.allowed.items()):
        byte = pread_full(fd, off, 1)
        ok = bool(byte) and (byte[0] == effect.final_patch[off] if exact else byte[0] in values)
        if not ok:
            raise _refuse(path, "the file changed since the fix (bytes differ from what the fix wrote)", offset=off)


# ---- fix side ----------------------------------------------------------------------------------------


def begin(path: str | os.PathLike[str], writes: Sequence[Write], original_size: int) -> Journal:
    """Record ``writes`` before they happen; extends an existing journal of this file (its original size is kept).

    The caller holds the dump's lock. A journal that belongs to another file is refused, never merged.
    """
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if os.path.exists(journal_path(path)):
            previous = Journal.load(path)
            check_file(fd, previous)
            if st.st_size != original_size:
                raise _refuse(path, "the file changed size while it was being fixed")
            original_size, writes = previous.original_size, previous.writes + tuple(writes)
        check_bounds(writes, original_size, where=path)
        context = _context_digest(fd, writes, original_size)
    finally:
        os.close(fd)
    journal = Journal(path, original_size, tuple(writes), st.st_dev, st.st_ino, context)
    journal.save()
    return journal


# ---- whole-file replacement (ELF) --------------------------------------------------------------------


@dataclass(frozen=True)
class Replacement:
    """The record of a dump replaced whole: the kept original's inode and the inode renamed over the path."""

    path: str
    device: int
    original_inode: int
    original_size: int
    fixed_inode: int
    fixed_size: int

    def to_json(self) -> str:
        return json.dumps({"kdfix_undo": JOURNAL_VERSION, "kind": "replace", "path": os.path.abspath(self.path),
                           "device": self.device, "original_inode": self.original_inode,
                           "original_size": self.original_size, "fixed_inode": self.fixed_inode,
                           "fixed_size": self.fixed_size}, indent=1)  # fmt: skip

    @classmethod
    def load(cls, path: str) -> Replacement:
        data = _read_record(path)
        try:
            if data.get("kind") != "replace":
                raise ValueError("not a replacement record")
            return cls(path, *(int(data[k]) for k in ("device", "original_inode", "original_size", "fixed_inode",
                                                      "fixed_size")))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise JournalError(f"corrupt undo journal: {exc}", path=journal_path(path)) from exc


def _record_kind(path: str) -> str | None:
    if not os.path.exists(journal_path(path)):
        return None
    return str(_read_record(path).get("kind"))


def keep_original(path: str | os.PathLike[str], replacement: str) -> str:
    """Before ``replacement`` is renamed over ``path``, keep the original inode under ``original_path`` (a hard link:
    no copy, O(1)) and record both inodes, fsynced, so that undo and a rerun know exactly what they find.

    The caller holds the dump's lock and has run :func:`recover` first.
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
    orig, new = os.stat(keep), os.stat(replacement)
    record = Replacement(path, orig.st_dev, orig.st_ino, orig.st_size, new.st_ino, new.st_size)
    _save_record(path, record.to_json())
    return keep


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def recover(path: str | os.PathLike[str]) -> str | None:
    """Finish or roll back an interrupted whole-file replacement of ``path``; the caller holds the dump's lock.

    Killed after the original was kept but before the rename, the dump is still the original: the kept link and
    its record are removed (rolled back). Returns what was done, or None when nothing was unfinished.
    """
    path = os.fspath(path)
    keep = original_path(path)
    kind = _record_kind(path) if os.path.exists(journal_path(path)) else None
    if kind not in (None, "replace"):
        return None
    if not os.path.lexists(keep):
        if kind == "replace":  # undo killed after renaming the original back: only the record is left
            record = Replacement.load(path)
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == (record.device, record.original_inode):
                _remove_record(path)
                return "removed the record of an undo that had finished"
        return None
    if _same(keep, path):  # the rename never happened: the dump is the original
        with contextlib.suppress(FileNotFoundError):
            os.unlink(journal_path(path))
        os.unlink(keep)
        fsync_path(os.path.dirname(os.path.abspath(path)) or ".")
        return "rolled back an unfinished in-place fix (the dump was still the original)"
    return None


def _remove_record(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(journal_path(path))
    fsync_path(os.path.dirname(os.path.abspath(path)) or ".")


def _undo_replace(path: str, keep: str) -> None:
    """Put back the original a whole-file replacement kept, after checking the dump is the file it put there."""
    if os.path.exists(journal_path(path)):
        record = Replacement.load(path)
        st, orig = os.stat(path), os.stat(keep)
        if (orig.st_dev, orig.st_ino) != (record.device, record.original_inode):
            raise _refuse(keep, "is not the original the fix kept (another inode)")
        if (st.st_dev, st.st_ino, st.st_size) != (record.device, record.fixed_inode, record.fixed_size):
            raise _refuse(path, "is not the file the fix wrote (another inode or size): it would be lost")
    else:
        raise _refuse(path, f"{keep} is not recorded by a journal: rename it back by hand if it is the original")
    checkpoint("undo.restore")
    os.replace(keep, path)
    fsync_path(os.path.dirname(os.path.abspath(path)) or ".")
    checkpoint("undo.before_unlink")
    _remove_record(path)


# ---- undo ---------------------------------------------------------------------------------------------


def undo(path: str | os.PathLike[str], *, force: bool = False, wait: bool = True) -> Journal:
    """Restore the bytes an in-place fix changed, truncate the tail it appended, verify, and remove the journal.

    Holds the dump's lock throughout (``wait=False``: fail at once if another kdfix holds it). Refuses
    (JournalError, nothing changed) for a file the journal was not made for, and when the file no longer holds
    the bytes the fix wrote unless ``force`` (see :func:`check_file`).
    """
    path = os.fspath(path)
    with dump_lock(path, wait=wait):
        return _undo_locked(path, force)


def _undo_locked(path: str, force: bool) -> Journal:
    keep = original_path(path)
    if _record_kind(path) in (None, "replace"):
        done = recover(path)
        if done is not None:
            return Journal(path, os.stat(path).st_size, ())
        if os.path.lexists(keep):
            _undo_replace(path, keep)
            return Journal(path, os.stat(path).st_size, ())
    journal = Journal.load(path)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as exc:
        raise JournalError(f"cannot open the dump for writing: {exc.strerror or exc}", path=path) from exc
    try:
        check_file(fd, journal, force=force)
        effect = journal.effect()
        for w in reversed(journal.writes):
            if w.file_offset < journal.original_size:
                checkpoint("undo.restore")
                pwrite_all(fd, w.old[: journal.original_size - w.file_offset], w.file_offset)
        os.ftruncate(fd, journal.original_size)
        os.fsync(fd)
        checkpoint("undo.before_unlink")
        now = {off: pread_full(fd, off, 1)[0] for off in effect.original}
        if _map_digest(now) != _map_digest(effect.original) or os.fstat(fd).st_size != journal.original_size:
            raise JournalError("restored bytes do not match the journal's checksum", path=path)
    finally:
        os.close(fd)
    _remove_record(path)
    return journal


__all__ = [
    "JOURNAL_SUFFIX",
    "MAX_JOURNAL_BYTES",
    "MAX_PATCH_BYTES",
    "MAX_TAIL_BYTES",
    "ORIGINAL_SUFFIX",
    "Journal",
    "Replacement",
    "Write",
    "begin",
    "check_bounds",
    "check_file",
    "journal_path",
    "keep_original",
    "original_path",
    "pread_full",
    "pwrite_all",
    "recover",
    "undo",
]
