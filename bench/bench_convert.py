"""Benchmark ``kdfix convert`` ELF → kdump-zlib (1 and 2 workers) against QEMU's and makedumpfile's own times.

    python bench/bench_convert.py [ELF]          # an existing QEMU ELF dump
    python bench/bench_convert.py --boot 512     # boot a 512 MiB guest with tests/oracle/guest.py and dump it

Prints one JSON line: seconds, MiB/s of guest memory, peak RSS of each convert process, QEMU's kdump-zlib dump
time of the same guest (when booted here), makedumpfile -c -d 0 on the same ELF, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_measured(argv: list[str]) -> dict[str, float]:
    """Run a command; return wall seconds and its peak RSS in MiB (GNU time's %M, else wait4's ru_maxrss)."""
    gnu_time = shutil.which("time") if Path("/usr/bin/time").exists() else None
    full = ["/usr/bin/time", "-f", "KDFIX-RSS-KB=%M", *argv] if gnu_time else argv
    began = time.monotonic()
    proc = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - began
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {err[-2000:]}")
    rss_kb = float(usage.ru_maxrss)
    for line in err.splitlines():
        if line.startswith("KDFIX-RSS-KB="):
            rss_kb = float(line.split("=", 1)[1])
    return {"seconds": round(seconds, 3), "rss_mib": round(rss_kb / 1024, 1)}


def boot_guest(memory_mib: int) -> tuple[Path, float | None]:
    sys.path.insert(0, str(ROOT))
    from tests.oracle import guest

    dumps = guest.cached_guest_dumps(guest.GuestConfig("seabios", kaslr=True, vmcoreinfo=True, memory_mib=memory_mib))
    return Path(dumps.elf), dumps.dump_seconds.get("kdump-zlib")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("elf", nargs="?", type=Path)
    parser.add_argument("--boot", type=int, metavar="MIB", help="boot a guest of MIB MiB and use its ELF dump")
    args = parser.parse_args()
    qemu_seconds = None
    if args.boot:
        elf, qemu_seconds = boot_guest(args.boot)
    elif args.elf:
        elf = args.elf
    else:
        parser.error("give an ELF path or --boot MIB")
    kdfix = [sys.executable, "-m", "kdfix.cli"] if shutil.which("kdfix") is None else ["kdfix"]
    sys.path.insert(0, str(ROOT))
    import kdfix as lib

    with lib.open_dump(elf) as dump:
        mem_bytes = dump.memory.dumped.count() * dump.memory.page_size
    result: dict[str, object] = {
        "bench": "convert-elf-to-kdump-zlib",
        "input": str(elf),
        "input_bytes": elf.stat().st_size,
        "guest_memory_mib": round(mem_bytes / 2**20, 1),
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="kdfix-bench-") as tmp:
        out = Path(tmp)
        for workers in (1, 2):
            m = run_measured([*kdfix, "convert", str(elf), "-o", str(out / f"w{workers}"), "--to", "kdump",
                              "--compress", "zlib", "--workers", str(workers)])  # fmt: skip
            m["mib_per_s"] = round(mem_bytes / 2**20 / m["seconds"], 1)
            m["output_bytes"] = (out / f"w{workers}").stat().st_size
            result[f"kdfix_workers_{workers}"] = m
        result["workers_identical"] = (out / "w1").read_bytes() == (out / "w2").read_bytes()
        if shutil.which("makedumpfile"):
            m = run_measured([*kdfix, "convert", str(elf), "-o", str(out / "k.elf"), "--to", "elf"])
            result["kdfix_elf_rewrite"] = m
            mk = run_measured(["makedumpfile", "-c", "-d", "0", str(out / "k.elf"), str(out / "mk")])
            mk["output_bytes"] = (out / "mk").stat().st_size
            result["makedumpfile_c_d0"] = mk
            result["ratio_vs_makedumpfile"] = round(result["kdfix_workers_1"]["seconds"] / mk["seconds"], 2)  # type: ignore[index]
    if qemu_seconds:
        result["qemu_kdump_zlib_seconds"] = qemu_seconds
        result["ratio_vs_qemu"] = round(result["kdfix_workers_1"]["seconds"] / qemu_seconds, 2)  # type: ignore[index]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
