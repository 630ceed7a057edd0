"""The synthetic Linux image: identities of phys-base-and-kaslr.md §1, kernel structures, notes and model fields."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.detect.paging import translate
from kdfix.errors import AddressError
from kdfix.format.constants import DEFAULT_LINK_TEXT, EM_X86_64, NOTE_NAME_CORE, NOTE_NAME_QEMU, START_KERNEL_MAP
from kdfix.format.layout import LP64_LE
from kdfix.format.notes import ELF_PRSTATUS_X86_64, QEMU_CPU_STATE
from kdfix.generate import synthetic
from kdfix.generate.synthetic import (
    CPU_ENTRY_AREA,
    IMAGE_SIZE,
    PAGE_OFFSET,
    SparseMemory,
    build_linux_image,
)
from kdfix.notes.framing import iter_notes
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.memory import PhysicalMemory
from kdfix.units import cstr, to_u64

MiB = 1 << 20
# The measured example of phys-base-and-kaslr.md §1.
MEASURED_PB, MEASURED_K, MEASURED_PA = -0x32200000, 0x35600000, 0x4400000


@pytest.fixture(scope="module")
def measured():
    return build_linux_image(memory_size=128 * MiB, cpus=2, phys_base=MEASURED_PB, kaslr_offset=MEASURED_K)


def test_measured_example_identities(measured):
    """PA(_text) = 0x1000000 + phys_base + KERNELOFFSET and the VMCOREINFO values of the measured dump."""
    model, memory, truth = measured
    assert truth.text_paddr == MEASURED_PA
    assert truth.text_vaddr == 0xFFFFFFFFB6600000
    assert truth.phys_base == 0xFFFFFFFFCDE00000
    assert truth.phys_base == to_u64(truth.text_paddr - (truth.text_vaddr - START_KERNEL_MAP))
    info = VmcoreInfo.parse(truth.vmcoreinfo)
    assert info.get("NUMBER(phys_base)") == "-840957952"
    assert info.get("KERNELOFFSET") == "35600000"
    assert info.symbol("_stext") == 0xFFFFFFFFB6600000
    assert info.symbol("init_top_pgt") == info.symbol("swapper_pg_dir") == truth.swapper_pg_dir
    assert info.number("KERNEL_IMAGE_SIZE") == 1 << 30 and info.number("pgtable_l5_enabled") == 0
    assert len(info.get("BUILD-ID")) == 40 and int(info.get("BUILD-ID"), 16) >= 0
    assert info.page_size == 4096 and info.offset("uts_namespace.name") == 0
    assert model.max_mapnr == memory.max_pfn == 0x100000  # a PC guest below 4 GiB, as QEMU dumps it


def test_kernel_structures_in_memory(measured):
    """linux_banner, init_uts_ns (name at offset 0) and the IDT are where the symbols say, via kphys."""
    _, memory, truth = measured

    def kphys(va: int) -> int:
        return to_u64(va - START_KERNEL_MAP + truth.phys_base)

    banner = memory.read(kphys(truth.linux_banner), 200)
    assert banner.startswith(f"Linux version {truth.release} ".encode())
    assert b"\n\0" in banner
    uts = memory.read(kphys(truth.init_uts_ns), 390)
    fields = [cstr(uts[i * 65 : (i + 1) * 65]) for i in range(6)]
    assert fields[0] == "Linux" and fields[2] == truth.release and fields[4] == "x86_64"
    gate = memory.read(truth.idt_paddr, 16)
    lo, _sel, _ist, attr, mid, hi, _ = struct.unpack("<HHBBHII", gate)
    handler = hi << 32 | mid << 16 | lo
    assert attr == 0x8E
    assert truth.text_vaddr <= handler < truth.text_vaddr + 2 * MiB


def test_page_tables_map_image_direct_map_and_idt_alias(measured):
    """init_top_pgt maps _text (and nothing below it), the direct map, and the cpu-entry-area IDT alias."""
    _, memory, truth = measured
    read = memory.read
    pgd = truth.pgd_paddr
    assert translate(read, pgd, truth.text_vaddr) == truth.text_paddr
    assert translate(read, pgd, truth.init_uts_ns) == truth.text_paddr + (truth.init_uts_ns - truth.text_vaddr)
    assert translate(read, pgd, truth.text_vaddr + IMAGE_SIZE - 1) == truth.text_paddr + IMAGE_SIZE - 1
    assert translate(read, pgd, truth.text_vaddr - 2 * MiB) is None  # cleanup_highmap left nothing below _text
    assert translate(read, pgd, truth.text_vaddr + IMAGE_SIZE) is None
    ram_end = memory.ranges[0][1] * 4096
    for paddr in (0, 0x12345678 % ram_end & ~0xFFF, ram_end - 4096):
        assert translate(read, pgd, PAGE_OFFSET + paddr) == paddr
    assert translate(read, pgd, CPU_ENTRY_AREA) == truth.idt_paddr
    assert pgd == truth.text_paddr + (truth.swapper_pg_dir - truth.text_vaddr)


def test_vmcoreinfo_buffers_as_the_kernel_keeps_them(measured):
    """A zeroed text page and a page-aligned note buffer (namesz 11, type 0, terminating empty note)."""
    _, memory, truth = measured
    assert truth.vmcoreinfo_data_paddr % 4096 == 0 and truth.vmcoreinfo_note_paddr % 4096 == 0
    page = memory.page(truth.vmcoreinfo_data_paddr // 4096)
    assert page.startswith(b"OSRELEASE=") and page.split(b"\0", 1)[0] == truth.vmcoreinfo
    buf = memory.read(truth.vmcoreinfo_note_paddr, 4096)
    namesz, descsz, ntype = struct.unpack_from("<III", buf)
    assert (namesz, descsz, ntype) == (11, len(truth.vmcoreinfo), 0)
    assert buf[12:24] == b"VMCOREINFO\0\0"
    notes = list(iter_notes(buf, LP64_LE))  # stops at the empty terminating note
    assert len(notes) == 1 and notes[0].desc == truth.vmcoreinfo
    end = 24 + ((descsz + 3) & ~3)
    assert buf[end : end + 12] == bytes(12)


@pytest.mark.parametrize("cpus", [1, 3])
def test_qemu_style_notes_and_model(cpus):
    """CORE x n (336 B, pr_pid cpu+1), QEMU x n (440 B, v1), then VMCOREINFO; makedumpfile-like utsname."""
    model, _, truth = build_linux_image(memory_size=64 * MiB, cpus=cpus, kaslr_offset=4 * MiB)
    names = [n.name for n in model.notes]
    assert names == [NOTE_NAME_CORE] * cpus + [NOTE_NAME_QEMU] * cpus + [b"VMCOREINFO"]
    prstatus = ELF_PRSTATUS_X86_64.bind(LP64_LE)
    qemu = QEMU_CPU_STATE.bind(LP64_LE, 1)
    for cpu in range(cpus):
        core = model.notes[cpu]
        assert core.type == 1 and len(core.desc) == 336
        pr = prstatus.unpack(core.desc)
        assert pr.pr_pid == cpu + 1
        assert truth.text_vaddr <= pr.pr_reg.rip < truth.text_vaddr + 2 * MiB
        q = model.notes[cpus + cpu]
        assert q.type == 0 and len(q.desc) == 440
        state = qemu.unpack(q.desc)
        assert (state.version, state.size) == (1, 440)
        assert state.cr0 == 0x80050033 and state.cr4 == 0x6B0 and state.cr3 == truth.pgd_paddr
        assert (state.idt.base, state.idt.limit) == (CPU_ENTRY_AREA, 0xFFF)
        assert state.rip == pr.pr_reg.rip
    assert model.notes[-1].desc == model.vmcoreinfo == truth.vmcoreinfo
    assert model.nr_cpus == cpus and model.dump_level == 1 and model.e_machine == EM_X86_64
    assert model.phys_base == truth.phys_base
    assert cstr(model.utsname.sysname) == "Linux" and cstr(model.utsname.release) == truth.release
    assert cstr(model.utsname.machine) == "x86_64" and cstr(model.utsname.version) == synthetic.UTS_VERSION
    assert cstr(model.utsname.nodename) == synthetic.UTS_NODENAME  # the kernel's init_uts_ns, as makedumpfile


def test_without_vmcoreinfo_looks_like_qemu_without_the_device():
    """No VMCOREINFO note or text, header phys_base 0, utsname zero except machine; memory still holds it."""
    model, memory, truth = build_linux_image(memory_size=64 * MiB, phys_base=-8 * MiB, vmcoreinfo_in_notes=False)
    assert model.vmcoreinfo is None and model.vmcoreinfo_note() is None
    assert model.phys_base == 0
    assert not any(getattr(model.utsname, f).strip(b"\0") for f in ("sysname", "nodename", "release", "version"))
    assert cstr(model.utsname.machine) == "x86_64"
    assert memory.read(truth.vmcoreinfo_data_paddr, 10) == b"OSRELEASE="


def test_qemu_header_bug_option():
    """qemu_header_bug stores the hex misparse of NUMBER(phys_base) (qemu-dumps.md §6 sample)."""
    model, _, truth = build_linux_image(phys_base=MEASURED_PB, kaslr_offset=MEASURED_K, qemu_header_bug=True)
    assert model.phys_base == 0xFFFFFFF7BF6A86AE
    assert truth.phys_base == 0xFFFFFFFFCDE00000


def test_phys_base_signed_and_u64_forms_are_the_same():
    a = build_linux_image(memory_size=64 * MiB, phys_base=-16 * MiB, kaslr_offset=32 * MiB)
    b = build_linux_image(memory_size=64 * MiB, phys_base=to_u64(-16 * MiB), kaslr_offset=32 * MiB)
    assert a[2] == b[2] and a[0] == b[0]
    assert a[1].nonzero_pfns == b[1].nonzero_pfns


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"phys_base": 200 * MiB}, "does not fit"),
        ({"phys_base": -18 * MiB}, "does not fit"),  # PA(_text) = -2 MiB
        ({"phys_base": 0x100000}, "multiple of 2 MiB"),
        ({"kaslr_offset": 3 * MiB}, "kaslr_offset"),
        ({"kaslr_offset": 1 << 30}, "kaslr_offset"),
        ({"memory_size": 4 * MiB}, "at least"),
        ({"memory_size": 64 * MiB + 1}, "multiple"),
        ({"memory_size": (1 << 32) - 256 * 1024}, "firmware ROM"),
        ({"cpus": 0}, "cpus"),
        ({"phys_base": 1 << 64}, "64-bit"),
        ({"release": "x" * 65}, "release"),
    ],
)
def test_invalid_parameters_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_linux_image(memory_size=kwargs.pop("memory_size", 64 * MiB), **kwargs)


def test_sparse_memory_protocol_and_contents():
    """RAM and the firmware ROM valid and dumped, the hole between not; absent pfns read as zeros; only non-zero
    pages are stored; seed matters."""
    _, memory, truth = build_linux_image(memory_size=64 * MiB, seed=7)
    ram = 64 * MiB // 4096
    assert isinstance(memory, PhysicalMemory)
    assert memory.ranges == ((0, ram), (0xFFFC0, 0x100000)) and memory.max_pfn == 0x100000
    assert memory.valid == memory.dumped
    assert list(memory.valid.iter_runs()) == [(0, ram), (0xFFFC0, 0x100000)]
    assert memory.valid.count() == ram + 64
    zero_pfn = next(p for p in range(ram) if memory.is_zero_page(p))
    assert memory.page(zero_pfn) == bytes(4096) and memory.present(zero_pfn)
    for hole in (ram, 0xFD000, 0xFFFBF):
        assert not memory.present(hole) and not memory.valid.test(hole)
        with pytest.raises(AddressError):
            memory.page(hole)
        with pytest.raises(AddressError):
            memory.page_head(hole, 8)
    assert not memory.present(memory.max_pfn)
    assert memory.read(ram * 4096 - 8, 16, zero_fill=True) == memory.read(ram * 4096 - 8, 8) + bytes(8)
    stored = memory.nonzero_pfns
    assert all(any(memory.page(p)) for p in stored[:50])
    assert 0.05 < len([p for p in stored if p < ram]) / ram < 0.5  # mostly zero, some data
    assert memory.page_head(truth.vmcoreinfo_data_paddr // 4096, 10) == b"OSRELEASE="
    pages = list(memory.iter_pages(10, 20))
    assert [p for p, _ in pages] == list(range(10, 20))
    across = [p for p, _ in memory.iter_pages(ram - 2, 0xFFFC2)]
    assert across == [ram - 2, ram - 1, 0xFFFC0, 0xFFFC1]  # the hole is skipped
    assert sum(1 for _ in memory.iter_pages()) == ram + 64
    other = build_linux_image(memory_size=64 * MiB, seed=8)[1]
    same = build_linux_image(memory_size=64 * MiB, seed=7)[1]
    assert same.nonzero_pfns == stored and other.nonzero_pfns != stored


def test_firmware_rom_looks_like_a_bios():
    """Seeded pseudo-BIOS in the top 256 KiB below 4 GiB: not all zero, seed-dependent, reset vector at its end."""
    mem7 = build_linux_image(memory_size=64 * MiB, seed=7)[1]
    mem8 = build_linux_image(memory_size=64 * MiB, seed=8)[1]
    rom7 = mem7.read(0xFFFC0000, 256 * 1024)
    assert 16 < sum(1 for p in mem7.nonzero_pfns if p >= 0xFFFC0) < 64
    assert rom7 != mem8.read(0xFFFC0000, 256 * 1024)
    assert rom7[-16:-11] == b"\xea\x5b\xe0\x00\xf0"  # jmp far f000:e05b at 0xfffffff0


def test_without_firmware_memory_is_ram_only():
    """firmware=False: one range, max_mapnr = RAM pages, every pfn valid; the RAM contents are the same."""
    model, memory, _ = build_linux_image(memory_size=64 * MiB, seed=7, firmware=False)
    with_rom = build_linux_image(memory_size=64 * MiB, seed=7)[1]
    ram = 64 * MiB // 4096
    assert model.max_mapnr == memory.max_pfn == ram and memory.ranges == ((0, ram),)
    assert memory.valid.count() == memory.dumped.count() == ram
    assert memory.nonzero_pfns == [p for p in with_rom.nonzero_pfns if p < ram]


def test_sparse_memory_rejects_bad_pages():
    with pytest.raises(ValueError):
        SparseMemory({5: b"x" * 100}, 10)
    with pytest.raises(ValueError):
        SparseMemory({10: bytes(4096)}, 10)
    with pytest.raises(ValueError, match="outside the memory ranges"):
        SparseMemory({4: bytes(4096)}, 10, ranges=[(0, 3), (5, 10)])  # in the hole
    with pytest.raises(ValueError, match="ascending and disjoint"):
        SparseMemory({}, 10, ranges=[(5, 10), (0, 6)])
    with pytest.raises(ValueError, match="outside"):
        SparseMemory({}, 10, ranges=[(0, 11)])
    assert SparseMemory({3: bytes(4096)}, 10).is_zero_page(3)


@given(bounds=st.lists(st.integers(0, 200), min_size=2, max_size=10, unique=True))
def test_sparse_memory_ranges_bitmap(bounds):
    """The bitmap of any range set has exactly the range pfns set; present() and iter_pages() agree with it."""
    edges = sorted(bounds)[: len(bounds) // 2 * 2]
    ranges = list(zip(edges[::2], edges[1::2], strict=True))
    memory = SparseMemory({}, 201, ranges=ranges)
    expected = {p for lo, hi in ranges for p in range(lo, hi)}
    assert set(memory.valid.iter_set()) == expected and memory.valid.nbits == 201
    assert {p for p in range(202) if memory.present(p)} == expected
    assert [p for p, _ in memory.iter_pages()] == sorted(expected)


@given(
    mem_mib=st.integers(32, 128).map(lambda n: n * 2),
    text_slot=st.integers(0, 1 << 20),
    k_slot=st.integers(0, 500),
    cpus=st.integers(1, 4),
)
def test_identities_hold_for_drawn_layouts(mem_mib, text_slot, k_slot, cpus):
    """For any fitting layout, _text translates through the tables to 0x1000000 + phys_base + KERNELOFFSET."""
    memory_size = mem_mib * MiB
    text_paddr = (text_slot % ((memory_size - IMAGE_SIZE) // (2 * MiB) + 1)) * 2 * MiB
    kaslr = k_slot * 2 * MiB
    phys_base = text_paddr - 0x1000000 - kaslr
    model, memory, truth = build_linux_image(
        memory_size=memory_size, cpus=cpus, phys_base=phys_base, kaslr_offset=kaslr, filler_fraction=0.01
    )
    assert truth.text_paddr == text_paddr and truth.text_vaddr == DEFAULT_LINK_TEXT + kaslr
    assert translate(memory.read, truth.pgd_paddr, truth.text_vaddr) == text_paddr
    assert translate(memory.read, truth.pgd_paddr, PAGE_OFFSET + text_paddr) == text_paddr
    assert VmcoreInfo.parse(truth.vmcoreinfo).phys_base == truth.phys_base == to_u64(phys_base)
    assert model.nr_cpus == cpus


def test_sparsemem_as_makedumpfile_decodes_it():
    """arch-kernels-and-introspection.md §6.2: SPARSEMEM_EXTREME by LENGTH(mem_section), root[nr / per_root] →
    section, PRESENT in section_mem_map, struct page(pfn) = coded + pfn * SIZE(page), _refcount 1 for RAM."""
    from kdfix.arch import kernel_reader

    model, memory, _ = build_linux_image(memory_size=200 * MiB, cpus=1, kaslr_offset=0x2000000)
    info = model.parsed_vmcoreinfo()
    assert info is not None
    kmem = kernel_reader(model, memory, info)

    def num(value: int | str | None) -> int:
        assert value is not None
        return int(value)

    size_sec, page_size = num(info.size("mem_section")), num(info.size("page"))
    section_bits = num(info.number("SECTION_SIZE_BITS"))
    nr_sections = 1 << (num(info.number("MAX_PHYSMEM_BITS")) - section_bits)
    per_root = 4096 // size_sec
    assert num(info.get("LENGTH(mem_section)")) == -(-nr_sections // per_root)  # extreme
    pfns_per_section = 1 << (section_bits - 12)
    root_va, map_off, ref_off = (num(info.symbol("mem_section")), num(info.offset("mem_section.section_mem_map")),
                                 num(info.offset("page._refcount")))  # fmt: skip
    ram_pfns = 200 * MiB // 4096
    for nr in range(-(-ram_pfns // pfns_per_section) + 1):
        root = kmem.read_u64(root_va + 8 * (nr // per_root))
        word = kmem.read_u64(root + (nr % per_root) * size_sec + map_off)
        if nr * pfns_per_section >= ram_pfns:
            assert word & 1 == 0  # no RAM, no section
            continue
        assert word & 1
        coded = word & ~0x1F
        for pfn in (nr * pfns_per_section, min(ram_pfns, (nr + 1) * pfns_per_section) - 1):
            assert kmem.read_u32(coded + pfn * page_size + ref_off) == 1
