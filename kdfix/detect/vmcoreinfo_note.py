"""Method A: VMCOREINFO already in the dump (header pointer or note), plus QEMU's hex-misparse check.

phys-base-and-kaslr.md §3A; the misparse is qemu-dumps.md §6 bug 1.
"""

from __future__ import annotations

from kdfix.arch import Arch, recognise, recognise_clues
from kdfix.arch.base import Clues
from kdfix.detect.candidate import Attempt, Candidate, strategy
from kdfix.notes.vmcoreinfo import VmcoreInfo, qemu_misparse
from kdfix.units import to_s64

METHOD = "vmcoreinfo_note"


def unmisparse_qemu_phys_base(header_phys_base: int) -> int | None:
    """Invert QEMU's misparse: the signed kernel value whose hex misparse gives ``header_phys_base``, or None.

    The header (as signed) must have an absolute value whose hex digits are all 0-9 (qemu-dumps.md §6).
    """
    signed = to_s64(header_phys_base)
    digits = f"{abs(signed):x}"
    if signed == 0 or not digits.isdigit():
        return None
    return (-1 if signed < 0 else 1) * int(digits, 10)


def header_evidence(header_phys_base: int, info: VmcoreInfo, arch: Arch | None = None) -> str:
    """Describe how the header phys_base relates to the value VMCOREINFO gives for it (per architecture)."""
    if arch is None:
        found = recognise_clues(Clues(vmcoreinfo=info))
        arch = None if found is None else found.arch
    if arch is None:
        return f"header phys_base {header_phys_base:#x}; VMCOREINFO does not tell the architecture"
    key = arch.phys_base_key or arch.phys_base_meaning
    text = info.get(arch.phys_base_key) if arch.phys_base_key else None
    true = arch.header_phys_base(info)
    if true is None:
        return f"header phys_base {header_phys_base:#x}; VMCOREINFO has no {key}"
    if header_phys_base == true:
        return f"header phys_base {header_phys_base:#x} matches {key}"
    if text is not None and header_phys_base == qemu_misparse(text) and true != 0:
        return (
            f"header phys_base {header_phys_base:#x} is QEMU's hex misparse of {key}={text.strip()} "
            f"(qemu-dumps.md §6); true value {true:#x}"
        )
    if header_phys_base == 0:
        return f"header phys_base is 0, VMCOREINFO says {true:#x}"
    return f"header phys_base {header_phys_base:#x} disagrees with {key} {true:#x}"


@strategy(METHOD)
def find_by_vmcoreinfo_note(run: Attempt) -> Candidate | None:
    """The header phys_base value and KERNELOFFSET from the VMCOREINFO the dump carries (header pointer, else
    note), read by the dump's architecture (x86_64 NUMBER(phys_base), aarch64 NUMBER(PHYS_OFFSET), i386 0)."""
    note = run.model.vmcoreinfo_note()
    pointed = run.model.vmcoreinfo
    evidence = run.evidence
    if pointed is not None and note is not None and pointed != note.desc:
        evidence.append("VMCOREINFO at offset_vmcoreinfo differs from the VMCOREINFO note")
    raw = pointed if pointed is not None else (note.desc if note is not None else None)
    if raw is None:
        run.miss("no VMCOREINFO in the dump (header pointer 0 and no VMCOREINFO note)")
        return None
    info = VmcoreInfo.parse(raw)
    source = "header pointer" if pointed is not None else "note"
    found = recognise(run.model, info)
    if found is None:
        run.miss(f"VMCOREINFO ({source}) and headers do not tell the architecture")
        return None
    arch = found.arch
    phys_base = arch.header_phys_base(info)
    if phys_base is None:
        why = " (kernel < 4.10?)" if arch.phys_base_key == "NUMBER(phys_base)" else ""
        run.miss(f"VMCOREINFO ({source}) lacks a parsable {arch.phys_base_key or arch.phys_base_meaning}{why}")
        return None
    evidence.append(f"VMCOREINFO from {source}; architecture {arch.name} ({'; '.join(found.evidence)})")
    evidence.extend(arch.vmcoreinfo_evidence(info))
    evidence.append(header_evidence(run.model.phys_base, info, arch))
    return run.candidate(phys_base, arch.kernel_offset(info), raw, arch=arch.name)
