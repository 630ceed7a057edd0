"""kdfix.fix.fix_split_set and ``kdfix fix PART...``: a split set is diagnosed as one dump, every part gets the
same header edits, in place each part has its own undo journal, and undo restores every part byte for byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdfix import open_dump
from kdfix.cli import app
from kdfix.errors import KdfixError
from kdfix.fix import fix_split_set
from kdfix.fix.journal import journal_path, undo
from kdfix.generate.synthetic import build_linux_image
from kdfix.write import write_split
from tests.fix.conftest import file_state

MiB = 1 << 20
PHYS_BASE = 0x200000  # the header carries QEMU's hex misparse of it


@pytest.fixture(scope="module")
def split_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[Path, ...], int]:
    """Three parts of a split set whose main headers have the wrong phys_base, and the true phys_base."""
    model, memory, truth = build_linux_image(memory_size=32 * MiB, phys_base=PHYS_BASE, qemu_header_bug=True)
    assert model.phys_base != truth.phys_base
    d = tmp_path_factory.mktemp("split-fix")
    parts = tuple(d / f"vmcore.{i}" for i in (1, 2, 3))
    write_split(list(parts), model, memory, phys_base_from_vmcoreinfo=False)
    return parts, truth.phys_base


def copy_set(parts: tuple[Path, ...], into: Path) -> list[Path]:
    into.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(p, into / p.name)) for p in parts]


def part_phys_bases(parts: list[Path]) -> list[int]:
    with open_dump(*parts) as d:
        return [part.phys_base for part in d.split.parts]  # type: ignore[union-attr]


def test_in_place_fixes_every_part_and_undo_restores_each(tmp_path: Path, split_template) -> None:  # type: ignore[no-untyped-def]
    """In place: every part gets the true phys_base and a journal; undoing each part gives back the exact bytes."""
    template, phys_base = split_template
    parts = copy_set(template, tmp_path / "set")
    before = [file_state(p)[:2] for p in parts]
    result = fix_split_set(parts, in_place=True)
    assert result.status == "fixed" and result.container == "split"
    assert result.phys_base == f"{phys_base:#x}"
    assert part_phys_bases(parts) == [phys_base] * 3
    assert {e["file"] for e in result.edits} == {p.name for p in parts}
    assert all(e["field"] == "sub_header.phys_base" for e in result.edits)
    assert result.journals == [journal_path(p) for p in parts]
    assert result.outputs == [str(p) for p in parts] and result.bytes_written > 0
    assert fix_split_set(parts, in_place=True).status == "ok"  # nothing left to change
    for p in parts:
        undo(p)
        assert not Path(journal_path(p)).exists()
    assert [file_state(p)[:2] for p in parts] == before


def test_outputs_leave_the_parts_untouched(tmp_path: Path, split_template) -> None:  # type: ignore[no-untyped-def]
    """With outputs, the originals keep their bytes and each output part is fixed; dry run writes nothing."""
    template, phys_base = split_template
    parts = copy_set(template, tmp_path / "in")
    before = [file_state(p) for p in parts]
    outs = [tmp_path / "out" / p.name for p in parts]
    outs[0].parent.mkdir()
    dry = fix_split_set(parts, dry_run=True)
    assert dry.status == "fixed" and dry.edits and dry.outputs == [] and not any(o.exists() for o in outs)
    result = fix_split_set(parts, outputs=outs)
    assert result.status == "fixed" and result.outputs == [str(o) for o in outs]
    assert [file_state(p) for p in parts] == before
    assert part_phys_bases(outs) == [phys_base] * 3
    assert result.bytes_written >= sum(p.stat().st_size for p in parts)


def test_bad_arguments_are_refused(tmp_path: Path, split_template) -> None:  # type: ignore[no-untyped-def]
    """Exactly one of outputs / in_place, one output per part, never an output onto its own part."""
    template, _ = split_template
    parts = copy_set(template, tmp_path / "set")
    with pytest.raises(KdfixError, match="exactly one"):
        fix_split_set(parts)
    with pytest.raises(KdfixError, match="exactly one"):
        fix_split_set(parts, outputs=[tmp_path / "a", tmp_path / "b", tmp_path / "c"], in_place=True)
    with pytest.raises(KdfixError, match="3 parts"):
        fix_split_set(parts, outputs=[tmp_path / "a"])
    with pytest.raises(KdfixError, match="output is the input"):
        fix_split_set(parts, outputs=parts)
    with pytest.raises(KdfixError, match="not a split set"):
        fix_split_set(parts[:1], in_place=True)


runner = CliRunner()


def test_cli_in_place_json_then_undo_each_part(tmp_path: Path, split_template) -> None:  # type: ignore[no-untyped-def]
    """``kdfix fix P1 P2 P3 --in-place --json``, then ``kdfix undo`` of each part restores the exact bytes."""
    template, phys_base = split_template
    parts = copy_set(template, tmp_path / "set")
    before = [file_state(p)[:2] for p in parts]
    res = runner.invoke(app, ["fix", *map(str, parts), "--in-place", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["status"] == "fixed" and data["paths"] == [str(p) for p in parts]
    assert data["journals"] == [journal_path(p) for p in parts] and data["bytes_written"] > 0
    assert part_phys_bases(parts) == [phys_base] * 3
    for p in parts:
        assert runner.invoke(app, ["undo", str(p)]).exit_code == 0
    assert [file_state(p)[:2] for p in parts] == before


def test_cli_output_directory(tmp_path: Path, split_template) -> None:  # type: ignore[no-untyped-def]
    """``-o DIR`` writes DIR/<part name>; the summary prints each output's size; -o on a non-directory exits 2."""
    template, phys_base = split_template
    parts = copy_set(template, tmp_path / "set")
    out = tmp_path / "fixed"
    out.mkdir()
    res = runner.invoke(app, ["fix", *map(str, parts), "-o", str(out)])
    assert res.exit_code == 0, res.output
    outs = [out / p.name for p in parts]
    assert part_phys_bases(outs) == [phys_base] * 3
    for o in outs:
        assert f"written: {o} ({o.stat().st_size} bytes)" in res.stdout
    bad = runner.invoke(app, ["fix", *map(str, parts), "-o", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "existing directory" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
