"""convert of a real QEMU guest ELF to KDUMP: the header utsname lets drgn open it with no hints.

notes-and-vmcoreinfo.md §6: libkdumpfile derives the architecture from a sane header utsname, and drgn refuses a
dump without it ("KDUMP_ATTR_ARCH_NAME: Key has no value"); crash takes OSRELEASE from VMCOREINFO.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kdfix.write.convert import convert
from tests.oracle.fixtures import require_tool
from tests.oracle.guest import GuestDumps
from tests.oracle.tools import crash_osrelease, drgn_program

pytestmark = pytest.mark.oracle

GUESTS = ["guest_seabios_kaslr_vmcoreinfo", "guest_aarch64_kaslr_vmcoreinfo", "guest_i386_kaslr_vmcoreinfo"]
RELEASE_OFF = 130  # new_utsname.release (notes-and-vmcoreinfo.md §6)


@pytest.mark.parametrize("name", GUESTS)
def test_converted_qemu_elf_opens_in_drgn_without_hints(name: str, request: pytest.FixtureRequest,
                                                        tmp_path: Path) -> None:  # fmt: skip
    """drgn (no platform, no VMCOREINFO given) opens the converted file and reads init_uts_ns; crash names the
    release. i386: drgn has no i386 page-table walker, so the structure is read at its physical address."""
    require_tool("drgn")
    d: GuestDumps = request.getfixturevalue(name)
    t = d.truth
    out = tmp_path / "converted.kdump"
    result = convert([d.elf], out, to="kdump")
    assert "init_uts_ns" in result.utsname, result
    prog = drgn_program(out)
    name_off = t.vmcoreinfo_value("OFFSET(uts_namespace.name)") or 0
    va = t.init_uts_ns_va + name_off + RELEASE_OFF
    raw = prog.read(t.pa_of_kernel_va(va), 65, True) if d.config.arch == "i386" else prog.read(va, 65)
    assert raw.split(b"\0", 1)[0].decode() == t.osrelease
    arch = None if d.config.arch == "x86_64" else d.config.arch
    require_tool("crash", arch)
    rc, text = crash_osrelease(out, arch=arch, timeout=600)
    assert (rc, text.strip().splitlines()[-1]) == (0, t.osrelease), text
