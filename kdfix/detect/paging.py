"""Compatibility names for the x86_64 page walk, which lives in the arch layer (kdfix.arch.x86_64)."""

from __future__ import annotations

from kdfix.arch.base import PageMapping, ReadFn, WalkBudgetExceeded
from kdfix.arch.x86_64 import (
    ADDR_1G,
    ADDR_2M,
    ADDR_4K,
    CR0_PG,
    CR4_LA57,
    PAGE_SIZE_BIT,
    PRESENT,
    canonical,
    find_first_mapping,
    level_shifts,
    translate,
)

__all__ = [
    "ADDR_1G",
    "ADDR_2M",
    "ADDR_4K",
    "CR0_PG",
    "CR4_LA57",
    "PAGE_SIZE_BIT",
    "PRESENT",
    "PageMapping",
    "ReadFn",
    "WalkBudgetExceeded",
    "canonical",
    "find_first_mapping",
    "level_shifts",
    "translate",
]
