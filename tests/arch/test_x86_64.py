"""The pure x86_64 page-table walks of kdfix.arch.x86_64 (phys-base-and-kaslr.md §3C): translate and first mapping."""

from __future__ import annotations

import contextlib
import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.arch.x86_64 import WalkBudgetExceeded, canonical, find_first_mapping, level_shifts, translate
from kdfix.errors import AddressError
from kdfix.read.memory import DictMemory

PAGE = 4096


class Tables:
    """A tiny physical memory of page tables built by hand."""

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}

    def set(self, table_pfn: int, index: int, entry: int) -> None:
        page = self.pages.setdefault(table_pfn, bytearray(PAGE))
        struct.pack_into("<Q", page, 8 * index, entry)

    def memory(self, max_pfn: int = 0x10000) -> DictMemory:
        return DictMemory({p: bytes(b) for p, b in self.pages.items()}, max_pfn=max_pfn)


def test_level_shifts_and_canonical():
    assert level_shifts(4) == (39, 30, 21, 12)
    assert level_shifts(5) == (48, 39, 30, 21, 12)
    with pytest.raises(ValueError):
        level_shifts(3)
    assert canonical(0x0000FFFF80000000, 4) == 0xFFFFFFFF80000000
    assert canonical(0x01FFFFFF80000000, 5) == 0xFFFFFFFF80000000
    assert canonical(0x00007FFFFFFFF000, 4) == 0x00007FFFFFFFF000


def test_4level_2m_leaf_with_nx_and_backtracking():
    """PGD 511 → PUD 510 (empty PMD table) is skipped; the walk backtracks to PUD 511's 2 MiB leaf with NX."""
    t = Tables()
    t.set(1, 511, 2 * PAGE | 0x63)  # PGD → PUD table at pfn 2
    t.set(2, 510, 3 * PAGE | 0x63)  # PUD 510 → empty PMD table at pfn 3
    t.pages.setdefault(3, bytearray(PAGE))
    t.set(2, 511, 4 * PAGE | 0x63)  # PUD 511 → PMD table at pfn 4
    t.set(4, 7, (1 << 63) | 0x4400000 | 0x1E3)
    mem = t.memory()
    found = find_first_mapping(mem.read, PAGE)
    assert found is not None
    assert (found.vaddr, found.paddr, found.size) == (0xFFFFFFFFC0E00000, 0x4400000, 2 << 20)
    assert translate(mem.read, PAGE, 0xFFFFFFFFC0E12345) == 0x4412345
    assert translate(mem.read, PAGE, 0xFFFFFFFF80000000) is None


def test_start_indices_skip_entries_below_the_kernel_map():
    """Entries below PUD 510 / PMD 0 on the start path are ignored (they are not the kernel image)."""
    t = Tables()
    t.set(1, 511, 2 * PAGE | 0x63)
    t.set(2, 509, 5 * PAGE | 0x63)  # below the start index: ignored
    t.set(5, 0, 0x200000 | 0xE3)
    t.set(2, 510, 3 * PAGE | 0x63)
    t.set(3, 435, 0x4400000 | 0x1E1)
    found = find_first_mapping(t.memory().read, PAGE)
    assert found is not None and found.vaddr == 0xFFFFFFFFB6600000 and found.paddr == 0x4400000


def test_1g_and_4k_leaves_and_sme_mask():
    t = Tables()
    t.set(1, 511, 2 * PAGE | 0x63)
    t.set(2, 510, 0x40000000 | 0xE3 | (1 << 47))  # 1 GiB leaf with an SME C-bit
    mem = t.memory()
    assert translate(mem.read, PAGE, 0xFFFFFFFF80001234, sme_mask=1 << 47) == 0x40001234
    found = find_first_mapping(mem.read, PAGE, sme_mask=1 << 47)
    assert found is not None and found.size == 1 << 30 and found.paddr == 0x40000000
    t2 = Tables()
    t2.set(1, 511, 2 * PAGE | 0x63)
    t2.set(2, 510, 3 * PAGE | 0x63)
    t2.set(3, 0, 4 * PAGE | 0x63)
    t2.set(4, 3, 0x1234000 | 0x163)
    found = find_first_mapping(t2.memory().read, PAGE)
    assert found is not None and (found.vaddr, found.paddr, found.size) == (0xFFFFFFFF80003000, 0x1234000, 4096)


def test_5level_walk():
    """LA57: PML5 511 → P4D 511 → PUD 510 → PMD."""
    t = Tables()
    t.set(1, 511, 2 * PAGE | 0x63)
    t.set(2, 511, 3 * PAGE | 0x63)
    t.set(3, 510, 4 * PAGE | 0x63)
    t.set(4, 8, 0x2000000 | 0x1E1)
    mem = t.memory()
    found = find_first_mapping(mem.read, PAGE, levels=5)
    assert found is not None and found.vaddr == 0xFFFFFFFF81000000 and found.paddr == 0x2000000
    assert translate(mem.read, PAGE, 0xFFFFFFFF81000010, levels=5) == 0x2000010


def test_unreadable_tables_are_skipped_and_translate_raises():
    t = Tables()
    t.set(1, 511, (0x9999 * PAGE) | 0x63)  # points outside memory
    mem = t.memory(max_pfn=0x100)
    skipped: list[str] = []
    assert find_first_mapping(mem.read, PAGE, skipped=skipped) is None
    assert skipped and "unreadable" in skipped[0]
    with pytest.raises(AddressError):
        translate(mem.read, PAGE, 0xFFFFFFFF81000000)


def test_walk_budget_bounds_foreign_tables():
    """Tables full of present entries leading to empty leaves hit the read budget instead of reading 10^5 tables."""
    full_to = lambda pfn: b"".join(struct.pack("<Q", pfn * PAGE | 0x63) for _ in range(512))  # noqa: E731
    mem = DictMemory({1: full_to(2), 2: full_to(3), 3: full_to(4), 4: bytes(PAGE)}, max_pfn=16)
    with pytest.raises(WalkBudgetExceeded):
        find_first_mapping(mem.read, PAGE, max_tables=50)
    assert find_first_mapping(mem.read, PAGE, max_tables=10**6) is None


@given(st.integers(0, 2**32), st.integers(1, 8), st.integers(0, 7), st.booleans())
def test_random_tables_never_crash(seed, npages, pgd_pfn, in_range):
    """Foreign bytes as page tables: a mapping, None or the budget error, never another exception."""
    rng = random.Random(seed)
    if in_range:  # entries that point back into the few pages present: the adversarial case for the search
        pages = [
            b"".join(struct.pack("<Q", rng.getrandbits(12) | rng.randrange(8) * PAGE | rng.getrandbits(1) << 63)
                     for _ in range(512))
            for _ in range(npages)
        ]  # fmt: skip
    else:
        pages = [rng.randbytes(PAGE) for _ in range(npages)]
    mem = DictMemory(dict(enumerate(pages)), max_pfn=64)
    with contextlib.suppress(WalkBudgetExceeded):
        find_first_mapping(mem.read, pgd_pfn * PAGE, max_tables=200)
