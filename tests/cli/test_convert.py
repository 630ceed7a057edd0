"""``kdfix convert`` through CliRunner: exit codes, --json, defaults keep the input, atomic output."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kdfix
from kdfix.cli import app
from kdfix.read.memory import DictMemory
from kdfix.write import write_kdump
from kdfix.write.convert import split_names
from tests import strategies as S
from tests.roundtrip import file_bytes

BS = 4096
runner = CliRunner()


@pytest.fixture
def memory() -> DictMemory:
    rnd = random.Random(11)
    pages = {pfn: (bytes(BS) if pfn % 3 == 0 else rnd.randbytes(BS) if pfn % 3 == 1 else bytes([pfn]) * BS)
             for pfn in list(range(20)) + list(range(100, 130))}  # fmt: skip
    return DictMemory(pages, max_pfn=200)


@pytest.fixture
def flat_dump(tmp_path: Path, memory: DictMemory) -> Path:
    path = tmp_path / "in.flat"
    write_kdump(path, S.drgn_model(dump_level=1), memory, codec="zlib", flat=True)
    path.chmod(0o440)
    return path


def _run(*args: str | os.PathLike[str]) -> tuple[int, str, str]:
    res = runner.invoke(app, ["convert", *map(str, args)])
    return res.exit_code, res.stdout, res.stderr if res.stderr_bytes is not None else ""


def test_json_summary_and_defaults_keep_container_and_codec(tmp_path: Path, flat_dump: Path) -> None:
    code, out, _ = _run(flat_dump, "-o", tmp_path / "out", "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["outputs"] == [str(tmp_path / "out")]
    assert (summary["container"], summary["codec"], summary["passthrough"]) == ("flattened", "zlib", True)
    assert summary["pages"] == 50 and summary["bytes"] == (tmp_path / "out").stat().st_size
    assert file_bytes(tmp_path / "out") == file_bytes(flat_dump)  # same container + codec: same bytes
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o440  # the input's mode


def test_no_flat_equals_reassembly(tmp_path: Path, flat_dump: Path) -> None:
    from kdfix.write import reassemble

    assert _run(flat_dump, "-o", tmp_path / "plain", "--no-flat")[0] == 0
    reassemble(flat_dump, tmp_path / "re")
    assert file_bytes(tmp_path / "plain") == file_bytes(tmp_path / "re")


@pytest.mark.parametrize("codec", S.available_codecs())
def test_codecs_split_join_and_elf_keep_pages(tmp_path: Path, flat_dump: Path, memory: DictMemory, codec: str) -> None:
    """--compress, --split N (OUT.1..OUT.N), joining the parts, and --to elf all keep every page."""
    assert _run(flat_dump, "-o", tmp_path / "s", "--compress", codec, "--split", "3")[0] == 0
    parts = split_names(tmp_path / "s", 3)
    assert all(Path(p).is_file() for p in parts)
    assert _run(*parts, "-o", tmp_path / "joined")[0] == 0
    assert _run(tmp_path / "joined", "-o", tmp_path / "e.elf", "--to", "elf")[0] == 0
    for path in ([tmp_path / "joined"], [tmp_path / "e.elf"], parts):
        with kdfix.open_dump(*path) as dump:
            assert dict(dump.memory.iter_pages()) == dict(memory.iter_pages())
    with kdfix.open_dump(tmp_path / "joined") as dump:
        assert dump.compression == codec and dump.container == "kdump"


def test_dump_level_one_on_elf_output_drops_zero_pages(tmp_path: Path, flat_dump: Path, memory: DictMemory) -> None:
    assert _run(flat_dump, "-o", tmp_path / "e", "--to", "elf", "--dump-level", "1")[0] == 0
    with kdfix.open_dump(tmp_path / "e") as dump:
        assert {p for p, _ in dump.memory.iter_pages()} == {p for p, d in memory.iter_pages() if any(d)}


@pytest.mark.parametrize(
    "args",
    [
        ["--dump-level", "31"],  # its VMCOREINFO describes no struct pages (SIZE(page), mem_section)
        ["--to", "elf", "--compress", "zlib"],
    ],
)
def test_unsupported_options_exit_2_with_one_line(tmp_path: Path, flat_dump: Path, args: list[str]) -> None:
    code, _out, err = _run(flat_dump, "-o", tmp_path / "x", *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("kdfix: ")
    assert not (tmp_path / "x").exists()


def test_bad_input_leaves_no_output_and_no_temp(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"KDUMP   " + bytes(100))
    code, _, err = _run(bad, "-o", tmp_path / "out")
    assert code == 2 and err.startswith("kdfix: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_failed_write_keeps_the_original_output(tmp_path: Path, flat_dump: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """ENOSPC during the write: one-line error, exit 2, previous OUT untouched, temp file removed."""
    import errno

    from kdfix.write import sink

    out = tmp_path / "out"
    out.write_bytes(b"previous")

    def full(*_a: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sink.os, "pwrite", full)
    monkeypatch.setattr(sink.os, "copy_file_range", full)  # a full disk refuses in-kernel copies too
    code, _, err = _run(flat_dump, "-o", out, "--no-flat")
    assert code == 2 and "No space left on device" in err
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.flat", "out"])
