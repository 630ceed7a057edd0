"""The header utsname: libkdumpfile's sanity rules and recovery from the kernel's init_uts_ns or VMCOREINFO.

notes-and-vmcoreinfo.md §6 (sanity rules, field offsets within the 390 bytes of ``init_uts_ns.name``).
"""

from __future__ import annotations

from kdfix.detect.validate import UTSNAME, UTSNAME_SIZE, kphys
from kdfix.errors import KdfixError
from kdfix.format.kdump import UTS_LEN
from kdfix.format.layout import LP64_LE, Abi
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.memory import PhysicalMemory
from kdfix.read.readiness import KNOWN_MACHINES, is_sane, utsname_fields
from kdfix.units import cstr

FALLBACK_VERSION = "#1 (unknown build; utsname filled by kdfix from VMCOREINFO)"


def _field(value: str | bytes) -> bytes:
    raw = value.encode("latin-1") if isinstance(value, str) else value
    return raw[: UTS_LEN - 1].ljust(UTS_LEN, b"\0")


def from_memory(memory: PhysicalMemory, info: VmcoreInfo, phys_base: int) -> tuple[dict[str, bytes] | None, str]:
    """The kernel's ``init_uts_ns.name`` read through the kernel-image mapping, or None and the reason."""
    sym = info.symbol("init_uts_ns")
    if sym is None:
        return None, "VMCOREINFO has no SYMBOL(init_uts_ns)"
    vaddr = sym + (info.offset("uts_namespace.name") or 0)
    paddr = kphys(vaddr, phys_base)
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


def default_machine(abi: Abi) -> str | None:
    """``machine`` implied by the dump's ABI, when it is unambiguous."""
    if abi == LP64_LE:
        return "x86_64"
    if abi.word_size == 4 and abi.byte_order == "<" and abi.align64 == 4:
        return "i686"
    return None


def from_vmcoreinfo(info: VmcoreInfo, current: dict[str, bytes], abi: Abi) -> tuple[dict[str, bytes] | None, str]:
    """A sane utsname built from OSRELEASE (sysname Linux, a placeholder version), or None and the reason."""
    release = info.osrelease
    if not release:
        return None, "VMCOREINFO has no OSRELEASE"
    machine = cstr(current["machine"])
    if not machine.startswith(KNOWN_MACHINES):
        machine = default_machine(abi) or ""
    if not machine:
        return None, "cannot tell the machine string from the dump's ABI"
    fields = dict(current)
    fields.update(sysname=_field("Linux"), release=_field(release), machine=_field(machine))
    if not cstr(current["version"]):
        fields["version"] = _field(FALLBACK_VERSION)
    return fields, "VMCOREINFO OSRELEASE"


__all__ = ["KNOWN_MACHINES", "from_memory", "from_vmcoreinfo", "is_sane", "utsname_fields"]
