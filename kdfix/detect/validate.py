"""Turn a Candidate into Checks, one function per rule of phys-base-and-kaslr.md §4, through the candidate's
architecture (kdfix.arch): its image rule, page walk and linear map. Pure: reads go through memory."""

from __future__ import annotations

from collections.abc import Mapping

from kdfix.arch import Arch, KernelSpace, get_arch, recognise_clues
from kdfix.arch.base import Clues
from kdfix.arch.x86_64 import kphys
from kdfix.detect.candidate import Candidate, Check
from kdfix.errors import KdfixError
from kdfix.format.kdump import NEW_UTSNAME
from kdfix.format.layout import LP64_LE
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.memory import PhysicalMemory
from kdfix.units import cstr

SIZE_2M = 1 << 21
UTSNAME = NEW_UTSNAME.bind(LP64_LE)  # struct new_utsname: 6 x char[65], the same on every ABI
UTSNAME_SIZE = UTSNAME.size
BANNER_PREFIX = b"Linux version"

__all__ = [
    "BANNER_PREFIX",
    "UTSNAME",
    "UTSNAME_SIZE",
    "TouchRecorder",
    "accepted",
    "candidate_arch",
    "candidate_space",
    "confirmed",
    "kphys",
    "validate_candidate",
]


def candidate_arch(candidate: Candidate, info: VmcoreInfo | None) -> Arch | None:
    """The architecture a candidate is for: its own tag, else what its VMCOREINFO's keys say."""
    if candidate.arch is not None:
        return get_arch(candidate.arch)
    found = recognise_clues(Clues(vmcoreinfo=info)) if info is not None else None
    return None if found is None else found.arch


def candidate_space(candidate: Candidate, info: VmcoreInfo | None) -> tuple[KernelSpace | None, str]:
    """The kernel address space the candidate implies, or None and why not."""
    arch = candidate_arch(candidate, info)
    if arch is None:
        return None, "architecture unknown"
    try:
        return arch.kernel_space(info or VmcoreInfo.parse(b""), phys_base=candidate.phys_base), arch.name
    except KdfixError as exc:
        return None, f"{arch.name}: {exc.message}"


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


def check_utsname(read: TouchRecorder, space: KernelSpace | None, info: VmcoreInfo | None) -> Check:
    """Rule 2: init_uts_ns.name at its image PA has sysname Linux and release == OSRELEASE."""
    if info is None or info.symbol("init_uts_ns") is None or not info.osrelease or space is None:
        return Check("utsname", None, "needs VMCOREINFO SYMBOL(init_uts_ns), OSRELEASE and a known architecture")
    vaddr = info.symbol("init_uts_ns") + (info.offset("uts_namespace.name") or 0)  # type: ignore[operator]
    paddr = space.image_paddr(vaddr)
    try:
        raw = read(paddr, UTSNAME_SIZE)
    except KdfixError as exc:
        return Check("utsname", False, f"init_uts_ns at PA {paddr:#x} unreadable: {exc.message}", decisive=True)
    uts = UTSNAME.unpack(raw)
    sysname, release = cstr(uts.sysname), cstr(uts.release)
    ok = sysname == "Linux" and release == info.osrelease
    detail = f"init_uts_ns at PA {paddr:#x}: sysname {sysname[:16]!r}, release {release[:64]!r}"
    return Check("utsname", ok, detail, decisive=True)


def check_pagetable(read: TouchRecorder, space: KernelSpace | None, info: VmcoreInfo | None) -> Check:
    """Rule 3: walking the kernel's top-level table translates _stext and init_uts_ns to their image PAs."""
    if info is None:
        return Check("pagetable", None, "needs VMCOREINFO")
    stext = info.symbol("_stext")
    if space is None or space.root_paddr is None or stext is None:
        return Check("pagetable", None, "needs SYMBOL(init_top_pgt or swapper_pg_dir), SYMBOL(_stext) and the arch")
    probes = [("_stext", stext)]
    uts = info.symbol("init_uts_ns")
    if uts is not None:
        probes.append(("init_uts_ns", uts))
    details = []
    for name, vaddr in probes:
        expected = space.image_paddr(vaddr)
        try:
            got = space.walk(read, vaddr)
        except KdfixError as exc:
            return Check("pagetable", False, f"walk from {space.root_paddr:#x} failed: {exc.message}", decisive=True)
        if got is None:
            return Check("pagetable", False, f"{name} not mapped by the table at {space.root_paddr:#x}", decisive=True)
        if got != expected:
            return Check("pagetable", False, f"{name} → {got:#x}, image rule says {expected:#x}", decisive=True)
        details.append(f"{name} → {got:#x}")
    return Check("pagetable", True, f"{space.arch} walk from {space.root_paddr:#x}: " + ", ".join(details),
                 decisive=True)  # fmt: skip


def check_linear_map(read: TouchRecorder, space: KernelSpace | None) -> Check:
    """A linear-map VA from VMCOREINFO (arm64 mem_section) walks to where the linear rule puts it: checks
    PHYS_OFFSET, which the image checks cannot (arch-kernels-and-introspection.md §1.3)."""
    probe = None if space is None or space.root_paddr is None else space.linear_probe()
    if space is None or probe is None:
        return Check("linear_map", None, "no linear-map VA to check")
    expected = space.rule_paddr(probe)
    try:
        got = space.walk(read, probe)
    except KdfixError as exc:
        return Check("linear_map", False, f"walk of {probe:#x} failed: {exc.message}", decisive=True)
    ok = got is not None and got == expected
    shown = "unmapped" if got is None else f"{got:#x}"
    return Check("linear_map", ok, f"linear VA {probe:#x} walks to {shown}, linear rule {expected:#x}", decisive=True)


def check_kernel_offset(kernel_offset: int | None, info: VmcoreInfo | None, arch: Arch | None = None) -> Check:
    """A method's KERNELOFFSET agrees with VMCOREINFO's (i386: with _stext's distance from its link address)."""
    known = None if info is None else (arch.kernel_offset(info) if arch is not None else info.kernel_offset)
    if kernel_offset is None or known is None:
        return Check("kernel_offset", None, "needs both a method's and VMCOREINFO's KERNELOFFSET")
    ok = kernel_offset == known
    return Check("kernel_offset", ok, f"{kernel_offset:#x} vs VMCOREINFO {known:#x}", decisive=True)


def check_banner(
    read: TouchRecorder, space: KernelSpace | None, kernel_offset: int | None, symbols: Mapping[str, int] | None
) -> Check:
    """Rule 4: 13 bytes at the image PA of linux_banner + KERNELOFFSET read ``Linux version`` (needs vmlinux)."""
    if not symbols or "linux_banner" not in symbols:
        return Check("banner", None, "needs the vmlinux symbol linux_banner")
    if space is None:
        return Check("banner", None, "needs a known architecture")
    paddr = space.image_paddr(symbols["linux_banner"] + (kernel_offset or 0))
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
    space, _why = candidate_space(candidate, info)
    checks = [
        check_alignment(candidate.phys_base),
        check_utsname(read, space, info),
        check_pagetable(read, space, info),
        check_linear_map(read, space),
        check_kernel_offset(candidate.kernel_offset, info, candidate_arch(candidate, info)),
        check_banner(read, space, candidate.kernel_offset, vmlinux_symbols),
    ]
    checks.append(check_pages_present(read))
    return tuple(checks)


def accepted(checks: tuple[Check, ...]) -> bool:
    """No decisive check failed, and alignment holds."""
    return not any(c.passed is False and (c.decisive or c.name == "alignment") for c in checks)


def confirmed(checks: tuple[Check, ...]) -> bool:
    """At least one decisive check passed and none failed."""
    return accepted(checks) and any(c.decisive and c.passed for c in checks)
