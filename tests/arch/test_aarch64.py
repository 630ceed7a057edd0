"""aarch64: table walks for every granule (arch-kernels-and-introspection.md §1.5), the image and linear-map
rules with the measured values of §1.1/§1.3, and the 392-byte NT_PRSTATUS (§1.8)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.arch import aarch64
from kdfix.arch.aarch64 import ARCH, level_shifts, translate
from kdfix.errors import UnsupportedError
from kdfix.notes.vmcoreinfo import VmcoreInfo
from tests.arch.tables import AARCH64_LEVELS, PAGE_SHIFTS, Aarch64Tables, PageStore

U64 = (1 << 64) - 1
# The measured KASLR guest of §1.1 (and the §1.3 image check, same guest family).
KASLR_VMCOREINFO = b"""OSRELEASE=6.1.0-27-cloud-arm64
PAGESIZE=4096
SYMBOL(swapper_pg_dir)=ffffd178b7f8f000
SYMBOL(_stext)=ffffd178b6c10000
SYMBOL(mem_section)=ffff06e297f1b380
NUMBER(VA_BITS)=48
NUMBER(kimage_voffset)=0xffffd17876a00000
NUMBER(PHYS_OFFSET)=0xffffd74780000000
NUMBER(TCR_EL1_T1SZ)=0x10
KERNELOFFSET=5178aec00000
"""


@pytest.mark.parametrize(("granule", "va_bits"), sorted(AARCH64_LEVELS))
def test_level_count_matches_reference_table(granule, va_bits):
    shifts = level_shifts(PAGE_SHIFTS[granule], va_bits)
    assert len(shifts) == AARCH64_LEVELS[(granule, va_bits)]
    assert shifts[-1] == PAGE_SHIFTS[granule]  # the last level resolves pages


@pytest.mark.parametrize(("granule", "va_bits"), sorted(AARCH64_LEVELS))
def test_page_mappings_translate(granule, va_bits):
    store = PageStore(granule)
    t = Aarch64Tables(store, granule, va_bits)
    va = (U64 << va_bits | 0x1234 * granule) & U64  # a kernel (TTBR1) address
    t.map(va, 0x40000000 + 7 * granule)
    got = translate(store.read, t.root, va + 0x123, page_shift=PAGE_SHIFTS[granule], va_bits=va_bits)
    assert got == 0x40000000 + 7 * granule + 0x123
    assert translate(store.read, t.root, va + granule, page_shift=PAGE_SHIFTS[granule], va_bits=va_bits) is None


@pytest.mark.parametrize(("level", "size"), [(1, 1 << 30), (2, 2 << 20)])
def test_4k_blocks(level, size):
    """4K granule: 1 GiB blocks at L1 and 2 MiB blocks at L2 (§1.5 table); attributes are masked off."""
    store = PageStore()
    t = Aarch64Tables(store)
    va = 0xFFFF000000000000 + 3 * size
    t.map(va, 0x80000000, leaf_level=level)
    assert translate(store.read, t.root, va + size - 8) == 0x80000000 + size - 8


def test_64k_52bit_output_address():
    """64K pages with 52-bit PAs keep PA[51:48] in descriptor bits [15:12] (makedumpfile __pte_to_phys)."""
    store = PageStore(65536)
    t = Aarch64Tables(store, 65536, 48)
    va = 0xFFFF800000010000
    t.map(va, 0x40000000 | (0x3 << 12))  # bits [15:12] = 3 → PA bit 49-48 = 3
    got = translate(store.read, t.root, va, page_shift=16, va_bits=48, lpa=True)
    assert got == (0x3 << 48) | 0x40000000
    assert translate(store.read, t.root, va, page_shift=16, va_bits=48, lpa=False) == 0x40000000


@given(
    st.sampled_from(sorted(AARCH64_LEVELS)),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 1 << 16)), min_size=1, max_size=8),
)
def test_random_mappings(config, pairs):
    """Every page mapped by the reference-built tables translates to its PA; neighbours stay unmapped."""
    granule, va_bits = config
    store = PageStore(granule, first_free=1 << 36)
    t = Aarch64Tables(store, granule, va_bits)
    base = (U64 << va_bits) & U64
    span = 1 << (va_bits - PAGE_SHIFTS[granule])
    vpages = {vp % span for vp, _ in pairs}
    for vp, pp in pairs:
        t.map(base + (vp % span) * granule, pp * granule)
    for vp, pp in pairs:
        if sum(1 for v, _ in pairs if v % span == vp % span) > 1:
            continue
        va = base + (vp % span) * granule + 5
        assert translate(store.read, t.root, va, page_shift=PAGE_SHIFTS[granule], va_bits=va_bits) == pp * granule + 5
    free = next(v for v in range(span) if v not in vpages)
    shift = PAGE_SHIFTS[granule]
    assert translate(store.read, t.root, base + free * granule, page_shift=shift, va_bits=va_bits) is None


def test_measured_kaslr_rules():
    """§1.3: mem_section (linear) → 0x57f1b380 with that guest's PHYS_OFFSET; _stext (image) - kimage_voffset."""
    info = VmcoreInfo.parse(KASLR_VMCOREINFO)
    space = ARCH.kernel_space(info)
    assert space.phys_base == 0xFFFFD74780000000 == ARCH.header_phys_base(info)
    assert space.page_offset == 0xFFFF000000000000 and space.page_end == 0xFFFF800000000000
    assert space.vabits_actual == 48 and space.page_shift == 12
    assert space.image_paddr(0xFFFFD178B6C10000) == 0x40210000
    assert space.root_paddr == 0xFFFFD178B7F8F000 - 0xFFFFD17876A00000
    # The §1.3 mem_section sample was measured with PHYS_OFFSET 0xfffff91dc0000000.
    other = ARCH.kernel_space(info, phys_base=0xFFFFF91DC0000000)
    assert other.rule_paddr(0xFFFF06E297F1B380) == 0x57F1B380
    assert other.rule_paddr(0xFFFFD178B6C10000) is None  # image VAs are not in the linear map
    assert ARCH.kernel_offset(info) == 0x5178AEC00000


def test_nokaslr_values():
    """§1.1 nokaslr: _stext 0xffff800008010000, kimage_voffset 0xffff7fffc7e00000 → PA 0x40210000."""
    info = VmcoreInfo.parse(
        b"PAGESIZE=4096\nSYMBOL(_stext)=ffff800008010000\nNUMBER(VA_BITS)=48\nNUMBER(kimage_voffset)=0xffff7fffc7e00000\n"
        b"NUMBER(PHYS_OFFSET)=0x40000000\nKERNELOFFSET=0\n"
    )
    space = ARCH.kernel_space(info)
    assert space.image_paddr(0xFFFF800008010000) == 0x40210000
    assert space.rule_paddr(0xFFFF000000001000) == 0x40001000
    assert ARCH.kernel_offset(info) == 0


def test_old_layout_before_5_4():
    """< 5.4: the linear map is the upper half from ~0 << (VA_BITS-1) (§1.2)."""
    info = VmcoreInfo.parse(
        b"PAGESIZE=4096\nSYMBOL(_stext)=ffff000008081000\nNUMBER(VA_BITS)=48\nNUMBER(kimage_voffset)=0xffff000008000000\n"
        b"NUMBER(PHYS_OFFSET)=0x40000000\n"
    )
    space = ARCH.kernel_space(info)
    assert space.page_offset == 0xFFFF800000000000
    assert space.rule_paddr(0xFFFF800000002000) == 0x40002000
    assert space.rule_paddr(0xFFFF000008081000) is None


@pytest.mark.parametrize("drop", ["NUMBER(kimage_voffset)", "NUMBER(PHYS_OFFSET)"])
def test_missing_keys_refused(drop):
    text = b"\n".join(line for line in KASLR_VMCOREINFO.split(b"\n") if not line.startswith(drop.encode()))
    with pytest.raises(UnsupportedError, match=r"NUMBER\("):
        ARCH.kernel_space(VmcoreInfo.parse(text))


def test_bad_page_size_refused():
    with pytest.raises(UnsupportedError, match="PAGESIZE"):
        ARCH.kernel_space(VmcoreInfo.parse(KASLR_VMCOREINFO.replace(b"PAGESIZE=4096", b"PAGESIZE=8192")))


def test_prstatus_layout_offsets():
    """§1.8: x0 at 112, sp 360, pc 368, pstate 376, 392 bytes in all."""
    layout = ARCH.prstatus()
    assert layout.size == 392 == ARCH.prstatus_size
    assert [layout.offset_of(f"pr_reg.{r}") for r in ("x0", "x30", "sp", "pc", "pstate")] == [112, 352, 360, 368, 376]
    assert layout.offset_of("pr_fpvalid") == 384


def test_signed_phys_offset():
    assert aarch64.signed_phys_offset(0xFFFFD74780000000) == 0xFFFFD74780000000 - (1 << 64)
