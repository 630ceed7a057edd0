"""The architecture layer: one module per architecture, a registry, recognition, and kernel virtual reads.

Everything that depends on the guest's CPU lives here (arch-kernels-and-introspection.md §1-§2,
phys-base-and-kaslr.md §1); detect, fix, notes and info ask this package instead of assuming one.

Public, stable API::

    recognise(model, vmcoreinfo=None) -> Recognition | None     # never raises on foreign input
    identify(model, vmcoreinfo=None) -> Arch                    # UnsupportedError (one line) if unknown
    get_arch(name) -> Arch                                      # "x86_64", "aarch64", "i386", "arm"
    arch_of_e_machine(e_machine) -> Arch                        # UnsupportedError (one line) if unknown
    Arch.qemu -> QemuTarget                                     # what QEMU's dump-guest-memory does for it
    kernel_reader(model, memory, vmcoreinfo=None, *, phys_base=None, arch=None) -> KernelMemory
        KernelMemory.vtop(vaddr) -> paddr        (AddressError if unmapped)
        KernelMemory.try_vtop(vaddr) -> paddr | None
        KernelMemory.read(vaddr, size) -> bytes  (AddressError if a page is unmapped or not in the dump)
        KernelMemory.read_u32 / read_u64 / read_ulong(vaddr) -> int
        KernelMemory.arch, .space (.phys_base, .kernel_offset, .root_paddr), .walk(vaddr)

``vmcoreinfo`` is the kernel's VMCOREINFO (bytes or VmcoreInfo); by default the dump's own. ``phys_base``
overrides what VMCOREINFO says about the header phys_base meaning (x86_64 phys_base, aarch64 PHYS_OFFSET).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kdfix.arch import aarch64, arm, i386, x86_64
from kdfix.arch.base import (
    Arch,
    Clues,
    KernelSpace,
    PageMapping,
    QemuTarget,
    Recognition,
    Translation,
    WalkBudgetExceeded,
)
from kdfix.arch.kernel_memory import KernelMemory
from kdfix.errors import UnsupportedError
from kdfix.format.constants import NOTE_NAME_CORE, NOTE_NAME_LINUX, NOTE_NAME_QEMU, NoteType
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.units import cstr

if TYPE_CHECKING:
    from kdfix.model import DumpModel
    from kdfix.read.memory import PhysicalMemory

ARCHES: dict[str, Arch] = {a.name: a for a in (x86_64.ARCH, aarch64.ARCH, i386.ARCH, arm.ARCH)}
UNKNOWN_MACHINES = ("", "Unknown")  # what QEMU >= 8.0 and zeroed headers carry (qemu-dumps.md §6.2)
QEMU_AARCH64_BLOCK = aarch64.ARCH.qemu_block_size


def get_arch(name: str) -> Arch:
    """The registered architecture called ``name`` (or one of its utsname machine strings)."""
    if name in ARCHES:
        return ARCHES[name]
    for arch in ARCHES.values():
        if name in arch.machines:
            return arch
    raise UnsupportedError(f"unknown architecture {name!r}; known: {', '.join(ARCHES)}", field="arch")


def arch_of_e_machine(e_machine: int) -> Arch:
    """The registered architecture of ELF ``e_machine``; UnsupportedError (one line) when none is."""
    for arch in ARCHES.values():
        if e_machine in arch.e_machines:
            return arch
    raise UnsupportedError(f"unsupported ELF e_machine {e_machine}; known: {', '.join(ARCHES)}", field="e_machine")


def default_machine(arch: Arch) -> str:
    """The utsname machine kdfix writes for ``arch`` (what ``uname -m`` prints on its usual kernels)."""
    return arch.machines[0]


def _as_info(vmcoreinfo: bytes | VmcoreInfo | None) -> VmcoreInfo | None:
    if vmcoreinfo is None or isinstance(vmcoreinfo, VmcoreInfo):
        return vmcoreinfo
    return VmcoreInfo.parse(vmcoreinfo)


def clues_of(model: DumpModel, vmcoreinfo: bytes | VmcoreInfo | None = None) -> Clues:
    """The architecture clues of a dump's headers and notes (no memory read)."""
    prstatus = tuple(
        len(n.desc)
        for n in model.notes
        if n.type == NoteType.NT_PRSTATUS and n.name in (NOTE_NAME_CORE, NOTE_NAME_LINUX, b"")
    )
    info = _as_info(vmcoreinfo)
    if info is None:
        info = model.parsed_vmcoreinfo()
    return Clues(
        e_machine=model.e_machine,
        machine=cstr(bytes(getattr(model.utsname, "machine", b""))),
        prstatus_sizes=prstatus,
        qemu_cpu_notes=sum(1 for n in model.notes if n.name.startswith(NOTE_NAME_QEMU)),
        block_size=model.block_size if model.e_machine is None else None,
        word_size=model.abi.word_size,
        byte_order=model.abi.byte_order,
        vmcoreinfo=info,
    )


def _by_vmcoreinfo(info: VmcoreInfo) -> tuple[Arch, str] | None:
    for arch in ARCHES.values():
        keys = [k for k in arch.vmcoreinfo_keys if k in info]
        if keys:
            return arch, f"VMCOREINFO has {', '.join(keys)}"
    return None


def recognise_clues(clues: Clues) -> Recognition | None:
    """The architecture the clues point to, strongest clue first (ELF e_machine, VMCOREINFO keys, NT_PRSTATUS
    size, utsname machine, QEMU's 64 KiB aarch64 block size); disagreeing weaker clues are noted as evidence."""
    votes: list[tuple[Arch, str]] = []
    if clues.e_machine is not None:
        votes += [(a, f"ELF e_machine {clues.e_machine}") for a in ARCHES.values() if clues.e_machine in a.e_machines]
    if clues.vmcoreinfo is not None:
        hit = _by_vmcoreinfo(clues.vmcoreinfo)
        if hit is not None:
            votes.append(hit)
    sizes = set(clues.prstatus_sizes)
    if len(sizes) == 1:
        (size,) = sizes
        votes += [(a, f"NT_PRSTATUS of {size} bytes") for a in ARCHES.values() if a.prstatus_size == size]
    if clues.machine not in UNKNOWN_MACHINES:
        votes += [(a, f"utsname machine {clues.machine!r}") for a in ARCHES.values()
                  if clues.machine.startswith(a.machines)]  # fmt: skip
    if (
        clues.block_size == QEMU_AARCH64_BLOCK
        and clues.word_size == aarch64.ARCH.word_size
        and clues.byte_order == "<"
        and not clues.qemu_cpu_notes
    ):
        votes.append((aarch64.ARCH, f"block_size {QEMU_AARCH64_BLOCK} with no QEMU CPU notes (QEMU's aarch64 dumps)"))
    if not votes:
        return None
    chosen = votes[0][0]
    evidence = [why for arch, why in votes if arch is chosen]
    evidence += [f"ignored: {why} suggests {arch.name}" for arch, why in votes if arch is not chosen]
    return Recognition(chosen, tuple(evidence))


def recognise(model: DumpModel, vmcoreinfo: bytes | VmcoreInfo | None = None) -> Recognition | None:
    """The architecture of a dump and why, or None when nothing tells (never raises on foreign input)."""
    return recognise_clues(clues_of(model, vmcoreinfo))


def identify(model: DumpModel, vmcoreinfo: bytes | VmcoreInfo | None = None) -> Arch:
    """The architecture of a dump; UnsupportedError when no header, note or VMCOREINFO key tells."""
    found = recognise(model, vmcoreinfo)
    if found is None:
        raise UnsupportedError(
            "cannot tell the dump's architecture (no ELF e_machine, known NT_PRSTATUS size, utsname machine or "
            "arch-specific VMCOREINFO key)",
            field="arch",
        )
    return found.arch


_LISTS = [frozenset(a.detect_methods) for a in ARCHES.values() if a.detect_methods]
LISTED_METHODS: frozenset[str] = frozenset().union(*_LISTS)
GENERIC_METHODS: frozenset[str] = frozenset.intersection(*_LISTS)  # run when the architecture is unknown


def method_applies(model: DumpModel, method: str) -> tuple[bool, str | None]:
    """(whether detection ``method`` may run on ``model``, the recognised architecture's name or None).

    A method no architecture lists is not restricted here; one that some list names runs only on those
    architectures, or on a dump of unknown architecture when every architecture lists it.
    """
    found = recognise(model)
    name = None if found is None else found.arch.name
    if method not in LISTED_METHODS:
        return True, name
    if found is None:
        return method in GENERIC_METHODS, None
    return method in found.arch.detect_methods, name


def kernel_reader(
    model: DumpModel,
    memory: PhysicalMemory,
    vmcoreinfo: bytes | VmcoreInfo | None = None,
    *,
    phys_base: int | None = None,
    arch: Arch | str | None = None,
) -> KernelMemory:
    """Kernel virtual memory of a dump, translated by its architecture's rules and page tables.

    ``vmcoreinfo`` defaults to the dump's own; ``phys_base`` (the header meaning: x86_64 phys_base, aarch64
    PHYS_OFFSET) overrides VMCOREINFO's; ``arch`` overrides recognition. Raises UnsupportedError when there is no
    VMCOREINFO, the architecture is unknown, or VMCOREINFO lacks a key its rules need.
    """
    info = _as_info(vmcoreinfo)
    if info is None:
        info = model.parsed_vmcoreinfo()
    if info is None:
        raise UnsupportedError("no VMCOREINFO: kernel virtual addresses cannot be translated", field="VMCOREINFO")
    chosen = get_arch(arch) if isinstance(arch, str) else arch
    if chosen is None:
        chosen = identify(model, info)
    return KernelMemory(chosen, chosen.kernel_space(info, phys_base=phys_base), memory)


__all__ = [
    "ARCHES",
    "Arch",
    "Clues",
    "KernelMemory",
    "KernelSpace",
    "PageMapping",
    "QemuTarget",
    "Recognition",
    "Translation",
    "WalkBudgetExceeded",
    "arch_of_e_machine",
    "clues_of",
    "default_machine",
    "get_arch",
    "identify",
    "kernel_reader",
    "method_applies",
    "recognise",
    "recognise_clues",
]
