"""``kdfix convert --dump-level N`` of QEMU's kdump-zlib against ``makedumpfile -d N`` of the same memory.

The guest (guest_panic) wrote a file in tmpfs and holds anonymous memory in a shell before it panicked. makedumpfile
reads the ELF in the /proc/vmcore layout with VMCOREINFO (kdfix fix of QEMU's ELF); kdfix reads QEMU's kdump-zlib,
which carries no VMCOREINFO (recovered from memory). The oracle's answer is the output's bitmaps, read back.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kdfix
from kdfix.cli import build_app
from kdfix.fix import fix_dump
from kdfix.kernel.dmesg import dmesg
from kdfix.kernel.printk import iter_lines
from kdfix.write.convert import convert
from tests.oracle.fixtures import require_tool
from tests.oracle.tools import crash_osrelease, drgn_release_by_vaddr, makedumpfile_dump_dmesg, makedumpfile_from_elf

LEVELS = (1, 2, 4, 8, 16, 31)
AGREE = 0.999


def stored(path: Path) -> tuple[set[int], set[int], set[int]]:
    """(valid pfns, dumped pfns, dumped pfns sharing the zero page) of a KDUMP file."""
    with kdfix.open_dump(path) as dump:
        part = dump.kdump
        assert part is not None, path
        dumped = set(part.dumped.iter_set())
        return set(dump.memory.valid.iter_set()), dumped, {pfn for pfn in dumped if part.is_zero_page(pfn)}


@pytest.fixture(scope="module")
def makedumpfile_outputs(guest_panic, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:  # type: ignore[no-untyped-def]
    """makedumpfile -c -d N of the fixed ELF, for each N (one fix, six runs per test session)."""
    require_tool("makedumpfile")
    work = tmp_path_factory.mktemp("dump-level")
    elf = work / "fixed.elf"
    assert fix_dump(guest_panic.elf, output=elf).status == "fixed"
    outs = {}
    for level in LEVELS:
        out = work / f"makedumpfile-d{level}.kdump"
        res = makedumpfile_from_elf(elf, out, compress="zlib", dump_level=level)
        assert res.returncode == 0, res.output
        outs[level] = out
    return outs


def _describe(pfns: set[int], limit: int = 40) -> str:
    shown = ", ".join(f"{p:#x}" for p in sorted(pfns)[:limit])
    return f"{len(pfns)} pfns: {shown}{' …' if len(pfns) > limit else ''}"


@pytest.mark.parametrize("level", LEVELS)
def test_kdfix_excludes_the_pages_makedumpfile_excludes(  # type: ignore[no-untyped-def]
    tmp_path: Path, guest_panic, makedumpfile_outputs, level: int
) -> None:
    ours = tmp_path / "kdfix.kdump"
    result = convert([guest_panic.kdump_zlib], ours, flat=False, dump_level=level)
    m_valid, m_dumped, m_zero = stored(makedumpfile_outputs[level])
    _, k_dumped, k_zero = stored(ours)
    # RAM: the pfns makedumpfile sees as memory (it cuts max_mapnr after the last mem_map, so the VGA framebuffer
    # and BIOS ROM QEMU dumps are not among them)
    ram = m_valid
    kept_m, kept_k = m_dumped - m_zero, (k_dumped - k_zero) & ram  # pages stored with data
    differ = kept_m ^ kept_k
    assert len(ram - differ) >= AGREE * len(ram), (
        f"-d {level}: kept by makedumpfile only {_describe(kept_m - kept_k)}; "
        f"by kdfix only {_describe(kept_k - kept_m)}"
    )
    # and every RAM pfn makedumpfile leaves out (or shares as zero) is left out by kdfix too
    assert (ram - kept_m) <= (ram - kept_k), f"-d {level}: kdfix keeps {_describe(kept_k - kept_m)}"
    if level & ~1:
        beyond = k_dumped - ram
        assert not beyond, f"-d {level}: kdfix keeps pfns makedumpfile has no memory for: {_describe(beyond)}"
        assert result.excluded is not None and result.dump_level == level
        if level & 8:
            assert result.excluded["user"] >= 1024  # the shell's 4 MiB string
        if level & 6:
            assert result.excluded["cache"] + result.excluded["cache_private"] >= 1024  # the 4 MiB tmpfs file
    with kdfix.open_dump(ours) as dump:
        assert dump.model.dump_level == level  # QEMU's bit 1 dropped when not asked for


def test_filtered_output_opens_in_crash_drgn_and_makedumpfile(tmp_path: Path, guest_panic) -> None:  # type: ignore[no-untyped-def]
    require_tool("crash")
    require_tool("makedumpfile")
    require_tool("drgn")
    runner = CliRunner()
    out = tmp_path / "d31.kdump"
    res = runner.invoke(build_app(["convert"]), ["convert", str(guest_panic.kdump_zlib), "-o", str(out), "--no-flat",
                                                  "--dump-level", "31", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["dump_level"] == 31 and data["excluded"]["free"] > 0 and data["excluded"]["user"] > 0
    assert data["bytes"] < guest_panic.kdump_zlib.stat().st_size / 2
    expected = makedumpfile_dump_dmesg_of(guest_panic, tmp_path)
    assert "\n".join(iter_lines(dmesg(out).log)).splitlines() == expected  # VMCOREINFO from memory, still found
    fixed = tmp_path / "d31-fixed.kdump"
    shutil.copyfile(out, fixed)
    fixed.chmod(0o600)
    assert fix_dump(fixed, in_place=True).status == "fixed"  # VMCOREINFO note added for the other tools
    assert crash_osrelease(fixed).output.strip() == guest_panic.truth.osrelease
    assert drgn_release_by_vaddr(fixed) == guest_panic.truth.osrelease
    assert makedumpfile_dump_dmesg(fixed).splitlines() == expected
    elf_out = tmp_path / "d31.elf"
    convert([guest_panic.elf], elf_out, dump_level=31)  # ELF in, ELF out: the same pages as KDUMP out
    with kdfix.open_dump(elf_out) as e, kdfix.open_dump(out) as k:
        zero = {p for p in k.memory.dumped.iter_set() if k.kdump is not None and k.kdump.is_zero_page(p)}
        assert set(e.memory.dumped.iter_set()) == set(k.memory.dumped.iter_set()) - zero
    parts = convert([guest_panic.kdump_zlib], tmp_path / "d31.split", split=2, flat=True, dump_level=31).outputs
    with kdfix.open_dump(*parts) as sp, kdfix.open_dump(out) as k:  # a flattened split set: the same pages
        assert set(sp.memory.dumped.iter_set()) == set(k.memory.dumped.iter_set())
        assert sp.model.dump_level == 31


def makedumpfile_dump_dmesg_of(guest, tmp_path: Path) -> list[str]:  # type: ignore[no-untyped-def]
    plain = tmp_path / "plain.kdump"
    convert([guest.kdump_zlib], plain, flat=False)
    plain.chmod(0o600)
    assert fix_dump(plain, in_place=True).status in ("fixed", "ok")
    return makedumpfile_dump_dmesg(plain).splitlines()
