"""The header utsname: libkdumpfile's sanity rules and recovery from the kernel's init_uts_ns or VMCOREINFO.

notes-and-vmcoreinfo.md §6 (sanity rules, field offsets within the 390 bytes of ``init_uts_ns.name``).
"""

from __future__ import annotations

from kdfix.arch import Arch, default_machine
from kdfix.detect.validate import UTSNAME, UTSNAME_SIZE
from kdfix.errors import KdfixError
from kdfix.format.kdump import UTS_LEN
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.memory import PhysicalMemory
from kdfix.read.readiness import KNOWN_MACHINES, is_sane, utsname_fields
from kdfix.units import cstr

FALLBACK_VERSION = "#1 (unknown build; utsname filled by kdfix from VMCOREINFO)"


def _field(value: str | bytes) -> bytes:
    raw = value.encode("latin-1") if isinstance(value, str) else value
    return raw[: UTS_LEN - 1].ljust(UTS_LEN, b"\0")


def from_memory(
    memory: PhysicalMemory, info: VmcoreInfo, phys_base: int, arch: Arch
) -> tuple[dict[str, bytes] | None, str]:
    """The kernel's ``init_uts_ns.name`` read through ``arch``'s kernel-image rule, or None and the reason."""
    sym = info.symbol("init_uts_ns")
    if sym is None:
        return None, "VMCOREINFO has no SYMBOL(init_uts_ns)"
    vaddr = sym + (info.offset("uts_namespace.name") or 0)
    try:
        paddr = arch.kernel_space(info, phys_base=phys_base).image_paddr(vaddr)
    except KdfixError as exc:
        return None, f"init_uts_ns cannot be located: {exc.message}"
    try:
        raw = memory.read(paddr, UTSNAME_SIZE)
    except KdfixError as exc:
        return None, f"init_uts_ns at PA {paddr:#x} unreadable: {exc.message}"
    fields = {name: _field(cstr(raw)) for name, raw in utsname_fields(UTSNAME.unpack(raw)).items()}
    release = info.osrelease
    if cstr(fields["sysname"]) != "Linux" or (release and cstr(fields["release"]) != release):
        return None, (
            f"init_uts_ns at PA {paddr:#x} does not hold sysname Linux and release {release!r} "
            f"(found {cstr(fields['sysname'])!r}, {cstr(fields['release'])!r})"
        )
    if not is_sane(fields):
        return None, f"init_uts_ns at PA {paddr:#x} is not a sane utsname"
    return fields, f"init_uts_ns.name at PA {paddr:#x}"


def from_vmcoreinfo(
    info: VmcoreInfo, current: dict[str, bytes], arch: Arch | None
) -> tuple[dict[str, bytes] | None, str]:
    """A sane utsname built from OSRELEASE (sysname Linux, a placeholder version), or None and the reason.

    ``machine`` is kept when it is one of ``arch``'s, else set to the architecture's (never guessed without one).
    """
    release = info.osrelease
    if not release:
        return None, "VMCOREINFO has no OSRELEASE"
    machine = cstr(current["machine"])
    if arch is None:
        return None, "cannot tell the dump's architecture, so not its utsname machine"
    if not machine.startswith(arch.machines):
        machine = default_machine(arch)
    fields = dict(current)
    fields.update(sysname=_field("Linux"), release=_field(release), machine=_field(machine))
    if not cstr(current["version"]):
        fields["version"] = _field(FALLBACK_VERSION)
    return fields, "VMCOREINFO OSRELEASE"


__all__ = ["KNOWN_MACHINES", "from_memory", "from_vmcoreinfo", "is_sane", "utsname_fields"]
