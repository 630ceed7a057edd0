"""Checks of the real-guest oracle itself: the ground truth is consistent with the dumped memory.

Reference: qemu-dumps.md §5-§7, phys-base-and-kaslr.md §1, tools-and-oracles.md §1-§4.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import stat
import tomllib
from pathlib import Path

import pytest

from tests.oracle.fixtures import FIXTURES_DIR, repo_fixture, require_tool
from tests.oracle.guest import START_KERNEL_MAP, GroundTruth, GuestDumps, KernelArtifacts
from tests.oracle.tools import (
    ToolError,
    crash_debug_dump,
    crash_osrelease,
    crash_with_vmlinux,
    drgn_read_phys,
    elf_find,
    elf_loads,
    elf_phdrs_after_ehdr,
    elf_read_phys,
    makedumpfile_codecs,
    makedumpfile_dump_dmesg,
    makedumpfile_from_elf,
    makedumpfile_reassemble,
    parse_crash_fields,
)

pytestmark = pytest.mark.oracle

MIB2 = 2 << 20
GUESTS = [
    "guest_seabios_kaslr",
    "guest_seabios_kaslr_vmcoreinfo",
    "guest_ovmf_nokaslr",
    "guest_ovmf_nokaslr_vmcoreinfo",
]


def _signed(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def _vmcoreinfo_from_memory(d: GuestDumps) -> dict[str, str]:
    """The kernel's VMCOREINFO note, read from ELF memory at the address the guest printed."""
    t = d.truth
    raw = elf_read_phys(d.elf, t.vmcoreinfo_paddr, t.vmcoreinfo_size)
    namesz, descsz, ntype = (int.from_bytes(raw[i : i + 4], "little") for i in (0, 4, 8))
    assert (namesz, ntype) == (11, 0) and raw[12:23] == b"VMCOREINFO\0"
    desc = raw[24 : 24 + descsz].decode()
    return dict(line.split("=", 1) for line in desc.splitlines() if "=" in line)


@pytest.mark.parametrize("name", GUESTS)
def test_ground_truth_is_consistent(name: str, request: pytest.FixtureRequest, kernel: KernelArtifacts) -> None:
    d: GuestDumps = request.getfixturevalue(name)
    t = d.truth
    assert t.osrelease == kernel.release == d.kernel_release
    assert t.osrelease in t.uname
    assert t.marker.startswith("KDFIX-MARKER-")
    assert t.text_va == t.stext_va  # x86_64: _text == _stext
    assert t.kernel_code_start % MIB2 == 0
    assert t.phys_base % MIB2 == 0
    assert (t.kernel_code_start - (t.text_va - START_KERNEL_MAP)) & ((1 << 64) - 1) == t.phys_base
    assert t.pa_of_kernel_va(t.text_va) == t.kernel_code_start
    assert t.fw_cfg == ("loaded" if d.config.vmcoreinfo else "absent")
    assert ("nokaslr" in t.cmdline) == (not d.config.kaslr)
    # re-parsing the serial log gives the same truth (the cache stores it as JSON)
    assert GroundTruth.parse(d.serial_log.read_text(), link_stext=kernel.link_stext()) == t


@pytest.mark.parametrize("name", GUESTS)
def test_dump_files(name: str, request: pytest.FixtureRequest) -> None:
    d: GuestDumps = request.getfixturevalue(name)
    for p in (d.elf, d.kdump_zlib):
        assert stat.S_IMODE(p.stat().st_mode) == 0o400, f"{p}: QEMU writes 0400"
    assert d.elf.stat().st_size > d.config.memory_mib << 20  # all of RAM, raw
    assert d.kdump_zlib.stat().st_size > 1 << 20
    with open(d.elf, "rb") as fh:
        assert fh.read(4) == b"\x7fELF"
    with open(d.kdump_zlib, "rb") as fh:
        assert fh.read(16) == b"makedumpfile\0\0\0\0"  # always flattened (qemu-dumps.md §1)
    loads = elf_loads(d.elf)
    assert min(s.paddr for s in loads) == 0
    assert any(s.paddr <= d.truth.kernel_code_start < s.paddr + s.filesz for s in loads)
    if d.config.firmware == "seabios":  # the BIOS ROM ends at 4 GiB; OVMF's pflash is not RAM and is not dumped
        assert max(s.paddr + s.filesz for s in loads) == 1 << 32


@pytest.mark.parametrize("name", GUESTS)
def test_banner_and_utsname_at_ground_truth_addresses(name: str, request: pytest.FixtureRequest) -> None:
    d: GuestDumps = request.getfixturevalue(name)
    t = d.truth
    banner = elf_read_phys(d.elf, t.pa_of_kernel_va(t.linux_banner_va), 256)
    assert banner.startswith(f"Linux version {t.osrelease} ".encode())
    uts = elf_read_phys(d.elf, t.pa_of_kernel_va(t.init_uts_ns_va), 65 * 5)
    assert uts[:6] == b"Linux\0"
    assert uts[130:].split(b"\0", 1)[0].decode() == t.osrelease


def test_seabios_kaslr_offsets(guest_seabios_kaslr: GuestDumps) -> None:
    t = guest_seabios_kaslr.truth
    assert t.kernel_offset not in (None, 0)
    assert t.kernel_offset % MIB2 == 0
    assert t.phys_base != 0


def test_ovmf_nokaslr_offsets(guest_ovmf_nokaslr: GuestDumps) -> None:
    t = guest_ovmf_nokaslr.truth
    assert t.kernel_offset == 0
    assert t.phys_base != 0  # OVMF loads the kernel away from its link address (reference: 0x600000)
    assert _signed(t.phys_base) > 0


@pytest.mark.parametrize("name", ["guest_seabios_kaslr_vmcoreinfo", "guest_ovmf_nokaslr_vmcoreinfo"])
def test_vmcoreinfo_in_memory_matches_truth(name: str, request: pytest.FixtureRequest) -> None:
    d: GuestDumps = request.getfixturevalue(name)
    t = d.truth
    info = _vmcoreinfo_from_memory(d)
    assert info["OSRELEASE"] == t.osrelease
    assert int(info["NUMBER(phys_base)"]) == _signed(t.phys_base)
    assert int(info["KERNELOFFSET"], 16) == t.kernel_offset  # checks KernelArtifacts.link_stext's inference
    assert int(info["SYMBOL(_stext)"], 16) == t.stext_va
    assert int(info["SYMBOL(init_uts_ns)"], 16) == t.init_uts_ns_va


@pytest.mark.parametrize("name", GUESTS)
def test_marker_in_elf_memory(name: str, request: pytest.FixtureRequest) -> None:
    d: GuestDumps = request.getfixturevalue(name)
    assert elf_find(d.elf, d.truth.marker.encode(), limit=1)
    assert not elf_find(d.elf, b"KDFIX-MARKER-0000000000000000", limit=1)


def test_crash_and_makedumpfile_see_qemu_phys_base_bug(
    guest_seabios_kaslr_vmcoreinfo: GuestDumps, tmp_path: Path
) -> None:
    """The oracles discriminate: QEMU's hex misparse of phys_base (qemu-dumps.md §6) breaks --dump-dmesg."""
    require_tool("crash")
    require_tool("makedumpfile")
    d = guest_seabios_kaslr_vmcoreinfo
    raw = tmp_path / "raw.kdump"
    rc, out = makedumpfile_reassemble(d.kdump_zlib, raw)
    assert rc == 0, out
    rc, out = crash_osrelease(raw)
    assert (rc, out.strip()) == (0, d.truth.osrelease)
    rc, out = crash_debug_dump(raw)
    fields = parse_crash_fields(out)
    signed = _signed(d.truth.phys_base)
    misparsed = (-1 if signed < 0 else 1) * int(str(abs(signed)), 16) & ((1 << 64) - 1)  # decimal text read as hex
    assert int(fields["phys_base"], 16) == misparsed != d.truth.phys_base
    with pytest.raises(ToolError, match=r"system_utsname|virtual address"):
        makedumpfile_dump_dmesg(raw)


def test_drgn_reads_kdump_like_elf(guest_seabios_kaslr_vmcoreinfo: GuestDumps) -> None:
    require_tool("drgn")
    d = guest_seabios_kaslr_vmcoreinfo
    pa = d.truth.pa_of_kernel_va(d.truth.linux_banner_va) & ~0xFFF
    assert drgn_read_phys(d.kdump_zlib, pa, 8192) == elf_read_phys(d.elf, pa, 8192)


def test_makedumpfile_codecs_from_firmware_elf(firmware_elf: Path, tmp_path: Path) -> None:
    """makedumpfile really uses each codec it claims (1.7.2 silently ignores -p/-z when compiled out)."""
    require_tool("makedumpfile")
    require_tool("crash")
    codecs = makedumpfile_codecs()
    assert "zlib" in codecs
    elf = elf_phdrs_after_ehdr(firmware_elf, tmp_path / "in.elf")
    status = {"zlib": "DUMP_DH_COMPRESSED_ZLIB", "lzo": "DUMP_DH_COMPRESSED_LZO", "snappy": "SNAPPY", "zstd": "ZSTD"}
    for codec in sorted(codecs):
        out = tmp_path / f"out-{codec}"
        rc, text = makedumpfile_from_elf(elf, out, compress=codec)
        assert rc == 0, text
        fields = parse_crash_fields(crash_debug_dump(out).output)
        assert status[codec] in fields["status"]


def test_committed_fixtures_match_manifest() -> None:
    manifest = tomllib.loads(repo_fixture("MANIFEST.toml").read_text())
    files = manifest["file"]
    assert {f["name"] for f in files} == {p.name for p in FIXTURES_DIR.iterdir() if p.name != "MANIFEST.toml"}
    for f in files:
        data = (FIXTURES_DIR / f["name"]).read_bytes()
        assert len(data) == f["size"] <= 1 << 20
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        if f["name"].endswith(".gz"):
            data = gzip.decompress(data)
        if f["name"].endswith(".bin"):
            assert data[12:24] == b"VMCOREINFO\0\0"
        else:
            assert data.startswith(b"makedumpfile\0") or data.startswith(b"\x7fELF")


def test_firmware_fixture_is_what_qemu_writes_now(firmware_dumps: object) -> None:
    """The committed kdump fixture is reproducible: a fresh QEMU dump of the same setup has the same bytes."""
    fresh = firmware_dumps.kdump_zlib.read_bytes()  # type: ignore[attr-defined]
    version = firmware_dumps.qemu_version  # type: ignore[attr-defined]
    committed = repo_fixture("firmware-16m.kdump-zlib").read_bytes()
    rows = {f["name"]: f for f in tomllib.loads(repo_fixture("MANIFEST.toml").read_text())["file"]}
    if version != rows["firmware-16m.kdump-zlib"]["version"]:
        pytest.skip(f"fixtures were written by another QEMU version than {version}")
    assert fresh == committed


def test_crash_with_vmlinux_reads_marker_from_kdump(
    guest_seabios_kaslr: GuestDumps, debug_vmlinux: Path, tmp_path: Path
) -> None:
    """crash + debug vmlinux on QEMU's kdump (header phys_base 0, KASLR guest): its kernel log holds the marker."""
    require_tool("crash")
    require_tool("makedumpfile")
    d = guest_seabios_kaslr
    raw = tmp_path / "raw.kdump"
    assert makedumpfile_reassemble(d.kdump_zlib, raw).returncode == 0
    rc, out = crash_with_vmlinux(debug_vmlinux, raw, ["sys", "log"])
    assert rc == 0, out[-3000:]
    assert "do not match" not in out
    assert re.search(rf"RELEASE: {re.escape(d.truth.osrelease)}\b", out)
    assert d.truth.marker in out


def test_vmcoreinfo_note_fixture_is_referenced_by_header(tmp_path: Path) -> None:
    """QEMU put the registered note into the notes and pointed offset_vmcoreinfo at it; phys_base stays 0 (EM_386)."""
    require_tool("crash")
    require_tool("makedumpfile")
    note = repo_fixture("vmcoreinfo-note-linux-6.1.bin").read_bytes()
    release = note[24:].split(b"\n", 1)[0].removeprefix(b"OSRELEASE=").decode()
    raw = tmp_path / "raw.kdump"
    assert makedumpfile_reassemble(repo_fixture("firmware-16m-vmcoreinfo-note.kdump-zlib"), raw).returncode == 0
    rc, out = crash_osrelease(raw)
    assert (rc, out.strip()) == (0, release)
    fields = parse_crash_fields(crash_debug_dump(raw).output)
    assert int(fields["phys_base"], 16) == 0
    assert int(fields["size_vmcoreinfo"].split()[0]) == int.from_bytes(note[4:8], "little")
    rc, out = crash_osrelease(repo_fixture("firmware-16m.kdump-zlib"))
    assert (rc, out.strip()) == (1, "unknown")
