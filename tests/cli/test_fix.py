"""``kdfix fix`` / ``kdfix undo`` through CliRunner: exit codes, --json, --dry-run, one-line errors."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

from typer.testing import CliRunner

from kdfix.cli import app
from tests.fix.conftest import file_state
from tests.oracle.fixtures import repo_fixture

runner = CliRunner()


def _run(*args: object) -> tuple[int, str, str]:
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, res.stdout, res.stderr if res.stderr_bytes is not None else ""


def test_fix_json_then_ok_then_undo(tmp_path: Path, synthetic_plain) -> None:  # type: ignore[no-untyped-def]
    src, truth = synthetic_plain
    path = tmp_path / "d"
    shutil.copyfile(src, path)
    before = file_state(path)
    code, out, _ = _run("fix", path, "--in-place", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["status"] == "fixed" and data["container"] == "kdump" and data["path"] == str(path)
    assert data["phys_base"] == f"{truth.phys_base:#x}" and data["output"] == str(path)
    assert {"field", "file_offset", "old", "new"} <= set(data["edits"][0])
    assert data["detect"]["confidence"] in ("high", "medium")
    code, out, _ = _run("fix", path, "--in-place", "--json")
    assert code == 0 and json.loads(out)["status"] == "ok" and json.loads(out)["edits"] == []
    code, out, _ = _run("undo", path)
    assert code == 0 and "restored" in out
    assert file_state(path)[:2] == before[:2]
    code, _, err = _run("undo", path)
    assert code == 2 and "no undo journal" in err and len(err.strip().splitlines()) == 1


def test_in_place_on_fixed_dump_says_nothing_to_fix_and_not_written(tmp_path: Path, synthetic_plain) -> None:  # type: ignore[no-untyped-def]
    """Fixing a fixed dump in place changes nothing and says so: no "written:" line for bytes never written."""
    path = tmp_path / "d"
    shutil.copyfile(synthetic_plain[0], path)
    assert _run("fix", path, "--in-place")[0] == 0
    state = file_state(path)
    code, out, _ = _run("fix", path, "--in-place")
    assert code == 0 and "nothing to fix" in out and "written:" not in out
    assert file_state(path) == state


def test_dry_run_prints_offsets_and_writes_nothing(tmp_path: Path, synthetic_flat) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "d"
    shutil.copyfile(synthetic_flat[0], path)
    state = file_state(path)
    code, out, _ = _run("fix", path, "--in-place", "--dry-run")
    assert code == 0 and "dry run" in out and "sub_header.phys_base @ 0x" in out and "→" in out
    assert file_state(path) == state


def test_usage_errors_and_read_only(tmp_path: Path, synthetic_plain) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "d"
    shutil.copyfile(synthetic_plain[0], path)
    path.chmod(0o400)
    assert _run("fix", path)[0] == 2  # neither -o nor --in-place
    assert _run("fix", path, "-o", tmp_path / "o", "--in-place")[0] == 2
    assert _run("fix", path, "-o", tmp_path / "o", "--set-flag", "bogus")[0] == 2
    code, _, err = _run("fix", path, "--in-place")
    assert code == 2 and "read-only" in err
    code, _, err = _run("fix", tmp_path / "missing", "-o", tmp_path / "o")
    assert code == 2


def test_undetermined_exits_1(tmp_path: Path) -> None:
    import dataclasses

    from kdfix.read.memory import DictMemory
    from kdfix.write import write_kdump
    from tests import strategies as S

    path = tmp_path / "empty"
    write_kdump(path, dataclasses.replace(S.drgn_model(), vmcoreinfo=None, notes=()),
                DictMemory({i: bytes([i]) * 4096 for i in range(32)}, max_pfn=32))  # fmt: skip
    code, out, _ = _run("fix", path, "-o", tmp_path / "o", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["status"] == "undetermined" and any("phys_base" in m for m in data["missing"])
    assert not (tmp_path / "o").exists()


def test_fix_output_summary_prints_the_output_size(tmp_path: Path, synthetic_plain) -> None:  # type: ignore[no-untyped-def]
    """``written: OUT (N bytes)`` gives the output file's size; --json keeps bytes_written (copy + patches)."""
    src, _ = synthetic_plain
    code, out, _ = _run("fix", src, "-o", tmp_path / "o")
    size = (tmp_path / "o").stat().st_size
    assert code == 0 and f"written: {tmp_path / 'o'} ({size} bytes)" in out
    code, out, _ = _run("fix", src, "-o", tmp_path / "o2", "--json")
    assert code == 0 and json.loads(out)["bytes_written"] > size  # the copy plus the patched bytes


def test_read_only_file_system_gets_its_own_message(tmp_path: Path, synthetic_plain, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A dump on a read-only mount is not told to chmod (issue 14, item 9): the file system is named."""
    path = tmp_path / "d"
    shutil.copyfile(synthetic_plain[0], path)
    real_statvfs = os.statvfs

    class ReadOnly:
        def __init__(self, st: os.statvfs_result) -> None:
            self._st = st
            self.f_flag = st.f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly(real_statvfs(p)))
    code, _, err = _run("fix", path, "--in-place")
    assert code == 2 and "file system is mounted read-only" in err and "chmod" not in err
    assert len(err.strip().splitlines()) == 1


def test_elf_fix_line_names_qemus_header_values(tmp_path: Path) -> None:
    """The old values read as old (issue 14, item 10): "(QEMU's header: e_phoff 192, ...; /proc/vmcore's: ...)"."""
    elf = tmp_path / "qemu.elf"
    with gzip.open(repo_fixture("firmware-16m-vmcoreinfo-note.elf.gz")) as fin:
        elf.write_bytes(fin.read())
    code, out, _ = _run("fix", elf, "-o", tmp_path / "out.elf", "--dry-run")
    assert code == 0, out
    assert "(QEMU's header: e_phoff 192, e_ehsize 8, e_shnum 2; /proc/vmcore's: e_phoff 64, e_ehsize 64" in out


def test_info_names_the_utsname_values_it_found() -> None:
    code, out, _ = _run("info", repo_fixture("firmware-16m.kdump-zlib"), "--json")
    assert code == 0
    finding = next(f for f in json.loads(out)["needs_fix"] if f.startswith("utsname is not sane"))
    assert "sysname ''" in finding and "release ''" in finding and "machine 'x86_64'" in finding
