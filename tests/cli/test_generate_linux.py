"""``kdfix generate --style linux``: files readable by kdfix, QEMU-looking unless --mark, and accepted by the oracles.

Oracle tests (drgn, crash) skip when the tool is missing, except with CI=true (tests/oracle/fixtures.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kdfix.cli import app
from kdfix.cli.generate import parse_signed_u64, parse_size
from kdfix.codecs import CODECS
from kdfix.read.origin import identify_origin
from kdfix.read.probe import open_dump
from kdfix.units import cstr
from tests.detect.conftest import layouts
from tests.oracle.fixtures import require_tool
from tests.oracle.tools import ToolError, crash_osrelease, drgn_program, makedumpfile_dump_dmesg

MiB = 1 << 20
runner = CliRunner()
AVAILABLE_CODECS = [c.name for c in CODECS if c.available()]


def generate(out: Path, *args: str) -> dict:
    result = runner.invoke(app, ["generate", "--style", "linux", "-o", str(out), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_parse_helpers():
    assert parse_size("96M") == 96 * MiB and parse_size("1G") == 1 << 30 and parse_size("65536") == 65536
    assert parse_size("128MiB") == 128 * MiB
    with pytest.raises(ValueError):
        parse_size("lots")
    assert parse_signed_u64("-0x32200000") == -0x32200000
    assert parse_signed_u64("0xffffffffcde00000") == -0x32200000
    assert parse_signed_u64("-840957952") == -840957952
    with pytest.raises(ValueError):
        parse_signed_u64(str(1 << 64))


def test_generate_writes_a_qemu_looking_dump(tmp_path):
    out = tmp_path / "g.kdump"
    info = generate(out, "--memory", "64M", "--cpus", "2", "--phys-base", "-0x2000000", "--kaslr-offset", "0x2400000")
    assert info["phys_base"] == (1 << 64) - 0x2000000 and info["kernel_offset"] == 0x2400000
    assert info["firmware"] is True and info["max_mapnr"] == 0x100000
    with open_dump(out) as dump:
        assert dump.model.nr_cpus == 2 and dump.model.max_mapnr == 0x100000  # RAM + BIOS ROM below 4 GiB, as QEMU
        runs = list(dump.kdump.valid.iter_runs())
        assert runs == [(0, 64 * MiB // 4096), (0xFFFC0, 0x100000)] and dump.kdump.valid == dump.kdump.dumped
        assert dump.memory.read(0xFFFFFFF0, 5) == b"\xea\x5b\xe0\x00\xf0"
        assert dump.vmcoreinfo is not None and dump.vmcoreinfo.phys_base == info["phys_base"]
        assert dump.model.phys_base == info["phys_base"]  # header holds the true value
        assert cstr(dump.model.utsname.release) == "6.1.0-kdfix-synthetic"
        origin, evidence = identify_origin(dump)  # QEMU's headers and notes, kdfix's synthetic guest
        assert origin == "qemu-style (generated?)"
        assert any("nodename" in e for e in evidence) and any("BIOS" in e for e in evidence)
        uts = dump.memory.read(info["text_paddr"] + (info["init_uts_ns"] - info["text_vaddr"]), 5)
        assert uts == b"Linux"
    assert not list(tmp_path.glob("*.kdfix-tmp"))  # atomic output leaves no temp file


def test_no_firmware_is_ram_only(tmp_path):
    """--no-firmware: max_mapnr = RAM pages. QEMU notes + a kernel utsname over RAM only is what makedumpfile
    writes from a QEMU guest's ELF, so info says makedumpfile; without VMCOREINFO (utsname zero) it stays qemu,
    unless the pseudo-BIOS gives it away."""
    out = tmp_path / "ram.kdump"
    info = generate(out, "--memory", "64M", "--no-firmware")
    assert info["firmware"] is False and info["max_mapnr"] == 64 * MiB // 4096
    with open_dump(out) as dump:
        assert dump.model.max_mapnr == 64 * MiB // 4096 and dump.memory.dumped.count() == 64 * MiB // 4096
        assert identify_origin(dump)[0] == "makedumpfile"
    generate(out, "--memory", "64M", "--no-firmware", "--no-vmcoreinfo")
    with open_dump(out) as dump:
        assert identify_origin(dump)[0] == "qemu"  # nothing in the headers or notes tells it from QEMU's
    generate(out, "--memory", "64M", "--no-vmcoreinfo")
    with open_dump(out) as dump:
        assert identify_origin(dump)[0] == "qemu-style (generated?)"  # the pseudo-BIOS tells


def test_mark_no_vmcoreinfo_flat_and_codec(tmp_path):
    out = tmp_path / "m.flat"
    info = generate(
        out, "--memory", "64M", "--mark", "--no-vmcoreinfo", "--flat", "--compress", "none", "--seed", "3",
        "--phys-base", "18446744073692774400",  # u64 form of -16 MiB
    )  # fmt: skip
    assert info["phys_base_signed"] == -16 * MiB and info["header_phys_base"] == 0
    with open_dump(out) as dump:
        assert dump.container == "flattened" and dump.compression == "none"
        assert dump.vmcoreinfo is None and dump.model.phys_base == 0
        assert identify_origin(dump)[0] == "kdfix"
    result = runner.invoke(app, ["detect", str(out), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["phys_base"] == info["phys_base"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--style", "windows"], "unknown style"),
        (["--compress", "gzip"], "unknown codec"),
        (["--phys-base", "0x100000"], "multiple of 2 MiB"),
        (["--phys-base", "0x40000000", "--memory", "64M"], "does not fit"),
        (["--memory", "lots"], "bad size"),
        (["--kaslr-offset", "nope"], "bad number"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path, args, message):
    out = tmp_path / "bad.kdump"
    result = runner.invoke(app, ["generate", "-o", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()


# ---- oracles ------------------------------------------------------------------------------------------------------


def _drgn_reads_utsname(path: Path, info: dict) -> None:
    """drgn with no hints: VMCOREINFO from the note, arch from the utsname, init_uts_ns read by VIRTUAL address."""
    prog = drgn_program(path)
    raw = prog.read(info["init_uts_ns"], 390)
    assert raw[:6] == b"Linux\0"
    assert cstr(raw[130:195]) == info["release"]
    banner = prog.read(info["linux_banner"], 14)
    assert banner == b"Linux version "
    direct = prog.read(0xFFFF888000000000 + info["text_paddr"], 64)  # direct map, same bytes as _text
    assert direct == prog.read(info["text_vaddr"], 64)


@pytest.mark.oracle
def test_oracle_drgn_reads_by_virtual_address(tmp_path):
    require_tool("drgn")
    out = tmp_path / "drgn.kdump"
    info = generate(out, "--memory", "128M", "--cpus", "2", "--phys-base", "-840957952", "--kaslr-offset", "0x35600000")
    _drgn_reads_utsname(out, info)


@pytest.mark.oracle
@pytest.mark.parametrize("flat", [False, True])
def test_oracle_crash_osrelease(tmp_path, flat):
    require_tool("crash")
    out = tmp_path / "crash.kdump"
    generate(out, "--memory", "64M", "--release", "6.1.0-kdfix-oracle", *(["--flat"] if flat else []))
    result = crash_osrelease(out)
    assert result.returncode == 0, result.output
    assert "6.1.0-kdfix-oracle" in result.output


@pytest.mark.oracle
@pytest.mark.parametrize(
    "args",
    [
        ("--memory", "64M"),
        ("--memory", "300M", "--cpus", "2", "--phys-base", "-0x32200000", "--kaslr-offset", "0x35600000"),
        ("--memory", "200M", "--no-firmware", "--kaslr-offset", "0x2000000", "--compress", "none"),
    ],
)
def test_oracle_makedumpfile_dump_dmesg(tmp_path, args):
    """makedumpfile finds the memory model (SPARSEMEM_EXTREME mem_section, vmemmap struct pages) and walks the
    printk ring (arch-kernels-and-introspection.md §4, §6.2); its lines are kdfix dmesg's; crash and drgn still
    accept the dump."""
    require_tool("makedumpfile")
    out = tmp_path / "g.kdump"
    info = generate(out, "--release", "6.1.0-kdfix-oracle", *args)
    log = makedumpfile_dump_dmesg(out)
    assert "] Linux version 6.1.0-kdfix-oracle (kdfix@synthetic)" in log
    assert "] kdfix: synthetic kernel 6.1.0-kdfix-oracle, log written by kdfix generate" in log
    ours = runner.invoke(app, ["dmesg", str(out)])
    assert ours.exit_code == 0 and ours.stdout.splitlines() == log.splitlines()
    require_tool("crash")
    assert "6.1.0-kdfix-oracle" in crash_osrelease(out).output
    require_tool("drgn")
    _drgn_reads_utsname(out, info)


@pytest.mark.oracle
def test_oracle_makedumpfile_dump_dmesg_after_fix_of_no_vmcoreinfo(tmp_path):
    """Without the note makedumpfile has no VMCOREINFO; kdfix fix recovers the kernel's from memory (with the
    printk and mem_section keys), and makedumpfile then prints the log."""
    require_tool("makedumpfile")
    out = tmp_path / "novi.kdump"
    generate(out, "--memory", "128M", "--no-vmcoreinfo", "--kaslr-offset", "0x4000000", "--release", "6.1.0-kdfix-nv")
    with pytest.raises(ToolError):
        makedumpfile_dump_dmesg(out)
    fixed = tmp_path / "fixed.kdump"
    result = runner.invoke(app, ["fix", str(out), "-o", str(fixed)])
    assert result.exit_code == 0, result.output
    assert "] kdfix: synthetic kernel 6.1.0-kdfix-nv, log written by kdfix generate" in makedumpfile_dump_dmesg(fixed)


@pytest.mark.oracle
def test_oracle_no_vmcoreinfo_detect_exact_and_drgn_refuses(tmp_path):
    """Without the note drgn cannot open the dump (as with QEMU without the device), and kdfix detect recovers
    the exact phys_base the kernel had."""
    require_tool("drgn")
    out = tmp_path / "novi.kdump"
    info = generate(
        out, "--memory", "128M", "--cpus", "2", "--phys-base", "-0x32200000", "--kaslr-offset", "0x35600000",
        "--no-vmcoreinfo",
    )  # fmt: skip
    with pytest.raises(Exception, match="vmcoreinfo"):
        drgn_program(out)
    result = runner.invoke(app, ["detect", str(out), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["phys_base"] == info["phys_base"] == 0xFFFFFFFFCDE00000
    assert data["kernel_offset"] == 0x35600000 and data["confidence"] == "high"


@pytest.mark.oracle
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=layouts(max_mib=160), codec=st.sampled_from(AVAILABLE_CODECS), flat=st.booleans())
def test_oracle_every_drawn_dump_satisfies_drgn(tmp_path_factory, layout, codec, flat):
    require_tool("drgn")
    out = tmp_path_factory.mktemp("drawn") / "d.kdump"
    info = generate(
        out,
        "--memory", str(layout["memory_size"]),
        "--cpus", str(layout["cpus"]),
        "--phys-base", str(layout["phys_base"]),
        "--kaslr-offset", hex(layout["kaslr_offset"]),
        "--seed", str(layout["seed"]),
        "--compress", codec,
        *(["--flat"] if flat else []),
    )  # fmt: skip
    _drgn_reads_utsname(out, info)
    result = runner.invoke(app, ["detect", str(out), "--json"])
    assert json.loads(result.stdout)["phys_base"] == info["phys_base"]
    out.unlink()
