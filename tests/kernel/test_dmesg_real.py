"""``kdfix dmesg`` on every real guest the suite boots equals ``makedumpfile --dump-dmesg`` of the fixed dump
(text and timestamps) and holds the guest's marker, from the unfixed QEMU dumps too (VMCOREINFO from memory)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdfix.cli import build_app
from kdfix.fix import fix_dump
from kdfix.kernel.dmesg import dmesg
from kdfix.kernel.printk import iter_lines
from kdfix.kernel.triage import triage
from kdfix.write.convert import convert
from tests.oracle.fixtures import ARCH_GUEST_CONFIGS, GUEST_CONFIGS, require_tool
from tests.oracle.tools import makedumpfile_dump_dmesg


@pytest.fixture(params=[*sorted(GUEST_CONFIGS), "guest_qemu10", "guest_panic"])
def guest(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return request.getfixturevalue(request.param)


def test_dmesg_equals_makedumpfile_on_real_guests(tmp_path: Path, guest) -> None:  # type: ignore[no-untyped-def]
    require_tool("makedumpfile")
    plain = tmp_path / "plain.kdump"
    convert([guest.kdump_zlib], plain, flat=False)
    plain.chmod(0o600)
    assert fix_dump(plain, in_place=True).status in ("fixed", "ok")
    expected = makedumpfile_dump_dmesg(plain).splitlines()
    assert any(guest.truth.marker in line for line in expected)
    for path, source in ((plain, "file"), (guest.kdump_zlib, None), (guest.elf, None)):
        result = dmesg(path)
        if source is not None:
            assert result.vmcoreinfo_source == source
        elif not guest.config.vmcoreinfo:
            assert result.vmcoreinfo_source.startswith("memory"), path
        assert result.log.damage == (), (path, result.log.damage)
        lines = "\n".join(iter_lines(result.log)).splitlines()
        assert lines == expected, path


def test_dmesg_cli_json_and_filters(guest_seabios_kaslr) -> None:  # type: ignore[no-untyped-def]
    app = build_app(["dmesg"])
    runner = CliRunner()
    res = runner.invoke(app, ["dmesg", str(guest_seabios_kaslr.kdump_zlib), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    records = data["records"]
    assert data["layout"] == "printk_ringbuffer" and data["damage"] == []
    assert data["total_records"] == len(records) > 100
    marker = next(r for r in records if r["text"] == guest_seabios_kaslr.truth.marker)
    assert marker["caller"] == "T1" and marker["level_name"] == "warn"  # /dev/kmsg writes default to warning
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
    since = runner.invoke(app, ["dmesg", str(guest_seabios_kaslr.kdump_zlib), "--json", "--since",
                                str(marker["seq"])])  # fmt: skip
    assert next(r["seq"] for r in json.loads(since.stdout)["records"]) == marker["seq"]
    warn = runner.invoke(app, ["dmesg", str(guest_seabios_kaslr.elf), "--level", "warn"])
    assert warn.exit_code == 0 and guest_seabios_kaslr.truth.marker in warn.stdout
    assert all(
        r["level"] <= 4
        for r in json.loads(
            runner.invoke(app, ["dmesg", str(guest_seabios_kaslr.elf), "--level", "4", "--json"]).stdout
        )["records"]
    )
    bad = runner.invoke(app, ["dmesg", str(guest_seabios_kaslr.elf), "--level", "loud"])
    assert bad.exit_code == 2


@pytest.fixture(params=sorted(ARCH_GUEST_CONFIGS))
def arch_guest(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return request.getfixturevalue(request.param)


def test_dmesg_and_triage_on_aarch64_and_i386_guests(arch_guest) -> None:  # type: ignore[no-untyped-def]
    """From both raw QEMU dump files the log is whole (every seq from the first, no damage) and holds the marker
    (the line-by-line match with the arch's makedumpfile is in tests/oracle/test_fix_arch_real.py); triage
    symbolizes every CPU that runs kernel code."""
    for path in (arch_guest.kdump_zlib, arch_guest.elf):
        result = dmesg(path)
        assert result.log.damage == (), result.log.damage
        seqs = [r.seq for r in result.log.records]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert any(r.text.decode() == arch_guest.truth.marker for r in result.log.records)
    report = triage(arch_guest.elf)
    assert report.release == arch_guest.truth.osrelease
    # A CPU may have been in user mode (init on the other vCPU): its IP is a user address, below the kernel's
    # split (PAGE_OFFSET 0xC0000000 on i386, the upper half on arm64) and is not symbolized.
    kernel_start = 0xC0000000 if arch_guest.config.arch == "i386" else 1 << 63
    assert report.cpus and any(not c.user_mode for c in report.cpus), report.cpus
    for c in report.cpus:
        assert (c.ip < kernel_start) == bool(c.user_mode), c
        assert bool(c.ip_function) != bool(c.user_mode), c
