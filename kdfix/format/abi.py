"""Infer a KDUMP file's ABI (word size, byte order, 32-bit sub-header packing) from its bytes (kdump-format.md §12)."""

from __future__ import annotations

from kdfix.format.constants import KDUMP_SIGNATURES
from kdfix.format.kdump import DISK_DUMP_HEADER, KDUMP_SUB_HEADER
from kdfix.format.layout import ARM32_BE, ARM32_LE, I386_BE, I386_LE, LP64_BE, LP64_LE, Abi

MIN_BLOCK_SIZE = 4096
MAX_BLOCK_SIZE = 262144

# libkdumpfile tries 32-bit LE, 32-bit BE, 64-bit LE, 64-bit BE and takes the first sane layout.  That
# misreads some 64-bit files (kdump-format.md §12 hazard), and trying 64-bit first misreads some 32-bit files
# (a 32-bit max_mapnr that is a power of two in [4096, 262144] reads as the 64-bit block_size).  So every view
# is scored: a sane view that also looks like a real dump beats a merely sane one; ties go to this order.
_PROBE_ORDER = (LP64_LE, LP64_BE, I386_LE, I386_BE)


def _score(block0: bytes, abi: Abi) -> int:
    """0: not sane; 1: passes libkdumpfile's sanity rules; 2: also looks like a real dump."""
    main = DISK_DUMP_HEADER.bind(abi)
    if len(block0) < main.size:
        return 0
    hdr = main.unpack(block0)
    bs = hdr.block_size
    if not (MIN_BLOCK_SIZE <= bs <= MAX_BLOCK_SIZE) or bs & (bs - 1):
        return 0
    if hdr.sub_hdr_size < 0 or hdr.header_version < 0:
        return 0
    if 8 * hdr.bitmap_blocks * bs < hdr.max_mapnr:
        return 0
    # Every writer's sub_hdr_size is at least 1 (the sub header's own block; kdump-format.md §2): a view that reads
    # it as 0 has found another field there.
    real = hdr.bitmap_blocks > 0 and hdr.max_mapnr > 0 and hdr.sub_hdr_size > 0 and 0 <= hdr.header_version <= 64
    real = real and 0 <= hdr.timestamp.tv_usec < 1_000_000  # a struct timeval's microseconds
    if abi.is_64bit:  # the 6 bytes between utsname and the 8-aligned timeval are padding
        pad_start = main.offset_of("utsname") + main.size_of("utsname.domainname") * 6
        real = real and not any(block0[pad_start : main.offset_of("timestamp")])
    return 2 if real else 1


def probe_abi(block0: bytes) -> Abi | None:
    """Return the main-header ABI of a KDUMP/DISKDUMP block 0, or None if no layout is sane."""
    if block0[:8] not in KDUMP_SIGNATURES:
        return None
    best, best_score = None, 0
    for abi in _PROBE_ORDER:
        score = _score(block0, abi)
        if score > best_score:
            best, best_score = abi, score
    return best


def choose_sub_header_abi(abi: Abi, header_version: int, sub_block: bytes, block_size: int, sub_hdr_size: int) -> Abi:
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
