"""detect and fix on real dumps of a running kdump capture kernel (kexec_guest.py): two kernels in one dump.

Expected values come from each kernel's own ground truth and from the capture kernel's /proc/vmcore (the crashed
kernel as Linux presents it, arch-kernels-and-introspection.md §3.5). By default the fixed dump describes the
crashed kernel: its phys_base, its VMCOREINFO, its registers at panic; ``--kernel running`` the capture kernel
with QEMU's registers. Oracles: makedumpfile --dump-dmesg, crash with the vmlinux (``log``), drgn with no hints.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import kdfix
from kdfix.cli.info import describe_dump
from kdfix.detect.combine import detect
from kdfix.fix import fix_dump
from tests.oracle.fixtures import require_tool
from tests.oracle.guest import GroundTruth
from tests.oracle.kexec_guest import KexecDumps, check_kernel_roles, fix_for_role, prstatus_notes
from tests.oracle.tools import crash_with_vmlinux, drgn_program, makedumpfile_dump_dmesg

pytestmark = pytest.mark.oracle

# crash with the vmlinux takes most of a minute per run: each kernel role on two of the variants
CRASH_CASES = {("cpu0", "crashed"), ("cpu1", "running"), ("cpu0-vmcoreinfo", "crashed"), ("cpu0-vmcoreinfo", "running")}


def _truth(guest: KexecDumps, kernel: str) -> tuple[GroundTruth, GroundTruth]:
    """(the kernel the fixed dump must describe, the other one)."""
    return (guest.first, guest.capture) if kernel == "crashed" else (guest.capture, guest.first)


def _variant(guest: KexecDumps) -> str:
    cfg = guest.config
    return f"cpu{cfg.panic_cpu}" + ("-vmcoreinfo" if cfg.vmcoreinfo else "")


def test_detect_reports_both_kernels_with_roles(kexec_guest: KexecDumps) -> None:
    for path in (kexec_guest.kdump_zlib, kexec_guest.elf):
        with kdfix.open_dump(path) as dump:
            for kernel in ("crashed", "running"):
                want, _other = _truth(kexec_guest, kernel)
                result = detect(dump.model, dump.memory, kernel=kernel)  # type: ignore[arg-type]
                assert result.phys_base == want.phys_base, (path, kernel)
                assert result.confidence == "high", result.evidence
                assert result.choice is not None
                roles = check_kernel_roles(result, kexec_guest, want)
                header = roles["crashed"].core_header
                assert header.cmdline is not None and b"elfcorehdr=" in header.cmdline[1]
                assert not roles["running"].crashkernel and roles["running"].elfcorehdr == header.paddr
                panicked = kexec_guest.config.panic_cpu
                assert roles["running"].cpus == (panicked,)  # the capture kernel runs on the panicking vCPU
                assert panicked not in roles["crashed"].cpus


@pytest.mark.parametrize("role", ["crashed", "running"])
def test_fixed_kdump_describes_the_chosen_kernel(
    tmp_path: Path, kexec_guest: KexecDumps, role: str, debug_vmlinux: Path
) -> None:
    for tool in ("crash", "makedumpfile", "drgn"):
        require_tool(tool)
    want, other = _truth(kexec_guest, role)
    with kdfix.open_dump(kexec_guest.kdump_zlib) as dump:
        detected = detect(dump.model, dump.memory, kernel=role)  # type: ignore[arg-type]
    result, flat, plain = fix_for_role(kexec_guest, tmp_path, role, want)
    assert result.phys_base == f"{detected.phys_base:#x}"  # detect and fix agree
    assert any("two kernels in memory" in m and f"describes the {role} kernel" in m for m in result.messages)
    with kdfix.open_dump(plain) as fixed:
        again = detect(fixed.model, fixed.memory, kernel=role)  # type: ignore[arg-type]
        assert again.phys_base == want.phys_base
    # registers: the crashed kernel's at panic, exactly as its /proc/vmcore carries them; else QEMU's of the vCPU
    # that runs the capture kernel (the panicking one)
    panicked = kexec_guest.config.panic_cpu
    expected = (
        kexec_guest.vmcore_head.prstatus() if role == "crashed" else [prstatus_notes(kexec_guest.kdump_zlib)[panicked]]
    )
    assert prstatus_notes(plain) == expected
    log = makedumpfile_dump_dmesg(plain)
    assert want.marker in log and other.marker not in log
    prog = drgn_program(flat)  # no platform, no vmcoreinfo hint
    with kdfix.open_dump(flat) as fixed:
        info = fixed.vmcoreinfo
        assert info is not None
        uts = info.symbol("init_uts_ns") + (info.offset("uts_namespace.name") or 0)  # type: ignore[operator]
        assert prog.read(uts + 130, 65).split(b"\0", 1)[0].decode() == want.osrelease
        # a pointer only this kernel holds: prb -> its own printk_rb_static (KASLR differs between the kernels)
        assert prog.read_u64(info.symbol("prb")) == info.symbol("printk_rb_static")
    if (_variant(kexec_guest), role) in CRASH_CASES:
        res = crash_with_vmlinux(debug_vmlinux, plain, ["log"])
        assert want.marker in res.output and other.marker not in res.output, res.output[-3000:]
        assert "do not match" not in res.output
    if role == "crashed":  # consistent now: info lists no problem (its notes are the crashed kernel's)
        with kdfix.open_dump(flat) as fixed:
            assert not any(p.startswith("two kernels") for p in describe_dump(fixed)["problems"])
    flat.chmod(0o600)
    assert fix_dump(flat, in_place=True, kernel=role).status == "ok"  # idempotent


def test_fixed_elf_describes_the_crashed_kernel(tmp_path: Path, kexec_guest: KexecDumps) -> None:
    for tool in ("makedumpfile", "drgn"):
        require_tool(tool)
    first, capture = kexec_guest.first, kexec_guest.capture
    out = tmp_path / "fixed.elf"
    result = fix_dump(kexec_guest.elf, output=out)
    assert result.status == "fixed", result.messages
    with kdfix.open_dump(out) as fixed:
        assert fixed.vmcoreinfo is not None and fixed.vmcoreinfo.phys_base == first.phys_base
        assert fixed.vmcoreinfo.symbol("_stext") == first.stext_va
    assert prstatus_notes(out) == kexec_guest.vmcore_head.prstatus()
    log = makedumpfile_dump_dmesg(out)
    assert first.marker in log and capture.marker not in log
    prog = drgn_program(out)
    assert prog.read(first.init_uts_ns_va + 130, 65).split(b"\0", 1)[0].decode() == first.osrelease


def test_info_lists_two_kernels(kexec_guest: KexecDumps) -> None:
    for path in (kexec_guest.kdump_zlib, kexec_guest.elf):
        with kdfix.open_dump(path) as dump:
            problems = describe_dump(dump)["problems"]
        line = next((p for p in problems if p.startswith("two kernels in memory")), None)
        assert line is not None, problems
        assert f"crashed (phys_base {_shown(kexec_guest.first.phys_base)})" in line
        assert f"capture (phys_base {_shown(kexec_guest.capture.phys_base)})" in line


def _shown(phys_base: int) -> str:
    signed = phys_base - (1 << 64) if phys_base >> 63 else phys_base
    return f"{signed:#x}"
