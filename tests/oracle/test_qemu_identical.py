"""Oracle: ``kdfix generate --style qemu`` from QEMU's ELF dump equals QEMU's own kdump-zlib of the same stopped guest.

Guests boot through tests/oracle/fixtures.py: x86_64 (SeaBIOS with KASLR and OVMF without, each with and without
``-device vmcoreinfo``; qemu-dumps.md §5-§7), and the aarch64 (virt, qemu-system-aarch64) and i386 (pc,
qemu-system-i386) guests, nokaslr, KASLR and KASLR + vmcoreinfo (arch-kernels-and-introspection.md §1.6, §2).
Each guest boots once per session; its dumps are cached. Skipped when QEMU or the guest kernel is missing, unless
CI=true.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdfix.generate.qemu import generate_qemu, qemu_phys_base
from tests.generate import qemu_helpers as h
from tests.oracle.fixtures import (  # noqa: F401 - session fixtures used by name
    ARCH_GUEST_CONFIGS,
    GUEST_CONFIGS,
    guest_aarch64_kaslr,
    guest_aarch64_kaslr_vmcoreinfo,
    guest_aarch64_nokaslr,
    guest_i386_kaslr,
    guest_i386_kaslr_vmcoreinfo,
    guest_i386_nokaslr,
    guest_ovmf_nokaslr,
    guest_ovmf_nokaslr_vmcoreinfo,
    guest_seabios_kaslr,
    guest_seabios_kaslr_vmcoreinfo,
    require_tool,
)

pytestmark = pytest.mark.oracle

GUESTS = sorted(GUEST_CONFIGS)
ARCH_GUESTS = sorted(ARCH_GUEST_CONFIGS)
AARCH64_RAM = 0x40000000  # virt's DRAM base: QEMU's phys_base without a guest note (arch-kernels... §1.6)


def _guest(request: pytest.FixtureRequest, name: str):
    dumps = request.getfixturevalue(name)
    if not dumps.qemu_version.startswith("7.2"):
        pytest.skip(f"reference dumps come from QEMU {dumps.qemu_version}; the default --qemu-version is 7.2")
    return dumps


@pytest.mark.parametrize("name", GUESTS)
def test_regenerated_kdump_is_byte_identical(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    dumps = _guest(request, name)
    reference = dumps.kdump_zlib.read_bytes()
    out1, out2 = tmp_path / "w1.kdump", tmp_path / "w2.kdump"
    res = generate_qemu(dumps.elf, out1)
    generate_qemu(dumps.elf, out2, workers=2)
    generated = out1.read_bytes()
    assert generated == reference, f"{name}: first difference at byte {_first_diff(generated, reference)}"
    assert out2.read_bytes() == generated
    assert res.vmcoreinfo == dumps.config.vmcoreinfo
    if dumps.config.vmcoreinfo:  # the header carries QEMU's base-16 misparse of NUMBER(phys_base)
        kdump = h.reassemble(h.parse_flat(reference))
        _, sub = h.headers(kdump)
        assert sub[0] == qemu_phys_base(kdump[sub[5] : sub[5] + sub[6]], "x86_64") == res.phys_base
        assert res.phys_base != dumps.truth.phys_base or dumps.truth.phys_base == 0


@pytest.mark.parametrize("name", ARCH_GUESTS)
def test_arch_guest_kdump_is_byte_identical(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """aarch64: 64 KiB blocks, CORE PRSTATUS + PRFPREG notes, phys_base = DRAM base or NUMBER(PHYS_OFFSET);
    i386: the 64-bit header layout (the BIOS ends at 4 GiB), machine "i686" (qemu-system-i386 on 7.2)."""
    dumps = _guest(request, name)
    reference = dumps.kdump_zlib.read_bytes()
    out = tmp_path / "w2.kdump"
    res = generate_qemu(dumps.elf, out, workers=2)
    generated = out.read_bytes()
    assert generated == reference, f"{name}: first difference at byte {_first_diff(generated, reference)}"
    arch, truth = dumps.config.arch, dumps.truth
    assert (res.arch, res.qemu_target, res.vmcoreinfo) == (arch, arch, dumps.config.vmcoreinfo)
    main, sub = h.headers(h.reassemble(h.parse_flat(reference)))
    if arch == "aarch64":
        assert main[6] == 65536  # block_size, whatever the guest's PAGESIZE
        expected = truth.phys_offset if dumps.config.vmcoreinfo else AARCH64_RAM
        assert sub[0] == res.phys_base == expected & ((1 << 64) - 1)
    else:
        assert main[2][260:325] == b"i686".ljust(65, b"\0") and main[6] == 4096 and sub[0] == res.phys_base == 0
    if dumps.config.vmcoreinfo:  # QEMU's kdump read back through kdfix.open_dump regenerates to itself too
        again = tmp_path / "again.kdump"
        generate_qemu(dumps.kdump_zlib, again)
        assert again.read_bytes() == reference


@pytest.mark.parametrize("name", ["guest_seabios_kaslr_vmcoreinfo", "guest_ovmf_nokaslr"])
def test_raw_equals_makedumpfile_reassembly(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from tests.oracle.tools import makedumpfile_reassemble

    require_tool("makedumpfile")
    dumps = _guest(request, name)
    flat, raw, reassembled = tmp_path / "flat", tmp_path / "raw", tmp_path / "reassembled"
    generate_qemu(dumps.elf, flat, qemu_version="8.2")
    generate_qemu(dumps.elf, raw, qemu_version="8.2", raw=True, workers=2)
    result = makedumpfile_reassemble(flat, reassembled)
    assert result.returncode == 0, result.output
    assert raw.read_bytes() == reassembled.read_bytes()


@pytest.mark.parametrize("mark", [False, True], ids=["plain", "mark"])
def test_cli_output_origin(mark: bool, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from kdfix.cli import app

    dumps = _guest(request, "guest_ovmf_nokaslr_vmcoreinfo")
    src = tmp_path / "vmcore.elf"
    shutil.copyfile(dumps.elf, src)
    out = tmp_path / "out.kdump"
    runner = CliRunner()
    args = ["generate", "--style", "qemu", "--from", str(src), "-o", str(out), "--json"]
    res = runner.invoke(app, [*args, "--mark"] if mark else args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["vmcoreinfo"] is True and summary["marked"] is mark
    if not mark:
        assert out.read_bytes() == dumps.kdump_zlib.read_bytes()
    info = runner.invoke(app, ["info", str(out), "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.stdout)["origin"] == ("kdfix" if mark else "qemu")


def _first_diff(a: bytes, b: bytes) -> int:
    return next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
