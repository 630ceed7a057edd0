"""Benchmark: ``kdfix dmesg``, ``triage`` and ``map`` on a real dump, dmesg against ``makedumpfile --dump-dmesg``
timed in the same run (on a fixed, plain KDUMP copy: makedumpfile needs VMCOREINFO); prints one JSON line.

Usage: ``python bench/bench_kernel.py DUMP [--runs 3] [--elf ELF]``, e.g. a QEMU kdump-zlib of a 128 MiB guest. The
kdfix times are those of the library calls on DUMP as given (VMCOREINFO from memory when it has none) and on the copy.
``page_pass_s`` is the struct page pass of ``convert --dump-level 31`` alone, ``convert_d31_s`` the whole conversion;
with ``--elf`` (QEMU's ELF of the same guest) ``makedumpfile -d 31`` of it, fixed, is timed as the peer.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdfix.fix import fix_dump
from kdfix.kernel.dmesg import dmesg
from kdfix.kernel.memmap import memory_map
from kdfix.kernel.pageflags import dump_exclusion
from kdfix.kernel.triage import triage
from kdfix.read.probe import open_dump
from kdfix.write.convert import convert


def _best(runs: int, func: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(runs):
        began = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - began)
    return round(best, 4)


def _page_pass(path: str) -> int:
    with open_dump(path) as dump:
        return dump_exclusion(dump, 31).struct_pages


def bench(path: str, runs: int, elf: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"bench": "kernel", "dump": os.path.basename(path), "size": os.path.getsize(path)}
    out["dmesg_s"] = _best(runs, lambda: dmesg(path))
    out["triage_s"] = _best(runs, lambda: triage(path))
    out["map_s"] = _best(runs, lambda: memory_map(path))
    out["struct_pages"] = _page_pass(path)
    out["page_pass_s"] = _best(runs, lambda: _page_pass(path))
    with tempfile.TemporaryDirectory() as tmp:
        d31 = Path(tmp) / "d31.kdump"

        def ours() -> None:
            d31.unlink(missing_ok=True)
            convert([path], d31, dump_level=31)

        out["convert_d31_s"] = _best(runs, ours)
        out["convert_d31_bytes"] = d31.stat().st_size
        if elf is not None and shutil.which("makedumpfile"):
            fixed = Path(tmp) / "fixed.elf"
            fix_dump(elf, output=fixed)
            mdf = Path(tmp) / "mdf31.kdump"

            def peer31() -> None:
                mdf.unlink(missing_ok=True)
                subprocess.run(["makedumpfile", "-c", "-d", "31", str(fixed), str(mdf)], check=True,
                               capture_output=True)  # fmt: skip

            out["makedumpfile_d31_s"] = _best(runs, peer31)
            out["makedumpfile_d31_bytes"] = mdf.stat().st_size
            out["convert_d31_vs_makedumpfile"] = round(out["convert_d31_s"] / out["makedumpfile_d31_s"], 2)
        plain = Path(tmp) / "plain.kdump"
        convert([path], plain, flat=False)
        plain.chmod(0o600)
        fix_dump(plain, in_place=True)
        out["dmesg_fixed_s"] = _best(runs, lambda: dmesg(plain))
        if shutil.which("makedumpfile"):
            log = Path(tmp) / "log"

            def peer() -> None:
                log.unlink(missing_ok=True)
                subprocess.run(["makedumpfile", "--dump-dmesg", str(plain), str(log)], check=True,
                               capture_output=True)  # fmt: skip

            out["makedumpfile_dump_dmesg_s"] = _best(runs, peer)
            out["dmesg_fixed_vs_makedumpfile"] = round(out["dmesg_fixed_s"] / out["makedumpfile_dump_dmesg_s"], 2)
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--elf", help="QEMU's ELF of the same guest: time makedumpfile -d 31 of it as the peer")
    args = parser.parse_args()
    print(json.dumps(bench(args.dump, args.runs, args.elf)))


if __name__ == "__main__":
    main()
