"""Turn a Candidate into Checks, one function per rule of phys-base-and-kaslr.md §4. Pure: reads go through memory."""

from __future__ import annotations

from collections.abc import Mapping

from kdfix.detect.candidate import Candidate, Check
from kdfix.detect.paging import translate
from kdfix.errors import KdfixError
from kdfix.format.constants import START_KERNEL_MAP
from kdfix.format.kdump import NEW_UTSNAME
from kdfix.format.layout import LP64_LE
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.memory import PhysicalMemory
from kdfix.units import U64_MASK, cstr

SIZE_2M = 1 << 21
UTSNAME = NEW_UTSNAME.bind(LP64_LE)  # struct new_utsname: 6 x char[65], the same on every ABI
UTSNAME_SIZE = UTSNAME.size
BANNER_PREFIX = b"Linux version"


def kphys(vaddr: int, phys_base: int) -> int:
    """Kernel-image translation ``(va - __START_KERNEL_map + phys_base) mod 2^64`` (phys-base-and-kaslr.md §1)."""
    return (vaddr - START_KERNEL_MAP + phys_base) & U64_MASK


class TouchRecorder:
    """A ``read(paddr, size)`` callable over PhysicalMemory that remembers which pfns it touched and missed."""

    def __init__(self, memory: PhysicalMemory) -> None:
        self.memory = memory
        self.touched: set[int] = set()
        self.missing: set[int] = set()

    def __call__(self, paddr: int, size: int) -> bytes:
        ps = self.memory.page_size
        first, last = paddr // ps, (paddr + max(size, 1) - 1) // ps
        for pfn in range(first, min(last, first + 1024) + 1):
            self.touched.add(pfn)
            if pfn >= self.memory.max_pfn or not self.memory.present(pfn):
                self.missing.add(pfn)
        return self.memory.read(paddr, size)


def check_alignment(phys_base: int) -> Check:
    """Rule 1: phys_base is a multiple of 2 MiB (plausibility only)."""
    ok = phys_base % SIZE_2M == 0
    return Check("alignment", ok, f"phys_base {phys_base:#x} {'is' if ok else 'is not'} a multiple of 2 MiB")


def check_utsname(read: TouchRecorder, phys_base: int, info: VmcoreInfo | None) -> Check:
    """Rule 2: init_uts_ns.name at kphys has sysname Linux and release == OSRELEASE."""
    if info is None or info.symbol("init_uts_ns") is None or not info.osrelease:
        return Check("utsname", None, "needs VMCOREINFO SYMBOL(init_uts_ns) and OSRELEASE")
    vaddr = info.symbol("init_uts_ns") + (info.offset("uts_namespace.name") or 0)  # type: ignore[operator]
    paddr = kphys(vaddr, phys_base)
    try:
        raw = read(paddr, UTSNAME_SIZE)
    except KdfixError as exc:
        return Check("utsname", False, f"init_uts_ns at PA {paddr:#x} unreadable: {exc.message}", decisive=True)
    uts = UTSNAME.unpack(raw)
    sysname, release = cstr(uts.sysname), cstr(uts.release)
    ok = sysname == "Linux" and release == info.osrelease
    detail = f"init_uts_ns at PA {paddr:#x}: sysname {sysname[:16]!r}, release {release[:64]!r}"
    return Check("utsname", ok, detail, decisive=True)


def check_pagetable(read: TouchRecorder, phys_base: int, info: VmcoreInfo | None) -> Check:
    """Rule 3: walking from kphys(init_top_pgt) translates _stext to kphys(_stext)."""
    if info is None:
        return Check("pagetable", None, "needs VMCOREINFO")
    pgd = info.symbol("init_top_pgt") or info.symbol("swapper_pg_dir")
    stext = info.symbol("_stext")
    if pgd is None or stext is None:
        return Check("pagetable", None, "needs SYMBOL(init_top_pgt or swapper_pg_dir) and SYMBOL(_stext)")
    levels = 5 if info.number("pgtable_l5_enabled") == 1 else 4
    sme_mask = info.number("sme_mask") or 0
    pgd_paddr = kphys(pgd, phys_base)
    expected = kphys(stext, phys_base)
    try:
        got = translate(read, pgd_paddr, stext, levels=levels, sme_mask=sme_mask)
    except KdfixError as exc:
        return Check("pagetable", False, f"walk from PGD {pgd_paddr:#x} failed: {exc.message}", decisive=True)
    if got is None:
        return Check("pagetable", False, f"_stext not mapped by PGD at {pgd_paddr:#x}", decisive=True)
    ok = got == expected
    return Check("pagetable", ok, f"_stext → {got:#x}, kphys(_stext) {expected:#x}", decisive=True)


def check_kernel_offset(kernel_offset: int | None, info: VmcoreInfo | None) -> Check:
    """A method's KERNELOFFSET agrees with VMCOREINFO's."""
    known = None if info is None else info.kernel_offset
    if kernel_offset is None or known is None:
        return Check("kernel_offset", None, "needs both a method's and VMCOREINFO's KERNELOFFSET")
    ok = kernel_offset == known
    return Check("kernel_offset", ok, f"{kernel_offset:#x} vs VMCOREINFO {known:#x}", decisive=True)


def check_banner(
    read: TouchRecorder, phys_base: int, kernel_offset: int | None, symbols: Mapping[str, int] | None
) -> Check:
    """Rule 4: 13 bytes at kphys(linux_banner + KERNELOFFSET) read ``Linux version`` (needs vmlinux)."""
    if not symbols or "linux_banner" not in symbols:
        return Check("banner", None, "needs the vmlinux symbol linux_banner")
    paddr = kphys(symbols["linux_banner"] + (kernel_offset or 0), phys_base)
    try:
        raw = read(paddr, len(BANNER_PREFIX))
    except KdfixError as exc:
        return Check("banner", False, f"linux_banner at PA {paddr:#x} unreadable: {exc.message}", decisive=True)
    return Check("banner", raw == BANNER_PREFIX, f"linux_banner at PA {paddr:#x}: {raw!r}", decisive=True)


def check_pages_present(read: TouchRecorder) -> Check:
    """Rule 5: every page the checks touched is in the dump (absence proves nothing for re-filtered dumps)."""
    if not read.touched:
        return Check("pages_present", None, "no page touched")
    if read.missing:
        missing = ", ".join(f"{pfn:#x}" for pfn in sorted(read.missing)[:4])
        return Check("pages_present", False, f"{len(read.missing)} touched page(s) not in the dump: {missing}")
    return Check("pages_present", True, f"{len(read.touched)} touched page(s) all present")


def validate_candidate(
    candidate: Candidate,
    memory: PhysicalMemory,
    *,
    vmcoreinfo: VmcoreInfo | None = None,
    vmlinux_symbols: Mapping[str, int] | None = None,
) -> tuple[Check, ...]:
    """All checks of §4 for one candidate; ``vmcoreinfo`` defaults to the candidate's own text."""
    info = vmcoreinfo
    if info is None and candidate.vmcoreinfo is not None:
        info = VmcoreInfo.parse(candidate.vmcoreinfo)
    read = TouchRecorder(memory)
    pb = candidate.phys_base
    checks = [
        check_alignment(pb),
        check_utsname(read, pb, info),
        check_pagetable(read, pb, info),
        check_kernel_offset(candidate.kernel_offset, info),
        check_banner(read, pb, candidate.kernel_offset, vmlinux_symbols),
    ]
    checks.append(check_pages_present(read))
    return tuple(checks)


def accepted(checks: tuple[Check, ...]) -> bool:
    """No decisive check failed, and alignment holds."""
    return not any(c.passed is False and (c.decisive or c.name == "alignment") for c in checks)


def confirmed(checks: tuple[Check, ...]) -> bool:
    """At least one decisive check passed and none failed."""
    return accepted(checks) and any(c.decisive and c.passed for c in checks)
