"""detect and fix on the real aarch64 and i386 QEMU guests, checked with drgn and each architecture's crash and
makedumpfile (issue acceptance: arch-kernels-and-introspection.md §1.6, §2.4, §2.6).

Ground truth comes from the guest itself (tests/oracle/guest.py: its VMCOREINFO, /proc/iomem, kallsyms, marker).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kdfix import open_dump
from kdfix.detect.combine import detect
from kdfix.fix import fix_dump
from kdfix.kernel.dmesg import dmesg
from kdfix.kernel.printk import iter_lines
from kdfix.units import cstr
from tests.oracle.fixtures import ARCH_GUEST_CONFIGS
from tests.oracle.guest import GuestDumps
from tests.oracle.tools import crash_osrelease, drgn_release_by_vaddr, elf_read_phys, makedumpfile_dump_dmesg

pytestmark = pytest.mark.oracle

GUESTS = sorted(ARCH_GUEST_CONFIGS)
CONTAINERS = ("kdump_zlib", "elf")
UNAME_MACHINE = {"aarch64": "aarch64", "i386": "i686"}
KERNEL_PAGE = 4096  # both guests' kernels (PAGESIZE=4096)


def _dumps(request: pytest.FixtureRequest, name: str) -> GuestDumps:
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """{(guest, container): fixed file}, each fixed once per run."""
    cache: dict[tuple[str, str], Path] = {}

    def get(name: str, container: str) -> Path:
        key = (name, container)
        if key not in cache:
            d = _dumps(request, name)
            src: Path = getattr(d, container)
            out = tmp_path_factory.mktemp("fixarch") / f"{name}.{container}"
            result = fix_dump(src, output=out)
            assert result.status == "fixed", result.messages
            cache[key] = out
        return cache[key]

    return get


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("name", GUESTS)
def test_detect_reports_the_exact_values(name: str, container: str, request: pytest.FixtureRequest) -> None:
    """detect on QEMU's own dump: the architecture, PHYS_OFFSET (aarch64) or 0 (i386), and the KASLR offset."""
    d = _dumps(request, name)
    with open_dump(str(getattr(d, container))) as dump:
        result = detect(dump.model, dump.memory)
    t = d.truth
    assert result.arch == d.config.arch
    assert result.phys_base == t.phys_base
    assert result.kernel_offset == t.kernel_offset
    assert result.confidence in ("high", "medium")
    assert any("pagetable: pass" in e for e in result.evidence)
    if d.config.arch == "aarch64":
        assert any("linear_map: pass" in e for e in result.evidence)


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("name", GUESTS)
def test_fixed_dump_opens_in_drgn_and_keeps_every_page(
    name: str, container: str, request: pytest.FixtureRequest, fixed
) -> None:  # type: ignore[no-untyped-def]
    """After the fix: drgn (no hints) reads init_uts_ns by virtual address; sampled pages equal QEMU's ELF."""
    d = _dumps(request, name)
    out = fixed(name, container)
    assert drgn_release_by_vaddr(out) == d.truth.osrelease
    with open_dump(str(out)) as dump:
        if dump.kdump is not None:
            assert dump.kdump.block_size == KERNEL_PAGE
            assert dump.model.phys_base == d.truth.phys_base
            assert cstr(dump.model.utsname.machine) == UNAME_MACHINE[d.config.arch]
            assert cstr(dump.model.utsname.release) == d.truth.osrelease
        ram = d.truth.system_ram()
        for lo, hi in ram:
            for paddr in range(lo, hi, max(KERNEL_PAGE, (hi - lo) // 16 // KERNEL_PAGE * KERNEL_PAGE)):
                assert dump.memory.read(paddr, KERNEL_PAGE) == elf_read_phys(d.elf, paddr, KERNEL_PAGE), hex(paddr)


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("name", GUESTS)
def test_fixed_dump_in_the_arch_crash(name: str, container: str, request: pytest.FixtureRequest, fixed) -> None:  # type: ignore[no-untyped-def]
    d = _dumps(request, name)
    res = crash_osrelease(fixed(name, container), arch=d.config.arch)
    assert res.returncode == 0 and d.truth.osrelease in res.output


def _makedumpfile_reads(arch: str, container: str) -> bool:
    """i386 makedumpfile 1.7.2 translates lowmem VAs of a KDUMP input as VA - (_stext & ~0x7fffff) (its x86.c
    ``vaddr_to_paddr_x86`` without PT_LOADs), which misses PAGE_OFFSET; only its ELF input, whose PT_LOADs carry
    /proc/vmcore virtual addresses after the fix, is readable."""
    return not (arch == "i386" and container == "kdump_zlib")


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("name", GUESTS)
def test_fixed_dump_dmesg_shows_the_marker(name: str, container: str, request: pytest.FixtureRequest, fixed) -> None:  # type: ignore[no-untyped-def]
    d = _dumps(request, name)
    if not _makedumpfile_reads(d.config.arch, container):
        pytest.xfail("i386 makedumpfile cannot translate kernel VAs of a KDUMP file (see _makedumpfile_reads)")
    path = fixed(name, container)
    log = makedumpfile_dump_dmesg(path, arch=d.config.arch)
    assert d.truth.marker in log
    # kdfix dmesg of the same fixed file prints the lines the arch's makedumpfile prints (text and timestamps)
    assert "\n".join(iter_lines(dmesg(path).log)).splitlines() == log.splitlines()


def test_in_place_fix_and_undo_on_the_real_aarch64_dump(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Re-blocking in place is an atomic rewrite that undo reverts byte for byte."""
    from kdfix.fix.journal import undo

    d = _dumps(request, "guest_aarch64_kaslr")
    path = tmp_path / "vmcore"
    shutil.copyfile(d.kdump_zlib, path)
    path.chmod(0o600)
    original = path.read_bytes()
    result = fix_dump(path, in_place=True)
    assert result.status == "fixed" and result.journal is not None
    with open_dump(str(path)) as dump:
        assert dump.kdump is not None and dump.kdump.block_size == KERNEL_PAGE
    undo(path)
    assert path.read_bytes() == original
