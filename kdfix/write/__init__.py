"""Writers: KDUMP-compressed (plain, flattened, split) and ELF vmcores, through Sinks (mirror of kdfix.read).

The names below are imported on first use: a command that only needs ``atomic_output`` (every fix) does not load
the ELF, split and parallel KDUMP writers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kdfix.write.atomic import atomic_output
    from kdfix.write.elf import LoadSegment, write_elf
    from kdfix.write.flattened import reassemble
    from kdfix.write.kdump import KdumpLayout, WriteResult, plan_kdump, write_kdump
    from kdfix.write.sink import FileSink, FlattenedSink, MemorySink, Sink
    from kdfix.write.split import write_split

_MODULES = {  # module -> the names it gives this package
    "atomic": ("atomic_output",),
    "elf": ("LoadSegment", "write_elf"),
    "flattened": ("reassemble",),
    "kdump": ("KdumpLayout", "WriteResult", "plan_kdump", "write_kdump"),
    "sink": ("FileSink", "FlattenedSink", "MemorySink", "Sink"),
    "split": ("write_split",),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "FileSink",
    "FlattenedSink",
    "KdumpLayout",
    "LoadSegment",
    "MemorySink",
    "Sink",
    "WriteResult",
    "atomic_output",
    "plan_kdump",
    "reassemble",
    "write_elf",
    "write_kdump",
    "write_split",
]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
