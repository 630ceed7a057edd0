"""Reader against real QEMU 7.2 output: kdump pages equal ELF pages, flattened equals its reassembly.

Uses the committed fixtures (firmware-16m.*, same stopped guest) and, in the oracle tier, a booted Linux guest.
"""

from __future__ import annotations

from kdfix import open_dump
from kdfix.format.constants import EM_386, EM_X86_64, KDUMP_SIGNATURE, NOTE_NAME_CORE, NOTE_NAME_QEMU
from kdfix.notes.qemu_cpu import decode_note
from kdfix.read.flattened import FlattenedSource
from kdfix.read.origin import identify_origin
from kdfix.read.source import FileSource
from kdfix.units import cstr


def assert_same_pages(kdump_path, elf_path, *, min_pages: int) -> None:
    with open_dump(kdump_path) as kd, open_dump(elf_path) as elf:
        assert kd.container == "flattened" and elf.container == "elf"
        kd_pfns = []
        for pfn, page in kd.memory.iter_pages():
            kd_pfns.append(pfn)
            assert page == elf.memory.page(pfn), f"pfn {pfn:#x}"
        elf_pfns = [pfn for pfn, _ in elf.memory.iter_pages()]
        assert kd_pfns == elf_pfns
        assert len(kd_pfns) >= min_pages
        # random access agrees with streaming
        for pfn in kd_pfns[:: max(1, len(kd_pfns) // 50)]:
            assert kd.memory.page(pfn) == elf.memory.page(pfn)
        assert kd.memory.read(0xFFFF0, 16) == elf.memory.read(0xFFFF0, 16)


def test_every_kdump_page_equals_the_elf_page(firmware_kdump, firmware_elf):
    """Each page decoded from QEMU kdump-zlib equals the ELF page of the same stopped guest."""
    assert_same_pages(firmware_kdump, firmware_elf, min_pages=4160)


def test_linux_guest_kdump_pages_equal_elf_pages(guest_seabios_kaslr):
    """Same on a booted Linux guest (128 MiB, KASLR): compressed, raw and shared-zero pages all agree."""
    g = guest_seabios_kaslr
    assert_same_pages(g.kdump_zlib, g.elf, min_pages=30000)
    with open_dump(g.kdump_zlib) as kd:
        assert kd.problems == []
        kinds = {"zero": 0, "raw": 0, "zlib": 0}
        for _pfn, desc in kd.kdump.iter_descriptors():
            if kd.kdump._desc_is_zero(desc):
                kinds["zero"] += 1
            else:
                kinds["raw" if desc.flags == 0 else "zlib"] += 1
        assert all(kinds.values()), kinds  # qemu-dumps.md §5: all three kinds occur
        assert kd.memory.dumped == kd.memory.valid
        assert identify_origin(kd)[0] == "qemu"


def test_flattened_equals_makedumpfile_reassembly(firmware_kdump, firmware_reassembled):
    """FlattenedSource serves exactly the bytes of ``makedumpfile -R``; headers and pages match too."""
    reassembled = firmware_reassembled
    with FileSource(firmware_kdump) as stream:
        flat = FlattenedSource(stream)
        expected = reassembled.read_bytes()
        assert flat.size == len(expected)
        assert flat.read_at(0, flat.size) == expected
        for off in range(0, flat.size, 7919):  # unaligned reads across record boundaries
            assert flat.read_at(off, 5000) == expected[off : off + 5000]
        assert flat.problems == [] and flat.end_marker
    with open_dump(firmware_kdump) as a, open_dump(reassembled) as b:
        assert (a.container, b.container) == ("flattened", "kdump")
        assert a.main_header == b.main_header and a.sub_header == b.sub_header
        assert a.notes == b.notes and a.model == b.model
        assert list(a.memory.iter_pages()) == list(b.memory.iter_pages())


def test_qemu_header_facts(firmware_kdump, firmware_elf):
    """Header values are QEMU's (qemu-dumps.md §3-§5) for a 2-vCPU, firmware-only q35 guest."""
    with open_dump(firmware_kdump) as d:
        mh, sh = d.main_header, d.sub_header
        assert d.signature == KDUMP_SIGNATURE and d.header_version == 6
        assert d.compression == "zlib" and mh.status == 1
        assert mh.block_size == 4096 and mh.nr_cpus == 2
        assert cstr(mh.utsname.machine) == "x86_64" and not cstr(mh.utsname.sysname)
        assert mh.timestamp.tv_sec == 0 and mh.timestamp.tv_usec == 0
        assert mh.max_mapnr == 0x100000 and sh.max_mapnr_64 == 0x100000 and mh.bitmap_blocks == 64
        assert sh.dump_level == 1 and sh.phys_base == 0 and sh.split == 0
        assert sh.offset_note == 4096 + 104
        assert sh.size_note == 2 * 624  # real mode: EM_386 notes, 164 + 460 per CPU
        assert (sh.offset_vmcoreinfo, sh.size_vmcoreinfo) == (0, 0) and d.vmcoreinfo is None
        assert d.kdump.bitmap1_offset == (1 + mh.sub_hdr_size) * 4096
        assert d.kdump.data_offset == (1 + mh.sub_hdr_size + 64) * 4096
        # identical bitmaps, firmware at the top of 4 GiB is dumped (§5)
        assert d.memory.valid == d.memory.dumped
        assert d.memory.present(0xFFFFF) and d.memory.present(0)
        assert not d.memory.present(0x1000) and not d.memory.present(0xFFFBF)  # above 16 MiB RAM, below BIOS
        names = [n.name for n in d.notes]
        assert names == [NOTE_NAME_CORE, NOTE_NAME_CORE, NOTE_NAME_QEMU, NOTE_NAME_QEMU]
        prs = [decode_note(n, d.abi) for n in d.notes[:2]]
        assert [p.pr_pid for p in prs] == [1, 2]
        assert prs[0].pr_reg.eip == 0xFFF0 and prs[0].pr_reg.cs == 0xF000  # reset vector
        qemu = decode_note(d.notes[2], d.abi)
        assert qemu.size == 440 and qemu.version == 1
        origin, evidence = identify_origin(d)
        assert origin == "qemu" and evidence
        zeros = sum(1 for pfn in range(0, 0x100) if d.memory.present(pfn) and d.memory.is_zero_page(pfn))
        assert zeros > 0
    with open_dump(firmware_elf) as e:
        assert e.signature is None and e.container == "elf"
        assert e.elf.e_machine == EM_386 != EM_X86_64
        assert e.elf.ei_class == 2 and not e.elf.phdrs_follow_ehdr and e.elf.e_phoff == 192
        assert e.model.nr_cpus == 2 and e.model.e_machine == EM_386
        assert not e.elf.incomplete


def test_linux_guest_flattened_equals_reassembly(guest_seabios_kaslr, tmp_path):
    """On a 40 MB real stream: FlattenedSource bytes == ``makedumpfile -R`` output, chunk by chunk."""
    from tests.read.conftest import reassemble_with_makedumpfile

    out = reassemble_with_makedumpfile(guest_seabios_kaslr.kdump_zlib, tmp_path / "linux.kdump")
    with FileSource(guest_seabios_kaslr.kdump_zlib) as stream, open(out, "rb") as expected:
        flat = FlattenedSource(stream)
        assert flat.size == out.stat().st_size
        pos = 0
        while pos < flat.size:
            assert flat.read_at(pos, 1 << 20) == expected.read(1 << 20), f"at {pos:#x}"
            pos += 1 << 20


def test_linux_guest_with_vmcoreinfo(guest_seabios_kaslr_vmcoreinfo):
    """With -device vmcoreinfo: the note is last, offset_vmcoreinfo points at its desc, and it parses."""
    g = guest_seabios_kaslr_vmcoreinfo
    with open_dump(g.kdump_zlib) as d, open_dump(g.elf) as e:
        assert d.problems == []
        assert d.vmcoreinfo is not None and d.vmcoreinfo.osrelease == g.truth.osrelease
        assert d.notes[-1].name == b"VMCOREINFO"
        sh = d.sub_header
        assert sh.offset_vmcoreinfo == d.notes[-1].offset + 24 and sh.size_vmcoreinfo == len(d.notes[-1].desc)
        assert e.vmcoreinfo is not None and e.vmcoreinfo.raw == d.vmcoreinfo.raw
        assert e.model.phys_base == d.vmcoreinfo.phys_base
        assert e.elf.e_machine == EM_X86_64 and d.model.nr_cpus == e.model.nr_cpus == 2
        prs = decode_note(d.notes[0], d.abi)
        assert prs.pr_reg.rip != 0 and prs.pr_pid == 1


def test_pages_match_drgn(guest_seabios_kaslr_vmcoreinfo):
    """drgn (libkdumpfile) reads the same physical bytes as kdfix from the same kdump file (oracle)."""
    from tests.oracle.fixtures import require_tool

    require_tool("drgn")
    import drgn

    path = guest_seabios_kaslr_vmcoreinfo.kdump_zlib
    plat = drgn.Platform(drgn.Architecture.X86_64, drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    prog = drgn.Program(plat)
    prog.set_core_dump(str(path))
    with open_dump(path) as d:
        pfns = [pfn for _, pfn in zip(range(4000), d.memory.dumped.iter_set(), strict=False)]
        pfns += [pfn for pfn in range(0x1000, 0x8000, 37) if d.memory.present(pfn)]
        for pfn in pfns:
            assert prog.read(pfn * 4096, 4096, True) == d.memory.page(pfn), f"pfn {pfn:#x}"
