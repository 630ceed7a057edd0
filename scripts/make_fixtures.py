#!/usr/bin/env python3
"""Regenerate fixtures/: small dumps written by the installed QEMU, and fixtures/MANIFEST.toml.

Usage: python scripts/make_fixtures.py [--check]
  --check  regenerate into a temp dir and compare with the committed bytes (exit 1 on difference).

Each fixture is ≤ 1 MiB. QEMU's firmware-only dumps are deterministic (no guest code runs), so a re-run with the
same QEMU build reproduces the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.oracle.guest import (  # noqa: E402
    QEMU,
    GuestConfig,
    cached_guest_dumps,
    firmware_only_dumps,
    qemu_version,
)
from tests.oracle.tools import elf_read_phys  # noqa: E402

FIXTURES = ROOT / "fixtures"
LIMIT = 1 << 20
MEMORY_MIB = 16
NOTE = "vmcoreinfo-note-linux-6.1.bin"


def _guest_note() -> tuple[bytes, str]:
    """The committed real VMCOREINFO note, or (first run) the one of a freshly booted Debian guest."""
    path = FIXTURES / NOTE
    if path.is_file():
        return path.read_bytes(), f"committed {NOTE}"
    d = cached_guest_dumps(GuestConfig("seabios", kaslr=True, vmcoreinfo=True))
    raw = elf_read_phys(d.elf, d.truth.vmcoreinfo_paddr, d.truth.vmcoreinfo_size)
    return raw, f"read at {d.truth.vmcoreinfo_paddr:#x} from the ELF dump of a {d.config.name} guest"


def _qemu_package_version() -> str:
    out = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0].strip()


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def generate(out: Path) -> list[dict[str, object]]:
    """Write the fixture files into ``out``; return manifest rows."""
    rows: list[dict[str, object]] = []
    full_version = _qemu_package_version()
    with tempfile.TemporaryDirectory(prefix="kdfix-fixtures-") as tmp:
        note, note_origin = _guest_note()
        (out / NOTE).write_bytes(note)
        rows.append(
            {
                "name": NOTE,
                "producer": f"Linux {note[24:].split(b'=', 1)[1].split(bytes([10]), 1)[0].decode()} VMCOREINFO ELF "
                "note (vmcoreinfo_note), as the kernel exposes it at /sys/kernel/vmcoreinfo",
                "version": "",
                "package": "",
                "command": note_origin,
                "qmp": "",
                "description": "input of firmware-16m-vmcoreinfo-note.*: a real kernel's note buffer",
            }
        )
        for variant in ("", "-vmcoreinfo", "-vmcoreinfo-note"):
            work = Path(tmp) / (variant or "plain")
            d = firmware_only_dumps(
                work,
                MEMORY_MIB,
                vmcoreinfo_device=bool(variant),
                guest_note=note if variant == "-vmcoreinfo-note" else None,
            )
            what = f"{MEMORY_MIB} MiB q35 guest, 2 vCPUs stopped at reset (-S), no kernel"
            if variant == "-vmcoreinfo":
                what += ", -device vmcoreinfo (no guest driver ran: no VMCOREINFO note; same bytes as without)"
            if variant == "-vmcoreinfo-note":
                what += (
                    f", -device vmcoreinfo registered with {NOTE} at 0x100000 by patching a migration stream; "
                    "real-mode vCPUs, so EM_386 notes and header phys_base 0 although the note says otherwise"
                )
            name = f"firmware-{MEMORY_MIB}m{variant}.kdump-zlib"
            shutil.copyfile(d.kdump_zlib, out / name)
            kdump_qmp = "; ".join([*d.qmp_commands[:-2], d.qmp_commands[-1]]).replace("file:KDUMP", "file:OUT")
            rows.append(
                {
                    "name": name,
                    "producer": "qemu-system-x86_64 dump-guest-memory format=kdump-zlib (flattened)",
                    "version": qemu_version(),
                    "package": full_version,
                    "command": d.qemu_command,
                    "qmp": kdump_qmp,
                    "description": what,
                }
            )
            if variant != "-vmcoreinfo":
                gz = out / f"firmware-{MEMORY_MIB}m{variant}.elf.gz"
                with (
                    open(d.elf, "rb") as fin,
                    open(gz, "wb") as raw,
                    gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as fout,
                ):
                    shutil.copyfileobj(fin, fout, 1 << 20)
                elf_qmp = "; ".join([*d.qmp_commands[:-2], d.qmp_commands[-2]]).replace("file:ELF", "file:OUT")
                rows.append(
                    {
                        "name": gz.name,
                        "producer": "qemu-system-x86_64 dump-guest-memory format=elf paging=false, then gzip -9 "
                        "(python gzip, mtime 0, no name)",
                        "version": qemu_version(),
                        "package": full_version,
                        "command": d.qemu_command,
                        "qmp": elf_qmp,
                        "description": what + "; same QEMU process as " + name,
                    }
                )
    for row in rows:
        data = (out / str(row["name"])).read_bytes()
        if len(data) > LIMIT:
            raise SystemExit(f"{row['name']}: {len(data)} bytes > 1 MiB")
        row["sha256"] = hashlib.sha256(data).hexdigest()
        row["size"] = len(data)
    return rows


def write_manifest(rows: list[dict[str, object]], path: Path) -> None:
    lines = [
        "# Committed dump fixtures. Regenerate with: python scripts/make_fixtures.py",
        "# One [[file]] per file: producer, version, exact command/QMP, sha256, size.",
        "",
    ]
    for row in rows:
        lines.append("[[file]]")
        for key in ("name", "producer", "version", "package", "command", "qmp", "description", "sha256"):
            lines.append(f"{key} = {_toml_str(str(row[key]))}")
        lines.append(f"size = {row['size']}")
        lines.append("")
    path.write_text("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare a fresh generation with fixtures/")
    args = ap.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            rows = generate(Path(tmp))
            bad = [
                r["name"]
                for r in rows
                if (FIXTURES / str(r["name"])).read_bytes() != (Path(tmp) / str(r["name"])).read_bytes()
            ]
        print("differs: " + ", ".join(map(str, bad)) if bad else "fixtures reproduce byte for byte")
        return 1 if bad else 0
    FIXTURES.mkdir(exist_ok=True)
    rows = generate(FIXTURES)
    write_manifest(rows, FIXTURES / "MANIFEST.toml")
    for r in rows:
        print(f"{r['name']:40} {r['size']:>8}  {r['sha256']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
