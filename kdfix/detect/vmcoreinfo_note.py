"""Method A: VMCOREINFO already in the dump (header pointer or note), plus QEMU's hex-misparse check.

phys-base-and-kaslr.md §3A; the misparse is qemu-dumps.md §6 bug 1.
"""

from __future__ import annotations

from kdfix.detect.candidate import Attempt, Candidate, strategy
from kdfix.format.constants import DEFAULT_LINK_TEXT
from kdfix.notes.vmcoreinfo import VmcoreInfo, qemu_misparse
from kdfix.units import U64_MASK, to_s64

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


def header_evidence(header_phys_base: int, info: VmcoreInfo) -> str:
    """Describe how the header phys_base relates to VMCOREINFO's NUMBER(phys_base)."""
    text = info.get("NUMBER(phys_base)") or ""
    true = info.phys_base
    if true is None:
        return f"header phys_base {header_phys_base:#x}; VMCOREINFO has no NUMBER(phys_base)"
    if header_phys_base == true:
        return f"header phys_base {header_phys_base:#x} matches NUMBER(phys_base)"
    if header_phys_base == qemu_misparse(text) and true != 0:
        return (
            f"header phys_base {header_phys_base:#x} is QEMU's hex misparse of NUMBER(phys_base)={text.strip()} "
            f"(qemu-dumps.md §6); true value {true:#x}"
        )
    if header_phys_base == 0:
        return f"header phys_base is 0, VMCOREINFO says {true:#x}"
    return f"header phys_base {header_phys_base:#x} disagrees with NUMBER(phys_base) {true:#x}"


@strategy(METHOD)
def find_by_vmcoreinfo_note(run: Attempt) -> Candidate | None:
    """phys_base and KERNELOFFSET from the VMCOREINFO the dump carries (header pointer, else note)."""
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
    phys_base = info.phys_base
    if phys_base is None:
        run.miss(f"VMCOREINFO ({source}) lacks a parsable NUMBER(phys_base) (kernel < 4.10?)")
        return None
    kernel_offset = info.kernel_offset
    evidence.append(f"VMCOREINFO from {source}: NUMBER(phys_base)={to_s64(phys_base)} → {phys_base:#x}")
    if kernel_offset is not None:
        evidence.append(f"KERNELOFFSET={kernel_offset:x}")
        stext = info.symbol("_stext")
        if stext is not None:
            link = (stext - kernel_offset) & U64_MASK
            note_text = "default link address" if link == DEFAULT_LINK_TEXT else "not the default 0xffffffff81000000"
            evidence.append(f"SYMBOL(_stext) - KERNELOFFSET = {link:#x} ({note_text})")
    evidence.append(header_evidence(run.model.phys_base, info))
    return run.candidate(phys_base, kernel_offset, raw)
