"""Two kernels in one aarch64 dump: the arm64 capture kernel guest (kexec_guest.py, KEXEC_AARCH64).

The same acceptance as x86_64 (test_kexec_fix.py), with the arm64 oracles: makedumpfile built for arm64 under
qemu-user (sysroot.py) and drgn with no hints. On arm64 the header's phys_base field holds PHYS_OFFSET
(arch-kernels-and-introspection.md §1.6); QEMU's arm64 dumps carry no TTBR, so the roles come from the ELF core
header kexec-tools left in the reservation and from PA(_text) inside or outside it (§3.3, §3.7). Expected values
come from each kernel's own ground truth and the capture kernel's /proc/vmcore, never from kdfix.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import kdfix
from kdfix.detect.combine import detect
from kdfix.notes.vmcoreinfo import VmcoreInfo
from tests.oracle.fixtures import require_tool
from tests.oracle.kexec_guest import KexecDumps, capture_append, check_kernel_roles, fix_for_role, prstatus_notes
from tests.oracle.tools import drgn_program, have_tool, makedumpfile_dump_dmesg

pytestmark = pytest.mark.oracle


def test_the_guest_holds_a_crashed_and_a_capture_kernel(kexec_guest_aarch64: KexecDumps) -> None:
    g = kexec_guest_aarch64
    lo, hi = g.crash_region
    assert hi - lo + 1 == 256 << 20
    assert not lo <= g.first.kernel_code_start <= hi and lo <= g.capture.kernel_code_start <= hi
    assert g.first.phys_base != g.capture.phys_base  # PHYS_OFFSET differs: the capture kernel's RAM starts at lo
    assert "crashkernel=256M" in g.first.cmdline and capture_append("aarch64") in g.capture.cmdline
    assert len(g.vmcore_head.prstatus()) == g.config.cpus  # every CPU saved its registers at panic (§3.4)
    text = g.vmcore_head.vmcoreinfo()
    if g.vmcore_head.truncated:  # the capture kernel's read of /proc/vmcore oopsed inside the VMCOREINFO note
        assert len(text) > 1000 and g.first.vmcoreinfo_text.startswith(text)
    else:
        head = VmcoreInfo.parse(text.encode())
        assert head.phys_base == g.first.phys_base and head.crashtime is not None


def test_detect_finds_both_kernels_with_roles(kexec_guest_aarch64: KexecDumps) -> None:
    g = kexec_guest_aarch64
    for path in (g.kdump_zlib, g.elf):
        with kdfix.open_dump(path) as dump:
            for kernel, want in (("crashed", g.first), ("running", g.capture)):
                result = detect(dump.model, dump.memory, kernel=kernel)  # type: ignore[arg-type]
                assert result.arch == "aarch64"
                assert result.phys_base == want.phys_base, (path, kernel)
                assert result.confidence == "high", result.evidence
                roles = check_kernel_roles(result, g, want)
                lo, hi = g.crash_region
                assert lo <= roles["crashed"].core_header.paddr < hi
                assert roles["crashed"].crashkernel[0].region() is None  # the kernel chose where
                assert roles["running"].elfcorehdr is None  # arm64: elfcorehdr is in the DTB (§3.2)


@pytest.mark.parametrize("role", ["crashed", "running"])
def test_fixed_kdump_describes_the_chosen_kernel(tmp_path: Path, kexec_guest_aarch64: KexecDumps, role: str) -> None:
    require_tool("drgn")
    if not have_tool("makedumpfile", "aarch64"):
        pytest.skip("makedumpfile:arm64 sysroot unavailable")
    g = kexec_guest_aarch64
    want, other = (g.first, g.capture) if role == "crashed" else (g.capture, g.first)
    _result, flat, plain = fix_for_role(g, tmp_path, role, want)
    if role == "crashed":  # the registers at panic, as the capture kernel's /proc/vmcore carries them
        assert prstatus_notes(plain) == g.vmcore_head.prstatus()
    log = makedumpfile_dump_dmesg(plain, arch="aarch64")
    assert want.marker in log and other.marker not in log
    prog = drgn_program(flat)  # no platform, no vmcoreinfo hint
    info = VmcoreInfo.parse(want.vmcoreinfo_text.encode())
    uts = want.init_uts_ns_va + (info.offset("uts_namespace.name") or 0)
    assert prog.read(uts + 130, 65).split(b"\0", 1)[0].decode() == want.osrelease
    assert prog.read_u64(info.symbol("prb")) == info.symbol("printk_rb_static")
