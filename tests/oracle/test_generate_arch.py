"""Oracle: ``kdfix generate --style linux --arch aarch64|i386`` writes vmcores that drgn opens with no hints and
reads ``init_uts_ns`` from by kernel virtual address (through the kernel's page tables: libkdumpfile's arm64 and
ia32 PAE translation), and that the architecture's own crash (tests/oracle/sysroot.py) accepts, plain and
flattened (arch-kernels-and-introspection.md §1.6, §2.6; tools-and-oracles.md §1, §4).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdfix.cli import app
from tests.oracle.fixtures import require_tool
from tests.oracle.tools import crash_osrelease, drgn_program, drgn_release_by_vaddr

pytestmark = pytest.mark.oracle
runner = CliRunner()

# (arch, extra options): nokaslr, and KASLR as measured on the real guests (§1.1, §1.4, §2.2)
VARIANTS = [
    ("aarch64", ()),
    ("aarch64", ("--kaslr-offset", "0x5178aec00000", "--phys-base", "0xffffd74780000000")),
    ("i386", ()),
    ("i386", ("--kaslr-offset", "0xb000000")),
]


def _generate(out: Path, arch: str, *args: str) -> dict:
    cmd = ["generate", "--style", "linux", "--arch", arch, "-o", str(out), "--memory", "256M", "--cpus", "2"]
    result = runner.invoke(app, [*cmd, "--release", f"6.1.0-kdfix-{arch}", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize(("arch", "args"), VARIANTS, ids=lambda v: v if isinstance(v, str) else "-".join(v) or "base")
def test_drgn_reads_by_virtual_address(arch: str, args: tuple[str, ...], tmp_path: Path) -> None:
    require_tool("drgn")
    out = tmp_path / "d.kdump"
    info = _generate(out, arch, *args)
    assert drgn_release_by_vaddr(out) == f"6.1.0-kdfix-{arch}"
    prog = drgn_program(out)
    assert prog.read(info["linux_banner"], 14) == b"Linux version "
    banner_pa = info["text_paddr"] + info["linux_banner"] - info["text_vaddr"]  # the image is one block (§1.3, §2.2)
    assert prog.read(banner_pa, 14, True) == b"Linux version "


@pytest.mark.parametrize("arch", ["aarch64", "i386"])
@pytest.mark.parametrize("flat", [False, True], ids=["plain", "flat"])
def test_arch_crash_osrelease(arch: str, flat: bool, tmp_path: Path) -> None:
    require_tool("crash", arch)
    out = tmp_path / "c.kdump"
    _generate(out, arch, *(["--flat"] if flat else []))
    result = crash_osrelease(out, arch=arch, timeout=600)
    assert (result.returncode, result.output.strip()) == (0, f"6.1.0-kdfix-{arch}"), result.output
