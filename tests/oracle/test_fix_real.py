"""kdfix fix on real QEMU 7.2 dumps (4 guest configs): crash, makedumpfile and drgn read the fixed files.

For each config the flattened kdump-zlib file is fixed with -o and --in-place (on copies), and its reassembled
(``convert --no-flat``) copy is fixed in place; the guest's ELF is fixed with -o. Oracles: header phys_base ==
ground truth; ``crash --osrelease``; ``makedumpfile --dump-dmesg`` shows the boot marker; drgn with no hints reads
init_uts_ns by virtual address; every page equals the ELF's; makedumpfile and drgn take the fixed ELF.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import kdfix
from kdfix.fix import fix_dump
from kdfix.fix.journal import journal_path, undo
from kdfix.write.convert import convert
from tests.fix.conftest import file_state
from tests.oracle.fixtures import require_tool
from tests.oracle.tools import (
    crash_osrelease,
    crash_with_vmlinux,
    drgn_release_by_vaddr,
    makedumpfile_dump_dmesg,
    makedumpfile_from_elf,
)

pytestmark = pytest.mark.oracle

CONFIGS = [
    "guest_seabios_kaslr",
    "guest_seabios_kaslr_vmcoreinfo",
    "guest_ovmf_nokaslr",
    "guest_ovmf_nokaslr_vmcoreinfo",
]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    dst.chmod(0o600)
    return dst


@pytest.fixture(params=CONFIGS)
def guest(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    for tool in ("crash", "makedumpfile", "drgn"):
        require_tool(tool)
    return request.getfixturevalue(request.param)


def test_fixed_kdump_files_are_read_by_every_tool(tmp_path: Path, guest) -> None:  # type: ignore[no-untyped-def]
    truth = guest.truth
    flat_in_place = _copy(guest.kdump_zlib, tmp_path / "inplace.flat")
    plain = tmp_path / "plain.kdump"
    convert([guest.kdump_zlib], plain, flat=False)
    plain.chmod(0o600)
    out = tmp_path / "out.kdump"  # -o of the flattened file: a random-access KDUMP file by default
    flat_out = tmp_path / "out.flat"

    results = [
        fix_dump(flat_in_place, in_place=True),
        fix_dump(guest.kdump_zlib, output=out),
        fix_dump(guest.kdump_zlib, output=flat_out, flat=True),
        fix_dump(plain, in_place=True),
    ]
    for result in results:
        assert result.status in ("fixed", "ok"), result.messages
        assert result.phys_base == f"{truth.phys_base:#x}"
    for path in (flat_in_place, out, flat_out, plain):
        with kdfix.open_dump(path) as dump:
            assert dump.sub_header.phys_base == truth.phys_base, path
            assert dump.container == ("flattened" if path in (flat_in_place, flat_out) else "kdump")
        res = crash_osrelease(path)
        assert res.returncode == 0 and truth.osrelease in res.output, (path, res.output)
        assert drgn_release_by_vaddr(path) == truth.osrelease
    for path in (plain, out):  # makedumpfile opens the fixed file itself, with no -R step
        assert truth.marker in makedumpfile_dump_dmesg(path)
    assert fix_dump(plain, in_place=True).status == "ok"  # idempotent on the real file

    # every page of the fixed file equals the ELF's
    with kdfix.open_dump(guest.elf) as elf, kdfix.open_dump(plain) as fixed:
        count = 0
        for pfn, page in fixed.memory.iter_pages():
            assert elf.memory.page(pfn) == page, f"pfn {pfn:#x}"
            count += 1
        assert count == fixed.memory.dumped.count() > 0


def test_undo_restores_the_real_flattened_file(tmp_path: Path, guest) -> None:  # type: ignore[no-untyped-def]
    path = _copy(guest.kdump_zlib, tmp_path / "d.flat")
    before = file_state(path)
    result = fix_dump(path, in_place=True)
    if result.status == "fixed":
        assert result.bytes_written < 64 * 1024
        undo(path)
    assert file_state(path)[:2] == before[:2]
    assert not Path(journal_path(path)).exists()


def test_fixed_elf_is_accepted_by_makedumpfile_and_drgn(tmp_path: Path, guest) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "fixed.elf"
    result = fix_dump(guest.elf, output=out)
    assert result.status == "fixed"  # QEMU 7.2's ELF layout (phdrs at 192, e_ehsize 8) is always rewritten
    assert drgn_release_by_vaddr(out) == guest.truth.osrelease
    res = makedumpfile_from_elf(out, tmp_path / "from-elf.kdump", compress="zlib", dump_level=0)
    assert res.returncode == 0, res.output
    assert guest.truth.marker in makedumpfile_dump_dmesg(tmp_path / "from-elf.kdump")
    assert fix_dump(out, output=tmp_path / "again.elf").status == "ok"


def test_crash_with_vmlinux_reads_the_log_of_a_fixed_dump(tmp_path: Path, guest_seabios_kaslr, debug_vmlinux) -> None:  # type: ignore[no-untyped-def]
    """One config only (slow): the KASLR guest without the vmcoreinfo device, fixed in place (plain kdump)."""
    require_tool("crash")
    plain = tmp_path / "plain.kdump"
    convert([guest_seabios_kaslr.kdump_zlib], plain, flat=False)
    plain.chmod(0o600)
    assert fix_dump(plain, in_place=True).status == "fixed"
    res = crash_with_vmlinux(debug_vmlinux, plain, ["log"])
    assert "do not match" not in res.output
    assert guest_seabios_kaslr.truth.marker in res.output
