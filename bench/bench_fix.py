"""Benchmark ``kdfix fix --in-place``: bytes written and time; O(1) in the dump size; recovery vs inflating.

Usage: ``python bench/bench_fix.py [--memory 160M] [--fill 0.3] [--runs 5] [--real DUMP]...``.
Builds two synthetic QEMU-style dumps (``build_linux_image``): one carrying VMCOREINFO (QEMU's misparsed
phys_base), one without
(VMCOREINFO must be recovered from memory). Prints one JSON line:

- ``with_vmcoreinfo``: in-place fix of the dump, and of the same dump followed by a 32 GiB hole (sparse file):
  median seconds, bytes written (FixResult.bytes_written and the process's /proc/self/io wchar, journal included);
- ``recover``: in-place fix of the dump without VMCOREINFO vs inflating every page of it (``iter_pages``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdfix.fix import fix_dump
from kdfix.fix.journal import undo
from kdfix.generate.synthetic import build_linux_image
from kdfix.read.probe import open_dump
from kdfix.write import write_kdump

HOLE = 32 << 30
MiB = 1 << 20


def _wchar() -> int:
    with open("/proc/self/io") as fh:
        for line in fh:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def _fix_runs(path: Path, runs: int) -> dict:
    times, written, wchar = [], [], []
    for _ in range(runs):
        w0 = _wchar()
        began = time.perf_counter()
        result = fix_dump(path, in_place=True)
        times.append(time.perf_counter() - began)
        wchar.append(_wchar() - w0)
        written.append(result.bytes_written)
        assert result.status == "fixed", result.messages
        undo(path)
    return {
        "seconds_median": round(statistics.median(times), 4),
        "seconds_min": round(min(times), 4),
        "bytes_written": max(written),
        "wchar_incl_journal": max(wchar),
        "file_size": os.path.getsize(path),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--memory", default="160M")
    ap.add_argument("--fill", type=float, default=0.3)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--real", action="append", default=[], help="Also time recovery on a copy of this dump.")
    args = ap.parse_args()
    memory_size = _size(args.memory)
    layout = {"memory_size": memory_size, "phys_base": -40 * MiB, "kaslr_offset": 60 * MiB, "seed": 7,
              "filler_fraction": args.fill, "cpus": 2}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="kdfix-bench-fix-") as tmp:
        d = Path(tmp)
        with_vmci = d / "with.kdump"
        model, memory, _ = build_linux_image(vmcoreinfo_in_notes=True, qemu_header_bug=True, **layout)
        write_kdump(with_vmci, model, memory, codec="zlib", phys_base_from_vmcoreinfo=False)
        without = d / "without.kdump"
        model, memory, _ = build_linux_image(vmcoreinfo_in_notes=False, **layout)
        write_kdump(without, model, memory, codec="zlib", phys_base_from_vmcoreinfo=False)
        del model, memory

        plain = _fix_runs(with_vmci, args.runs)
        holed = d / "holed.kdump"
        shutil.copyfile(with_vmci, holed)
        os.truncate(holed, os.path.getsize(holed) + HOLE)
        sparse = _fix_runs(holed, args.runs)

        recover = _fix_runs(without, max(1, args.runs // 2))
        with open_dump(without) as dump:
            began = time.perf_counter()
            pages = sum(1 for _ in dump.memory.iter_pages())
            inflate = time.perf_counter() - began
        real = []
        for src in args.real:
            copy = d / "real"
            shutil.copyfile(src, copy)
            copy.chmod(0o600)
            fixed = _fix_runs(copy, max(1, args.runs // 2))
            with open_dump(copy) as dump:
                began = time.perf_counter()
                sum(1 for _ in dump.memory.iter_pages())
                real_inflate = time.perf_counter() - began
            ratio = round(fixed["seconds_median"] / real_inflate, 3)
            real.append({"path": src, "fix": fixed, "inflate_seconds": round(real_inflate, 4), "ratio": ratio})
            copy.unlink()
    out = {
        "bench": "fix",
        "memory": memory_size,
        "with_vmcoreinfo": plain,
        "with_vmcoreinfo_plus_32GiB_hole": sparse,
        "hole_time_ratio": round(sparse["seconds_median"] / plain["seconds_median"], 3),
        "recover": recover,
        "inflate_every_page_seconds": round(inflate, 4),
        "inflated_pages": pages,
        "recover_vs_inflate_ratio": round(recover["seconds_median"] / inflate, 3),
        "real": real,
        "under_64KiB": plain["wchar_incl_journal"] < 64 * 1024 and sparse["wchar_incl_journal"] < 64 * 1024,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
