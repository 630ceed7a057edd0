"""The README's library example runs as written, on a committed QEMU fixture."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import kdfix
from tests.oracle.fixtures import repo_fixture

README = Path(__file__).resolve().parents[1] / "README.md"


def library_example() -> str:
    section = README.read_text().split("## Library", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copyfile(repo_fixture("firmware-16m.kdump-zlib"), tmp_path / "vmcore")
    monkeypatch.chdir(tmp_path)
    exec(compile(library_example(), str(README), "exec"), {})
    with (
        kdfix.open_dump(tmp_path / "out.kdump") as out,
        kdfix.open_dump(repo_fixture("firmware-16m.kdump-zlib")) as src,
    ):
        assert out.compression == "zstd"
        assert out.memory.dumped == src.memory.dumped
        pfn = next(iter(src.memory.dumped.iter_set()))
        assert out.memory.page(pfn) == src.memory.page(pfn)
    assert os.path.exists(tmp_path / "vmcore")
