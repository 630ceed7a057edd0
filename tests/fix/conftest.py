"""Synthetic dumps for fix tests: a Linux-like x86_64 image written as QEMU would (no VMCOREINFO, phys_base 0)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from kdfix.generate.synthetic import build_linux_image
from kdfix.write import write_kdump

MiB = 1 << 20
LAYOUT = {"memory_size": 32 * MiB, "phys_base": -6 * MiB, "kaslr_offset": 10 * MiB, "seed": 3, "filler_fraction": 0.03}


def make_dump(path: Path, *, flat: bool = False, vmcoreinfo: bool = False, **layout: int) -> object:
    """Write a synthetic dump; returns the SyntheticTruth."""
    model, memory, truth = build_linux_image(vmcoreinfo_in_notes=vmcoreinfo, **(LAYOUT | layout))
    write_kdump(path, model, memory, codec="zlib", flat=flat, phys_base_from_vmcoreinfo=False)
    return truth


def file_state(path: Path) -> tuple[str, int, int]:
    """(sha256, size, mtime_ns) of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    st = os.stat(path)
    return h.hexdigest(), st.st_size, st.st_mtime_ns


@pytest.fixture(scope="session")
def synthetic_plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("fix") / "plain.kdump"
    return path, make_dump(path)


@pytest.fixture(scope="session")
def synthetic_flat(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("fix") / "dump.flat"
    return path, make_dump(path, flat=True)
