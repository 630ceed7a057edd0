"""Benchmark every kdfix command as a whole process on a large real guest, beside the peers, in the same run.

    python bench/bench_scale.py                                   # 8 GiB guest, 1 GiB random + 256 MiB text
    python bench/bench_scale.py --memory-mib 512 --random-mib 0 --text-mib 0 --repeat 3
    python bench/bench_scale.py --memory-mib 128 --random-mib 16 --text-mib 4   # the default's mix at 1/64 size
    python bench/bench_scale.py --baseline /tmp/old               # also time another kdfix tree, interleaved
    python bench/bench_scale.py --keep DIR / --from-dir DIR       # keep the dumps / reuse them (no QEMU timing)

Boots a SeaBIOS+KASLR guest without -device vmcoreinfo (tests/oracle/guest.py; TCG allocates guest RAM lazily,
so the guest's /init fills ``--random-mib`` of tmpfs with random bytes and ``--text-mib`` with decimal text), stops
it and has QEMU dump ELF once. Then ``--repeat`` rounds, interleaved because the machine may be shared: QEMU's own
kdump-zlib dump of the stopped guest (timed; its CPU from /proc), and for each kdfix tree every command as a whole
process (``python -m kdfix``, start-up included; its bytecode compiled once beforehand, as an installed kdfix
has it): generate --style qemu (1 and 2 workers, compared byte for byte with QEMU's dump), verify (1 and 2
workers), detect, fix -o (VMCOREINFO recovered from memory), convert to zstd, convert --no-flat; beside them
drgn reading every dumped page, makedumpfile -R, and a bare loop that preads and inflates every page of the kdump
file (the C-speed floor of anything that reads every page). Wall seconds (best, median), CPU seconds (median,
children included), peak RSS (GNU time's %M) and the load average go into one JSON line, with the ratios the bars
are stated in.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_convert import run_measured  # noqa: E402

# The bare floor: pread and inflate every page of a KDUMP file (descriptor table position given by the parent).
_INFLATE = """
import os, struct, sys, zlib
path, fmt = sys.argv[1], sys.argv[4]
data_offset, count, zlib_flag = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
fd = os.open(path, os.O_RDONLY)
desc = struct.Struct(fmt)
pread, decompress = os.pread, zlib.decompress
done = 0
while done < count:
    n = min(4096, count - done)
    raw = pread(fd, desc.size * n, data_offset + desc.size * done)
    for offset, size, flags, _ in desc.iter_unpack(raw):
        data = pread(fd, size, offset)
        if flags & zlib_flag:
            decompress(data)
    done += n
"""

# drgn reading every dumped page by physical address (a minimal VMCOREINFO when the dump has none).
_DRGN = """
import json, sys, drgn
path, runs, page_size = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3])
plat = drgn.Platform(drgn.Architecture.X86_64, drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN)
try:
    prog = drgn.Program(plat)
    prog.set_core_dump(path)
except Exception:
    prog = drgn.Program(plat, vmcoreinfo=sys.argv[4].encode())
    prog.set_core_dump(path)
read = prog.read
for start, end in runs:
    for pfn in range(start, end):
        read(pfn * page_size, page_size, True)
"""
_MIN_VMCOREINFO = (
    "OSRELEASE=0.0.0-bench\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff82000000\n"
    "SYMBOL(_stext)=ffffffff81000000\nNUMBER(pgtable_l5_enabled)=0\nNUMBER(phys_base)=0\nKERNELOFFSET=0\n"
)


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _guest(args: argparse.Namespace, work: Path) -> Iterator[Callable[[Path, str], dict[str, float]]]:
    """Boot the guest, stop it, and yield dump(path, fmt) -> {seconds, cpu_seconds} of QEMU's own dump."""
    from tests.oracle import guest as g

    kernel = g.kernel_artifacts()
    config = g.GuestConfig("seabios", kaslr=True, vmcoreinfo=False, memory_mib=args.memory_mib)
    initrd = g.build_initramfs(kernel, work / "initramfs.cpio.gz", marker="KDFIX-BENCH", load_fw_cfg=False,
                               random_mib=args.random_mib, text_mib=args.text_mib)  # fmt: skip
    serial = work / "serial.log"
    argv = g._guest_argv(config, kernel, initrd, serial, work)
    # TCG: up to ~10 min per GiB of /dev/urandom on a busy 2-core machine, plus the boot of a large guest
    timeout = g.BOOT_TIMEOUT_S + 600 * (args.random_mib + args.text_mib) / 1024 + args.memory_mib / 32
    with g._qemu(argv, work) as (proc, qmp):
        began = time.monotonic()
        g._wait_ready(proc, serial, timeout)
        print(f"bench: guest ready after {time.monotonic() - began:.0f} s", file=sys.stderr)
        qmp.execute("stop")

        def dump(path: Path, fmt: str) -> dict[str, float]:
            c0 = _proc_cpu(proc.pid)
            seconds = g._dump(qmp, path, fmt)
            return {"seconds": round(seconds, 3), "cpu_seconds": round(_proc_cpu(proc.pid) - c0, 3)}

        yield dump


def _installed_env(tree: Path, pycache: Path) -> dict[str, str]:
    """The environment a tree's commands run in, as users run an installed kdfix: its bytecode compiled once
    (into ``pycache``, outside the tree), whatever PYTHONDONTWRITEBYTECODE the caller has, so no timed run
    compiles the sources again."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {"PYTHONPATH": str(tree), "PYTHONPYCACHEPREFIX": str(pycache)}
    if not pycache.exists():
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "kdfix")], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    return env


def _summary(runs: list[dict[str, float]]) -> dict[str, float]:
    walls = sorted(r["seconds"] for r in runs)
    out = {"seconds": walls[0], "median_seconds": round(statistics.median(walls), 3)}
    out["cpu_seconds"] = round(statistics.median(r["cpu_seconds"] for r in runs), 3)
    if any("rss_mib" in r for r in runs):
        out["rss_mib"] = max(r.get("rss_mib", 0.0) for r in runs)
    out["runs"] = len(runs)
    return out


def _layout(path: Path) -> tuple[int, int, str, int, list[tuple[int, int]], int]:
    """(descriptor table offset, descriptors, struct format, zlib flag, dumped pfn runs, page size) of a dump."""
    from kdfix import open_dump
    from kdfix.format.constants import DumpFlag
    from kdfix.format.kdump import PAGE_DESC

    with open_dump(path) as dump:
        k = dump.kdump
        assert k is not None
        runs = list(dump.memory.dumped.iter_runs())
        fmt = PAGE_DESC.bind(k.abi).struct.format
        return k.data_offset, k.num_dumped, fmt, int(DumpFlag.COMPRESSED_ZLIB), runs, k.block_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory-mib", type=int, default=8192)
    ap.add_argument("--random-mib", type=int, default=1024)
    ap.add_argument("--text-mib", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--baseline", type=Path, help="another kdfix tree (git archive of an older commit), interleaved")
    ap.add_argument("--keep", type=Path, help="keep vmcore.elf and vmcore.kdump-zlib in this directory")
    ap.add_argument("--from-dir", type=Path, help="reuse a --keep directory: no boot, no QEMU timing")
    ap.add_argument("--only", help="comma-separated command names to time (default: all)")
    ap.add_argument(
        "--workdir", type=Path, help="scratch directory (default: a temporary one; needs about 3 times the dump)"
    )
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None

    work = Path(tempfile.mkdtemp(prefix="kdfix-bench-scale-", dir=args.workdir))
    result: dict[str, object] = {"bench": "scale", "memory_mib": args.memory_mib, "random_mib": args.random_mib,
                                 "text_mib": args.text_mib, "cpus": os.cpu_count(), "repeat": args.repeat}  # fmt: skip
    try:
        with contextlib.ExitStack() as stack:
            if args.from_dir:
                elf, flat = args.from_dir / "vmcore.elf", args.from_dir / "vmcore.kdump-zlib"
                qemu_dump = None
            else:
                qemu_dump = stack.enter_context(_guest(args, work))
                elf, flat = work / "vmcore.elf", work / "vmcore.kdump-zlib"
                result["qemu_elf_dump"] = qemu_dump(elf, "elf")
                result["qemu_kdump_zlib_first"] = qemu_dump(flat, "kdump-zlib")
                os.sync()
            kdump = work / "vmcore.kdump"
            with open(flat, "rb") as src:
                subprocess.run(["makedumpfile", "-R", str(kdump)], stdin=src, stdout=subprocess.DEVNULL, check=True)
            data_offset, count, fmt, zlib_flag, runs, page_size = _layout(kdump)
            runs_file = work / "runs.json"
            runs_file.write_text(json.dumps(runs))
            result |= {"elf_bytes": elf.stat().st_size, "kdump_zlib_bytes": flat.stat().st_size, "pages": count}
            result["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]

            trees = [("kdfix", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
            samples: dict[str, list[dict[str, float]]] = {}
            identical: dict[str, bool] = {}
            out = work / "out"

            def timed(name: str, argv: list[str], env: dict[str, str] | None = None, **kw: object) -> None:
                out.unlink(missing_ok=True)  # also when skipped: no later comparison reads another command's output
                if only is not None and name.split(":", 1)[-1] not in only:
                    return
                m = run_measured(argv, env)
                m["load_1m"] = round(os.getloadavg()[0], 2)
                samples.setdefault(name, []).append(m)
                print(f"bench: {name} {m}", file=sys.stderr)

            peer_reference = work / "qemu-round.kdump-zlib"
            for _round in range(args.repeat):
                if qemu_dump is not None and (only is None or "qemu" in only):
                    peer_reference.unlink(missing_ok=True)
                    m = qemu_dump(peer_reference, "kdump-zlib") | {"load_1m": round(os.getloadavg()[0], 2)}
                    samples.setdefault("qemu_kdump_zlib", []).append(m)
                    identical["qemu_rounds"] = identical.get("qemu_rounds", True) and filecmp.cmp(
                        peer_reference, flat, shallow=False
                    )
                    peer_reference.unlink()
                for prefix, tree in trees:
                    env = _installed_env(tree, work / f"pycache-{prefix}")
                    # -P: the tree is the one on PYTHONPATH; plain -m would import the kdfix in the caller's directory
                    kd = [sys.executable, "-P", "-m", "kdfix"]
                    for w in (1, 2):
                        name = f"{prefix}:generate_w{w}"
                        timed(name, [*kd, "generate", "--style", "qemu", "--from", str(elf), "-o", str(out),
                                     "--workers", str(w)], env)  # fmt: skip
                        if out.exists():
                            identical[name] = identical.get(name, True) and filecmp.cmp(out, flat, shallow=False)
                    for w in (1, 2):
                        timed(f"{prefix}:verify_w{w}", [*kd, "verify", str(flat), "--workers", str(w)], env)
                    timed(f"{prefix}:detect", [*kd, "detect", str(flat)], env)
                    timed(f"{prefix}:fix", [*kd, "fix", str(flat), "-o", str(out)], env)
                    timed(f"{prefix}:convert_zstd", [*kd, "convert", str(flat), "-o", str(out), "--compress", "zstd"],
                          env)  # fmt: skip
                    timed(f"{prefix}:convert_no_flat", [*kd, "convert", str(flat), "-o", str(out), "--no-flat"], env)
                    if out.exists() and (only is None or "convert_no_flat" in only):
                        identical[f"{prefix}:convert_no_flat_vs_makedumpfile_R"] = filecmp.cmp(
                            out, kdump, shallow=False
                        )
                timed("peer:drgn", [sys.executable, "-c", _DRGN, str(flat), str(runs_file), str(page_size),
                                    _MIN_VMCOREINFO])  # fmt: skip
                timed("peer:inflate", [sys.executable, "-c", _INFLATE, str(kdump), str(data_offset), str(count), fmt,
                                       str(zlib_flag)])  # fmt: skip
                timed("peer:makedumpfile_R", ["sh", "-c", 'makedumpfile -R "$1" < "$2"', "sh", str(out), str(flat)])
            out.unlink(missing_ok=True)
            if args.keep and not args.from_dir:
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(elf, args.keep / "vmcore.elf")
                shutil.copyfile(flat, args.keep / "vmcore.kdump-zlib")
        summary = {name: _summary(runs) for name, runs in samples.items()}
        result["commands"] = summary
        result["identical"] = identical
        result["ratios"] = _ratios(summary, [p for p, _ in trees])
        result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        result["loads_1m"] = sorted({r["load_1m"] for runs in samples.values() for r in runs})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


def _ratios(s: dict[str, dict[str, float]], prefixes: list[str]) -> dict[str, float]:
    """The bars' figures: speed-ups over the peer (> 1 is faster) and cost ratios (< 1 is cheaper)."""
    out: dict[str, float] = {}

    def put(key: str, num: str, den: str, field: str = "seconds") -> None:
        if num in s and den in s and s[den][field]:
            out[key] = round(s[num][field] / s[den][field], 2)
            if field == "seconds":
                out[key + "_median"] = round(s[num]["median_seconds"] / s[den]["median_seconds"], 2)

    for p in prefixes:
        for w in (1, 2):
            put(f"{p}:generate_w{w}_speedup_vs_qemu", "qemu_kdump_zlib", f"{p}:generate_w{w}")
            put(f"{p}:verify_w{w}_speedup_vs_drgn", "peer:drgn", f"{p}:verify_w{w}")
            put(f"{p}:verify_w{w}_cpu_vs_inflate", f"{p}:verify_w{w}", "peer:inflate", "cpu_seconds")
        put(f"{p}:fix_vs_inflate", f"{p}:fix", "peer:inflate")
        put(f"{p}:detect_cpu_vs_fix", f"{p}:detect", f"{p}:fix", "cpu_seconds")
        put(f"{p}:convert_no_flat_vs_makedumpfile_R", f"{p}:convert_no_flat", "peer:makedumpfile_R")
    return out


if __name__ == "__main__":
    main()
