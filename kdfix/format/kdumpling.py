"""kdumpling 0.4.0's KDUMP dialect, so that its files are read as they were meant (tools-and-oracles.md §6).

Its writer counts one bitmap in ``bitmap_blocks`` (the second follows the first; the descriptors follow
both), writes private page flags (0x04 on every page, 0x01 when the header's codec compressed it), and
stores its own codec numbers in ``status`` (8 for zstd, which is INCOMPLETE in the real format).
"""

from __future__ import annotations

from kdfix.format.constants import DumpFlag

PD_COMPRESSED = 0x01
PD_DUMPABLE = 0x04
PAGE_FLAGS = frozenset({PD_DUMPABLE, PD_DUMPABLE | PD_COMPRESSED})
STATUS_CODECS = {  # kdumpling's CompressionType value -> the real page flag of that codec
    0: 0,
    1: int(DumpFlag.COMPRESSED_ZLIB),
    2: int(DumpFlag.COMPRESSED_LZO),
    4: int(DumpFlag.COMPRESSED_SNAPPY),
    8: int(DumpFlag.COMPRESSED_ZSTD),
}
SUB_HDR_SIZE = 1  # it always writes one sub-header block
LZO_HEADER = 5  # python-lzo's compress() prefixes 0xf0 and the big-endian input length to the LZO1X block
NODENAME = b"synthetic"
PRSTATUS_SIZE = 332  # its NT_PRSTATUS desc: 4 bytes short of x86_64's elf_prstatus (336)


def page_flags(flags: int, status: int) -> int:
    """The real page flags of a kdumpling descriptor: the header's codec if it compressed the page, else raw."""
    return STATUS_CODECS.get(status, 0) if flags & PD_COMPRESSED else 0


def stored_block(offset: int, size: int, real_flags: int) -> tuple[int, int]:
    """Where the codec's own block lies in a kdumpling page's stored bytes (past python-lzo's header)."""
    if real_flags == DumpFlag.COMPRESSED_LZO and size > LZO_HEADER:
        return offset + LZO_HEADER, size - LZO_HEADER
    return offset, size


__all__ = [
    "NODENAME",
    "PAGE_FLAGS",
    "PD_COMPRESSED",
    "PD_DUMPABLE",
    "PRSTATUS_SIZE",
    "STATUS_CODECS",
    "SUB_HDR_SIZE",
    "page_flags",
    "stored_block",
]
