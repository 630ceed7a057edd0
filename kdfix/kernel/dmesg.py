"""``kdfix dmesg``: the kernel log of a dump, fixed or not."""

from __future__ import annotations

import os
from dataclasses import dataclass

from kdfix.kernel.printk import KernelLog, read_kernel_log
from kdfix.kernel.view import kernel_view
from kdfix.read.probe import open_dump


@dataclass(frozen=True)
class DmesgResult:
    """The (selected) kernel log and where its VMCOREINFO came from."""

    paths: tuple[str, ...]
    vmcoreinfo_source: str
    log: KernelLog
    total_records: int


def dmesg(*paths: str | os.PathLike[str], since_seq: int | None = None, max_level: int | None = None) -> DmesgResult:
    """Read the kernel log of the dump at ``paths`` (several: one split set), selected by sequence and level."""
    with open_dump(*paths) as dump:
        view = kernel_view(dump)
        log = read_kernel_log(view.vmcoreinfo, view.memory, word_size=view.word_size, endian=view.endian)
    return DmesgResult(tuple(os.fspath(p) for p in paths), view.vmcoreinfo_source, log.select(since_seq=since_seq,
                       max_level=max_level), len(log.records))  # fmt: skip
