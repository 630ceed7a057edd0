"""Benchmark ``kdfix convert`` ELF → kdump-zlib (1 and 2 workers) against QEMU's and makedumpfile's own times.

    python bench/bench_convert.py [ELF]          # an existing QEMU ELF dump
    python bench/bench_convert.py --boot 512     # boot a 512 MiB guest with tests/oracle/guest.py and dump it
    python bench/bench_convert.py --boot 512 --repeat 5 --baseline /tmp/old   # also time another tree

Prints one JSON line: wall seconds (best and median of --repeat runs), CPU seconds, MiB/s of guest memory, peak
RSS of each convert process, load averages before and after, QEMU's kdump-zlib dump time of the same guest (when
booted here), makedumpfile -c -d 0 on the same ELF, and the ratios. kdfix runs as ``python -m kdfix`` with
PYTHONPATH set to the tree timed (this one, or --baseline), whatever kdfix is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_measured(argv: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run a command; return wall and CPU seconds and its peak RSS in MiB (GNU time's %M, else wait4's ru_maxrss)."""
    gnu_time = shutil.which("time") if Path("/usr/bin/time").exists() else None
    full = ["/usr/bin/time", "-f", "KDFIX-RSS-KB=%M", *argv] if gnu_time else argv
    began = time.monotonic()
    proc = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - began
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {err[-2000:]}")
    rss_kb = float(usage.ru_maxrss)
    for line in err.splitlines():
        if line.startswith("KDFIX-RSS-KB="):
            rss_kb = float(line.split("=", 1)[1])
    cpu = usage.ru_utime + usage.ru_stime  # the process and the children it waited for (helpers, time's child)
    return {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "rss_mib": round(rss_kb / 1024, 1)}


def run_repeated(
    argv: list[str], repeat: int, env: dict[str, str] | None = None, *, output: Path | None = None
) -> dict[str, float]:
    """``repeat`` runs of a command (``output`` removed before each): best and median wall seconds, median CPU
    seconds, highest peak RSS."""
    runs = []
    for _ in range(repeat):
        if output is not None:
            output.unlink(missing_ok=True)
        runs.append(run_measured(argv, env))
    walls = sorted(r["seconds"] for r in runs)
    return {
        "seconds": walls[0],
        "median_seconds": round(statistics.median(walls), 3),
        "cpu_seconds": round(statistics.median(r["cpu_seconds"] for r in runs), 3),
        "rss_mib": max(r["rss_mib"] for r in runs),
        "runs": repeat,
    }


def tree_env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def boot_guest(memory_mib: int) -> tuple[Path, float | None]:
    sys.path.insert(0, str(ROOT))
    from tests.oracle import guest

    dumps = guest.cached_guest_dumps(guest.GuestConfig("seabios", kaslr=True, vmcoreinfo=True, memory_mib=memory_mib))
    return Path(dumps.elf), dumps.dump_seconds.get("kdump-zlib")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("elf", nargs="?", type=Path)
    parser.add_argument("--boot", type=int, metavar="MIB", help="boot a guest of MIB MiB and use its ELF dump")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command (best and median reported)")
    parser.add_argument("--baseline", type=Path, help="another kdfix tree (git archive of an older commit) to time")
    args = parser.parse_args()
    qemu_seconds = None
    if args.boot:
        elf, qemu_seconds = boot_guest(args.boot)
    elif args.elf:
        elf = args.elf
    else:
        parser.error("give an ELF path or --boot MIB")
    # -P: the tree is the one on PYTHONPATH; plain -m would import the kdfix in the caller's directory
    kdfix = [sys.executable, "-P", "-m", "kdfix"]
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
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    trees = {"": ROOT} | ({"baseline_": args.baseline.resolve()} if args.baseline else {})
    with tempfile.TemporaryDirectory(prefix="kdfix-bench-") as tmp:
        out = Path(tmp)
        for prefix, tree in trees.items():
            for workers in (1, 2):
                name = f"{prefix}w{workers}"
                argv = [*kdfix, "convert", str(elf), "-o", str(out / name), "--to", "kdump", "--compress", "zlib",
                        "--workers", str(workers)]  # fmt: skip
                m = run_repeated(argv, args.repeat, tree_env(tree))
                m["mib_per_s"] = round(mem_bytes / 2**20 / m["seconds"], 1)
                m["output_bytes"] = (out / name).stat().st_size
                result[f"{prefix}kdfix_workers_{workers}"] = m
        result["workers_identical"] = (out / "w1").read_bytes() == (out / "w2").read_bytes()
        if args.baseline:
            result["baseline_identical"] = (out / "w1").read_bytes() == (out / "baseline_w1").read_bytes()
        if shutil.which("makedumpfile"):
            m = run_measured([*kdfix, "convert", str(elf), "-o", str(out / "k.elf"), "--to", "elf"], tree_env(ROOT))
            result["kdfix_elf_rewrite"] = m
            mk = run_repeated(["makedumpfile", "-c", "-d", "0", str(out / "k.elf"), str(out / "mk")], args.repeat,
                              output=out / "mk")  # fmt: skip
            mk["output_bytes"] = (out / "mk").stat().st_size
            result["makedumpfile_c_d0"] = mk
            result["ratio_vs_makedumpfile"] = round(result["kdfix_workers_1"]["seconds"] / mk["seconds"], 2)  # type: ignore[index]
    if qemu_seconds:
        result["qemu_kdump_zlib_seconds"] = qemu_seconds
        result["ratio_vs_qemu"] = round(result["kdfix_workers_1"]["seconds"] / qemu_seconds, 2)  # type: ignore[index]
        result["ratio_vs_qemu_2_workers"] = round(result["kdfix_workers_2"]["seconds"] / qemu_seconds, 2)  # type: ignore[index]
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
