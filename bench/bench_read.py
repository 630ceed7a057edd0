"""Benchmark: read every dumped page with kdfix (verify-equivalent) vs drgn on the same file.

Usage: python bench/bench_read.py FILE [--repeat N]. Prints one JSON line: seconds, pages/s, peak RSS, ratio.
Each tool runs in its own child process so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time

# notes-and-vmcoreinfo.md §4: enough for libkdumpfile to open and read physical memory.
_MIN_VMCOREINFO = (
    b"OSRELEASE=0.0.0-bench\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff82000000\n"
    b"SYMBOL(_stext)=ffffffff81000000\nNUMBER(pgtable_l5_enabled)=0\nNUMBER(phys_base)=0\nKERNELOFFSET=0\n"
)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _kdfix(path: str, q: mp.Queue) -> None:
    from kdfix import open_dump
    from kdfix.errors import KdfixError

    rss0 = _rss_mib()
    t0 = time.perf_counter()
    pages = bad = 0
    digest = 0
    with open_dump(path) as dump:
        if dump.kdump is not None:
            parts = dump.split.parts if dump.split is not None else (dump.kdump,)
            for part in parts:
                for _loc, page in part.iter_page_results():
                    pages += 1
                    if isinstance(page, KdfixError):
                        bad += 1
                    else:
                        digest ^= page[0]
        else:
            for _pfn, page in dump.memory.iter_pages():
                pages += 1
                digest ^= page[0]
    q.put({"seconds": time.perf_counter() - t0, "pages": pages, "bad": bad, "rss_start_mib": rss0,
           "peak_rss_mib": _rss_mib(), "digest": digest})  # fmt: skip


def _pfns(path: str) -> list[int]:
    from kdfix import open_dump

    with open_dump(path) as dump:
        bm = dump.memory.dumped
        return list(bm.iter_set())


def _drgn(path: str, pfns: list[int], page_size: int, q: mp.Queue) -> None:
    import drgn

    rss0 = _rss_mib()
    t0 = time.perf_counter()
    plat = drgn.Platform(drgn.Architecture.X86_64, drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    try:
        prog = drgn.Program(plat)
        prog.set_core_dump(path)
    except Exception:  # no VMCOREINFO in the dump: give drgn the minimum it needs for physical reads
        prog = drgn.Program(plat, vmcoreinfo=_MIN_VMCOREINFO)
        prog.set_core_dump(path)
    read = prog.read
    digest = 0
    bad = 0
    for pfn in pfns:
        try:
            digest ^= read(pfn * page_size, page_size, True)[0]
        except drgn.FaultError:
            bad += 1
    q.put({"seconds": time.perf_counter() - t0, "pages": len(pfns), "bad": bad, "rss_start_mib": rss0,
           "peak_rss_mib": _rss_mib(), "digest": digest})  # fmt: skip


def _run(target, *args) -> dict:  # type: ignore[no-untyped-def]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, q))
    proc.start()
    while True:
        try:
            result = q.get(timeout=1)
            break
        except Exception:
            if not proc.is_alive():
                raise RuntimeError(f"{target.__name__} failed (exit code {proc.exitcode})") from None
    proc.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("file")
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs per tool")
    ap.add_argument("--no-drgn", action="store_true")
    args = ap.parse_args()
    from kdfix import open_dump

    with open_dump(args.file) as dump:
        page_size = dump.memory.page_size
        container = dump.container
    pfns = _pfns(args.file)
    kd = min((_run(_kdfix, args.file) for _ in range(args.repeat)), key=lambda r: r["seconds"])
    out = {
        "file": args.file,
        "container": container,
        "pages": kd["pages"],
        "kdfix_seconds": round(kd["seconds"], 3),
        "kdfix_pages_per_s": round(kd["pages"] / kd["seconds"]),
        "kdfix_peak_rss_mib": round(kd["peak_rss_mib"], 1),
        "kdfix_bad_pages": kd["bad"],
    }
    if not args.no_drgn:
        try:
            dr = min((_run(_drgn, args.file, pfns, page_size) for _ in range(args.repeat)), key=lambda r: r["seconds"])
        except (ImportError, RuntimeError) as exc:
            out["drgn_error"] = str(exc)
            dr = None
        if dr is not None:
            out.update({
                "drgn_seconds": round(dr["seconds"], 3),
                "drgn_pages_per_s": round(dr["pages"] / dr["seconds"]),
                "drgn_peak_rss_mib": round(dr["peak_rss_mib"], 1),
                "drgn_bad_pages": dr["bad"],
                "ratio_drgn_over_kdfix": round(dr["seconds"] / kd["seconds"], 2),
                "same_digest": dr["digest"] == kd["digest"],
            })  # fmt: skip
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
