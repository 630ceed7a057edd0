"""The two-kernel guest itself (kexec_guest.py): each variant really holds a crashed and a running capture kernel.

Expected values come from what each kernel printed about itself and from the capture kernel's /proc/vmcore
(arch-kernels-and-introspection.md §3.3-3.7), never from kdfix's detection.
"""

from __future__ import annotations

import re

import pytest

import kdfix
from kdfix.notes.vmcoreinfo import VmcoreInfo
from tests.oracle.kexec_guest import CAPTURE_APPEND, KexecDumps

pytestmark = pytest.mark.oracle


def test_capture_kernel_runs_inside_the_reservation(kexec_guest: KexecDumps) -> None:
    first, capture = kexec_guest.first, kexec_guest.capture
    lo, hi = kexec_guest.crash_region
    assert hi - lo + 1 == 256 << 20
    assert not lo <= first.kernel_code_start <= hi  # §3.7: PA(_text) tells the kernels apart
    assert lo <= capture.kernel_code_start <= hi
    assert first.phys_base != capture.phys_base
    assert first.osrelease == capture.osrelease and first.marker != capture.marker
    assert "crashkernel=256M" in first.cmdline and "elfcorehdr=" not in first.cmdline
    assert CAPTURE_APPEND in capture.cmdline
    m = re.search(r"elfcorehdr=(\d+)K", capture.cmdline)
    assert m is not None and lo <= int(m.group(1)) * 1024 <= hi


def test_proc_vmcore_presents_the_crashed_kernel(kexec_guest: KexecDumps) -> None:
    head, first = kexec_guest.vmcore_head, kexec_guest.first
    info = VmcoreInfo.parse(head.vmcoreinfo().encode())
    assert info.phys_base == first.phys_base
    assert info.symbol("_stext") == first.stext_va
    assert info.crashtime is not None
    assert len(head.prstatus()) == kexec_guest.config.cpus  # every CPU answered the NMI (§3.4)
    text = [(pa, va) for pa, _size, va in head.loads() if va >> 63 and va >= 0xFFFFFFFF80000000]
    assert text == [(first.kernel_code_start, first.text_va)]  # kexec-tools' kernel-text PT_LOAD (§3.3)


def test_qemu_files_hold_both_kernels(kexec_guest: KexecDumps) -> None:
    for path in (kexec_guest.elf, kexec_guest.kdump_zlib):
        with kdfix.open_dump(path) as dump:
            for truth in (kexec_guest.first, kexec_guest.capture):
                pa = truth.pa_of_kernel_va(truth.init_uts_ns_va)
                assert dump.memory.read(pa, 5) == b"Linux", (path, hex(pa))
            if kexec_guest.config.vmcoreinfo and path == kexec_guest.kdump_zlib:
                # the capture kernel's qemu_fw_cfg does not re-point the device (§3.7)
                assert dump.vmcoreinfo is not None
                assert dump.vmcoreinfo.symbol("_stext") == kexec_guest.first.stext_va
