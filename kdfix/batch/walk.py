"""Walk archive trees: recognise dumps by content, group split sets, and say why everything else is skipped.

A file is a dump when the reader's probes recognise its first bytes (``kdfix.read.probe.PROBES``:
KDUMP/DISKDUMP, flattened, ELF) and, for ELF, ``e_type`` is ET_CORE. Names never matter. Parts of
``makedumpfile --split`` sets (sub_header.split = 1, kdump-format.md §9) are grouped by identical main
header (INCOMPLETE bit aside, as SplitContainer does) and pfn ranges that tile ``[0, max_mapnr)``.
Symlinks are never followed: a link inside the root is processed under its target's own path, one that
leads out of the root is reported as skipped.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from kdfix.errors import KdfixError
from kdfix.fix.journal import JOURNAL_SUFFIX, ORIGINAL_SUFFIX
from kdfix.format.abi import choose_sub_header_abi, probe_abi
from kdfix.format.constants import DISKDUMP_SIGNATURE, KDUMP_HEADER_VERSION
from kdfix.format.elf import ELF_EHDR, ET_CORE, ident_abi
from kdfix.format.kdump import DISK_DUMP_HEADER, KDUMP_SUB_HEADER, header_features, pfn_range, split_identity
from kdfix.read.probe import probe_container

HEAD_SIZE = 4096
JOURNAL_REASON = "kdfix undo journal (its dump is gone)"
TEMP_SUFFIX = ".kdfix-tmp"  # kdfix.write.atomic's temp files: ``.NAME.XXXXXXXX.kdfix-tmp``


@dataclass(frozen=True, slots=True)
class FoundDump:
    """One unit of batch work: a dump file, or every part of a split set (``files[0]`` is the lowest range)."""

    path: str  # relative to the walked root(s), '/'-separated: the report key
    kind: str  # kdump | flattened | elf | split
    files: tuple[str, ...]  # absolute input paths
    rel_files: tuple[str, ...]  # the same, relative
    size_bytes: int


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file that is not a dump (or cannot be handled), with the reason shown in the report."""

    path: str
    reason: str
    size_bytes: int = 0
    failed: bool = False  # True: a dump (or maybe one) that cannot be processed, counted as a failure


@dataclass(frozen=True, slots=True)
class WalkResult:
    dumps: tuple[FoundDump, ...]
    skipped: tuple[SkippedFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(d.size_bytes for d in self.dumps)


@dataclass(frozen=True, slots=True)
class SplitPart:
    """What the walk needs of one split part: its header identity and pfn range."""

    key: bytes
    start_pfn: int
    end_pfn: int
    max_pfn: int


@dataclass(frozen=True, slots=True)
class Probed:
    kind: str
    split: SplitPart | None = None


def probe_elf_core(head: bytes) -> bool:
    """True if ``head`` is an ELF identification (reader's probe) of a core file (e_type ET_CORE)."""
    abi = ident_abi(head)
    if abi is None:
        return False
    ehdr = ELF_EHDR.bind(abi)
    at, size = ehdr.offset_of("e_type"), ehdr.size_of("e_type")
    return len(head) >= at + size and int.from_bytes(head[at : at + size], abi.endian) == ET_CORE


def probe_split_part(block0: bytes, read_at: Callable[[int, int], bytes]) -> SplitPart | None:
    """The split identity of a KDUMP file from its main header and sub header, or None (not a split part)."""
    abi = probe_abi(block0)
    if abi is None or block0[:8] == DISKDUMP_SIGNATURE:
        return None
    main = DISK_DUMP_HEADER.bind(abi)
    mh = main.unpack(block0)
    version = min(mh.header_version, KDUMP_HEADER_VERSION)
    if not header_features(version).split:
        return None
    sub_block = read_at(mh.block_size, 512)
    try:
        sub_abi = choose_sub_header_abi(abi, version, sub_block, mh.block_size, mh.sub_hdr_size)
        sh = KDUMP_SUB_HEADER.bind(sub_abi, version).unpack(sub_block)
    except KdfixError:
        return None
    if not sh.split:
        return None
    start, end = pfn_range(sh, version)
    max_pfn = sh.max_mapnr_64 if header_features(version).pfn64 and sh.max_mapnr_64 else mh.max_mapnr
    bitmap_bits = mh.bitmap_blocks * mh.block_size * 8 // 2
    key = split_identity(main, mh)
    return SplitPart(key, start, end, min(max_pfn, bitmap_bits) if bitmap_bits else max_pfn)


def probe_file(path: str) -> Probed | str:
    """The dump kind of ``path`` from its content, or the reason it is not a dump. Raises OSError if unreadable."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        head = os.pread(fd, HEAD_SIZE, 0)
        if not head:
            return "empty file"
        kind = probe_container(head)
        if kind is None:
            if path.endswith(JOURNAL_SUFFIX) and head[:1] == b"{":
                return JOURNAL_REASON
            return "not a dump (content not recognised)"
        if kind == "elf":
            return Probed("elf") if probe_elf_core(head) else "ELF file but not a core (e_type is not ET_CORE)"
        if kind == "kdump":
            return Probed("kdump", probe_split_part(head, lambda off, n: os.pread(fd, n, off)))
        return Probed(kind)
    finally:
        os.close(fd)


def matches(rel: str, globs: Sequence[str]) -> bool:
    """True if a glob matches the relative path or the file name (``*`` also matches ``/``)."""
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, g) or fnmatch.fnmatchcase(name, g) for g in globs)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def walk_roots(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[str, str, str | None]]:
    """(walk root, label prefix, single file or None) for each PATH; labels keep relative paths unique."""
    entries: list[tuple[str, str | None]] = []
    for p in paths:
        real = os.path.realpath(os.fspath(p))
        if not os.path.exists(real):
            raise KdfixError("no such file or directory", path=os.fspath(p))
        if os.path.isdir(real):
            entries.append((real, None))
        else:
            entries.append((os.path.dirname(real), real))
    dirs = sorted({r for r, _ in entries})
    common = os.path.commonpath(dirs) if len(dirs) > 1 else dirs[0]
    out = []
    for root, single in entries:
        label = "" if len(dirs) == 1 else os.path.relpath(root, common).replace(os.sep, "/")
        out.append((root, "" if label == "." else label, single))
    return out


def _iter_files(root: str, single: str | None, ignore: set[str], errors: list[tuple[str, str]]) -> Iterable[str]:
    if single is not None:
        yield single
        return

    def onerror(exc: OSError) -> None:
        errors.append((exc.filename or root, f"cannot list directory: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames[:] = sorted(d for d in dirnames if os.path.join(dirpath, d) not in ignore)
        for name in sorted(filenames):
            yield os.path.join(dirpath, name)
        # symlinks to directories appear in dirnames but os.walk does not follow them: report them as files
        for d in list(dirnames):
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                dirnames.remove(d)
                yield full


def walk(
    paths: Sequence[str | os.PathLike[str]],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    ignore: Iterable[str | os.PathLike[str]] = (),
) -> WalkResult:
    """Find the dumps under ``paths`` (directories walked recursively, files taken as they are).

    ``include``/``exclude`` globs filter relative paths (a file is kept when it matches some include, or
    there are none, and no exclude); ``ignore`` lists paths (an output directory, the report) never looked at.
    """
    ignored = {os.path.realpath(os.fspath(p)) for p in ignore}
    seen: set[str] = set()
    dumps: list[FoundDump] = []
    skipped: list[SkippedFile] = []
    parts: dict[bytes, list[tuple[SplitPart, str, str, int]]] = defaultdict(list)
    for root, label, single in walk_roots(paths):
        errors: list[tuple[str, str]] = []
        for full in _iter_files(root, single, ignored, errors):
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if label:
                rel = f"{label}/{rel}"
            if full in ignored or full in seen:
                continue
            seen.add(full)
            if (include and not matches(rel, include)) or matches(rel, exclude):
                continue
            looked = _look_at(full, rel, root)
            if looked is None:
                continue
            if isinstance(looked, SkippedFile):
                skipped.append(looked)
                continue
            probed, size = looked
            if isinstance(probed, str):
                skipped.append(SkippedFile(rel, probed, size))
            elif probed.split is not None:
                parts[probed.split.key].append((probed.split, full, rel, size))
            else:
                dumps.append(FoundDump(rel, probed.kind, (full,), (rel,), size))
        for where, reason in errors:
            rel = os.path.relpath(where, root).replace(os.sep, "/")
            skipped.append(SkippedFile(f"{label}/{rel}" if label else rel, reason, failed=True))
    for group in parts.values():
        sets, leftovers = group_split_parts(group)
        dumps.extend(sets)
        skipped.extend(leftovers)
    dumps.sort(key=lambda d: d.path)
    skipped.sort(key=lambda s: s.path)
    return WalkResult(tuple(dumps), tuple(skipped))


def _look_at(full: str, rel: str, root: str) -> SkippedFile | tuple[Probed | str, int] | None:
    """What one walked file is: skipped (with the reason), probed (with its size), or None when it belongs to a
    dump fixed in place (its undo journal or kept original) and is not reported at all."""
    try:
        st = os.lstat(full)
    except OSError as exc:
        return SkippedFile(rel, f"cannot stat: {exc.strerror or exc}", failed=True)
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(full)
        where = "inside the root (processed under its own path)" if _within(target, root) else (
            "out of the walked root")  # fmt: skip
        return SkippedFile(rel, f"symlink {where}, not followed")
    if not stat.S_ISREG(st.st_mode):
        return SkippedFile(rel, "not a regular file")
    if full.endswith(TEMP_SUFFIX) and os.path.basename(full).startswith("."):
        return SkippedFile(rel, "kdfix temporary file (left by an interrupted run)", st.st_size)
    try:
        probed = probe_file(full)
    except OSError as exc:
        return SkippedFile(rel, f"cannot read: {exc.strerror or exc}", st.st_size, failed=True)
    if probed == JOURNAL_REASON and os.path.exists(full[: -len(JOURNAL_SUFFIX)]):
        return None  # the undo record of a dump fixed in place: part of that dump, not a file to report
    if full.endswith(ORIGINAL_SUFFIX) and os.path.exists(full[: -len(ORIGINAL_SUFFIX)]):
        return None  # the kept original of a dump replaced in place (kdfix undo puts it back)
    return probed, st.st_size


def _tile(parts: list[tuple[SplitPart, str, str, int]]) -> list[tuple[SplitPart, str, str, int]] | None:
    """Parts that tile [0, max_pfn) exactly, lowest range first, or None.

    Empty parts ([n, n): makedumpfile --split writes them when there are more parts than pages to share)
    belong to the set at their boundary.
    """
    by_start: dict[int, list[tuple[SplitPart, str, str, int]]] = defaultdict(list)
    for p in parts:
        by_start[p[0].start_pfn].append(p)
    chain: list[tuple[SplitPart, str, str, int]] = []
    pfn = 0
    max_pfn = parts[0][0].max_pfn
    while True:
        here = sorted(by_start.get(pfn, ()), key=lambda p: p[2])
        chain.extend(p for p in here if p[0].end_pfn == pfn)
        if pfn >= max_pfn:
            break
        nxt = [p for p in here if p[0].end_pfn > pfn]
        if not nxt:
            return None
        chain.append(nxt[0])
        pfn = nxt[0][0].end_pfn
    return chain if len(chain) > 1 else None


def group_split_parts(
    group: list[tuple[SplitPart, str, str, int]],
) -> tuple[list[FoundDump], list[SkippedFile]]:
    """Split parts with one main header → complete sets (same directory first), and the parts left over."""
    sets: list[FoundDump] = []
    remaining = sorted(group, key=lambda p: p[2])

    def take(candidates: list[tuple[SplitPart, str, str, int]]) -> bool:
        chain = _tile(candidates) if candidates else None
        if chain is None:
            return False
        for p in chain:
            remaining.remove(p)
        sets.append(FoundDump(chain[0][2], "split", tuple(p[1] for p in chain), tuple(p[2] for p in chain),
                              sum(p[3] for p in chain)))  # fmt: skip
        return True

    by_dir: dict[str, list[tuple[SplitPart, str, str, int]]] = defaultdict(list)
    for p in remaining:
        by_dir[os.path.dirname(p[1])].append(p)
    for directory in sorted(by_dir):
        while take([p for p in remaining if os.path.dirname(p[1]) == directory]):
            pass
    while take(list(remaining)):
        pass
    leftovers = [
        SkippedFile(rel, f"part of a split set whose other parts were not found (pfns [{sp.start_pfn:#x}, "
                    f"{sp.end_pfn:#x}) of {sp.max_pfn:#x})", size, failed=True)
        for sp, _, rel, size in remaining
    ]  # fmt: skip
    return sets, leftovers
