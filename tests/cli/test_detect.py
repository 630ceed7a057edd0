"""``kdfix detect``: JSON shape, exit 0 found / 1 undetermined / 2 unusable input, System.map symbols."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kdfix.cli import app
from kdfix.generate.synthetic import build_linux_image
from kdfix.model import DumpModel
from kdfix.read.memory import DictMemory
from kdfix.write import write_kdump

MiB = 1 << 20
runner = CliRunner()


def _write(tmp_path, name="d.kdump", **kwargs):
    model, memory, truth = build_linux_image(memory_size=kwargs.pop("memory_size", 64 * MiB), **kwargs)
    path = tmp_path / name
    write_kdump(path, model, memory, codec=kwargs.pop("codec", "zlib"), phys_base_from_vmcoreinfo=False)
    return path, truth


@pytest.mark.parametrize("vmcoreinfo", [True, False])
def test_detect_json_recovers_values(tmp_path, vmcoreinfo):
    path, truth = _write(tmp_path, phys_base=-24 * MiB, kaslr_offset=30 * MiB, vmcoreinfo_in_notes=vmcoreinfo)
    result = runner.invoke(app, ["detect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["phys_base"] == truth.phys_base and data["phys_base_signed"] == -24 * MiB
    assert data["kernel_offset"] == 30 * MiB
    assert data["method"] == ("vmcoreinfo_note" if vmcoreinfo else "cr3_walk")
    assert data["confidence"] == "high"
    assert isinstance(data["evidence"], list) and data["evidence"]
    assert data["vmcoreinfo"] == truth.vmcoreinfo.decode()


def test_detect_human_output(tmp_path):
    path, truth = _write(tmp_path, vmcoreinfo_in_notes=False, phys_base=-16 * MiB, kaslr_offset=20 * MiB)
    result = runner.invoke(app, ["detect", str(path)])
    assert result.exit_code == 0
    assert f"phys_base: {truth.phys_base:#x} (-16777216)" in result.stdout
    assert "confidence: high" in result.stdout


def test_detect_with_system_map(tmp_path):
    path, truth = _write(tmp_path, vmcoreinfo_in_notes=False, phys_base=-2 * MiB, kaslr_offset=10 * MiB)
    system_map = tmp_path / "System.map"
    system_map.write_text("".join(f"{va:016x} T {name}\n" for name, va in truth.vmlinux_symbols.items()) + "junk\n")
    result = runner.invoke(app, ["detect", str(path), "--system-map", str(system_map), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert {"idt_gate", "banner"} <= {c["method"] for c in data["candidates"]}
    empty = tmp_path / "empty.map"
    empty.write_text("nothing here\n")
    result = runner.invoke(app, ["detect", str(path), "--system-map", str(empty)])
    assert result.exit_code == 2 and "no symbols" in result.stderr


def test_undetermined_exits_1(tmp_path):
    path = tmp_path / "blank.kdump"
    memory = DictMemory({i: bytes([i + 1]) * 4096 for i in range(16)}, max_pfn=64)
    write_kdump(path, DumpModel(max_mapnr=64), memory)
    result = runner.invoke(app, ["detect", str(path), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["phys_base"] is None and data["confidence"] == "none" and data["vmcoreinfo"] is None
    result = runner.invoke(app, ["detect", str(path)])
    assert result.exit_code == 1 and "undetermined" in result.stdout


def test_unusable_input_exits_2_with_one_line(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a dump" * 100)
    result = runner.invoke(app, ["detect", str(junk)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kdfix: ")
    result = runner.invoke(app, ["detect", str(tmp_path / "missing")])
    assert result.exit_code == 2
