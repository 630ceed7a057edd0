"""The makedumpfile flattened stream: file header and record header (kdump-format.md §11)."""

from __future__ import annotations

from dataclasses import dataclass

from kdfix.format.layout import LP64_BE, Layout, cfield


@dataclass(frozen=True, slots=True)
class FlatHeader:
    """``struct makedumpfile_header``, the first bytes of a flattened stream."""

    signature: bytes = cfield("char[16]")
    type: int = cfield("s64")
    version: int = cfield("s64")


@dataclass(frozen=True, slots=True)
class FlatRecord:
    """``struct makedumpfile_data_header``: where the ``buf_size`` bytes that follow go in the file."""

    offset: int = cfield("s64")
    buf_size: int = cfield("s64")


FLAT_HEADER = Layout.declare("makedumpfile_header", FlatHeader)
FLAT_RECORD = Layout.declare("makedumpfile_data_header", FlatRecord)

# The stream is big-endian whatever the dumped machine.
FLAT_ABI = LP64_BE
FLAT_HEADER_BOUND = FLAT_HEADER.bind(FLAT_ABI)
FLAT_RECORD_BOUND = FLAT_RECORD.bind(FLAT_ABI)
FLAT_RECORD_SIZE = FLAT_RECORD_BOUND.size
