"""Benchmark the command line's start-up: ``kdfix --version``, ``kdfix --help`` and ``kdfix info`` of a 40 MB dump.

Usage: ``python bench/bench_startup.py [--runs 10] [--dump DUMP]``. Each command runs as a fresh process
(``python -m kdfix``, as the ``kdfix`` script does) ``--runs`` times; the minimum wall time counts (the least
disturbed run). The peer, timed in the same run, is the interpreter itself: ``python -c pass``, the floor no
Python command line can go under. Without ``--dump`` a 40 MB dump is generated (``kdfix generate --memory 40M``,
then ``convert --dump-level 0 --compress none``). Bytecode is cached as in a user's install (a warm-up run
writes it, under a temporary ``PYTHONPYCACHEPREFIX``). Prints one JSON line: seconds per command, the ratio
to the peer, and the number of modules each command imported (``-X importtime``), the part kdfix controls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall(argv: list[str], runs: int, env: dict[str, str]) -> float:
    """The least wall time of ``runs`` runs of ``argv`` (each must exit 0)."""
    best = float("inf")
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        best = min(best, time.perf_counter() - began)
    return best


def imported(argv: list[str], env: dict[str, str]) -> int:
    """How many modules ``argv`` (a ``python`` command) imports."""
    proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, env=env)
    return sum(1 for line in proc.stderr.splitlines() if line.startswith("import time:") and "|" in line) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--dump", type=Path, help="the dump `kdfix info` reads (default: a generated 40 MB one)")
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        # as users run it: bytecode cached (a warm-up run writes it, outside the tree)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env |= {"PYTHONPATH": str(ROOT), "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache")}
        dump = args.dump
        if dump is None:
            dump = Path(tmp) / "vmcore"
            made = Path(tmp) / "generated"
            for argv in (
                ["generate", "-o", str(made), "--memory", "40M"],
                ["convert", str(made), "-o", str(dump), "--dump-level", "0", "--compress", "none"],
            ):
                subprocess.run([py, "-m", "kdfix", *argv], check=True, stdout=subprocess.DEVNULL, env=env)  # fmt: skip
        commands = {
            "peer_python_c_pass": [py, "-c", "pass"],
            "version": [py, "-m", "kdfix", "--version"],
            "help": [py, "-m", "kdfix", "--help"],
            "info_help": [py, "-m", "kdfix", "info", "--help"],
            "info": [py, "-m", "kdfix", "info", str(dump)],
        }
        for argv in commands.values():
            wall(argv, 1, env)
        seconds = {name: wall(argv, args.runs, env) for name, argv in commands.items()}
        modules = {name: imported(argv, env) for name, argv in commands.items()}
        peer = seconds["peer_python_c_pass"]
        print(json.dumps({
            "benchmark": "startup",
            "dump_bytes": dump.stat().st_size,
            "runs": args.runs,
            "load_average_1m": os.getloadavg()[0],
            "seconds": {k: round(v, 4) for k, v in seconds.items()},
            "ratio_to_peer": {k: round(v / peer, 2) for k, v in seconds.items() if k != "peer_python_c_pass"},
            "modules_imported": modules,
        }))  # fmt: skip


if __name__ == "__main__":
    main()
