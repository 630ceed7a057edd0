"""i386: 2-level and PAE walks (arch-kernels-and-introspection.md §2.3), the lowmem rule and kernel offset with the
measured values of §2.2, and the 144-byte NT_PRSTATUS (§2.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.arch.base import NO_VADDR
from kdfix.arch.i386 import ARCH, translate_2level, translate_pae
from kdfix.errors import UnsupportedError
from kdfix.notes.vmcoreinfo import VmcoreInfo
from tests.arch.tables import I386Tables, PageStore

PAE_VMCOREINFO = (
    b"OSRELEASE=6.1.0-27-686-pae\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=cd1d5000\nSYMBOL(_stext)=cc000000\n"
    b"CONFIG_X86_PAE=y\n"
)


@pytest.mark.parametrize("pae", [False, True])
def test_small_pages(pae):
    store = PageStore()
    t = I386Tables(store, pae=pae)
    t.map(0xC1234000, 0x01234000)
    walk = translate_pae if pae else translate_2level
    assert walk(store.read, t.root, 0xC1234ABC) == 0x01234ABC
    assert walk(store.read, t.root, 0xC1235000) is None
    assert walk(store.read, t.root, 0x08048000) is None


def test_pae_2m_and_high_pa():
    """PAE 2 MiB pages, NX bit 63 masked, and PAs above 4 GiB (36-bit)."""
    store = PageStore()
    t = I386Tables(store, pae=True)
    t.map(0xC0000000, 0x0, large=True)
    t.map(0xF8000000, 0x9_0000_0000)
    assert translate_pae(store.read, t.root, 0xC01FFFFF) == 0x1FFFFF
    assert translate_pae(store.read, t.root, 0xF8000010) == 0x9_0000_0010


def test_2level_4m_pse36():
    """4 MiB PSE pages; PSE-36 puts PA[39:32] in PDE bits [20:13]."""
    store = PageStore()
    t = I386Tables(store, pae=False)
    t.map(0xC0400000, 0x00400000, large=True)
    t.map(0xC0800000, 0x3_0000_0000, large=True)
    assert translate_2level(store.read, t.root, 0xC0412345) == 0x412345
    assert translate_2level(store.read, t.root, 0xC0812345) == 0x3_0001_2345


@given(st.booleans(), st.lists(st.tuples(st.integers(0xC0000, 0xFFFFF), st.integers(0, 0xFFFFF)), min_size=1,
                               max_size=8, unique_by=lambda x: x[0]))  # fmt: skip
def test_random_pages(pae, pairs):
    store = PageStore(first_free=0x4000_0000)
    t = I386Tables(store, pae=pae)
    for vp, pp in pairs:
        t.map(vp << 12, pp << 12)
    walk = translate_pae if pae else translate_2level
    for vp, pp in pairs:
        assert walk(store.read, t.root, vp << 12 | 0x7) == pp << 12 | 0x7


def test_measured_kaslr_and_nokaslr():
    """§2.2: nokaslr _stext 0xc1000000 → PA 0x1000000, offset 0; KASLR _stext 0xcc000000 → 0xc000000, 0xb000000."""
    kaslr = VmcoreInfo.parse(PAE_VMCOREINFO)
    space = ARCH.kernel_space(kaslr)
    assert space.image_paddr(0xCC000000) == 0x0C000000
    assert ARCH.kernel_offset(kaslr) == 0xB000000 == space.kernel_offset
    assert space.pae and space.root_paddr == 0x0D1D5000
    assert ARCH.header_phys_base(kaslr) == 0 == space.phys_base
    nokaslr = VmcoreInfo.parse(PAE_VMCOREINFO.replace(b"cc000000", b"c1000000"))
    assert ARCH.kernel_offset(nokaslr) == 0
    assert ARCH.kernel_space(nokaslr).image_paddr(0xC1000000) == 0x1000000
    assert not ARCH.kernel_space(VmcoreInfo.parse(PAE_VMCOREINFO.replace(b"CONFIG_X86_PAE=y\n", b""))).pae


def test_non_4k_page_refused():
    with pytest.raises(UnsupportedError, match="PAGESIZE"):
        ARCH.kernel_space(VmcoreInfo.parse(PAE_VMCOREINFO.replace(b"PAGESIZE=4096", b"PAGESIZE=8192")))


def test_prstatus_layout_offsets():
    """§2.5: pr_reg at 72, eip at 120, esp at 132, 144 bytes; the header ABI is the packed 32-bit one."""
    layout = ARCH.prstatus()
    assert layout.size == 144 == ARCH.prstatus_size
    assert [layout.offset_of(f"pr_reg.{r}") for r in ("ebx", "eip", "esp")] == [72, 120, 132]
    assert ARCH.kdump_abi().word_size == 4 and ARCH.kdump_abi().align64 == 4


def test_proc_vmcore_load_vaddrs():
    """§2.4: lowmem PT_LOADs at 0xC0000000 + paddr; a range reaching 896 MiB gets none (kexec-tools' -1)."""
    assert ARCH.elf_load_vaddr(0, 0xA0000) == 0xC0000000
    assert ARCH.elf_load_vaddr(0xC0000, 0xFF40000) == 0xC00C0000
    assert ARCH.elf_load_vaddr(0x38000000 - 4096, 4096) == 0xF7FFF000
    assert ARCH.elf_load_vaddr(0x38000000 - 4096, 8192) == NO_VADDR
    assert ARCH.elf_load_vaddr(0xFD000000, 1 << 24) == NO_VADDR
