"""``kdfix generate --style linux --arch aarch64|i386``: the facts of arch-kernels-and-introspection.md §1-§2 hold
in the written file (expected values come from that note's measured tables, not from the generator), and kdfix's
own readers (kdfix.arch walks, detect) find the kernel the options describe. The drgn and crash checks are in
tests/oracle/test_generate_arch.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdfix.arch import kernel_reader
from kdfix.cli import app
from kdfix.read.probe import open_dump
from kdfix.units import cstr

MiB = 1 << 20
runner = CliRunner()
# measured on Debian 6.1 guests (arch-kernels-and-introspection.md §1.1, §1.3, §1.6, §2.1, §2.2)
A64_DRAM = 0x40000000
A64_IMAGE_PA = 0x40200000  # QEMU virt -kernel: DRAM + 2 MiB
A64_KIMAGE_VADDR = 0xFFFF800008000000  # the nokaslr _text
A64_KASLR_PHYS_OFFSET = 0xFFFFD74780000000  # a KASLR guest's PHYS_OFFSET, wrapped below 0
I386_PAGE_OFFSET, I386_LINK_STEXT = 0xC0000000, 0xC1000000
PRSTATUS_SIZE = {"aarch64": 392, "i386": 144}
A64_PRFPREG_SIZE = 528


def generate(out: Path, *args: str) -> dict:
    result = runner.invoke(app, ["generate", "--style", "linux", "-o", str(out), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _lines(text: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.decode().splitlines() if "=" in line)


@pytest.mark.parametrize(("kaslr", "phys_offset"), [(0, None), (0x5178AEC00000, A64_KASLR_PHYS_OFFSET)])
def test_aarch64_image(tmp_path: Path, kaslr: int, phys_offset: int | None) -> None:
    out = tmp_path / "a64.kdump"
    args = ["--arch", "aarch64", "--memory", "96M", "--cpus", "2", "--kaslr-offset", hex(kaslr)]
    info = generate(out, *args, *(["--phys-base", hex(phys_offset)] if phys_offset else []))
    expected_offset = A64_DRAM if phys_offset is None else phys_offset
    text_va = A64_KIMAGE_VADDR + kaslr
    assert info["arch"] == "aarch64" and info["text_paddr"] == A64_IMAGE_PA and info["text_vaddr"] == text_va
    with open_dump(out) as dump:
        m = dump.model
        assert (m.block_size, m.phys_base) == (4096, expected_offset)  # the page size; PHYS_OFFSET (§1.6)
        assert cstr(m.utsname.machine) == "aarch64" and cstr(m.utsname.release) == info["release"]
        assert list(dump.memory.dumped.iter_runs()) == [(A64_DRAM // 4096, (A64_DRAM + 96 * MiB) // 4096)]
        core = [(n.type, len(n.desc)) for n in m.notes if n.name == b"CORE"]
        assert core == [(1, PRSTATUS_SIZE["aarch64"]), (2, A64_PRFPREG_SIZE)] * 2
        vmci = _lines(m.vmcoreinfo or b"")
        assert int(vmci["NUMBER(PHYS_OFFSET)"], 16) == expected_offset
        assert int(vmci["NUMBER(kimage_voffset)"], 16) == (text_va - A64_IMAGE_PA) % (1 << 64)
        assert int(vmci["KERNELOFFSET"], 16) == kaslr and vmci["NUMBER(VA_BITS)"] == "48"
        assert int(vmci["SYMBOL(_stext)"], 16) == text_va + 0x10000  # _text = _stext - 0x10000 on 6.1
        k = kernel_reader(m, dump.memory)
        assert k.read(info["init_uts_ns"], 6) == b"Linux\0"
        linear = 0xFFFF000000000000 + (A64_IMAGE_PA - expected_offset) % (1 << 64)  # flipped layout (§1.2)
        assert k.read(linear + 0x10000, 64) == k.read(text_va + 0x10000, 64) != bytes(64)
    detected = json.loads(runner.invoke(app, ["detect", str(out), "--json"]).stdout)
    assert detected["phys_base"] == expected_offset and detected["kernel_offset"] == kaslr


@pytest.mark.parametrize("kaslr", [0, 0xB000000])
def test_i386_image(tmp_path: Path, kaslr: int) -> None:
    out = tmp_path / "i386.kdump"
    info = generate(out, "--arch", "i386", "--memory", "256M", "--cpus", "2", "--kaslr-offset", hex(kaslr))
    assert info["text_vaddr"] == I386_LINK_STEXT + kaslr == I386_PAGE_OFFSET + info["text_paddr"]  # PA and VA move
    with open_dump(out) as dump:
        m = dump.model
        assert (m.block_size, m.phys_base, m.abi.word_size) == (4096, 0, 4)  # the 32-bit header (§2.6)
        assert cstr(m.utsname.machine) == "i686"
        assert [(n.type, len(n.desc)) for n in m.notes if n.name == b"CORE"] == [(1, PRSTATUS_SIZE["i386"])] * 2
        text = (m.vmcoreinfo or b"").decode()
        assert text.endswith("CONFIG_X86_PAE=y\n") and "phys_base" not in text and "KERNELOFFSET" not in text
        assert _lines(text.encode())["SYMBOL(_stext)"] == f"{I386_LINK_STEXT + kaslr:x}"
        k = kernel_reader(m, dump.memory)
        assert k.read(info["init_uts_ns"], 6) == b"Linux\0"
        assert k.vtop(I386_PAGE_OFFSET + 0x1234567) == 0x1234567  # lowmem through the PAE tables
    detected = json.loads(runner.invoke(app, ["detect", str(out), "--json"]).stdout)
    assert detected["phys_base"] == 0 and detected["kernel_offset"] == kaslr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch", "i386", "--phys-base", "0x200000"], "i386 has no phys_base"),
        (["--arch", "i386", "--memory", "1G"], "lowmem"),
        (["--arch", "aarch64", "--phys-base", "0x40200000"], "multiple of 1 GiB"),
        (["--arch", "aarch64", "--kaslr-offset", "0x1000"], "multiple of 2 MiB"),
        (["--arch", "sparc"], "unknown architecture"),
    ],
)
def test_bad_arch_options_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "bad.kdump"
    result = runner.invoke(app, ["generate", "-o", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()
