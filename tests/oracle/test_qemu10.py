"""kdfix against a second real QEMU: 10.0.x from Debian bookworm-backports (tests/oracle/qemu_versions.py).

One Linux guest (SeaBIOS, KASLR, ``-device vmcoreinfo``, TCG) is booted under QEMU 10.0 and dumped as elf,
kdump-zlib and kdump-raw-zlib from the same stopped guest; a 16 MiB firmware-only guest is dumped the same way.
Checks (qemu-dumps.md §1, §2, §6): ``kdfix generate --style qemu --qemu-version 10.0`` is byte-identical to both
kdump files; makedumpfile -R of the flattened file equals the raw file; kdfix reads every page as the ELF has it and
names the origin qemu; the raw file still carries the hex misparse of phys_base and ``kdfix fix`` repairs it for
makedumpfile, crash and drgn. Skipped when QEMU 10.0 cannot be obtained, unless CI=true.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kdfix
from kdfix.cli import app
from kdfix.format.kdump import DISK_DUMP_HEADER
from kdfix.format.layout import LP64_LE
from kdfix.generate.qemu import qemu_phys_base
from tests.generate import qemu_helpers as h
from tests.oracle import qemu_versions
from tests.oracle.fixtures import require_tool  # fixtures qemu10, guest_qemu10, ... come from tests/conftest.py
from tests.oracle.guest import FirmwareDumps, GuestDumps
from tests.oracle.tools import (
    crash_osrelease,
    drgn_release_by_vaddr,
    makedumpfile_dump_dmesg,
    makedumpfile_reassemble,
)

FLAT_HEADER_SIZE, FLAT_RECORD_HEADER = 4096, 16  # qemu-dumps.md §2: the main header is the first record's payload
MACHINE_AT = DISK_DUMP_HEADER.bind(LP64_LE, 6).offset_of("utsname.machine")
runner = CliRunner()


def _generate(src: Path, out: Path, *args: str) -> None:
    res = runner.invoke(app, ["generate", "--style", "qemu", "--from", str(src), "-o", str(out), *args])
    assert res.exit_code == 0, res.output


def _first_diff(a: bytes, b: bytes) -> int:
    return next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    dst.chmod(0o600)
    return dst


def _origin(path: Path) -> str:
    res = runner.invoke(app, ["info", str(path), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["origin"]  # a plain string since e7e2859


# ------------------------------------------------------------------------------------------------ the build itself


@pytest.mark.oracle
def test_qemu10_build(qemu10: qemu_versions.QemuInstall) -> None:
    """The unpacked build is 10.0.x, offers kdump-raw-zlib and is not the system binary."""
    assert qemu10.version.startswith("10.0.")
    assert qemu10.binary != qemu_versions.qemu_binary("7.2")
    assert all(d.is_dir() for d in qemu10.data_dirs)
    assert (qemu10.data_dirs[0] / "bios-256k.bin").is_file()  # backports SeaBIOS, searched first
    assert qemu_versions.qemu_install("10.0") is qemu10  # cached
    script = '{"execute":"qmp_capabilities"}\n{"execute":"query-dump-guest-memory-capability"}\n{"execute":"quit"}\n'
    argv = [*qemu10.argv_prefix, "-machine", "q35", "-accel", "tcg", "-S", "-nodefaults", "-display", "none"]
    proc = subprocess.run(
        [*argv, "-qmp", "stdio"], input=script, capture_output=True, text=True, timeout=60, env=qemu10.environ()
    )
    replies = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    formats = next(
        r["return"]["formats"] for r in replies if isinstance(r.get("return"), dict) and "formats" in r["return"]
    )
    assert {"elf", "kdump-zlib", "kdump-raw-zlib"} <= set(formats), proc.stdout + proc.stderr


def test_backports_version_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = """qemu-system-x86:
  Installed: 1:7.2+dfsg-7+deb12u18+b3
  Candidate: 1:7.2+dfsg-7+deb12u18+b3
  Version table:
     1:10.0.2+ds-2+deb13u1~bpo12+1 100
        100 http://deb.debian.org/debian bookworm-backports/main amd64 Packages
 *** 1:7.2+dfsg-7+deb12u18+b3 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
        100 /var/lib/dpkg/status
"""
    monkeypatch.setattr(qemu_versions, "_run", lambda *a, **k: policy)
    assert qemu_versions._backports_version("qemu-system-x86", "1:10.0.") == "1:10.0.2+ds-2+deb13u1~bpo12+1"
    with pytest.raises(qemu_versions.GuestError, match="bookworm-backports"):
        qemu_versions._backports_version("qemu-system-x86", "1:11.")
    monkeypatch.setattr(qemu_versions, "_run", lambda *a, **k: policy.replace("bookworm-backports", "bookworm"))
    with pytest.raises(qemu_versions.GuestError):
        qemu_versions._backports_version("qemu-system-x86", "1:10.0.")


@pytest.mark.oracle
def test_backports_come_from_the_private_apt_configuration(qemu10: qemu_versions.QemuInstall) -> None:
    """apt with the cache's private options sees bookworm-backports and nothing of the system's sources (so the
    system needs no backports source), and the private lists hold backports only."""
    out = subprocess.run(
        qemu_versions._apt_argv("apt-cache", "policy"), capture_output=True, text=True, timeout=120, check=True
    ).stdout
    sources = [line.split()[1:] for line in out.splitlines() if "://" in line]
    assert sources, out
    assert all(any(qemu_versions.BACKPORTS_SUITE in word for word in src) for src in sources), out
    lists = qemu_versions._apt_root() / "lists"
    assert all(qemu_versions.BACKPORTS_SUITE in p.name for p in lists.glob("*_Packages*")), sorted(lists.iterdir())


# ------------------------------------------------------------------------------------------------ (1) byte identity


@pytest.mark.oracle
def test_generate_is_byte_identical_to_qemu10(guest_qemu10: GuestDumps, tmp_path: Path) -> None:
    d = guest_qemu10
    assert d.qemu_version.startswith("10.0.") and d.kdump_raw_zlib is not None
    flat, raw, flat72 = tmp_path / "g.flat", tmp_path / "g.raw", tmp_path / "g72.flat"
    _generate(d.elf, flat, "--qemu-version", "10.0")
    _generate(d.elf, raw, "--qemu-version", "10.0", "--raw")
    ref_flat, ref_raw = d.kdump_zlib.read_bytes(), d.kdump_raw_zlib.read_bytes()
    gen = flat.read_bytes()
    assert gen == ref_flat, f"flattened: first difference at byte {_first_diff(gen, ref_flat)}"
    gen = raw.read_bytes()
    assert gen == ref_raw, f"raw: first difference at byte {_first_diff(gen, ref_raw)}"
    # the version matters: imitating 7.2 differs exactly in utsname.machine ("x86_64" vs "Unknown", §6.2)
    assert ref_raw[MACHINE_AT : MACHINE_AT + 8] == b"Unknown\0"
    _generate(d.elf, flat72, "--qemu-version", "7.2")
    gen72 = flat72.read_bytes()
    at = FLAT_HEADER_SIZE + FLAT_RECORD_HEADER + MACHINE_AT
    assert gen72[at : at + 7] == b"x86_64\0"
    assert gen72[:at] == ref_flat[:at] and gen72[at + 65 :] == ref_flat[at + 65 :]


@pytest.mark.oracle
def test_aarch64_generate_is_byte_identical_to_qemu10(guest_aarch64_qemu10: GuestDumps, tmp_path: Path) -> None:
    """qemu-system-aarch64 10.0: 64 KiB blocks, machine "Unknown", phys_base = NUMBER(PHYS_OFFSET) (hex, right),
    and kdump-raw-zlib is the same records written in place (qemu-dumps.md §1, §3; arch-kernels... §1.6)."""
    d = guest_aarch64_qemu10
    assert d.qemu_version.startswith("10.0.") and d.kdump_raw_zlib is not None
    for fmt, reference, args in (("kdump-zlib", d.kdump_zlib, ()), ("kdump-raw-zlib", d.kdump_raw_zlib, ("--raw",))):
        out = tmp_path / fmt
        _generate(d.elf, out, "--qemu-version", "10.0", "--workers", "2", *args)
        got, want = out.read_bytes(), reference.read_bytes()
        assert got == want, f"{fmt}: first difference at byte {_first_diff(got, want)}"
    main, sub = h.headers(d.kdump_raw_zlib.read_bytes())
    assert main[6] == 65536 and main[2][260:267] == b"Unknown"
    assert sub[0] == d.truth.phys_offset & ((1 << 64) - 1)


def test_firmware_only_generate_is_byte_identical(firmware_dumps_qemu10: FirmwareDumps, tmp_path: Path) -> None:
    """Real-mode vCPUs (EM_386 notes in the 64-bit header, qemu-dumps.md §3), no guest note."""
    fw = firmware_dumps_qemu10
    assert fw.qemu_version.startswith("10.0.") and fw.kdump_raw_zlib is not None
    flat, raw = tmp_path / "fw.flat", tmp_path / "fw.raw"
    _generate(fw.elf, flat, "--qemu-version", "10.0")
    _generate(fw.elf, raw, "--qemu-version", "10.0", "--raw")
    assert flat.read_bytes() == fw.kdump_zlib.read_bytes()
    assert raw.read_bytes() == fw.kdump_raw_zlib.read_bytes()
    assert _origin(fw.kdump_raw_zlib) == "qemu"


# ------------------------------------------------------------------------------------------------ (2) makedumpfile -R


@pytest.mark.oracle
def test_makedumpfile_reassembly_equals_qemu10_raw(guest_qemu10: GuestDumps, tmp_path: Path) -> None:
    require_tool("makedumpfile")
    assert guest_qemu10.kdump_raw_zlib is not None
    out = tmp_path / "reassembled"
    res = makedumpfile_reassemble(guest_qemu10.kdump_zlib, out)
    assert res.returncode == 0, res.output
    assert out.read_bytes() == guest_qemu10.kdump_raw_zlib.read_bytes()


# ------------------------------------------------------------------------------------------------ (3) reading


@pytest.mark.oracle
def test_kdfix_reads_qemu10_dumps(guest_qemu10: GuestDumps) -> None:
    d = guest_qemu10
    assert d.kdump_raw_zlib is not None
    with kdfix.open_dump(d.elf) as elf, kdfix.open_dump(d.kdump_raw_zlib) as raw:
        count = 0
        for pfn, page in raw.memory.iter_pages():
            assert elf.memory.page(pfn) == page, f"pfn {pfn:#x}"
            count += 1
        assert count == raw.memory.dumped.count() > 30000
        assert raw.container == "kdump"
    with kdfix.open_dump(d.kdump_zlib) as flat:
        assert flat.container == "flattened"
        assert flat.memory.dumped.count() == count
        with kdfix.open_dump(d.elf) as elf:  # spot check through the flattened container: first and last pages
            pfns = list(flat.memory.dumped.iter_set())
            for pfn in (pfns[0], pfns[-1]):
                assert flat.memory.page(pfn) == elf.memory.page(pfn)
    assert _origin(d.kdump_zlib) == "qemu"
    assert _origin(d.kdump_raw_zlib) == "qemu"


# ------------------------------------------------------------------------------------------------ (4) fix


@pytest.mark.oracle
def test_fix_qemu10_raw(guest_qemu10: GuestDumps, tmp_path: Path) -> None:
    for tool in ("crash", "makedumpfile", "drgn"):
        require_tool(tool)
    d, truth = guest_qemu10, guest_qemu10.truth
    assert d.kdump_raw_zlib is not None
    path = _copy(d.kdump_raw_zlib, tmp_path / "vmcore.raw")
    with kdfix.open_dump(path) as dump:  # QEMU 10.0 still parses NUMBER(phys_base) as hex (§6.1)
        header = dump.sub_header.phys_base
        vmci = path.read_bytes()[dump.sub_header.offset_vmcoreinfo :][: dump.sub_header.size_vmcoreinfo]
    assert header == qemu_phys_base(vmci, "x86_64")
    assert header != truth.phys_base or truth.phys_base == 0
    res = runner.invoke(app, ["fix", "--in-place", str(path), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["status"] == "fixed"
    with kdfix.open_dump(path) as dump:
        assert dump.sub_header.phys_base == truth.phys_base
        assert dump.container == "kdump"
    _, sub = h.headers(path.read_bytes()[:16384])
    assert sub[0] == truth.phys_base  # independent header parse
    out = crash_osrelease(path)
    assert out.returncode == 0 and truth.osrelease in out.output, out.output
    assert drgn_release_by_vaddr(path) == truth.osrelease
    assert truth.marker in makedumpfile_dump_dmesg(path)
