"""Infer a KDUMP file's ABI (word size, byte order, 32-bit sub-header packing) from its bytes (kdump-format.md §12)."""

from __future__ import annotations

from kdfix.format.constants import KDUMP_SIGNATURES
from kdfix.format.kdump import DISK_DUMP_HEADER, KDUMP_SUB_HEADER
from kdfix.format.layout import ARM32_BE, ARM32_LE, I386_BE, I386_LE, LP64_BE, LP64_LE, Abi

MIN_BLOCK_SIZE = 4096
MAX_BLOCK_SIZE = 262144

# libkdumpfile's order: 32-bit LE, 32-bit BE, 64-bit LE, 64-bit BE.  We try 64-bit first, but
# keep libkdumpfile's sanity rules, and prefer 64-bit when both pass (kdump-format.md §12 hazard).
_PROBE_ORDER = (LP64_LE, LP64_BE, I386_LE, I386_BE)


def _plausible(block0: bytes, abi: Abi) -> bool:
    main = DISK_DUMP_HEADER.bind(abi)
    if len(block0) < main.size:
        return False
    hdr = main.unpack(block0)
    bs = hdr.block_size
    if not (MIN_BLOCK_SIZE <= bs <= MAX_BLOCK_SIZE) or bs & (bs - 1):
        return False
    if hdr.sub_hdr_size < 0 or hdr.header_version < 0:
        return False
    return 8 * hdr.bitmap_blocks * bs >= hdr.max_mapnr


def probe_abi(block0: bytes) -> Abi | None:
    """Return the main-header ABI of a KDUMP/DISKDUMP block 0, or None if no layout is sane."""
    if block0[:8] not in KDUMP_SIGNATURES:
        return None
    for abi in _PROBE_ORDER:
        if _plausible(block0, abi):
            return abi
    return None


def choose_sub_header_abi(
    abi: Abi, header_version: int, sub_block: bytes, block_size: int, sub_hdr_size: int
) -> Abi:
    """For 32-bit files pick the i386 ("pack") or ARM32 ("pad") sub-header layout, as libkdumpfile does."""
    if abi.is_64bit or header_version < 3:
        return abi
    packed = I386_LE if abi.byte_order == "<" else I386_BE
    padded = ARM32_LE if abi.byte_order == "<" else ARM32_BE
    sub = KDUMP_SUB_HEADER.bind(packed, 3)
    if len(sub_block) < sub.size:
        return packed
    hdr = sub.unpack(sub_block)
    off, size = hdr.offset_vmcoreinfo, hdr.size_vmcoreinfo
    if off == 0 and size == 0:
        return packed
    if block_size < off and off + size <= (1 + sub_hdr_size) * block_size:
        return packed
    return padded
