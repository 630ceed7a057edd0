"""No "written" or "fixed" that is not: re-read an output with the checks ``kdfix verify`` makes before it counts.

Every modifying command calls :func:`recheck` on what it wrote, before the rename that publishes it (or, in
place, before it reports success): the file must reopen, its headers, bitmaps and descriptor table must pass the
structural checks of :func:`kdfix.read.dump.verify_dump`, and the pages it wrote must decode — all of them
(``pages="all"``: convert, generate, an ELF rewrite) or an even sample (``pages=SAMPLE``: a fix that patched
headers only; the sample is what a header patch can break). Damage the input already had and reported
(``baseline``, e.g. a truncated dump fixed anyway) is not held against the output; anything else raises
:class:`~kdfix.errors.VerificationError` (exit 1) naming what is wrong.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from kdfix.errors import KdfixError, VerificationError
from kdfix.read.dump import Dump, part_structure_errors, verify_dump
from kdfix.read.kdump import KdumpContainer
from kdfix.read.probe import open_dump

SAMPLE_PAGES = 64  # pages decoded by a sampled recheck: the first, the last and an even spread between


@dataclass
class Health:
    """What a recheck found: structural errors and bad pages (pfn -> error), and whether pages were sampled."""

    errors: list[str] = field(default_factory=list)
    bad_pages: dict[int, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what the reader itself reported (e.g. truncated)

    def describe(self, limit: int = 3) -> str:
        parts = list(self.errors[:limit])
        if self.bad_pages:
            first = sorted(self.bad_pages.items())[:limit]
            shown = "; ".join(f"pfn {p:#x}: {e}" for p, e in first)
            parts.append(f"{len(self.bad_pages)} bad page(s) ({shown})")
        return "; ".join(parts)


def _parts(dump: Dump) -> Sequence[KdumpContainer]:
    if dump.kdump is None:
        return ()
    return dump.split.parts if dump.split is not None else (dump.kdump,)


def structure(dump: Dump) -> list[str]:
    """The structural checks of ``verify_dump`` (INCOMPLETE, end marker, descriptor table, bitmaps, ELF extents)."""
    errors: list[str] = []
    parts = _parts(dump)
    for i, part in enumerate(parts):
        name = f"part {i + 1}: " if len(parts) > 1 else ""  # not the path: an output is compared with its input
        errors.extend(part_structure_errors(part, name))
    if dump.elf is not None:
        if dump.elf.incomplete:
            errors.append("e_flags DUMP_ELF_INCOMPLETE is set")
        for seg in dump.elf.segments:
            if seg.file_offset + seg.filesz > dump.elf.source.size:
                errors.append(f"PT_LOAD at paddr {seg.paddr:#x} ends past the end of the file")
    return errors


def _sample_pfns(part: KdumpContainer, count: int) -> list[int]:
    n = part.num_dumped
    if n == 0:
        return []
    if n <= count:
        return list(part.dumped.iter_set(part.start_pfn, part.end_pfn))
    ranks = sorted({round(i * (n - 1) / (count - 1)) for i in range(count)})
    base = part.dumped.rank(part.start_pfn)
    return [part.dumped.select(base + r) for r in ranks]


def health(dump: Dump, pages: int | str = SAMPLE_PAGES, workers: int = 1) -> Health:
    """Check ``dump``: structure, and every page (``pages="all"``) or about ``pages`` spread over each part."""
    out = Health(problems=list(dump.problems))
    out.errors = structure(dump)
    if pages == "all":
        report = verify_dump(dump, workers=workers)
        paths = [f"{p.path}: " for p in _parts(dump)]
        more = [next((e.removeprefix(p) for p in paths if e.startswith(p)), e) for e in report.errors]
        out.errors = list(dict.fromkeys(out.errors + more))
        out.bad_pages = {b["pfn"]: b["error"] for b in report.bad_pages}
        return out
    assert isinstance(pages, int)
    if pages == 0:  # reopen only
        out.errors = []
        return out
    for part in _parts(dump):
        for pfn in _sample_pfns(part, pages):
            for _loc, result in part.iter_page_results(pfn, pfn + 1):
                if isinstance(result, KdfixError):
                    out.bad_pages[pfn] = str(result)
    if dump.elf is not None:
        mem = dump.memory
        runs = list(itertools.islice(mem.dumped.iter_runs(), 1 << 16))  # PT_LOAD extents: few
        total = sum(b - a for a, b in runs)
        ranks = sorted({round(i * (total - 1) / max(1, pages - 1)) for i in range(min(pages, total))})
        seen = 0
        for a, b in runs:
            for r in ranks:
                if seen <= r < seen + (b - a):
                    pfn = a + r - seen
                    try:
                        mem.read(pfn * mem.page_size, mem.page_size)
                    except KdfixError as exc:
                        out.bad_pages[pfn] = str(exc)
            seen += b - a
    return out


def recheck(paths: Sequence[str] | str, *, pages: int | str = "all", baseline: Health | None = None,
            what: str = "the written file", incomplete_ok: bool = False, workers: int = 1) -> Health:  # fmt: skip
    """Reopen ``paths`` and check them; raise VerificationError unless they pass (``baseline``: known damage;
    ``incomplete_ok``: the INCOMPLETE flag is wanted, e.g. ``fix --set-flag incomplete``)."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    try:
        with open_dump(*paths) as dump:
            found = health(dump, pages)
    except VerificationError:
        raise
    except KdfixError as exc:
        raise VerificationError(f"{what} does not reopen: {exc}", path=paths[0]) from exc
    if baseline is not None and baseline.problems:  # damage the input declared (truncation): not the output's fault
        found.errors = [e for e in found.errors if e not in baseline.errors]
        found.bad_pages = {p: e for p, e in found.bad_pages.items() if p not in baseline.bad_pages}
    if incomplete_ok:
        found.errors = [e for e in found.errors if "INCOMPLETE is set" not in e]
    if found.errors or found.bad_pages:
        raise VerificationError(f"{what} does not pass verify: {found.describe()}", path=paths[0])
    return found


__all__ = ["SAMPLE_PAGES", "Health", "health", "recheck", "structure"]
