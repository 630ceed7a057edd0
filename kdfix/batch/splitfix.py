"""Fix a split set as one dump: diagnose the joined set, then patch every part with the same header edits.

``kdfix.fix.fix_dump`` works on one file. Fixing the parts one by one is wrong: each part alone sees only
its own pfn range, so the values recovered from memory (utsname from ``init_uts_ns``) differ between parts
and their main headers stop matching (kdump-format.md §9 needs them identical). Here the diagnosis runs on
the set (its memory spans every part), and the plan's edits, which touch only the headers and notes that all
parts share, are mapped to each part with ``physical_writes`` (which checks the old bytes of every part).
A plan that appends data (offsets differ per part) is refused.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kdfix.errors import KdfixError, UnsupportedError
from kdfix.fix import _edit_rows
from kdfix.fix import journal as fix_journal
from kdfix.fix.apply import PhysicalPlan, apply_in_place, copy_and_patch, physical_writes
from kdfix.fix.diagnose import Diagnosis, FixOptions, _diagnose_kdump, parse_phys_base
from kdfix.fix.plan import Plan, plan
from kdfix.read.probe import open_dump
from kdfix.write.atomic import atomic_output


@dataclass
class SplitFixResult:
    """Like FixResult, for a whole split set (``edits`` are per part, with ``file``)."""

    status: str
    edits: list[dict[str, Any]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def _diagnose_set(paths: Sequence[str], options: FixOptions) -> tuple[Diagnosis, Plan]:
    with open_dump(*paths) as dump:
        if dump.split is None:
            raise KdfixError("not a split set", path=paths[0])
        diag = Diagnosis(container="kdump")
        _diagnose_kdump(dump, options, diag, None)
    return diag, plan(diag)


def _verify(paths: Sequence[str], diag: Diagnosis, options: FixOptions) -> None:
    again = FixOptions(
        phys_base=diag.phys_base if diag.phys_base is not None else "auto",
        vmcoreinfo="auto" if diag.vmcoreinfo is not None else "none",
        utsname=options.utsname,
        set_flags=options.set_flags,
        clear_flags=options.clear_flags,
    )
    check, left = _diagnose_set(paths, again)
    if not left.empty:
        raise KdfixError("verification failed, still to fix: " + "; ".join(f.message for f in check.findings),
                         path=paths[0])  # fmt: skip


def fix_split_set(
    paths: Sequence[str],
    *,
    outputs: Sequence[str] | None = None,
    dry_run: bool = False,
    phys_base: str | int = "auto",
    vmcoreinfo: str = "auto",
    utsname: str = "auto",
    set_flags: Sequence[str] = (),
    clear_flags: Sequence[str] = (),
) -> SplitFixResult:
    """Fix the parts ``paths`` (lowest range first) into ``outputs`` (one per part) or in place (``outputs`` None)."""
    options = FixOptions(parse_phys_base(phys_base), vmcoreinfo, utsname, tuple(set_flags), tuple(clear_flags))
    diag, the_plan = _diagnose_set(paths, options)
    result = SplitFixResult("ok", messages=list(diag.messages))
    if diag.missing:
        return SplitFixResult("undetermined", messages=[*diag.messages, "nothing written: " + "; ".join(diag.missing)])
    if the_plan.append is not None or the_plan.rewrite_elf or the_plan.stream_edits:
        raise UnsupportedError("the fix of this split set appends data to each part; reassemble the set "
                               "(kdfix convert) and fix the result", path=paths[0])  # fmt: skip
    physical = [physical_writes(p, "kdump", the_plan) if not the_plan.empty else PhysicalPlan((), {}, 0)
                for p in paths]  # fmt: skip
    for p, phys in zip(paths, physical, strict=True):
        rel = os.path.basename(p)
        result.edits.extend({"file": rel, **row} for row in _edit_rows(the_plan, phys) if not the_plan.empty)
    result.status = "ok" if the_plan.empty else "fixed"
    if dry_run:
        result.messages.append("dry run: nothing written")
        return result
    if outputs is not None:
        with contextlib.ExitStack() as stack:
            temps = [stack.enter_context(atomic_output(o, mode_from=p)) for p, o in zip(paths, outputs, strict=True)]
            for p, tmp, phys in zip(paths, temps, physical, strict=True):
                copy_and_patch(p, tmp, phys)
            if not the_plan.empty:
                _verify(temps, diag, options)
        return result
    if the_plan.empty:
        return result
    done: list[str] = []
    try:
        for p, phys in zip(paths, physical, strict=True):
            apply_in_place(p, phys)
            done.append(p)
        _verify(paths, diag, options)
    except BaseException:
        for p in done:
            with contextlib.suppress(KdfixError):
                fix_journal.undo(p, force=True)
        raise
    return result
