"""Fixtures of the reliability tests: seed dumps made once per session, a subprocess runner with limits."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.harness import QEMU_FIXTURES, REPO, fixture_bytes, synthetic_seeds

MEMORY_LIMIT = 1 << 30  # RLIMIT_AS of every CLI subprocess: an allocation sized by a hostile field fails
CLI_TIMEOUT = 60  # seconds; a hang is a failure


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    cpu_seconds: float = 0.0  # user + system time of the subprocess


def _limiter(memory: int, cpu_seconds: int | None) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if cpu_seconds is not None:  # past it the kernel kills the process (SIGXCPU, then SIGKILL)
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))

    return limit


def run_kdfix(
    *args: object,
    env: dict[str, str] | None = None,
    timeout: float = CLI_TIMEOUT,
    memory: int = MEMORY_LIMIT,
    cpu_seconds: int | None = None,
) -> Run:
    """``python -m kdfix.cli`` equivalent in a subprocess with an address-space limit (1 GiB unless
    ``memory``), optionally a CPU-time limit, and a timeout."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KDFIX_")}
    full_env.update(env or {})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-c", "from kdfix.cli import main; main()", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=REPO,  # ``python -c`` imports kdfix from the working directory first: this tree
        preexec_fn=_limiter(memory, cpu_seconds),
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return Run(proc.returncode, proc.stdout, proc.stderr, cpu)


def sha256(path: str | os.PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Seed dumps by name: writer-made (every container) and the committed QEMU fixtures."""
    tmp = tmp_path_factory.mktemp("seeds")
    out = synthetic_seeds(tmp / "syn")
    for name in QEMU_FIXTURES:
        out[name] = [str(fixture_bytes(name, tmp))]
    return out


@pytest.fixture(scope="session")
def fixable(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """QEMU-like synthetic dumps that ``kdfix fix`` changes (phys_base, utsname, VMCOREINFO): plain and flattened."""
    from tests.fix.conftest import make_dump

    tmp = tmp_path_factory.mktemp("fixable")
    out = {}
    for name, flat in (("plain", False), ("flat", True)):
        path = tmp / f"{name}.dump"
        make_dump(path, flat=flat)
        out[name] = path
    return out
