"""Fix a split set as one dump: diagnose the joined set, then patch every part with the same header edits.

Fixing the parts one by one is wrong: each part alone sees only its own pfn range, so the values recovered
from memory (utsname from ``init_uts_ns``) differ between parts and their main headers stop matching
(kdump-format.md §9 needs them identical). Here the diagnosis runs on the set (its memory spans every part),
and the plan's edits, which touch only the headers and notes that all parts share, are mapped to each part
with ``physical_writes`` (which checks the old bytes of every part). A plan that appends data (offsets differ
per part) is refused. In place, each part gets its own undo journal (``kdfix undo PART``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kdfix.errors import KdfixError, UnsupportedError, VerificationError
from kdfix.fix import journal as fix_journal
from kdfix.fix.apply import PhysicalPlan, apply_in_place, check_writable, copy_and_patch, edit_rows, physical_writes
from kdfix.fix.diagnose import Diagnosis, Progress, Status, diagnose, report_diagnosis, verification_options
from kdfix.fix.options import FixOptions, check_target, make_options
from kdfix.fix.plan import Plan, plan
from kdfix.lock import dump_lock
from kdfix.read.probe import open_dump
from kdfix.write.atomic import atomic_output
from kdfix.write.recheck import SAMPLE_PAGES, recheck


@dataclass
class SplitFixResult:
    """Outcome of :func:`fix_split_set`: like FixResult, for every part (``edits`` rows carry the part's ``file``)."""

    paths: list[str]
    status: Status
    edits: list[dict[str, Any]] = field(default_factory=list)
    phys_base: str | None = None
    detect: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    dry_run: bool = False
    bytes_written: int = 0
    journals: list[str] = field(default_factory=list)
    seconds: float = 0.0
    container: str = "split"

    def as_json(self) -> dict[str, Any]:
        return {
            "paths": self.paths,
            "container": self.container,
            "status": self.status,
            "edits": self.edits,
            "phys_base": self.phys_base,
            "detect": self.detect,
            "outputs": self.outputs,
            "messages": self.messages,
            "missing": self.missing,
            "dry_run": self.dry_run,
            "bytes_written": self.bytes_written,
            "journals": self.journals,
            "seconds": round(self.seconds, 6),
        }


def _diagnose_set(
    paths: Sequence[str], options: FixOptions, progress: Progress | None = None
) -> tuple[Diagnosis, Plan]:
    with open_dump(*paths) as dump:
        if dump.split is None:
            raise KdfixError("not a split set", path=paths[0])
        diag = diagnose(dump, options, progress=progress)
    return diag, plan(diag)


def _verify(paths: Sequence[str], diag: Diagnosis, options: FixOptions) -> None:
    """Re-read the fixed set and diagnose it again with the values just written: nothing may be left to change."""
    recheck(list(paths), pages=SAMPLE_PAGES, what="the fixed set",
            incomplete_ok=any(f.lower() == "incomplete" for f in options.set_flags))  # fmt: skip
    check, left = _diagnose_set(paths, verification_options(diag, options))
    if not left.empty:
        raise VerificationError("verification failed, still to fix: " + "; ".join(f.message for f in check.findings),
                         path=paths[0])  # fmt: skip


def fix_split_set(
    paths: Sequence[str | os.PathLike[str]],
    *,
    outputs: Sequence[str | os.PathLike[str]] | None = None,
    in_place: bool = False,
    # the keywords of make_options and of fix_dump, spelled out so that type checkers and help() show them
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
) -> SplitFixResult:
    """Diagnose the parts ``paths`` as one dump and apply the same fix to each: into ``outputs`` (one per part,
    in the order of ``paths``; each keeps its part's mode) or ``in_place`` (an undo journal per part).

    Statuses as for :func:`kdfix.fix.fix_dump`. If any part fails to patch or the set fails to verify, the
    parts already patched in place are restored from their journals.
    """
    began = time.monotonic()
    parts = [os.fspath(p) for p in paths]
    targets = None if outputs is None else [os.fspath(o) for o in outputs]
    check_target(targets is not None, in_place, dry_run, "output files")
    options = make_options(phys_base, vmcoreinfo, utsname, set_flags, clear_flags, kernel)
    if targets is not None:
        if len(targets) != len(parts):
            raise KdfixError(f"{len(targets)} outputs for {len(parts)} parts", path=parts[0])
        for part, target in zip(parts, targets, strict=True):
            if os.path.abspath(target) == os.path.abspath(part):
                raise KdfixError("the output is the input; use --in-place", path=part)
    modifying = in_place and not dry_run
    if modifying:
        for part in parts:
            check_writable(part)
    with dump_lock(parts, shared=not modifying, wait=wait):
        if modifying:
            from kdfix.fix import check_links

            for part in parts:
                check_links(os.path.realpath(part), force=force)
        result = _fix_set_locked(parts, targets, in_place, options, dry_run, progress)
    result.seconds = time.monotonic() - began
    return result


def _fix_set_locked(parts: list[str], targets: list[str] | None, in_place: bool, options: FixOptions,
                    dry_run: bool, progress: Progress | None) -> SplitFixResult:  # fmt: skip
    diag, the_plan = _diagnose_set(parts, options, progress)
    result = SplitFixResult(parts, "ok", messages=list(diag.messages), dry_run=dry_run, detect=diag.detect)
    if report_diagnosis(result, diag):
        return result
    if the_plan.append is not None or the_plan.rewrites or the_plan.stream_edits:
        raise UnsupportedError("the fix of this split set appends data to each part; reassemble the set "
                               "(kdfix convert) and fix the result", path=parts[0])  # fmt: skip
    physical = [physical_writes(p, "kdump", the_plan) if not the_plan.empty else PhysicalPlan((), {}, 0)
                for p in parts]  # fmt: skip
    for p, phys in zip(parts, physical, strict=True):
        rel = os.path.basename(p)
        result.edits.extend({"file": rel, **row} for row in edit_rows(the_plan, phys) if not the_plan.empty)
    result.status = "ok" if the_plan.empty else "fixed"
    if the_plan.empty:
        result.messages.append("nothing to fix")
    if dry_run:
        result.messages.append("dry run: nothing written")
    elif targets is not None:
        with contextlib.ExitStack() as stack:
            temps = [stack.enter_context(atomic_output(o, mode_from=p)) for p, o in zip(parts, targets, strict=True)]
            for p, tmp, phys in zip(parts, temps, physical, strict=True):
                result.bytes_written += copy_and_patch(p, tmp, phys)
            if not the_plan.empty:
                _verify(temps, diag, options)
        result.outputs = targets
    else:
        result.outputs = parts
        if not the_plan.empty:
            _apply_in_place(parts, physical, diag, options, result)
    return result


def _apply_in_place(
    parts: Sequence[str], physical: Sequence[PhysicalPlan], diag: Diagnosis, options: FixOptions, result: SplitFixResult
) -> None:
    """Patch every part (journal first), verify the set; on any failure restore the parts already patched."""
    done: list[str] = []
    try:
        for p, phys in zip(parts, physical, strict=True):
            written, jpath = apply_in_place(p, phys)
            done.append(p)
            result.bytes_written += written
            if jpath:
                result.journals.append(jpath)
        _verify(parts, diag, options)
    except BaseException:
        for p in done:
            with contextlib.suppress(KdfixError):
                fix_journal.undo(p, force=True)
        raise
    result.messages.append("undo with: " + "; ".join(f"kdfix undo {p}" for p in parts))


__all__ = ["SplitFixResult", "fix_split_set"]
