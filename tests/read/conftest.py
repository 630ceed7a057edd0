"""Fixtures for reader tests: real QEMU dumps of a stopped firmware-only guest, made once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.read.qemu_quick import QuickDumps, make_quick_dumps, qemu_available


def _need(tool_ok: bool, reason: str) -> None:
    if not tool_ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (required in CI)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def quick_dumps(tmp_path_factory: pytest.TempPathFactory) -> QuickDumps:
    """ELF + kdump-zlib of the same stopped q35 guest (16 MiB, 2 vCPUs)."""
    _need(qemu_available(), "qemu-system-x86_64 not installed")
    return make_quick_dumps(tmp_path_factory.mktemp("qemu"), mem_mib=16, smp=2)


@pytest.fixture(scope="session")
def reassembled(quick_dumps: QuickDumps, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``makedumpfile -R`` reassembly of the QEMU flattened kdump-zlib file."""
    _need(shutil.which("makedumpfile") is not None, "makedumpfile not installed")
    out = tmp_path_factory.mktemp("reassembled") / "guest.kdump"
    with open(quick_dumps.kdump_zlib, "rb") as stream:
        subprocess.run(["makedumpfile", "-R", str(out)], stdin=stream, check=True, capture_output=True, timeout=120)
    return out
