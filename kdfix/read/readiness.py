"""What keeps each real reader (crash, makedumpfile, libkdumpfile/drgn) from using a dump: cheap header checks.

These are not structural problems (a dump can be perfectly sound and still unusable); ``kdfix info`` lists
them under ``needs_fix`` and ``kdfix fix`` repairs them.  Facts: notes-and-vmcoreinfo.md §5-§6,
phys-base-and-kaslr.md §5, qemu-dumps.md §6.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kdfix.arch import recognise
from kdfix.format.constants import NOTE_NAME_QEMU
from kdfix.format.kdump import UTS_LEN, UTSNAME_FIELDS, header_features
from kdfix.notes.vmcoreinfo import qemu_misparse
from kdfix.units import cstr, to_s64

if TYPE_CHECKING:
    from kdfix.read.dump import Dump


FLATTENED_FINDING = ("flattened stream: makedumpfile and libkdumpfile < 0.5.2 cannot open it; "
                     "`kdfix convert --no-flat`")  # fmt: skip

# machine strings libkdumpfile maps to an arch (notes-and-vmcoreinfo.md §6), by prefix.
KNOWN_MACHINES = ("x86_64", "i386", "i586", "i686", "aarch64", "arm", "ppc", "s390", "riscv", "mips", "ia64", "alpha")


def utsname_fields(record: object) -> dict[str, bytes]:
    """{field: raw 65 bytes} of a utsname record."""
    return {name: bytes(getattr(record, name)) for name in UTSNAME_FIELDS}


def is_sane(fields: dict[str, bytes]) -> bool:
    """libkdumpfile's test: sysname exactly Linux, release/version/machine non-empty, byte 64 of each NUL."""
    if any(len(fields[n]) != UTS_LEN or fields[n][UTS_LEN - 1] != 0 for n in UTSNAME_FIELDS if n != "domainname"):
        return False
    if cstr(fields["sysname"]) != "Linux":
        return False
    if not all(cstr(fields[n]) for n in ("release", "version", "machine")):
        return False
    return cstr(fields["machine"]).startswith(KNOWN_MACHINES)


def reader_findings(dump: Dump) -> list[str]:
    """One sentence per obstacle a real reader meets in ``dump``; empty when crash, makedumpfile and drgn can use it."""
    if dump.elf is not None:
        return _elf_findings(dump)
    if dump.kdump is None:
        return []
    findings: list[str] = [FLATTENED_FINDING] if dump.container == "flattened" else []
    model, sub, version = dump.model, dump.sub_header, dump.header_version or 0
    info = dump.vmcoreinfo
    note = model.vmcoreinfo_note()
    can = header_features(version)
    pointer = sub is not None and can.vmcoreinfo and sub.offset_vmcoreinfo and sub.size_vmcoreinfo
    if info is None:
        findings.append("no VMCOREINFO: drgn refuses the dump, crash --osrelease prints 'unknown', "
                        "makedumpfile --dump-dmesg cannot run")  # fmt: skip
    else:
        if not pointer:
            findings.append("VMCOREINFO is not referenced by offset_vmcoreinfo: crash and makedumpfile do not see it")
        if note is None and can.notes:
            findings.append("VMCOREINFO is not a note in the notes area: libkdumpfile and drgn do not see it")
        found = recognise(model, info)
        arch = None if found is None else found.arch
        true_phys_base = None if arch is None else arch.header_phys_base(info)
        if arch is not None and true_phys_base is not None and model.phys_base != true_phys_base:
            why = ""
            raw = info.get(arch.phys_base_key) if arch.phys_base_key else None
            if raw is not None and qemu_misparse(raw) == model.phys_base:
                why = " (QEMU's hex misparse of the decimal value)"
            findings.append(f"header phys_base {model.phys_base:#x}{why} differs from {arch.phys_base_meaning} "
                            f"{to_s64(true_phys_base)}: makedumpfile trusts the header")  # fmt: skip
    findings.extend(_arch_findings(dump))
    fields = utsname_fields(model.utsname)
    if not is_sane(fields):
        values = ", ".join(f"{n} {cstr(fields[n])!r}" for n in ("sysname", "release", "version", "machine"))
        findings.append(f"utsname is not sane ({values}; libkdumpfile needs sysname 'Linux', a release, a version "
                        "and a known machine): it cannot tell the architecture, so drgn needs "
                        "--architecture")  # fmt: skip
    if info is None and model.phys_base == 0 and any(n.name.startswith(NOTE_NAME_QEMU) for n in model.notes):
        findings.append("header phys_base is 0 as QEMU always writes it: wrong under KASLR or OVMF (kdfix detect)")
    return findings


def _arch_findings(dump: Dump) -> list[str]:
    """What the dump's architecture needs of a KDUMP header: blocks of the kernel's page size (libkdumpfile and
    makedumpfile take the page size from block_size) and the header ABI its tools read
    (arch-kernels-and-introspection.md §1.6, §2.6)."""
    found = recognise(dump.model, dump.vmcoreinfo)
    if found is None or dump.kdump is None:
        return [] if found is not None else ["the architecture is unknown: kdfix cannot fix or translate this dump"]
    arch, k, out = found.arch, dump.kdump, []
    page_size = dump.vmcoreinfo.page_size if dump.vmcoreinfo is not None else None
    if page_size and page_size != k.block_size:
        out.append(f"block_size {k.block_size} is not the kernel's PAGESIZE {page_size}: libkdumpfile (drgn) and "
                   "makedumpfile take the page size from block_size")  # fmt: skip
    elif page_size is None and k.block_size == arch.qemu_block_size > 4096:
        out.append(f"block_size {k.block_size} is QEMU's {arch.name} block, likely larger than the kernel's pages "
                   "(libkdumpfile and makedumpfile take the page size from it)")  # fmt: skip
    wanted = arch.kdump_abi(dump.model.abi.byte_order)
    if dump.model.abi != wanted:
        out.append(f"header layout {dump.model.abi.name}: {arch.name} makedumpfile and crash read {wanted.name}")
    return out


def _elf_findings(dump: Dump) -> list[str]:
    findings = []
    if dump.vmcoreinfo is None:
        findings.append("no VMCOREINFO note: drgn refuses the dump")
    if dump.elf is not None and not dump.elf.phdrs_follow_ehdr:
        findings.append("program headers do not follow the ELF header: makedumpfile refuses it as input")
    return findings
