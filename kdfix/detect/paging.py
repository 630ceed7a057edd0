"""Pure x86_64 4/5-level page-table walks over a ``read(paddr, size)`` callable (phys-base-and-kaslr.md §3C)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from kdfix.errors import KdfixError
from kdfix.format.constants import START_KERNEL_MAP

ReadFn = Callable[[int, int], bytes]

PRESENT = 1 << 0
PAGE_SIZE_BIT = 1 << 7
ADDR_4K = 0x000FFFFFFFFFF000  # architectural bits 51:12 (NX bit 63 dropped)
ADDR_2M = 0x000FFFFFFFE00000
ADDR_1G = 0x000FFFFFC0000000
CR4_LA57 = 1 << 12
CR0_PG = 1 << 31
_TABLE = struct.Struct("<512Q")


@dataclass(frozen=True, slots=True)
class PageMapping:
    """One leaf mapping: page start ``vaddr`` → ``paddr``, ``size`` bytes, and the raw leaf entry."""

    vaddr: int
    paddr: int
    size: int
    entry: int


def level_shifts(levels: int) -> tuple[int, ...]:
    """Index shifts from the top level down: (39, 30, 21, 12) or (48, 39, 30, 21, 12)."""
    if levels not in (4, 5):
        raise ValueError(f"paging levels must be 4 or 5, got {levels}")
    return (48, 39, 30, 21, 12)[5 - levels :]


def canonical(vaddr: int, levels: int) -> int:
    """Sign-extend a virtual address from bit 47 (4-level) or 56 (5-level)."""
    top = 47 if levels == 4 else 56
    vaddr &= (1 << (top + 1)) - 1
    return vaddr | (((1 << 64) - 1) ^ ((1 << (top + 1)) - 1)) if vaddr >> top & 1 else vaddr


def _leaf(entry: int, shift: int, sme_mask: int) -> tuple[int, int] | None:
    """(paddr, size) if ``entry`` at the level of ``shift`` is a leaf, else None."""
    if shift == 12:
        return entry & ADDR_4K & ~sme_mask, 1 << 12
    if shift in (21, 30) and entry & PAGE_SIZE_BIT:
        mask = ADDR_2M if shift == 21 else ADDR_1G
        return entry & mask & ~sme_mask, 1 << shift
    return None


def translate(read: ReadFn, pgd_paddr: int, vaddr: int, *, levels: int = 4, sme_mask: int = 0) -> int | None:
    """Physical address of ``vaddr`` through the tables at ``pgd_paddr``; None if not mapped.

    A table that cannot be read raises the reader's KdfixError.
    """
    table = pgd_paddr & ADDR_4K
    for shift in level_shifts(levels):
        index = (vaddr >> shift) & 511
        (entry,) = struct.unpack("<Q", read(table + 8 * index, 8))
        if not entry & PRESENT:
            return None
        leaf = _leaf(entry, shift, sme_mask)
        if leaf is not None:
            paddr, size = leaf
            return paddr + (vaddr & (size - 1))
        table = entry & ADDR_4K & ~sme_mask
    return None  # pragma: no cover - the 4K level always returns


class WalkBudgetExceeded(Exception):
    """The search read more tables than allowed (foreign data)."""


def find_first_mapping(
    read: ReadFn,
    pgd_paddr: int,
    start_vaddr: int = START_KERNEL_MAP,
    *,
    levels: int = 4,
    sme_mask: int = 0,
    max_tables: int = 2048,
    skipped: list[str] | None = None,
) -> PageMapping | None:
    """The lowest mapped page at or above ``start_vaddr`` (crash ``find_kernel_start``, with backtracking).

    At each level the scan starts at ``start_vaddr``'s index while still on its path and at 0 once past it.
    Unreadable tables are skipped (noted in ``skipped``); more than ``max_tables`` reads raises WalkBudgetExceeded.
    """
    shifts = level_shifts(levels)
    reads = 0

    def walk(table: int, depth: int, prefix: int, on_start_path: bool) -> PageMapping | None:
        nonlocal reads
        reads += 1
        if reads > max_tables:
            raise WalkBudgetExceeded(f"more than {max_tables} page tables read")
        try:
            raw = read(table, 4096)
        except KdfixError as exc:
            if skipped is not None:
                skipped.append(f"table at {table:#x} unreadable: {exc.message}")
            return None
        entries = _TABLE.unpack(raw)
        shift = shifts[depth]
        first = (start_vaddr >> shift) & 511 if on_start_path else 0
        for index in range(first, 512):
            entry = entries[index]
            if not entry & PRESENT:
                continue
            vaddr = prefix | index << shift
            leaf = _leaf(entry, shift, sme_mask)
            if leaf is not None:
                return PageMapping(canonical(vaddr, levels), leaf[0], leaf[1], entry)
            if depth + 1 < len(shifts):
                found = walk(entry & ADDR_4K & ~sme_mask, depth + 1, vaddr, on_start_path and index == first)
                if found is not None:
                    return found
        return None

    return walk(pgd_paddr & ADDR_4K, 0, 0, True)
