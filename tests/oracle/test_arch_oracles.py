"""Smoke tests of the aarch64 and i386 oracles on real QEMU dumps: Debian's arm64 crash/makedumpfile (qemu-user),
the i386 builds (natively from their sysroot) and drgn.

Each oracle must accept what is right and refuse what the issue says is wrong, so that the fix tests can trust it:
arch-kernels-and-introspection.md §1.6 (what each reader takes from an arm64 dump), §2.4 (/proc/vmcore vaddrs on
i386), §2.6 (the 64-bit kdump header that i386 tools misread); tools-and-oracles.md §1, §2, §4.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.oracle.fixtures import ARCH_GUEST_CONFIGS, require_tool
from tests.oracle.guest import I386_PAGE_OFFSET, GuestDumps
from tests.oracle.tools import (
    ToolError,
    crash_osrelease,
    drgn_program,
    elf_phdrs_after_ehdr,
    elf_read_phys,
    elf_vmcore_vaddrs,
    makedumpfile_dump_dmesg,
    makedumpfile_reassemble,
)

pytestmark = pytest.mark.oracle

GUESTS = sorted(ARCH_GUEST_CONFIGS)
AARCH64 = [n for n in GUESTS if "aarch64" in n]
I386_LOWMEM_END = 0x38000000  # MAXMEM with VMSPLIT_3G (§2.2)


def _dumps(request: pytest.FixtureRequest, name: str) -> GuestDumps:
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def _vmcoreinfo_file(d: GuestDumps, tmp_path: Path) -> Path:
    """The guest's own VMCOREINFO text as a file for makedumpfile -i / drgn (what a fix would inject)."""
    path = tmp_path / "vmcoreinfo.txt"
    path.write_text(d.truth.vmcoreinfo_text)
    return path


@pytest.mark.parametrize("name", [n for n in GUESTS if n.endswith("_vmcoreinfo")])
def test_crash_osrelease(name: str, request: pytest.FixtureRequest) -> None:
    """The arch's crash names the release from the VMCOREINFO note QEMU copied into the kdump (and the ELF: that
    run takes ~45 s, reading the whole file, so it is done on aarch64 only)."""
    d = _dumps(request, name)
    arch = d.config.arch
    require_tool("crash", arch)
    for dump in (d.elf, d.kdump_zlib) if arch == "aarch64" else (d.kdump_zlib,):
        rc, out = crash_osrelease(dump, arch=arch, timeout=600)
        assert (rc, out.strip()) == (0, d.truth.osrelease), out


@pytest.mark.parametrize("name", ["guest_aarch64_kaslr", "guest_i386_kaslr"])
def test_crash_osrelease_unknown_without_vmcoreinfo(name: str, request: pytest.FixtureRequest) -> None:
    """Without the device there is no note: crash says unknown (its string scan of a flattened file finds none)."""
    d = _dumps(request, name)
    require_tool("crash", d.config.arch)
    rc, out = crash_osrelease(d.kdump_zlib, arch=d.config.arch)
    assert (rc, out.strip()) == (1, "unknown"), out


@pytest.mark.parametrize("name", AARCH64)
def test_aarch64_makedumpfile_dmesg_from_elf(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """arm64 makedumpfile shows the marker from QEMU's ELF given the kernel's VMCOREINFO (in the notes, or -i)."""
    d = _dumps(request, name)
    require_tool("makedumpfile", "aarch64")
    elf = elf_phdrs_after_ehdr(d.elf, tmp_path / "in.elf")
    extra = [] if d.config.vmcoreinfo else ["-i", str(_vmcoreinfo_file(d, tmp_path))]
    log = makedumpfile_dump_dmesg(elf, arch="aarch64", extra_args=extra, timeout=900)
    assert d.truth.marker in log


def test_aarch64_kdump_reassembles_and_crash_reads_it(
    guest_aarch64_kaslr_vmcoreinfo: GuestDumps, tmp_path: Path
) -> None:
    d = guest_aarch64_kaslr_vmcoreinfo
    require_tool("makedumpfile", "aarch64")
    require_tool("crash", "aarch64")
    raw = tmp_path / "raw.kdump"
    res = makedumpfile_reassemble(d.kdump_zlib, raw, arch="aarch64")
    assert res.returncode == 0, res.output
    rc, out = crash_osrelease(raw, arch="aarch64")
    assert (rc, out.strip()) == (0, d.truth.osrelease), out


def test_aarch64_drgn(guest_aarch64_kaslr: GuestDumps) -> None:
    """drgn reads QEMU's arm64 ELF by kernel VA through swapper_pg_dir (hints: the kernel's VMCOREINFO only), but
    not QEMU's kdump: libkdumpfile takes the page size from the 64 KiB block_size (§1.6)."""
    require_tool("drgn")
    d = guest_aarch64_kaslr
    t = d.truth
    name_off = t.vmcoreinfo_value("OFFSET(uts_namespace.name)")
    assert name_off is not None
    prog = drgn_program(d.elf, vmcoreinfo=t.vmcoreinfo_text)
    release = prog.read(t.init_uts_ns_va + name_off + 130, 65).split(b"\0", 1)[0].decode()
    assert release == t.osrelease
    kdump = drgn_program(d.kdump_zlib, platform="aarch64", vmcoreinfo=t.vmcoreinfo_text)
    with pytest.raises(Exception, match=r"PFN|page"):
        kdump.read(t.kernel_code_start, 8, True)


def test_i386_makedumpfile_needs_vmcore_vaddrs(guest_i386_kaslr_vmcoreinfo: GuestDumps, tmp_path: Path) -> None:
    """i386 makedumpfile reads the kernel log from an ELF with /proc/vmcore-style p_vaddr (§2.4), not from QEMU's
    p_vaddr = p_paddr."""
    d = guest_i386_kaslr_vmcoreinfo
    require_tool("makedumpfile", "i386")
    qemu_elf = elf_phdrs_after_ehdr(d.elf, tmp_path / "qemu.elf")
    with pytest.raises(ToolError):
        makedumpfile_dump_dmesg(qemu_elf, arch="i386")
    fixed = elf_vmcore_vaddrs(
        qemu_elf, tmp_path / "vaddr.elf", page_offset=I386_PAGE_OFFSET, lowmem_end=I386_LOWMEM_END
    )
    assert d.truth.marker in makedumpfile_dump_dmesg(fixed, arch="i386")


def test_i386_crash_refuses_the_64bit_kdump_header(guest_i386_kaslr_vmcoreinfo: GuestDumps, tmp_path: Path) -> None:
    """QEMU writes the 64-bit header layout for i386 (§2.6); the i386 crash reads its own 32-bit layout."""
    d = guest_i386_kaslr_vmcoreinfo
    require_tool("makedumpfile", "i386")
    require_tool("crash", "i386")
    raw = tmp_path / "raw.kdump"
    res = makedumpfile_reassemble(d.kdump_zlib, raw, arch="i386")
    assert res.returncode == 0, res.output
    rc, out = crash_osrelease(raw, arch="i386")
    assert rc != 0 and d.truth.osrelease not in out


def test_i386_drgn(guest_i386_kaslr: GuestDumps, tmp_path: Path) -> None:
    """drgn reads QEMU's i386 kdump physically with the platform given, and the ELF by VA once its PT_LOADs have
    /proc/vmcore virtual addresses (the issue: not with p_vaddr = p_paddr)."""
    require_tool("drgn")
    d = guest_i386_kaslr
    t = d.truth
    pa = t.kernel_code_start
    kdump = drgn_program(d.kdump_zlib, platform="i386", vmcoreinfo=t.vmcoreinfo_text)
    assert kdump.read(pa, 8192, True) == elf_read_phys(d.elf, pa, 8192)
    name_off = t.vmcoreinfo_value("OFFSET(uts_namespace.name)")
    assert name_off is not None
    va = t.init_uts_ns_va + name_off + 130
    with pytest.raises(Exception, match=r"segment|memory"):
        drgn_program(d.elf, vmcoreinfo=t.vmcoreinfo_text).read(va, 65)
    fixed = elf_vmcore_vaddrs(d.elf, tmp_path / "vaddr.elf", page_offset=I386_PAGE_OFFSET, lowmem_end=I386_LOWMEM_END)
    prog = drgn_program(fixed, vmcoreinfo=t.vmcoreinfo_text)
    assert prog.read(va, 65).split(b"\0", 1)[0].decode() == t.osrelease
