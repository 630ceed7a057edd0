"""Benchmark: the VMCOREINFO page-head scan vs inflating every page of the same dump; prints one JSON line.

Usage: ``python bench/bench_scan.py [DUMP] [--memory 256M] [--fill 0.5]`` — without DUMP a synthetic
``--style linux`` dump (no VMCOREINFO note) is generated in a temporary directory first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdfix.detect.vmcoreinfo_scan import find_by_vmcoreinfo_scan, iter_vmcoreinfo_pages
from kdfix.read.probe import open_dump


def _best_of(runs: int, func):
    best, value = float("inf"), None
    for _ in range(runs):
        began = time.perf_counter()
        value = func()
        best = min(best, time.perf_counter() - began)
    return best, value


def bench(path: str, runs: int) -> dict:
    with open_dump(path) as dump:
        memory = dump.memory
        pages = memory.dumped.count()
        scan_s, hits = _best_of(runs, lambda: list(iter_vmcoreinfo_pages(memory)))
        find_s, cand = _best_of(runs, lambda: find_by_vmcoreinfo_scan(dump.model, memory))
        inflate_s, inflated = _best_of(runs, lambda: sum(1 for _ in memory.iter_pages()))
    size = os.path.getsize(path)
    return {
        "bench": "scan",
        "file": path,
        "file_bytes": size,
        "container": dump.container,
        "pages": pages,
        "hits": [{"paddr": h.pfn * memory.page_size, "form": h.form} for h in hits],
        "phys_base": None if cand is None else cand.phys_base,
        "scan_seconds": round(scan_s, 4),
        "scan_and_validate_seconds": round(find_s, 4),
        "inflate_all_seconds": round(inflate_s, 4),
        "inflated_pages": inflated,
        "speedup_vs_inflate": round(inflate_s / scan_s, 2) if scan_s else None,
        "scan_pages_per_second": round(pages / scan_s) if scan_s else None,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump", nargs="?")
    parser.add_argument("--memory", default="256M")
    parser.add_argument("--fill", type=float, default=0.5, help="fraction of non-zero pages in a generated dump")
    parser.add_argument("--codec", default="zlib")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.dump:
        print(json.dumps(bench(args.dump, args.runs)))
        return
    from kdfix.cli.generate import parse_size
    from kdfix.generate.synthetic import build_linux_image
    from kdfix.write import write_kdump

    model, memory, _ = build_linux_image(
        memory_size=parse_size(args.memory),
        cpus=2,
        phys_base=-0x32200000,
        kaslr_offset=0x35600000,
        vmcoreinfo_in_notes=False,
        filler_fraction=args.fill,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.kdump")
        write_kdump(path, model, memory, codec=args.codec, phys_base_from_vmcoreinfo=False)
        result = bench(path, args.runs)
        result["generated"] = {"memory": args.memory, "fill": args.fill, "codec": args.codec}
        print(json.dumps(result))


if __name__ == "__main__":
    main()
