"""Several DUMP arguments: independent dumps are answered one by one (a JSON list), split parts are grouped by
content wherever they appear among the arguments, ``--split-set`` forces one set (issue 14, item 4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdfix.cli import app
from kdfix.cli.dumps import group_dumps
from kdfix.read.memory import DictMemory
from kdfix.read.probe import open_dump
from kdfix.write import write_kdump, write_split
from tests.read.conftest import sample_pages
from tests.read.test_kdump import VMCOREINFO, make_model

runner = CliRunner()


def run(*args: object):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Two independent dumps (different releases) and the two parts of a split set of a third."""
    out = {"a": tmp_path / "a.kdump", "b": tmp_path / "b.kdump"}
    memory = DictMemory(sample_pages(), max_pfn=0x2000)
    write_kdump(out["a"], make_model(), memory, codec="zlib")
    write_kdump(out["b"], make_model(tv_sec=1700000999), memory, codec="zstd")
    parts = [tmp_path / "s" / "part1", tmp_path / "s" / "part2"]
    parts[0].parent.mkdir()
    write_split(parts, make_model(tv_sec=1600000000), memory)
    out["s1"], out["s2"] = parts
    return out


def test_grouping_keeps_argument_order_and_finds_split_parts_anywhere(files: dict[str, Path]) -> None:
    a, b, s1, s2 = (str(files[k]) for k in ("a", "b", "s1", "s2"))
    assert group_dumps([a, b]) == [(a,), (b,)]
    assert group_dumps([s2, a, s1, b]) == [(s1, s2), (a,), (b,)]
    assert group_dumps([b, s2, a, s1]) == [(b,), (s1, s2), (a,)]
    assert group_dumps([a, b], split_set=True) == [(a, b)]
    assert group_dumps([a]) == [(a,)]
    lone = group_dumps([s2, a])
    assert lone == [(s2,), (a,)]  # a part without its partner stays one dump (the reader names the gap)


def test_info_of_two_dumps_is_a_list_in_argument_order(files: dict[str, Path]) -> None:
    result = run("info", files["b"], files["a"], "--json")
    assert result.exit_code == 0, result.output
    infos = json.loads(result.stdout)
    assert [i["path"] for i in infos] == [str(files["b"]), str(files["a"])]
    assert [i["compression"] for i in infos] == ["zstd", "zlib"]
    human = run("info", files["a"], files["b"])
    assert human.exit_code == 0 and human.stdout.count("\nheader\n") == 2
    assert f"{files['a']}:" in human.stdout and f"{files['b']}:" in human.stdout


def test_info_groups_interleaved_split_parts(files: dict[str, Path]) -> None:
    result = run("info", files["s2"], files["a"], files["s1"], "--json")
    assert result.exit_code == 0, result.output
    split, single = json.loads(result.stdout)
    assert split["format"] == "split" and split["paths"] == [str(files["s1"]), str(files["s2"])]
    assert single["format"] == "kdump" and single["paths"] == [str(files["a"])]


def test_split_set_forces_one_set_and_names_the_bad_part(files: dict[str, Path]) -> None:
    result = run("info", files["a"], files["b"], "--split-set")
    assert result.exit_code == 2 and "split" in result.stderr and "Traceback" not in result.output


def test_one_bad_file_does_not_hide_the_others(files: dict[str, Path], tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a dump at all" * 100)
    result = run("info", files["a"], junk, "--json")
    assert result.exit_code == 2
    good, bad = json.loads(result.stdout)
    assert good["format"] == "kdump" and bad["path"] == str(junk) and bad["exit_code"] == 2
    assert "not a KDUMP" in bad["error"] and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["verify", "notes", "vmcoreinfo", "detect"])
def test_read_commands_answer_per_dump(files: dict[str, Path], command: str) -> None:
    result = run(command, files["a"], files["s1"], files["b"], files["s2"], "--json")
    answers = json.loads(result.stdout)
    assert [x["paths"] for x in answers] == [[str(files["a"])], [str(files["s1"]), str(files["s2"])],
                                             [str(files["b"])]]  # fmt: skip
    if command == "verify":
        assert result.exit_code == 0 and all(x["ok"] for x in answers)
    if command == "vmcoreinfo":
        assert all(x["vmcoreinfo"] == VMCOREINFO.decode() for x in answers)


def test_vmcoreinfo_text_of_several_dumps_is_headed_by_file(files: dict[str, Path]) -> None:
    result = run("vmcoreinfo", files["a"], files["b"])
    assert result.exit_code == 0
    assert result.stdout.count(VMCOREINFO.decode().rstrip("\n")) == 2
    assert f"==> {files['a']} <==" in result.stdout and f"==> {files['b']} <==" in result.stdout


def test_fix_several_dumps_into_a_directory(tmp_path: Path, synthetic_plain, synthetic_flat) -> None:  # type: ignore[no-untyped-def]
    a, b = tmp_path / "in" / "one.kdump", tmp_path / "in" / "two.flat"
    a.parent.mkdir()
    shutil.copyfile(synthetic_plain[0], a)
    shutil.copyfile(synthetic_flat[0], b)
    out = tmp_path / "out"
    out.mkdir()
    result = run("fix", a, b, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout)
    assert [x["status"] for x in answers] == ["fixed", "fixed"]
    assert [x["outputs"] for x in answers] == [[str(out / a.name)], [str(out / b.name)]]
    for x in answers:
        with open_dump(x["output"]) as dump:
            assert dump.vmcoreinfo is not None
    not_dir = run("fix", a, b, "-o", out / "one.kdump")
    assert not_dir.exit_code == 2 and "existing directory" in not_dir.stderr


def test_fix_in_place_of_a_file_and_a_split_set(tmp_path: Path, files: dict[str, Path]) -> None:
    work = tmp_path / "work"
    shutil.copytree(files["s1"].parent, work)
    shutil.copyfile(files["a"], work / "a.kdump")
    result = run("fix", work / "part2", work / "a.kdump", work / "part1", "--in-place", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    split, single = json.loads(result.stdout)
    assert split["container"] == "split" and split["paths"] == [str(work / "part1"), str(work / "part2")]
    assert single["container"] == "kdump" and single["paths"] == [str(work / "a.kdump")]
