"""Fix by rewriting: a KDUMP file in another writer's dialect becomes a standard one, then gets the usual fix.

kdumpling's files (tools-and-oracles.md §6) are read by kdfix as they were meant, but crash, makedumpfile,
libkdumpfile and drgn read them as the format says, and find no page. Patching a header cannot move the
descriptor table or rewrite every page flag, so the pages are written anew in the standard layout (the
stored bytes of each page re-encoded with a codec the other tools read) and the result is fixed as any
KDUMP file is. Its short NT_PRSTATUS notes are padded to the architecture's size, and the zero pages it
left out of the 2nd bitmap are stored as zero pages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator

from kdfix.errors import KdfixError
from kdfix.format import kdumpling
from kdfix.format.bitmap import Bitmap
from kdfix.format.constants import NOTE_NAME_CORE, NoteType
from kdfix.model import DumpModel
from kdfix.notes.framing import Note
from kdfix.read.dump import Dump, verify_dump
from kdfix.read.memory import HeldPages, PhysicalMemory
from kdfix.read.probe import open_dump


def foreign_layout(dump: Dump) -> str | None:
    """Why ``dump`` must be rewritten rather than patched, or None."""
    k = dump.kdump
    if k is not None and dump.split is None and k.dialect == "kdumpling":
        return ("rewrite in the standard KDUMP layout (kdumpling's bitmap_blocks, page flags and status are read "
                "by no other tool)")  # fmt: skip
    return None


def _padded_notes(model: DumpModel) -> tuple[Note, ...]:
    """NT_PRSTATUS notes of kdumpling's short size padded with zeros to the architecture's size."""
    from kdfix.arch import recognise

    found = recognise(model)
    size = found.arch.prstatus_size if found is not None else None
    out = []
    for n in model.notes:
        short = n.name == NOTE_NAME_CORE and n.type == NoteType.NT_PRSTATUS and len(n.desc) == kdumpling.PRSTATUS_SIZE
        out.append(dataclasses.replace(n, desc=n.desc.ljust(size, b"\0")) if short and size and size > len(n.desc)
                   else n)  # fmt: skip
    return tuple(out)


class ZeroPagesPresent(HeldPages):
    """The memory with every valid page dumped: the ones the 2nd bitmap leaves out are zero pages.

    kdumpling drops zero pages from the 2nd bitmap (with dump_level 1) meaning "all zero"; other readers take
    an excluded page as unreadable (makedumpfile: "pfn is excluded"), so the rewrite stores them as zero pages.
    """

    def __init__(self, memory: PhysicalMemory) -> None:
        self._memory = memory
        self.page_size = memory.page_size
        self.max_pfn = memory.max_pfn
        self._zero = bytes(memory.page_size)

    @property
    def valid(self) -> Bitmap:
        return self._memory.valid

    @property
    def dumped(self) -> Bitmap:
        return self._memory.valid

    def present(self, pfn: int) -> bool:
        return self._memory.valid.test(pfn)

    def page(self, pfn: int) -> bytes:
        if self._memory.present(pfn):
            return self._memory.page(pfn)
        if self.present(pfn):
            return self._zero
        return self._memory.page(pfn)  # its own AddressError

    def is_zero_page(self, pfn: int) -> bool:
        return self.present(pfn) and not self._memory.present(pfn)

    def iter_pages(self, start_pfn: int = 0, end_pfn: int | None = None) -> Iterator[tuple[int, bytes]]:
        stored = self._memory.iter_pages(start_pfn, end_pfn)
        nxt = next(stored, None)
        for pfn in self.valid.iter_set(start_pfn, self.max_pfn if end_pfn is None else end_pfn):
            if nxt is not None and nxt[0] == pfn:
                yield nxt
                nxt = next(stored, None)
            else:
                yield pfn, self._zero


def write_standard(dump: Dump, target: str) -> None:
    """Write ``dump`` to ``target`` as a standard KDUMP file (zlib unless it stored pages raw)."""
    from kdfix.write import write_kdump

    model = dataclasses.replace(dump.model, notes=_padded_notes(dump.model), status=0)  # its status is its own
    codec = "none" if dump.compression == "none" else "zlib"
    write_kdump(target, model, ZeroPagesPresent(dump.memory), codec=codec, phys_base_from_vmcoreinfo=False)


@contextlib.contextmanager
def standard_copy(path: str, beside: str) -> Iterator[str]:
    """A temporary standard KDUMP copy of ``path`` in the directory of ``beside``, checked and then removed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(beside)}.", suffix=".kdfix-std",
                               dir=os.path.dirname(os.path.abspath(beside)))  # fmt: skip
    os.close(fd)
    try:
        with open_dump(path) as dump:
            write_standard(dump, tmp)
        with open_dump(tmp) as copy:
            report = verify_dump(copy)
            if copy.kdump is None or copy.kdump.dialect is not None or not report.ok:
                raise KdfixError("the rewritten copy does not verify: "
                                 + "; ".join(report.errors[:3] + [b["error"] for b in report.bad_pages[:3]]),
                                 path=path)  # fmt: skip
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


__all__ = ["foreign_layout", "standard_copy", "write_standard"]
