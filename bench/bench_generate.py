"""Benchmark: ``kdfix generate --style qemu`` vs QEMU's own ``dump-guest-memory`` kdump-zlib of the same guest.

Usage: python bench/bench_generate.py [--memory-mib 512] [--firmware-only] [--repeat 2] [--keep DIR]

Boots a Linux guest with the oracle guest helper (tests/oracle/guest.py) when it can, else a firmware-only guest
(mostly zero pages: a weak benchmark, reported as such). QEMU dumps ELF from the stopped guest; then, --repeat
times and interleaved (the machine may be shared), QEMU's kdump-zlib dump is timed and kdfix regenerates kdump-zlib
from the ELF with 1 and 2 workers, each in a child process. Best and median wall times, median CPU seconds (QEMU's
from /proc, kdfix's including its helper processes), peak RSS of the kdfix main process and the load average are
reported; every output is compared byte for byte with QEMU's. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_CHILD = """
import json, sys, time
from kdfix.generate.qemu import generate_qemu
def hwm_kib():  # VmHWM of this process (ru_maxrss would include the parent's size carried across exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
import resource
def cpu():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
import inspect
# the guest runs under qemu-system-x86_64, also when it is stopped in real mode (an EM_386 dump); older trees
# (--baseline) have no qemu_target and always wrote "x86_64"
target = {"qemu_target": "x86_64"} if "qemu_target" in inspect.signature(generate_qemu).parameters else {}
c0, t0 = cpu(), time.perf_counter()
r = generate_qemu(sys.argv[1], sys.argv[2], workers=int(sys.argv[3]), **target)
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_seconds": cpu() - c0, "pages": r.pages,
                  "zero_pages": r.zero_pages,
                  "peak_rss_mib": hwm_kib() / 1024}))
"""


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process in seconds (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(dump: Callable[[Path, str], float], pid: int) -> Callable[[Path, str], tuple[float, float]]:
    def run(path: Path, fmt: str) -> tuple[float, float]:
        c0 = _proc_cpu(pid)
        wall = dump(path, fmt)
        return wall, _proc_cpu(pid) - c0

    return run


class _FirmwareGuest:
    """A firmware-only q35 guest stopped at reset (-S), driven over QMP."""

    def __init__(self, memory_mib: int, work: Path) -> None:
        sock = work / "q.sock"
        argv = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", str(memory_mib), "-smp", "2", "-S"]
        argv += ["-nodefaults", "-display", "none", "-qmp", f"unix:{sock},server=on,wait=off"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.sock = socket.socket(socket.AF_UNIX)
        for _ in range(400):
            try:
                self.sock.connect(str(sock))
                break
            except OSError:
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")
        self._reply()
        self.execute("qmp_capabilities")
        out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
        self.version = out.split()[3]

    def _reply(self) -> dict:
        while True:
            msg = json.loads(self.file.readline())
            if "event" not in msg:
                return msg

    def execute(self, cmd: str, **args: object) -> None:
        self.file.write(json.dumps({"execute": cmd, "arguments": args}).encode() + b"\n")
        self.file.flush()
        msg = self._reply()
        if "return" not in msg:
            raise RuntimeError(f"QMP {cmd}: {msg}")

    def dump(self, path: Path, fmt: str) -> float:
        t0 = time.perf_counter()
        self.execute("dump-guest-memory", paging=False, protocol=f"file:{path}", format=fmt)
        return time.perf_counter() - t0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.execute("quit")
        self.proc.wait(timeout=30)


@contextlib.contextmanager
def _guest(
    memory_mib: int, work: Path, firmware_only: bool
) -> Iterator[tuple[str, str, Callable[[Path, str], tuple[float, float]]]]:
    """Yield (label, QEMU version, dump(path, fmt) -> (seconds, QEMU CPU seconds)) for a stopped guest."""
    if not firmware_only:
        try:
            from tests.oracle import guest as g

            kernel = g.kernel_artifacts()
            config = g.GuestConfig("seabios", kaslr=True, vmcoreinfo=False, memory_mib=memory_mib)
            initrd = g.build_initramfs(kernel, work / "initramfs.cpio.gz", marker="KDFIX-BENCH", load_fw_cfg=False)
            serial = work / "serial.log"
            argv = g._guest_argv(config, kernel, initrd, serial, work)
        except Exception as exc:  # no kernel download, helper missing …
            print(f"bench: Linux guest unavailable ({exc}); using a firmware-only guest", file=sys.stderr)
        else:
            with g._qemu(argv, work) as (proc, qmp):
                g._wait_ready(proc, serial, g.BOOT_TIMEOUT_S)
                qmp.execute("stop")
                yield "linux", g.qemu_version(), _timed(lambda path, fmt: g._dump(qmp, path, fmt), proc.pid)
            return
    fw = _FirmwareGuest(memory_mib, work)
    try:
        yield "firmware-only", fw.version, _timed(fw.dump, fw.proc.pid)
    finally:
        fw.close()


def _run_kdfix(elf: Path, out: Path, workers: int, root: Path = ROOT) -> dict:
    """One generation in a child process (its own peak RSS); seconds exclude interpreter start-up.

    ``root`` is the kdfix tree to import (the child runs there, so its ``kdfix`` package comes first).
    """
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, str(elf), str(out), str(workers)],
        capture_output=True,
        text=True,
        cwd=root,
        check=True,
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--memory-mib", type=int, default=512)
    ap.add_argument("--firmware-only", action="store_true", help="skip the Linux guest (mostly zero pages)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="keep the dumps in this directory")
    ap.add_argument(
        "--baseline", type=Path, help="another kdfix tree (git archive of an older commit) timed in the same runs"
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kdfix-bench-gen-"))
    try:
        with _guest(args.memory_mib, work, args.firmware_only) as (label, version, dump):
            elf, kdump = work / "vmcore.elf", work / "vmcore.kdump-zlib"
            dump(elf, "elf")
            os.sync()
            load_start = os.getloadavg()
            variants = [("kdfix", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
            runs: dict[str, list[dict]] = {"qemu": []}
            identical = True
            pages = zero_pages = 0
            for _ in range(args.repeat):  # interleaved: the machine may be shared
                kdump.unlink(missing_ok=True)
                wall, cpu = dump(kdump, "kdump-zlib")
                runs["qemu"].append({"seconds": wall, "cpu_seconds": cpu, "load_1m": os.getloadavg()[0]})
                reference = kdump.read_bytes()
                for name, root in variants:
                    for workers in (1, 2):
                        out = work / f"{name}-w{workers}.kdump-zlib"
                        info = _run_kdfix(elf, out, workers, root)
                        identical &= out.read_bytes() == reference
                        out.unlink()
                        pages, zero_pages = info["pages"], info["zero_pages"]
                        runs.setdefault(f"{name}_w{workers}", []).append(info | {"load_1m": os.getloadavg()[0]})
        best = {k: min(r["seconds"] for r in v) for k, v in runs.items()}
        med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
        line = {
            "bench": "generate --style qemu",
            "guest": label,
            "memory_mib": args.memory_mib,
            "qemu_version": version,
            "pages": pages,
            "zero_pages": zero_pages,
            "identical": identical,
            "repeat": args.repeat,
            "cpus": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        }
        for k, v in runs.items():
            line[f"{k}_best_s"] = round(best[k], 3)
            line[f"{k}_median_s"] = round(med[k], 3)
            line[f"{k}_cpu_median_s"] = round(statistics.median(r["cpu_seconds"] for r in v), 3)
            line[f"{k}_runs_s"] = [round(r["seconds"], 3) for r in v]
        for k in runs:
            if k == "qemu":
                continue
            line[f"{k}_peak_rss_mib"] = round(max(r["peak_rss_mib"] for r in runs[k]), 1)
            line[f"{k}_speedup_vs_qemu_best"] = round(best["qemu"] / best[k], 2)
            line[f"{k}_speedup_vs_qemu_median"] = round(med["qemu"] / med[k], 2)
        print(json.dumps(line))
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(elf, args.keep / "vmcore.elf")
            shutil.copyfile(kdump, args.keep / "vmcore.kdump-zlib")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
