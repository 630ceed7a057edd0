"""Fix a dump so every reader accepts it: diagnose → plan → apply → re-read and verify.

``fix_dump(path, output=OUT | in_place=True, ...)`` is the library entry point (the CLI's ``kdfix fix``), and
``fix_split_set(paths, outputs=[...] | in_place=True, ...)`` its twin for a split set (kdfix/fix/split.py);
``kdfix.fix.journal.undo(path)`` reverts an in-place fix (of each part, for a split set).
Shapes: architecture-and-style.md §3 "Detect and fix".
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kdfix.errors import KdfixError, UnsupportedError, VerificationError
from kdfix.fix import journal
from kdfix.fix.apply import (
    PhysicalPlan,
    apply_in_place,
    check_writable,
    copy_and_patch,
    edit_rows,
    physical_writes,
    reassemble_and_patch,
    rewrite_elf,
    rewrite_kdump,
)
from kdfix.fix.diagnose import Diagnosis, Progress, Status, diagnose, report_diagnosis, verification_options
from kdfix.fix.options import FixOptions, check_target, make_options
from kdfix.fix.plan import Edit, Plan, plan
from kdfix.fix.rewrite import foreign_layout, standard_copy
from kdfix.fix.split import SplitFixResult, fix_split_set
from kdfix.lock import dump_lock
from kdfix.read.dump import Dump
from kdfix.read.flattened import FlattenedSource, reassembles
from kdfix.read.probe import open_dump
from kdfix.read.readiness import FLATTENED_FINDING, reader_findings
from kdfix.write.atomic import atomic_output
from kdfix.write.recheck import SAMPLE_PAGES, Health, health, recheck

log = logging.getLogger(__name__)

REFORMAT_MESSAGE = {
    False: "written as a random-access KDUMP file (the flattened stream reassembled; --flat keeps a stream)",
    True: "written as a flattened stream (--flat)",
}


@contextlib.contextmanager
def scratch_file(near: str | os.PathLike[str]) -> Iterator[str]:
    """A temporary file beside ``near`` (named as kdfix.write.atomic names its temp files), removed afterwards."""
    where = os.path.dirname(os.path.abspath(os.fspath(near)))
    fd, name = tempfile.mkstemp(dir=where, prefix=f".{os.path.basename(os.fspath(near))}.", suffix=".kdfix-tmp")
    os.close(fd)
    try:
        yield name
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


@dataclass
class FixResult:
    """Outcome of :func:`fix_dump`. ``edits`` are dicts {field, file_offset, dump_offset, old, new}."""

    path: str
    container: str
    status: Status
    edits: list[dict[str, Any]] = field(default_factory=list)
    phys_base: str | None = None
    detect: dict[str, Any] = field(default_factory=dict)
    output: str | None = None
    messages: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    dry_run: bool = False
    bytes_written: int = 0
    journal: str | None = None
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "container": self.container,
            "status": self.status,
            "edits": self.edits,
            "phys_base": self.phys_base,
            "detect": self.detect,
            "output": self.output,
            "messages": self.messages,
            "missing": self.missing,
            "dry_run": self.dry_run,
            "bytes_written": self.bytes_written,
            "journal": self.journal,
            "seconds": round(self.seconds, 6),
        }


def _verify(target: str, diag: Diagnosis, options: FixOptions, before: list[str], baseline: Health,
            pages: int | str) -> None:  # fmt: skip
    """Re-read the result: it passes verify's checks, diagnosing it again with the values just written leaves
    nothing to change, and no reader obstacle ``needs_fix`` listed before is still there (else exit 1)."""
    wanted = any(f.lower() == "incomplete" for f in options.set_flags)
    had = any("INCOMPLETE" in e for e in baseline.errors) and not any(f.lower() == "incomplete"
                                                                    for f in options.clear_flags)  # fmt: skip
    recheck(target, pages=pages, baseline=baseline, what="the fixed dump", incomplete_ok=wanted or had)
    again = verification_options(diag, options)
    with open_dump(target) as dump:
        if isinstance(dump.source, FlattenedSource) and not dump.source.end_marker:
            raise VerificationError("verification failed: the fixed stream has no end marker", path=target)
        check = diagnose(dump, again)
        if dump.container != "elf" and diag.vmcoreinfo is not None:
            found, _ = dump.kdump.vmcoreinfo_text()  # type: ignore[union-attr]
            if found is None or dump.vmcoreinfo is None:
                raise VerificationError("verification failed: VMCOREINFO not found after the fix", path=target)
        after = reader_findings(dump)
    left = [f.message for f in check.findings if f.kind != "elf_rewrite" or diag.container == "elf"]
    waived = _waived(options)
    # A flattened stream fixed in place (or written with --flat) stays one by design: O(1), not an obstacle left.
    left += [f for f in after if f in before and f != FLATTENED_FINDING and not any(w in f for w in waived)]
    if left:
        raise VerificationError("verification failed, still to fix: " + "; ".join(left), path=target)


def _waived(options: FixOptions) -> tuple[str, ...]:
    """Obstacles the user asked the fix to leave alone (``--vmcoreinfo none``, ``--utsname none``)."""
    out = []
    if options.vmcoreinfo == "none":
        out.append("VMCOREINFO")
    if options.utsname == "none":
        out.append("utsname")
    return tuple(out)


def check_links(path: str, *, force: bool) -> None:
    """One rule for every container: refuse ``--in-place`` on a file with several names unless ``force``.

    Patching (KDUMP, flattened) would change every name of the inode; a whole rewrite (ELF) only this one.
    """
    links = os.stat(path).st_nlink
    if links > 1 and not force:
        raise UnsupportedError(
            f"the file has {links} names (hard links): an in-place fix would change all of them (or, for an ELF, "
            "only this one); use -o OUT, or --force to fix it in place anyway",
            path=path,
        )


def fix_dump(
    path: str | os.PathLike[str],
    *,
    output: str | os.PathLike[str] | None = None,
    in_place: bool = False,
    # the keywords of make_options and of fix_split_set, spelled out so that type checkers and help() show them
    phys_base: str | int = "auto",
    vmcoreinfo: str = "auto",
    utsname: str = "auto",
    set_flags: Sequence[str] = (),
    clear_flags: Sequence[str] = (),
    kernel: str = "crashed",
    dry_run: bool = False,
    force: bool = False,
    wait: bool = True,
    progress: Progress | None = None,
    flat: bool = False,
) -> FixResult:
    """Diagnose, plan and apply the fix of one dump; ``output`` (keeps the mode) or ``in_place``.

    ``kernel`` ("crashed" or "running") picks the kernel a dump with several kernels in memory is made to
    describe (a dump of a running kdump capture kernel; kdfix.detect.kernels), the same choice ``detect`` makes.

    ``output`` of a KDUMP-family dump is a random-access KDUMP file, which every reader opens (a flattened input
    is reassembled as ``makedumpfile -R`` would), or a flattened stream with ``flat``; ``in_place`` keeps the
    container (O(1)), so a flattened stream stays one.

    Status "ok": nothing to change (with ``output``, the output is a plain copy); "fixed": edits applied (or,
    with ``dry_run``, planned) and the result re-read and verified; "undetermined": a needed value could not be
    found (``missing`` says which) and nothing was written. A result that does not verify raises
    VerificationError (exit 1) and replaces nothing.

    The dump is locked for the whole run (kdfix/lock.py): exclusively in place, shared otherwise; ``wait=False``
    fails at once if another kdfix holds it. ``force`` allows ``in_place`` on a file with several hard links.
    """
    began = time.monotonic()
    path = os.fspath(path)
    check_target(output is not None, in_place, dry_run)
    options = make_options(phys_base, vmcoreinfo, utsname, set_flags, clear_flags, kernel)
    if output is not None and os.path.abspath(os.fspath(output)) == os.path.abspath(path):
        raise KdfixError("the output is the input; use --in-place", path=path)
    if flat and output is None:
        raise KdfixError("--flat needs -o OUT: an in-place fix keeps the container")
    modifying = in_place and not dry_run
    if modifying:
        check_writable(path)
    with dump_lock(path, shared=not modifying, wait=wait):
        notes: list[str] = []
        if modifying:
            done = journal.recover(os.path.realpath(path))  # an in-place rewrite killed before its rename
            if done is not None:
                notes.append(done)
            check_links(os.path.realpath(path), force=force)
        dump = open_dump(path)  # opened once: a flattened stream's records are indexed by one pass
        try:
            reason = foreign_layout(dump)
        except BaseException:
            dump.close()
            raise
        if reason is not None:
            dump.close()
            rewrite_options = dict(phys_base=phys_base, vmcoreinfo=vmcoreinfo, utsname=utsname, set_flags=set_flags,
                                   clear_flags=clear_flags)  # fmt: skip
            result = _fix_by_rewrite(path, output, in_place, rewrite_options, dry_run, progress, reason, began)
        else:
            result = _fix_locked(dump, path, output, in_place, options, dry_run, progress, flat)
        result.messages[:0] = notes
    result.seconds = time.monotonic() - began
    return result


def _fix_locked(dump: Dump, path: str, output: str | os.PathLike[str] | None, in_place: bool, options: FixOptions,
                dry_run: bool, progress: Progress | None, flat: bool) -> FixResult:  # fmt: skip
    """Diagnose, plan and write the fix of ``dump`` (open on ``path``; closed here, before an in-place patch)."""
    with dump:
        if flat and dump.container == "elf":
            raise KdfixError("--flat: an ELF dump cannot be written as a flattened stream", path=path)
        reformat = output is not None and dump.container in ("kdump", "flattened") and (
            (dump.container == "flattened") != flat)  # fmt: skip
        diag = diagnose(dump, options, progress=progress)
        result = _result_of(path, dump.container, dump.problems, diag, dry_run)
        if diag.missing:
            return result
        the_plan = plan(diag)
        physical = None
        # a reassembled output is patched at dump offsets, which are its file offsets: the stream is not mapped
        reassembled = output is not None and reformat and not flat and reassembles(dump)
        if not the_plan.empty and not the_plan.rewrites and not reassembled:
            physical = physical_writes(path, dump.container, the_plan)
        result.edits = edit_rows(the_plan, physical)
        result.status = "ok" if the_plan.empty else "fixed"
        if the_plan.empty:
            result.messages.append("nothing to fix")
        if reformat:
            result.messages.append(REFORMAT_MESSAGE[flat])
        elif in_place and dump.container == "flattened":
            result.messages.append(f"still a {FLATTENED_FINDING} (or fix with -o)")
        if dry_run:
            result.messages.append("dry run: nothing written")
            return result
        before = reader_findings(dump)
        baseline = health(dump, SAMPLE_PAGES)

        def verify(target: str) -> None:
            _verify(target, diag, options, before, baseline, SAMPLE_PAGES)

        if the_plan.rewrites:
            # in place: replace the file a symlink points at, not the link; keep the original inode for undo
            target = os.fspath(output) if output is not None else os.path.realpath(path)
            _rewrite_whole(dump, path, the_plan, target, in_place, result, verify, progress)
        elif output is not None:
            if reassembled:
                with atomic_output(output, mode_from=path) as tmp:  # the stream's own file, patched at dump offsets
                    result.bytes_written = reassemble_and_patch(path, tmp, the_plan, _flattened_source(dump))
                    verify(tmp)
                result.output = os.fspath(output)
            else:
                _write_patched_copy(path, os.fspath(output), physical, reformat, flat, result, verify, baseline,
                                    progress)  # fmt: skip
    if in_place and not the_plan.rewrites and physical is not None and physical.writes:
        _patch_in_place(path, physical, result, verify)
    elif in_place:
        result.output = path
    return result


def _flattened_source(dump: Dump) -> FlattenedSource | None:
    """The reader of a flattened stream, whose extent index the reassembly copies from (None for other dumps)."""
    source = dump.kdump.source if dump.kdump is not None else None
    return source if isinstance(source, FlattenedSource) else None


def _result_of(path: str, container: str, problems: list[str], diag: Diagnosis, dry_run: bool) -> FixResult:
    """The result as the diagnosis leaves it; "undetermined" (nothing will be written) when a value is missing."""
    result = FixResult(path, container, "ok", dry_run=dry_run, detect=diag.detect)
    result.messages.extend(f"warning: {problem}" for problem in problems)  # e.g. truncated: fix anyway
    result.messages.extend(diag.messages)
    report_diagnosis(result, diag)
    return result


def _rewrite_whole(dump: Dump, path: str, the_plan: Plan, target: str, in_place: bool, result: FixResult,
                   verify: Callable[[str], None], progress: Progress | None) -> None:  # fmt: skip
    """Write the dump anew into ``target`` (atomically, verified); in place, the original is kept for undo."""
    rewrite = rewrite_elf if the_plan.rewrite_elf else rewrite_kdump
    with atomic_output(target, mode_from=path) as tmp:
        result.bytes_written = rewrite(dump, the_plan, tmp, progress)
        verify(tmp)
        if in_place:
            journal.keep_original(target, tmp)
            result.journal = journal.original_path(target)
    result.output = target
    if in_place:
        what = "ELF" if the_plan.rewrite_elf else "KDUMP file"
        result.messages.append(
            f"{what} rewritten in place (atomic replace); the original is kept as {result.journal} "
            f"(a hard link: delete it and {journal.journal_path(target)} to keep the fix and free its "
            f"space); undo with: kdfix undo {target}"
        )


def _write_patched_copy(path: str, output: str, physical: PhysicalPlan | None, reformat: bool, flat: bool,
                        result: FixResult, verify: Callable[[str], None], baseline: Health,
                        progress: Progress | None) -> None:  # fmt: skip
    """``-o``: a patched copy (reassembled or flattened when ``reformat``), verified before it replaces OUT."""
    patches = physical or PhysicalPlan((), {}, 0)
    if reformat:
        from kdfix.write.convert import convert  # here: a patched copy needs none of the writers convert loads

        with atomic_output(output, mode_from=path) as tmp, scratch_file(output) as patched:
            copy_and_patch(path, patched, patches, progress)
            convert([patched], tmp, flat=flat, progress=progress, recheck_pages=SAMPLE_PAGES)  # undecoded
            result.bytes_written = os.path.getsize(tmp)
            verify(tmp)
    else:
        with atomic_output(output, mode_from=path) as tmp:
            result.bytes_written = copy_and_patch(path, tmp, patches, progress)
            if physical is not None and physical.writes:
                verify(tmp)
            else:
                recheck(tmp, pages=SAMPLE_PAGES, baseline=baseline, what="the copy")
    result.output = output


def _patch_in_place(path: str, physical: PhysicalPlan, result: FixResult, verify: Callable[[str], None]) -> None:
    """Patch the header bytes (journal first), verify; a result that does not verify is undone at once."""
    written, jpath = apply_in_place(path, physical)
    result.bytes_written, result.journal, result.output = written, jpath, path
    try:
        verify(path)
    except KdfixError as exc:
        journal.undo(path, force=True)
        raise VerificationError(f"{exc.message}; the original was restored", path=path) from exc
    result.messages.append(f"undo with: kdfix undo {path}")


class _NothingWritten(Exception):
    """Abandons the rewritten output (the atomic temp file is removed) when the fix cannot be determined."""


def _fix_by_rewrite(
    path: str,
    output: str | os.PathLike[str] | None,
    in_place: bool,
    options: dict[str, Any],
    dry_run: bool,
    progress: Progress | None,
    reason: str,
    began: float,
) -> FixResult:
    """Fix a file in a foreign dialect: write it in the standard layout, fix that copy, replace or write out."""
    target = os.fspath(output) if output is not None else os.path.realpath(path)
    journal_path: str | None = None
    with standard_copy(path, target) as std:
        if dry_run:
            inner = fix_dump(std, dry_run=True, **options)
        else:
            try:
                with atomic_output(target, mode_from=path) as tmp:
                    inner = fix_dump(std, output=tmp, progress=progress, **options)
                    if inner.status == "undetermined":
                        raise _NothingWritten
                    os.chmod(tmp, os.stat(path).st_mode & 0o7777)
                    if in_place:
                        journal.keep_original(target, tmp)
                        journal_path = journal.original_path(target)
            except _NothingWritten:
                pass
    result = dataclasses.replace(inner, path=path, output=None if dry_run else target, journal=journal_path)
    if inner.status == "undetermined":
        result.output = None
        return result
    result.status = "fixed"
    result.edits = [{"field": "layout", "file_offset": 0, "dump_offset": 0, "old": "kdumpling", "new": reason},
                    *inner.edits]  # fmt: skip
    result.messages = [m for m in inner.messages if m != "nothing to fix"]
    result.messages.insert(0, reason)
    if in_place and journal_path is not None:
        result.messages.append(f"rewritten in place (atomic replace); the original is kept as {journal_path} "
                               f"(a hard link: delete it to free space); undo with: kdfix undo {target}")  # fmt: skip
    result.seconds = time.monotonic() - began
    return result


__all__ = [
    "Edit",
    "FixOptions",
    "FixResult",
    "Plan",
    "SplitFixResult",
    "check_links",
    "check_writable",
    "edit_rows",
    "fix_dump",
    "fix_split_set",
    "journal",
]
