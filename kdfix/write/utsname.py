"""The header utsname every writer stores: libkdumpfile's sanity rules, and recovery from the kernel's
init_uts_ns or VMCOREINFO.

notes-and-vmcoreinfo.md §6 (sanity rules, field offsets within the 390 bytes of ``init_uts_ns.name``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kdfix.arch import Arch, default_machine, recognise
from kdfix.detect.validate import UTSNAME, UTSNAME_SIZE
from kdfix.errors import KdfixError
from kdfix.format.kdump import UTS_LEN, Utsname
from kdfix.model import DumpModel, make_utsname
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.memory import PhysicalMemory
from kdfix.read.readiness import KNOWN_MACHINES, is_sane, utsname_fields
from kdfix.units import cstr

FALLBACK_VERSION = "#1 (unknown build; utsname filled by kdfix from VMCOREINFO)"


def _field(value: str | bytes) -> bytes:
    raw = value.encode("latin-1") if isinstance(value, str) else value
    return raw[: UTS_LEN - 1].ljust(UTS_LEN, b"\0")


def from_memory(
    memory: PhysicalMemory, info: VmcoreInfo, phys_base: int | None, arch: Arch
) -> tuple[dict[str, bytes] | None, str]:
    """The kernel's ``init_uts_ns.name`` read through ``arch``'s kernel-image rule, or None and the reason.

    ``phys_base`` is the header meaning (x86_64 phys_base, aarch64 PHYS_OFFSET); None takes VMCOREINFO's.
    """
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


@dataclass(frozen=True)
class UtsnameChoice:
    """What a writer should store as the header utsname: ``fields`` (None = keep the current one) and why."""

    fields: dict[str, bytes] | None
    source: str  # where ``fields`` came from, or why the current utsname is kept
    messages: tuple[str, ...] = ()  # sources tried and refused, for the user

    @property
    def changes(self) -> bool:
        return self.fields is not None


def choose_utsname(
    model: DumpModel,
    memory: PhysicalMemory | None,
    info: VmcoreInfo | None = None,
    *,
    phys_base: int | None = None,
    arch: Arch | None = None,
) -> UtsnameChoice:
    """The one rule every writer follows for the header utsname (notes-and-vmcoreinfo.md §6).

    A sane utsname is kept. Otherwise, best first: the kernel's own ``init_uts_ns`` read from ``memory`` (what
    makedumpfile writes), then OSRELEASE from VMCOREINFO with the architecture's machine name (kdfix.arch; never
    guessed). Without VMCOREINFO or a known architecture the current value is kept and the reason reported, since
    libkdumpfile ignores a utsname that is not sane anyway. ``memory`` None skips the memory read; ``info``
    defaults to the model's VMCOREINFO, ``arch`` to the recognised one, ``phys_base`` to VMCOREINFO's.
    """
    current = utsname_fields(model.utsname)
    if is_sane(current):
        return UtsnameChoice(None, "the header utsname is sane")
    if info is None:
        info = model.parsed_vmcoreinfo()
    if info is None:
        return UtsnameChoice(None, "no VMCOREINFO")
    if arch is None:
        found = recognise(model, info)
        arch = None if found is None else found.arch
    messages: list[str] = []
    if memory is not None and arch is not None:
        wanted, source = from_memory(memory, info, phys_base, arch)
        if wanted is not None:
            return UtsnameChoice(wanted, source)
        messages.append(f"utsname not taken from memory: {source}")
    wanted, source = from_vmcoreinfo(info, current, arch)
    return UtsnameChoice(wanted, source, tuple(messages))


def utsname_record(fields: dict[str, bytes]) -> Utsname:
    """The header record of ``fields`` (raw 65-byte values, as :func:`choose_utsname` returns them)."""
    return make_utsname(**{name: raw.split(b"\0", 1)[0] for name, raw in fields.items()})


def with_utsname(model: DumpModel, choice: UtsnameChoice) -> DumpModel:
    """``model`` with the chosen utsname (unchanged when the choice keeps the current one)."""
    if choice.fields is None:
        return model
    return dataclasses.replace(model, utsname=utsname_record(choice.fields))


__all__ = [
    "KNOWN_MACHINES",
    "UtsnameChoice",
    "choose_utsname",
    "from_memory",
    "from_vmcoreinfo",
    "is_sane",
    "utsname_fields",
    "utsname_record",
    "with_utsname",
]
