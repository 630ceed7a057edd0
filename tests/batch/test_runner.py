"""kdfix.batch.runner on synthetic archives: fixes as `kdfix fix` would, report = journal, resume, shards, safety."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from kdfix import open_dump
from kdfix.batch import parse_shard, read_report, run_batch, runner
from kdfix.errors import KdfixError
from kdfix.fix.journal import undo
from tests.batch.synthetic import Templates, build_archive, put

DUMPS = {"case-001/vmcore", "case-002/2024/x/dump.bin", "case-002/flat-stream", "case-003/already-fine",
         "case-003/elfcore", "case-004/part-c", "case-005/truncated", "weird name (copy)/a b"}  # fmt: skip
EXPECTED = {
    "case-001/vmcore": "fixed",
    "case-001/notes.txt": "skipped",
    "case-002/2024/x/dump.bin": "fixed",
    "case-002/flat-stream": "fixed",
    "case-003/already-fine": "ok",
    "case-003/elfcore": "ok",
    "case-004/part-c": "fixed",
    "case-005/truncated": "failed",
    "case-005/prog": "skipped",
    "weird name (copy)/a b": "fixed",
}
SPLIT = ("case-004/part-c", "case-004/part-a", "case-004/part-b")


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def header_phys_bases(root: Path) -> dict[str, int]:
    """phys_base of every kdump-family dump under root, as the reader sees it (split set: every part)."""
    out = {}
    for rel in DUMPS - {"case-005/truncated", "case-003/elfcore", "case-004/part-c"}:
        with open_dump(root / rel) as d:
            out[rel] = d.kdump.phys_base
    with open_dump(*(root / p for p in SPLIT)) as d:
        for rel, part in zip(SPLIT, d.split.parts, strict=True):
            out[rel] = part.phys_base
    return out


def statuses(report: Path) -> dict[str, str]:
    return {k: v["status"] for k, v in read_report(report).items()}


@pytest.fixture
def archive(tmp_path: Path, templates: Templates) -> Path:
    root = tmp_path / "archive"
    build_archive(root, templates)
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_out_dir_fixes_every_dump_and_keeps_originals(
    archive: Path, tmp_path: Path, templates: Templates, workers: int
) -> None:
    """Every dump is fixed into the mirrored tree (header phys_base = truth), originals are byte-identical,
    the report has one line per file with the right status, and the truncated dump does not stop the batch."""
    before = tree_digest(archive)
    out = tmp_path / "out"
    result = run_batch([archive], out_dir=out, workers=workers)
    assert tree_digest(archive) == before
    assert statuses(out / "kdfix-batch-report.jsonl") == EXPECTED
    assert result.exit_code == 1 and result.summary.failed == 1
    assert set(header_phys_bases(out).values()) == {templates.phys_base}
    assert set(header_phys_bases(archive).values()) != {templates.phys_base}
    lines = (out / "kdfix-batch-report.jsonl").read_text().splitlines()
    assert len(lines) == len(EXPECTED)
    fixed = json.loads(next(line for line in lines if '"case-001/vmcore"' in line))
    assert fixed["edits"][0]["field"] == "sub_header.phys_base" and fixed["error"] is None
    assert fixed["size_bytes"] == templates.broken.stat().st_size and fixed["seconds"] >= 0
    failed = read_report(out / "kdfix-batch-report.jsonl")["case-005/truncated"]
    assert "end past the end of the file" in failed["error"]
    assert not list(out.rglob("*.kdfix-tmp"))


def test_resume_does_no_work(archive: Path, tmp_path: Path) -> None:
    """A second run with --resume finds every file in the report and processes none."""
    out = tmp_path / "out"
    run_batch([archive], out_dir=out, workers=1)
    report = out / "kdfix-batch-report.jsonl"
    text = report.read_text()
    again = run_batch([archive], out_dir=out, workers=1, resume=True)
    assert again.outcomes == [] and again.summary.resumed == len(EXPECTED)
    assert report.read_text() == text
    assert again.exit_code == 1 and again.summary.resumed_failed == 1  # the truncated dump failed before


def test_resume_after_cut_report_redoes_only_the_rest(archive: Path, tmp_path: Path) -> None:
    """A report cut mid-line (a kill) is repaired; resume redoes exactly the files without a complete line."""
    out = tmp_path / "out"
    run_batch([archive], out_dir=out, workers=1)
    report = out / "kdfix-batch-report.jsonl"
    lines = report.read_text().splitlines(keepends=True)
    report.write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2])
    kept = {json.loads(line)["path"] for line in lines[:4]}
    again = run_batch([archive], out_dir=out, workers=2, resume=True)
    assert {o.path for o in again.outcomes} == set(EXPECTED) - kept
    assert [json.loads(line)["path"] for line in report.read_text().splitlines()][:4] == [
        json.loads(line)["path"] for line in lines[:4]
    ]
    assert statuses(report) == EXPECTED


def test_in_place_with_undo(archive: Path, templates: Templates, tmp_path: Path) -> None:
    """--in-place patches the dumps (journal beside each); undo restores them; a rerun finds all fine."""
    before = tree_digest(archive)
    report = tmp_path / "r.jsonl"
    result = run_batch([archive], in_place=True, workers=2, report=report)
    assert statuses(report) == EXPECTED and result.exit_code == 1
    assert set(header_phys_bases(archive).values()) == {templates.phys_base}
    assert (archive / "case-001/vmcore.kdfix-undo").is_file()
    again = run_batch([archive], in_place=True, workers=1, report=tmp_path / "r2.jsonl")
    assert {o.path: o.status for o in again.outcomes if o.status == "fixed"} == {}
    assert {o.path for o in again.outcomes} == set(EXPECTED)  # undo journals beside their dumps are not listed
    for rel in [r for r, s in EXPECTED.items() if s == "fixed" and r != "case-004/part-c"] + list(SPLIT):
        undo(archive / rel)
    assert tree_digest(archive) == before


def test_dry_run_writes_nothing(archive: Path, tmp_path: Path) -> None:
    """--dry-run reports what would be fixed and writes no dump and no output tree."""
    before = tree_digest(archive)
    result = run_batch([archive], in_place=True, dry_run=True, workers=2)
    assert {o.path: o.status for o in result.outcomes} == EXPECTED
    assert all(o.dry_run for o in result.outcomes if o.kind)
    assert tree_digest(archive) == before
    run_batch([archive], out_dir=tmp_path / "out", dry_run=True, workers=1)
    assert not (tmp_path / "out").exists()


def test_shards_partition_the_archive(archive: Path, tmp_path: Path) -> None:
    """Three shard runs cover every file exactly once; each shard is the same on a rerun."""
    seen: list[str] = []
    for k in (1, 2, 3):
        r = run_batch([archive], out_dir=tmp_path / "out", workers=1, shard=parse_shard(f"{k}/3"))
        again = run_batch([archive], out_dir=tmp_path / "dry", workers=1, shard=parse_shard(f"{k}/3"), dry_run=True)
        assert {o.path for o in r.outcomes} == {o.path for o in again.outcomes}
        assert (tmp_path / "out" / f"kdfix-batch-report.{k}-of-3.jsonl").is_file()
        seen += [o.path for o in r.outcomes]
    assert sorted(seen) == sorted(EXPECTED)


def test_exit_codes(tmp_path: Path, templates: Templates) -> None:
    """0 when nothing failed; 1 when a file failed; bad arguments raise (the CLI's exit 2)."""
    put(templates.broken, tmp_path / "in" / "a")
    put(templates.good, tmp_path / "in" / "b")
    assert run_batch([tmp_path / "in"], out_dir=tmp_path / "o", workers=1).exit_code == 0
    (tmp_path / "in" / "c").write_bytes(templates.broken.read_bytes()[:5000])
    assert run_batch([tmp_path / "in"], out_dir=tmp_path / "o2", workers=1).exit_code == 1
    with pytest.raises(KdfixError):
        run_batch([tmp_path / "in"], workers=1)  # neither --out-dir nor --in-place
    with pytest.raises(KdfixError):
        run_batch([tmp_path / "in"], out_dir=tmp_path / "in", workers=1)  # outputs would replace originals
    with pytest.raises(KdfixError):
        run_batch([tmp_path / "in"], in_place=True, resume=True)  # nothing to resume from
    with pytest.raises(KdfixError):
        run_batch([tmp_path / "missing"], in_place=True)


def test_never_writes_through_symlink_in_out_dir(tmp_path: Path, templates: Templates) -> None:
    """An out-dir folder that is a symlink elsewhere makes that file fail; nothing is written through it."""
    put(templates.broken, tmp_path / "in" / "sub" / "d")
    put(templates.broken, tmp_path / "in" / "e")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    os.symlink(elsewhere, tmp_path / "out" / "sub")
    os.symlink(elsewhere / "e", tmp_path / "out" / "e")
    result = run_batch([tmp_path / "in"], out_dir=tmp_path / "out", workers=1)
    assert {o.path: o.status for o in result.outcomes} == {"sub/d": "failed", "e": "failed"}
    assert "symlink" in result.outcomes[0].error and list(elsewhere.iterdir()) == []


def test_out_dir_inside_root_is_not_walked(tmp_path: Path, templates: Templates) -> None:
    """An --out-dir inside the walked root is pruned, so a rerun does not pick up outputs (or the report)."""
    put(templates.broken, tmp_path / "a")
    run_batch([tmp_path], out_dir=tmp_path / "fixed", workers=1)
    again = run_batch([tmp_path], out_dir=tmp_path / "fixed", workers=1)
    assert [o.path for o in again.outcomes] == ["a"]


def _interrupted_after_a_temp_file(job: runner.Job) -> runner.Outcome:
    """A job that Ctrl-C stops where atomic_output cannot clean up: its temp file exists, nothing removes it."""
    assert job.outputs is not None
    out = Path(job.outputs[0])
    (out.parent / f".{out.name}.x1y2z3.kdfix-tmp").write_bytes(b"partial")
    raise KeyboardInterrupt


@pytest.mark.parametrize("workers", [1, 2])
def test_an_interrupted_job_leaves_no_temp_file(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Invariant: after Ctrl-C, whatever point of a job it stopped, no temp file of that job is left in the out-dir
    (the batch removes them as it does a killed worker's); --resume redoes the job."""
    monkeypatch.setattr(runner, "process", _interrupted_after_a_temp_file)
    out = tmp_path / "out"
    run_batch([archive], out_dir=out, workers=workers)
    assert not list(out.rglob("*.kdfix-tmp"))
