"""Pages a cut dump no longer holds, as runs: a truncated 64 GiB dump may miss millions of pages.

A run is a pfn range of one container in which every dumped page lacks the same thing (its descriptor
or its data) and no page is sound: listing each page would cost memory in proportion to the damage,
a run costs a few words and still names every page (the pfn range, how many dumped pages are in it)
and where in the file the loss begins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

DESCRIPTORS = "page descriptors"
PAGE_DATA = "page data"


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

    def describe(self) -> str:
        between = f"; {self.zero_pages} zero pages among them are present" if self.zero_pages else ""
        return (
            f"{self.path}: {self.pages} dumped pages in pfns [{self.start_pfn:#x}, {self.end_pfn:#x}) missing: "
            f"{self.what} from file offset {self.file_offset:#x} are not in the file ({self.file_size:#x} bytes)"
            f"{between}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error": self.describe()}


class RunCollector:
    """Collects missing pages in pfn order into runs; a sound or bad page in between ends a run."""

    def __init__(self, path: str, file_size: int) -> None:
        self.path = path
        self.file_size = file_size
        self.runs: list[MissingRun] = []
        self._open: MissingRun | None = None

    def missing(self, pfn: int, what: str, file_offset: int, pages: int = 1, end_pfn: int | None = None) -> None:
        """``pages`` dumped pages from ``pfn`` up to ``end_pfn`` (default ``pfn + 1``) lack ``what``."""
        end = pfn + 1 if end_pfn is None else end_pfn
        run = self._open
        if run is not None and run.what == what:
            run.end_pfn, run.pages = end, run.pages + pages
            return
        self.close()
        self._open = MissingRun(self.path, what, pfn, end, pages, file_offset, self.file_size)

    @property
    def open(self) -> bool:
        return self._open is not None

    def zero_page(self) -> None:
        """A zero page inside an open run: it keeps the run open (its bytes need no data in the file)."""
        if self._open is not None:
            self._open.zero_pages += 1

    def close(self) -> None:
        """The next page is present (or bad for another reason): the open run ends."""
        if self._open is not None:
            self.runs.append(self._open)
            self._open = None

    def finish(self) -> list[MissingRun]:
        self.close()
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
            last.end_pfn, last.pages = run.end_pfn, last.pages + run.pages
            last.zero_pages += run.zero_pages
        else:
            out.append(MissingRun(**asdict(run)))
    return out
