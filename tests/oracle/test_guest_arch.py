"""Checks of the aarch64 and i386 real-guest oracles: the ground truth agrees with itself and with the dumped memory.

Expected values come from the reference tables, not from kdfix: arch-kernels-and-introspection.md §1 (aarch64
VMCOREINFO, VA→PA, KASLR), §2 (i386 address space, VMCOREINFO), qemu-dumps.md §3 (header values per arch).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.generate.qemu_helpers import MAIN, SUB
from tests.oracle.fixtures import ARCH_GUEST_CONFIGS
from tests.oracle.guest import I386_PAGE_OFFSET, GroundTruth, GuestDumps, KernelArtifacts
from tests.oracle.tools import elf_find, elf_loads, elf_read_phys

pytestmark = pytest.mark.oracle

GUESTS = sorted(ARCH_GUEST_CONFIGS)
AARCH64 = [n for n in GUESTS if "aarch64" in n]
I386 = [n for n in GUESTS if "i386" in n]
GIB = 1 << 30
EM = {"aarch64": 183, "i386": 3}  # ELF e_machine: EM_AARCH64, EM_386
UNAME_MACHINE = {"aarch64": "aarch64", "i386": "i686"}
QEMU_BLOCK_SIZE = {"aarch64": 65536, "i386": 4096}  # qemu-dumps.md §3: the target's page size, not the guest's


def _dumps(request: pytest.FixtureRequest, name: str) -> GuestDumps:
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def _kernel(request: pytest.FixtureRequest, d: GuestDumps) -> KernelArtifacts:
    return request.getfixturevalue(f"kernel_{d.config.arch}")  # type: ignore[no-any-return]


def _note_desc(raw: bytes, name: bytes) -> bytes:
    namesz, descsz, _ = struct.unpack_from("<III", raw, 0)
    assert raw[12 : 12 + namesz].rstrip(b"\0") == name
    start = 12 + (namesz + 3) // 4 * 4
    return raw[start : start + descsz]


def _flat_headers(path: Path) -> tuple[tuple, tuple]:  # type: ignore[type-arg]
    """The main-header and sub-header records of a QEMU flattened kdump (qemu-dumps.md §2: records 1 and 2)."""
    with open(path, "rb") as fh:
        assert fh.read(16) == b"makedumpfile\0\0\0\0"
        fh.seek(4096)
        out = []
        for _ in range(2):
            off, size = struct.unpack(">qq", fh.read(16))
            out.append((off, fh.read(size)))
    (main_off, main), (sub_off, sub) = out
    assert main_off == 0
    fields = MAIN.unpack_from(main)
    assert sub_off == fields[6]  # the sub header starts at block_size
    return fields, SUB.unpack_from(sub)


@pytest.mark.parametrize("name", GUESTS)
def test_ground_truth_is_consistent(name: str, request: pytest.FixtureRequest) -> None:
    d = _dumps(request, name)
    t, arch = d.truth, d.config.arch
    kernel = _kernel(request, d)
    assert t.arch == arch
    assert t.osrelease == kernel.release == d.kernel_release
    assert t.uname.split()[-2] == UNAME_MACHINE[arch]
    assert t.marker.startswith("KDFIX-MARKER-")
    assert t.fw_cfg == ("loaded" if d.config.vmcoreinfo else "absent")
    assert ("nokaslr" in t.cmdline) == (not d.config.kaslr)
    assert f"OSRELEASE={t.osrelease}\n" in t.vmcoreinfo_text
    assert t.vmcoreinfo_value("SYMBOL(_stext)") == t.stext_va
    assert t.vmcoreinfo_value("SYMBOL(swapper_pg_dir)") == t.swapper_pg_dir_va
    assert t.vmcoreinfo_value("NUMBER(phys_base)") is None  # neither arch has it (§1.1, §2.1)
    # "Kernel code" in /proc/iomem starts at PA(_stext), inside System RAM
    assert t.pa_of_kernel_va(t.stext_va) == t.kernel_code_start
    assert any(lo <= t.kernel_code_start < hi for lo, hi in t.system_ram())
    # the cache stores the truth as JSON; re-parsing the serial log gives the same
    assert GroundTruth.parse(d.serial_log.read_text(), link_stext=kernel.link_stext(), arch=arch) == t


@pytest.mark.parametrize("name", AARCH64)
def test_aarch64_offsets(name: str, request: pytest.FixtureRequest) -> None:
    """§1.1, §1.4: nokaslr has PHYS_OFFSET = DRAM base and KERNELOFFSET 0; KASLR moves the image VA by a 2 MiB
    multiple and the linear map by a multiple of 1 GiB below the DRAM base; the image PA stays (QEMU -kernel)."""
    t = _dumps(request, name).truth
    ram_start = min(lo for lo, _ in t.system_ram())
    assert t.phys_offset == t.phys_base == t.vmcoreinfo_value("NUMBER(PHYS_OFFSET)")
    assert t.kimage_voffset == t.vmcoreinfo_value("NUMBER(kimage_voffset)")
    assert t.kernel_offset == t.vmcoreinfo_value("KERNELOFFSET")
    modules_end = t.vmcoreinfo_value("NUMBER(MODULES_END)")
    assert t.kernel_offset is not None and modules_end is not None and t.phys_offset is not None
    assert t.text_va == (modules_end + t.kernel_offset) % (1 << 64)  # KIMAGE_VADDR + offset
    assert t.pa_of_kernel_va(t.text_va) % (2 << 20) == 0
    if "nokaslr" in name:
        assert t.kernel_offset == 0
        assert t.phys_offset == ram_start
    else:
        assert t.kernel_offset != 0 and t.kernel_offset % (2 << 20) == 0
        assert t.phys_offset != ram_start
        assert (ram_start - t.phys_offset) % (1 << 64) % GIB == 0


def test_aarch64_kaslr_moves_only_the_va(request: pytest.FixtureRequest) -> None:
    """Link-time _stext is the same in every boot: runtime _stext - KERNELOFFSET (§1.4)."""
    truths = [_dumps(request, n).truth for n in AARCH64]
    assert len({(t.stext_va - t.kernel_offset) % (1 << 64) for t in truths if t.kernel_offset is not None}) == 1
    assert len({t.kernel_code_start for t in truths}) == 1


@pytest.mark.parametrize("name", I386)
def test_i386_offsets(name: str, request: pytest.FixtureRequest) -> None:
    """§2.1, §2.2: no phys_base (header value 0), PAE kernel, KASLR moves PA and VA together."""
    d = _dumps(request, name)
    t = d.truth
    assert t.phys_base == 0
    assert t.text_va == t.stext_va
    assert t.vmcoreinfo_text.rstrip("\n").endswith("CONFIG_X86_PAE=y")
    assert t.vmcoreinfo_value("KERNELOFFSET") is None
    assert t.stext_va - t.kernel_code_start == I386_PAGE_OFFSET
    assert t.kernel_offset == (0 if "nokaslr" in name else t.kernel_offset) and t.kernel_offset is not None
    if "nokaslr" not in name:
        assert t.kernel_offset != 0


@pytest.mark.parametrize("name", GUESTS)
def test_dump_files(name: str, request: pytest.FixtureRequest) -> None:
    d = _dumps(request, name)
    arch = d.config.arch
    with open(d.elf, "rb") as fh:
        ehdr = fh.read(64)
    assert ehdr[:5] == b"\x7fELF\x02"  # ELFCLASS64 on both: i386's BIOS ROM ends at 4 GiB (§2.6)
    assert struct.unpack_from("<H", ehdr, 18)[0] == EM[arch]
    loads = elf_loads(d.elf)
    for lo, hi in d.truth.system_ram():  # every RAM byte is in the ELF
        assert any(s.paddr <= lo and hi <= s.paddr + s.filesz for s in loads), hex(lo)
    main, sub = _flat_headers(d.kdump_zlib)
    assert main[0] == b"KDUMP   "
    assert main[6] == QEMU_BLOCK_SIZE[arch]
    phys_base = sub[0]
    if arch == "i386":
        assert phys_base == 0
    elif d.config.vmcoreinfo:  # QEMU parses NUMBER(PHYS_OFFSET) as hex, which is right (qemu-dumps.md §6)
        assert phys_base == d.truth.phys_offset
    else:  # the lowest RAM address, right only without KASLR (§1.6)
        assert phys_base == min(lo for lo, _ in d.truth.system_ram())


@pytest.mark.parametrize("name", GUESTS)
def test_memory_matches_ground_truth(name: str, request: pytest.FixtureRequest) -> None:
    """The dumped RAM holds the kernel's VMCOREINFO note and init_uts_ns where the guest said."""
    d = _dumps(request, name)
    t = d.truth
    note = elf_read_phys(d.elf, t.vmcoreinfo_paddr, t.vmcoreinfo_size)
    assert _note_desc(note, b"VMCOREINFO").decode() == t.vmcoreinfo_text
    name_off = t.vmcoreinfo_value("OFFSET(uts_namespace.name)")
    assert name_off is not None
    uts = elf_read_phys(d.elf, t.pa_of_kernel_va(t.init_uts_ns_va + name_off), 65 * 5)
    assert uts[:6] == b"Linux\0"
    assert uts[130:].split(b"\0", 1)[0].decode() == t.osrelease
    assert uts[65 * 4 :].split(b"\0", 1)[0].decode() == UNAME_MACHINE[d.config.arch]
    assert elf_find(d.elf, t.marker.encode(), limit=1)
