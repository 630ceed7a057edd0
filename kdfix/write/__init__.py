"""Writers: KDUMP-compressed (plain, flattened, split) and ELF vmcores, through Sinks (mirror of kdfix.read)."""

from __future__ import annotations

from kdfix.write.atomic import atomic_output
from kdfix.write.elf import LoadSegment, write_elf
from kdfix.write.flattened import reassemble
from kdfix.write.kdump import KdumpLayout, WriteResult, plan_kdump, write_kdump
from kdfix.write.sink import FileSink, FlattenedSink, MemorySink, Sink
from kdfix.write.split import write_split

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
