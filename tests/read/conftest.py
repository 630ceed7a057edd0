"""Fixtures for reader tests: committed QEMU fixtures, their ``makedumpfile -R`` reassembly, synthetic memory."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from kdfix.read.memory import DictMemory
from tests.oracle.fixtures import repo_fixture, require_tool


@pytest.fixture(scope="session")
def firmware_kdump() -> Path:
    """fixtures/firmware-16m.kdump-zlib: QEMU 7.2 flattened kdump-zlib, 2 vCPUs at reset (same guest as the ELF)."""
    return repo_fixture("firmware-16m.kdump-zlib")


def reassemble_with_makedumpfile(flat: Path, out: Path) -> Path:
    require_tool("makedumpfile")
    with open(flat, "rb") as stream:
        subprocess.run(["makedumpfile", "-R", str(out)], stdin=stream, check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def firmware_reassembled(firmware_kdump: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``makedumpfile -R`` of firmware_kdump."""
    return reassemble_with_makedumpfile(firmware_kdump, tmp_path_factory.mktemp("reassembled") / "firmware.kdump")


def sample_pages(seed: int = 1) -> dict[int, bytes]:
    """A few pages of each kind: compressible, random (stored raw), all-zero; with holes between them."""
    rng = random.Random(seed)
    pages: dict[int, bytes] = {}
    for pfn in (0, 1, 2, 5, 6, 7, 100, 101, 300, 4095, 4096, 4100):
        if pfn in (2, 101, 4096):
            pages[pfn] = bytes(4096)
        elif pfn in (7, 300):
            pages[pfn] = rng.randbytes(4096)
        else:
            pages[pfn] = rng.randbytes(64) * 64
    return pages


@pytest.fixture
def sample_memory() -> DictMemory:
    return DictMemory(sample_pages(), max_pfn=0x2000)
