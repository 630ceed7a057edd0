"""The seam between the kernel readers and kernel virtual memory: ``read(vaddr, size)``.

The parsers (printk, kallsyms, triage's stack scan) take any :class:`VirtualReader`, so they are pure and
testable on synthetic bytes; on a dump it is the architecture layer's KernelMemory (``kdfix.arch.kernel_reader``).
"""

from __future__ import annotations

from typing import Literal, Protocol

Endian = Literal["little", "big"]


class VirtualReader(Protocol):
    """Reads kernel virtual memory; raises AddressError for an address that is unmapped or not in the dump."""

    def read(self, vaddr: int, size: int) -> bytes: ...
