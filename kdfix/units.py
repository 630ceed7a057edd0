"""Page arithmetic and the address-space aliases used across kdfix."""

from __future__ import annotations

from typing import TypeAlias

Pfn: TypeAlias = int
PAddr: TypeAlias = int
VAddr: TypeAlias = int
FileOffset: TypeAlias = int

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


def pfn_to_paddr(pfn: Pfn, page_size: int) -> PAddr:
    """Return the physical address of the first byte of page frame ``pfn``."""
    return pfn * page_size


def paddr_to_pfn(paddr: PAddr, page_size: int) -> Pfn:
    """Return the page frame number holding physical address ``paddr``."""
    return paddr // page_size


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
