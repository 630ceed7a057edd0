"""Benchmark `kdfix batch --in-place` over N dumps that need only header fixes, each with a large sparse hole.

    python bench/bench_batch.py [DIR] [--count 1000] [--hole-gib 4] [--workers N]

Builds one synthetic dump whose header phys_base is QEMU's misparse (VMCOREINFO is right), copies it
``count`` times into nested folders, extends each copy with a sparse hole, then times the batch (a
subprocess running the real CLI). The baseline is the file-open cost alone: open + read the first 4 KiB of
each file. Prints one JSON line: files, apparent bytes, seconds, files/s, the batch/open-cost ratio, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kdfix.generate.synthetic import build_linux_image
from kdfix.write import write_kdump


def build(root: Path, count: int, hole: int) -> int:
    model, mem, _ = build_linux_image(memory_size=32 << 20, phys_base=0x200000, qemu_header_bug=True)
    template = root / "template.kdump"
    write_kdump(template, model, mem, phys_base_from_vmcoreinfo=False)
    size = template.stat().st_size + hole
    archive = root / "archive"
    for i in range(count):
        dst = archive / f"cust-{i % 37:02d}" / f"case-{i:04d}" / "vmcore"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, dst)
        os.truncate(dst, size)
    return size


def open_cost(archive: Path) -> float:
    began = time.perf_counter()
    for p in archive.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            os.pread(fd, 4096, 0)
            os.close(fd)
    return time.perf_counter() - began


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--hole-gib", type=float, default=4.0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="kdfix-bench-batch-"))
    size = build(root, args.count, int(args.hole_gib * (1 << 30)))
    archive = root / "archive"
    baseline = open_cost(archive)
    report = root / "report.jsonl"
    cmd = [sys.executable, "-c", "from kdfix.cli import main; main()", "batch", str(archive), "--in-place",
           "--workers", str(args.workers), "--report", str(report), "--json"]  # fmt: skip
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    summary = json.loads(proc.stdout) if proc.stdout.strip() else {}
    began = time.perf_counter()
    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, check=False)
    resume_seconds = time.perf_counter() - began
    print(
        json.dumps(
            {
                "bench": "batch --in-place",
                "files": args.count,
                "apparent_bytes_each": size,
                "apparent_bytes_total": size * args.count,
                "workers": args.workers,
                "exit_code": proc.returncode,
                "counts": summary.get("counts"),
                "seconds": round(seconds, 3),
                "files_per_second": round(args.count / seconds, 1),
                "apparent_gib_per_second": round(size * args.count / seconds / (1 << 30), 1),
                "open_read_4k_seconds": round(baseline, 3),
                "ratio_vs_open_cost": round(seconds / baseline, 1) if baseline else None,
                "resume_noop_seconds": round(resume_seconds, 3),
                "resume_exit_code": again.returncode,
                "peak_rss_children_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            }
        )
    )
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
