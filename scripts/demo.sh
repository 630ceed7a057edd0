#!/usr/bin/env bash
# The main job on a built-in example: make the dump QEMU would write for a KASLR guest without
# -device vmcoreinfo, show that crash and drgn cannot use it, fix it with kdfix, show that they can.
# Usage: bash scripts/demo.sh [WORKDIR]   (run scripts/setup.sh first, as root, on a fresh Debian 12)
set -euo pipefail
work=${1:-$(mktemp -d /tmp/kdfix-demo.XXXXXX)}
mkdir -p "$work" && cd "$work"
step() { printf '\n=== %s\n' "$*"; }
command -v kdfix >/dev/null || kdfix() { python3 -m kdfix "$@"; }  # e.g. before a pyenv rehash

step "1. A synthetic Linux 6.1-like guest: KASLR (phys_base -0x32200000, KERNELOFFSET 0x35600000), 2 vCPUs"
kdfix generate --style linux --no-vmcoreinfo --phys-base=-0x32200000 --kaslr-offset 0x35600000 \
    --cpus 2 --memory 128M -o guest.kdump
kdfix convert guest.kdump --to elf -o guest.elf          # what QEMU's 'dump-guest-memory' (elf) would write

step "2. What QEMU 7.2 writes for it (dump-guest-memory -z): byte-identical QEMU-style kdump-zlib"
kdfix generate --style qemu --from guest.elf -o qemu.kdump
rm -f guest.elf
kdfix info qemu.kdump | tail -n 6

step "3. The real tools cannot use it"
printf 'crash --osrelease: '; crash --osrelease qemu.kdump || true
python3 - qemu.kdump <<'PY' || true
import sys, drgn
try:
    prog = drgn.Program(); prog.set_core_dump(sys.argv[1]); print("drgn: opened")
except Exception as exc:
    print(f"drgn: {exc}")
PY

step "4. kdfix detect: phys_base and KASLR offset from the dump's own memory and CPU notes"
kdfix detect qemu.kdump > detect.txt
head -n 3 detect.txt

step "5. kdfix fix (a copy; --in-place would patch the file itself, O(1), with an undo journal)"
kdfix fix qemu.kdump -o fixed.kdump

step "6. The real tools can use it now"
printf 'crash --osrelease: '; crash --osrelease fixed.kdump
kdfix convert fixed.kdump --no-flat -o fixed-plain.kdump
python3 - fixed-plain.kdump <<'PY'
import sys, drgn
from kdfix import open_dump
with open_dump(sys.argv[1]) as dump:
    info = dump.vmcoreinfo
    va = info.symbol("init_uts_ns") + (info.offset("uts_namespace.name") or 0)
prog = drgn.Program(); prog.set_core_dump(sys.argv[1])  # no platform, no vmcoreinfo hints
name = prog.read(va, 390)
print("drgn, no hints, init_uts_ns by virtual address:", name[0:65].split(b"\0")[0].decode(), name[130:195].split(b"\0")[0].decode())
PY
kdfix verify fixed-plain.kdump
step "done: files in $work"
