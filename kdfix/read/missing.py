"""Pages a cut dump no longer holds, as runs: a truncated 64 GiB dump may miss millions of pages.

A run is a pfn range of one container in which every dumped page lacks the same thing (its descriptor
or its data) and no page is sound: listing each page would cost memory in proportion to the damage,
a run costs a few words and still names every page (the pfn range, how many dumped pages are in it)
and where in the file the loss begins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

DESCRIPTORS = "page descriptors"
PAGE_DATA = "page data"
SAMPLES = 64  # per-page errors kept per run: a short run between sound pages is reported as bad pages


@dataclass
class MissingRun:
    """Dumped pages ``[start_pfn, end_pfn)`` of ``path`` whose ``what`` begins at ``file_offset``, past the data."""

    path: str
    what: str
    start_pfn: int
    end_pfn: int
    pages: int
    file_offset: int
    file_size: int
    zero_pages: int = 0  # present pages between the missing ones: all-zero pages (kdump's shared zero page)
    closed: bool = False  # a sound or bad page follows: the run is inside the dump, not its cut-off end
    samples: list[dict[str, Any]] = field(default_factory=list, repr=False)  # the first pages' own errors

    def describe(self) -> str:
        between = f"; {self.zero_pages} zero pages among them are present" if self.zero_pages else ""
        return (
            f"{self.path}: {self.pages} dumped pages in pfns [{self.start_pfn:#x}, {self.end_pfn:#x}) missing: "
            f"{self.what} from file offset {self.file_offset:#x} are not in the file ({self.file_size:#x} bytes)"
            f"{between}"
        )

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("closed", "samples")}
        return {**out, "error": self.describe()}


class RunCollector:
    """Collects missing pages in pfn order into runs; a sound or bad page in between ends a run."""

    def __init__(self, path: str, file_size: int) -> None:
        self.path = path
        self.file_size = file_size
        self.runs: list[MissingRun] = []
        self._open: MissingRun | None = None

    def missing(
        self,
        pfn: int,
        what: str,
        file_offset: int,
        pages: int = 1,
        end_pfn: int | None = None,
        error: str | None = None,
    ) -> None:
        """``pages`` dumped pages from ``pfn`` up to ``end_pfn`` (default ``pfn + 1``) lack ``what``."""
        end = pfn + 1 if end_pfn is None else end_pfn
        run = self._open
        if run is None or run.what != what:
            self.close()
            run = self._open = MissingRun(self.path, what, pfn, end, 0, file_offset, self.file_size)
        run.end_pfn, run.pages = end, run.pages + pages
        if pages == 1 and len(run.samples) < SAMPLES:
            run.samples.append({"pfn": pfn, "error": error or run.describe()})

    @property
    def open(self) -> bool:
        return self._open is not None

    def zero_page(self, pfn: int) -> None:
        """A zero page inside an open run: it keeps the run open (its bytes need no data in the file)."""
        if self._open is not None:
            self._open.zero_pages += 1
            self._open.end_pfn = pfn + 1

    def close(self) -> None:
        """The next page is present (or bad for another reason): the open run ends inside the dump."""
        if self._open is not None:
            self._open.closed = True
            self.runs.append(self._open)
            self._open = None

    def finish(self) -> list[MissingRun]:
        """The runs; one still open at the end of the range reaches it (``closed`` False)."""
        if self._open is not None:
            self.runs.append(self._open)
            self._open = None
        return self.runs


def merge_runs(runs: Iterable[MissingRun], pages_between: Callable[[str, int, int], int]) -> list[MissingRun]:
    """Join runs found in separate pfn chunks when no dumped page lies between them (``pages_between``)."""
    out: list[MissingRun] = []
    for run in sorted(runs, key=lambda r: (r.path, r.start_pfn)):
        last = out[-1] if out else None
        if (
            last is not None
            and last.path == run.path
            and last.what == run.what
            and last.end_pfn <= run.start_pfn
            and pages_between(run.path, last.end_pfn, run.start_pfn) == 0
        ):
            last.end_pfn, last.pages, last.closed = run.end_pfn, last.pages + run.pages, run.closed
            last.zero_pages += run.zero_pages
            last.samples += run.samples[: SAMPLES - len(last.samples)]
        else:
            out.append(run)
    return out
