"""The makedumpfile flattened stream: file header and record header (kdump-format.md §11)."""

from __future__ import annotations

from kdfix.format.layout import LP64_BE, Field, Layout

FLAT_HEADER = Layout(
    "makedumpfile_header",
    [Field("signature", "char[16]"), Field("type", "s64"), Field("version", "s64")],
)
FLAT_RECORD = Layout("makedumpfile_data_header", [Field("offset", "s64"), Field("buf_size", "s64")])

# The stream is big-endian whatever the dumped machine.
FLAT_ABI = LP64_BE
FLAT_HEADER_BOUND = FLAT_HEADER.bind(FLAT_ABI)
FLAT_RECORD_BOUND = FLAT_RECORD.bind(FLAT_ABI)
FLAT_RECORD_SIZE = FLAT_RECORD_BOUND.size

FlatHeader = FLAT_HEADER.record_type
FlatRecord = FLAT_RECORD.record_type
