"""Benchmark: ``kdfix generate --style qemu`` vs QEMU's own ``dump-guest-memory`` kdump-zlib of the same guest.

Usage: python bench/bench_generate.py [--memory-mib 512] [--firmware-only] [--repeat 2] [--keep DIR]

Boots a Linux guest with the oracle guest helper (tests/oracle/guest.py) when it can, else a firmware-only guest
(mostly zero pages: a weak benchmark, reported as such). QEMU dumps ELF and kdump-zlib from the stopped guest and
its kdump-zlib dump is timed; kdfix then regenerates kdump-zlib from the ELF with 1 and 2 workers, each in a child
process (best of --repeat), and the outputs are compared byte for byte. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_CHILD = """
import json, resource, sys, time
from kdfix.generate.qemu import generate_qemu
t0 = time.perf_counter()
r = generate_qemu(sys.argv[1], sys.argv[2], workers=int(sys.argv[3]))
print(json.dumps({"seconds": time.perf_counter() - t0, "pages": r.pages, "zero_pages": r.zero_pages,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _qmp_dump_firmware(memory_mib: int, out: Path, repeat: int) -> tuple[Path, Path, float, str]:
    """Firmware-only q35 guest stopped at reset: ELF + kdump-zlib, timing the kdump-zlib dump (best of repeat)."""
    sock = out / "q.sock"
    argv = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", str(memory_mib), "-smp", "2", "-S"]
    argv += ["-nodefaults", "-display", "none", "-qmp", f"unix:{sock},server=on,wait=off"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        s = socket.socket(socket.AF_UNIX)
        for _ in range(400):
            try:
                s.connect(str(sock))
                break
            except OSError:
                time.sleep(0.05)
        f = s.makefile("rwb")

        def reply() -> dict:
            while True:
                msg = json.loads(f.readline())
                if "event" not in msg:
                    return msg

        def execute(cmd: str, **args: object) -> None:
            f.write(json.dumps({"execute": cmd, "arguments": args}).encode() + b"\n")
            f.flush()
            msg = reply()
            if "return" not in msg:
                raise RuntimeError(f"QMP {cmd}: {msg}")

        reply()
        execute("qmp_capabilities")
        elf, kdump = out / "vmcore.elf", out / "vmcore.kdump-zlib"
        execute("dump-guest-memory", paging=False, protocol=f"file:{elf}", format="elf")
        best = float("inf")
        for _ in range(repeat):
            kdump.unlink(missing_ok=True)
            t0 = time.perf_counter()
            execute("dump-guest-memory", paging=False, protocol=f"file:{kdump}", format="kdump-zlib")
            best = min(best, time.perf_counter() - t0)
        execute("quit")
    finally:
        proc.wait(timeout=30)
    version = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.split()[3]
    return elf, kdump, best, version


def _linux_guest(memory_mib: int, out: Path) -> tuple[Path, Path, float, str]:
    from tests.oracle import guest as g

    config = g.GuestConfig("seabios", kaslr=True, vmcoreinfo=False, memory_mib=memory_mib)
    dumps = g.boot_and_dump(config, out)
    return dumps.elf, dumps.kdump_zlib, dumps.dump_seconds["kdump-zlib"], dumps.qemu_version


def _run_kdfix(elf: Path, out: Path, workers: int, repeat: int) -> dict:
    best: dict | None = None
    for _ in range(repeat):
        res = subprocess.run(
            [sys.executable, "-c", _CHILD, str(elf), str(out), str(workers)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        info = json.loads(res.stdout.strip().splitlines()[-1])
        if best is None or info["seconds"] < best["seconds"]:
            best = info
    assert best is not None
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--memory-mib", type=int, default=512)
    ap.add_argument("--firmware-only", action="store_true", help="skip the Linux guest (mostly zero pages)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="keep the dumps in this directory")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kdfix-bench-gen-", dir=args.keep.parent if args.keep else None))
    try:
        guest = "firmware-only"
        if not args.firmware_only:
            try:
                elf, kdump, qemu_s, version = _linux_guest(args.memory_mib, work / "linux")
                guest = "linux"
            except Exception as exc:  # no kernel download, helper missing …
                print(f"bench: Linux guest unavailable ({exc}); using a firmware-only guest", file=sys.stderr)
        if guest == "firmware-only":
            (work / "fw").mkdir(exist_ok=True)
            elf, kdump, qemu_s, version = _qmp_dump_firmware(args.memory_mib, work / "fw", args.repeat)
        reference = kdump.read_bytes()
        results = {}
        identical = True
        for workers in (1, 2):
            out = work / f"kdfix-w{workers}.kdump-zlib"
            results[workers] = _run_kdfix(elf, out, workers, args.repeat)
            identical &= out.read_bytes() == reference
            out.unlink()
        line = {
            "bench": "generate --style qemu",
            "guest": guest,
            "memory_mib": args.memory_mib,
            "qemu_version": version,
            "pages": results[1]["pages"],
            "zero_pages": results[1]["zero_pages"],
            "qemu_kdump_zlib_s": round(qemu_s, 3),
            "kdfix_w1_s": round(results[1]["seconds"], 3),
            "kdfix_w2_s": round(results[2]["seconds"], 3),
            "speedup_vs_qemu_w1": round(qemu_s / results[1]["seconds"], 2),
            "speedup_vs_qemu_w2": round(qemu_s / results[2]["seconds"], 2),
            "peak_rss_mib_w1": round(results[1]["peak_rss_mib"], 1),
            "peak_rss_mib_w2_main": round(results[2]["peak_rss_mib"], 1),
            "identical": identical,
            "cpus": os.cpu_count(),
        }
        print(json.dumps(line))
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(elf, args.keep / "vmcore.elf")
            shutil.copyfile(kdump, args.keep / "vmcore.kdump-zlib")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
