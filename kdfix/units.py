"""Integer helpers used across kdfix: rounding, 64-bit two's complement, C strings.

A page's address is written out as ``pfn * page_size`` (and a pfn as ``paddr // page_size``) where it is
needed: the product is as plain as a helper's name, and the page size differs by container (block_size,
the ELF page size, a re-blocked view), so it is always passed in.
"""

from __future__ import annotations

U64_MASK = (1 << 64) - 1


def ceil_div(a: int, b: int) -> int:
    """Return ceil(a / b) for non-negative integers."""
    return -(-a // b)


def align_up(value: int, alignment: int) -> int:
    """Round ``value`` up to a multiple of ``alignment``."""
    return ceil_div(value, alignment) * alignment


def pad4(size: int) -> int:
    """Round a note name or desc size up to 4 bytes (ELF note padding)."""
    return (size + 3) & ~3


def to_u64(value: int) -> int:
    """Store a signed value as unsigned 64-bit two's complement."""
    return value & U64_MASK


def to_s64(value: int) -> int:
    """Read an unsigned 64-bit value as signed."""
    value &= U64_MASK
    return value - (1 << 64) if value >> 63 else value


def cstr(raw: bytes) -> str:
    """Decode a NUL-terminated C char array (latin-1, so every byte survives)."""
    return raw.split(b"\0", 1)[0].decode("latin-1")
