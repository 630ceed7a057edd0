#!/usr/bin/env bash
# The main job on a real QEMU guest: boot (or reuse from the cache) a Debian Linux guest with KASLR and without
# -device vmcoreinfo, dump it with QEMU's dump-guest-memory (kdump-zlib), show that crash (without a vmlinux),
# makedumpfile and drgn cannot use the dump; kdfix dmesg, triage, detect and fix it; then what a user does next:
# crash VMLINUX fixed with `log`, drgn with the -dbg vmlinux, makedumpfile --dump-dmesg on the fixed file.
# Usage: bash scripts/demo.sh [--synthetic] [WORKDIR]   (run scripts/setup.sh first, as root, on a fresh Debian 12)
# The guest kernel (~15 MB) and its -dbg vmlinux (~280 MB) are downloaded on first use and cached with the guest
# dump under $KDFIX_CACHE or ~/.cache/kdfix (tests/oracle/guest.py: the test suite's own guests). When no guest can
# be had (no download possible) or with --synthetic, the demo runs on a synthetic dump instead and says so.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's kdfix and its guest helpers
synthetic=0
if [[ ${1:-} == --synthetic ]]; then synthetic=1; shift; fi
work=${1:-$(mktemp -d /tmp/kdfix-demo.XXXXXX)}
mkdir -p "$work" && cd "$work"
step() { printf '\n=== %s\n' "$*"; }
kdfix() { python3 -m kdfix "$@"; }
run() { printf '$ %s\n' "$*"; "$@" 2>&1 | indent; }
indent() { sed 's/^/    /'; }
failed=()
# The drgn checks in one place: open DUMP (with VMLINUX's debug info when given) and say what drgn says.
drgn_try() {
    python3 - "$@" 2>&1 <<'PY' || true
import sys
import drgn
dump = sys.argv[1]
vmlinux = sys.argv[2] if len(sys.argv) > 2 else None
prog = drgn.Program()
try:
    prog.set_core_dump(dump)
except Exception as exc:
    print(f"drgn: cannot open {dump}: {exc}")
    sys.exit(0)
if vmlinux is None:
    print(f"drgn: opened {dump}")
    sys.exit(0)
prog.load_debug_info([vmlinux])
from drgn.helpers.linux.printk import get_dmesg
uts = prog["init_uts_ns"].name
print(f"drgn: init_uts_ns.name.release = {uts.release.string_().decode()}, machine = {uts.machine.string_().decode()}")
print(f"drgn: jiffies = {prog['jiffies'].value_()}, init_task.comm = {prog['init_task'].comm.string_().decode()}")
lines = get_dmesg(prog).decode(errors="replace").splitlines()
print(f"drgn: get_dmesg(prog): {len(lines)} lines, the last 3:")
for line in lines[-3:]:
    print("    " + line)
PY
}

step "1. A real guest: Debian's cloud kernel under QEMU (TCG), SeaBIOS, KASLR, no -device vmcoreinfo, 2 vCPUs"
echo "(cached after the first run, which downloads the kernel and its -dbg vmlinux and boots the guest: minutes)"
real=1
if [[ $synthetic -eq 1 ]]; then
    real=0
    echo "--synthetic: no real guest"
elif ! python3 - >guest.env 2>guest.err <<'PY'; then
import shlex
from tests.oracle.guest import GuestConfig, cached_guest_dumps, debug_vmlinux, kernel_artifacts
k = kernel_artifacts("x86_64")
d = cached_guest_dumps(GuestConfig("seabios", kaslr=True, vmcoreinfo=False))
t = d.truth
try:
    vmlinux, why = str(debug_vmlinux("x86_64")), ""
except Exception as exc:  # the -dbg package cannot be downloaded: the demo goes on without the vmlinux steps
    vmlinux, why = "", str(exc).splitlines()[0][:300]
values = {
    "GUEST_DUMP": str(d.kdump_zlib), "GUEST_QEMU": d.qemu_version, "GUEST_KERNEL": k.package or k.release,
    "GUEST_RELEASE": d.kernel_release, "GUEST_MARKER": t.marker, "GUEST_PHYS_BASE": f"{t.phys_base_signed:#x}",
    "GUEST_KERNELOFFSET": "?" if t.kernel_offset is None else f"{t.kernel_offset:#x}", "GUEST_CMD": d.qemu_command, "VMLINUX": vmlinux, "VMLINUX_WHY": why,
}
for key, value in values.items():
    print(f"{key}={shlex.quote(value)}")
PY
    real=0
    echo "No real guest: $(tail -n 1 guest.err)"
    echo "(the guest needs qemu-system-x86 and the Debian kernel from apt: run scripts/setup.sh, be online once)"
fi

if [[ $real -eq 1 ]]; then
    # shellcheck disable=SC1091
    source guest.env
    TRUTH="the guest said"
    cp "$GUEST_DUMP" vmcore && chmod 600 vmcore
    echo "QEMU $GUEST_QEMU, kernel $GUEST_KERNEL; cached dump: $GUEST_DUMP"
    echo "QEMU command: $GUEST_CMD"
    echo "QMP: stop; dump-guest-memory paging=false format=kdump-zlib  ->  vmcore ($(du -h vmcore | cut -f1))"
    echo "What the guest itself printed on its serial console (ground truth, not read from the dump):"
    echo "    marker $GUEST_MARKER, phys_base $GUEST_PHYS_BASE, KERNELOFFSET $GUEST_KERNELOFFSET"
    if [[ -n $VMLINUX ]]; then
        echo "Debug vmlinux (from ${GUEST_KERNEL}-dbg): $VMLINUX"
    else
        echo "No debug vmlinux (${VMLINUX_WHY}): the crash-with-vmlinux and drgn-with-vmlinux steps are skipped."
    fi
else
    step "1b. Fallback: a synthetic Linux 6.1-like guest (KASLR, phys_base -0x32200000) as QEMU 7.2 would dump it"
    kdfix generate --style linux --no-vmcoreinfo --phys-base=-0x32200000 --kaslr-offset 0x35600000 \
        --cpus 2 --memory 128M -o guest.kdump
    kdfix convert guest.kdump --to elf -o guest.elf
    kdfix generate --style qemu --from guest.elf -o vmcore
    rm -f guest.kdump guest.elf
    VMLINUX="" GUEST_MARKER="" GUEST_PHYS_BASE=-0x32200000 GUEST_KERNELOFFSET=0x35600000 TRUTH="generated with"
fi

step "2. The real tools cannot use QEMU's dump"
printf '$ crash --osrelease vmcore\n'; crash --osrelease vmcore 2>&1 | indent || true
printf '$ makedumpfile --dump-dmesg vmcore dmesg.txt\n'
makedumpfile --dump-dmesg vmcore dmesg.txt 2>&1 | tail -n 3 | indent || true
printf '$ python3: drgn.Program().set_core_dump("vmcore")\n'; drgn_try vmcore | indent
if [[ -n $VMLINUX ]]; then
    echo "(crash given the matching -dbg vmlinux does read this dump: it works the KASLR offset out itself. Without"
    echo " a vmlinux, and for makedumpfile and drgn, the header has to say what QEMU could not know.)"
fi

step "3. kdfix reads it anyway: info, dmesg and triage need no vmlinux and no VMCOREINFO in the file"
printf '$ kdfix info vmcore | grep -E "origin|needs fix"\n'
kdfix info vmcore | grep -E '^  (origin|needs fix):' | indent
printf '$ kdfix dmesg vmcore | tail -n 4\n'; { kdfix dmesg vmcore 2>&1 || true; } | tail -n 4 | indent
if [[ -n $GUEST_MARKER ]]; then
    printf '$ kdfix dmesg vmcore | grep %s\n' "$GUEST_MARKER"
    { kdfix dmesg vmcore || true; } | grep -F "$GUEST_MARKER" | indent || failed+=("kdfix dmesg: no marker")
fi
printf '$ kdfix triage vmcore | head -n 12\n'
{ kdfix triage vmcore 2>&1 || true; } | head -n 12 | indent  # exit 1: a stopped guest shows no panic

step "4. kdfix detect: phys_base and the KASLR offset from the dump's own memory and CPU notes"
printf '$ kdfix detect vmcore | head -n 3   (then the evidence of each method)\n'
kdfix detect vmcore >detect.txt 2>&1 || failed+=("kdfix detect")
head -n 3 detect.txt | indent
echo "    ($TRUTH: phys_base $GUEST_PHYS_BASE, KERNELOFFSET $GUEST_KERNELOFFSET)"

step "5. kdfix fix: a verified, random-access KDUMP copy (--in-place would patch vmcore itself, O(1), with undo)"
run kdfix fix vmcore -o fixed

step "6. What users do next, on the fixed file"
printf '$ crash --osrelease fixed\n'; crash --osrelease fixed 2>&1 | indent || failed+=("crash --osrelease")
if [[ -n $VMLINUX ]]; then
    printf '$ crash vmlinux fixed   (its banner, then log | tail -n 3)\n'
    timeout 600 crash --no_scroll "$VMLINUX" fixed <<<$'log\nquit' >crash.out 2>&1 || true
    grep -E '^ +(DUMPFILE|RELEASE|VERSION|MACHINE|MEMORY|UPTIME):' crash.out | indent || failed+=("crash vmlinux fixed")
    grep -E '^\[ *[0-9]+\.[0-9]+\]' crash.out | tail -n 3 | indent
    grep -qF "$GUEST_MARKER" crash.out || failed+=("crash log: no marker")
    if grep -qi 'do not match' crash.out; then failed+=("crash: vmlinux and fixed do not match"); fi
fi
printf '$ makedumpfile --dump-dmesg fixed dmesg.txt\n'
rm -f dmesg.txt
makedumpfile --dump-dmesg fixed dmesg.txt 2>&1 | tail -n 2 | indent || true
[[ $real -eq 1 ]] || echo "    (the synthetic dump holds no printk ring: there is no log to dump)"
if [[ -n $GUEST_MARKER ]]; then
    printf '$ grep %s dmesg.txt\n' "$GUEST_MARKER"
    grep -F "$GUEST_MARKER" dmesg.txt 2>&1 | indent || failed+=("makedumpfile --dump-dmesg: no marker")
fi
if [[ -n $VMLINUX ]]; then
    printf '$ python3: drgn.Program(); set_core_dump("fixed"); load_debug_info([vmlinux])\n'
    drgn_try fixed "$VMLINUX" | tee drgn.out | indent
    grep -qF "$GUEST_MARKER" drgn.out || failed+=("drgn get_dmesg: no marker")
else
    printf '$ python3: drgn.Program().set_core_dump("fixed")\n'; drgn_try fixed | tee drgn.out | indent
    grep -q '^drgn: opened' drgn.out || failed+=("drgn cannot open fixed")
fi
run kdfix verify fixed || failed+=("kdfix verify")
if [[ ${#failed[@]} -gt 0 ]]; then
    step "FAILED: $(IFS=';'; echo "${failed[*]}") (files in $work)"
    exit 1
fi
step "done: files in $work"
