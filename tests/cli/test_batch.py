"""`kdfix batch` CLI: exit codes, --json summary, usage errors, and Ctrl-C / SIGKILL in a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdfix.batch import read_report
from kdfix.cli import app
from tests.batch.synthetic import Templates, make_templates, put

runner = CliRunner()


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    return make_templates(tmp_path_factory.mktemp("batch-cli-templates"))


def small_archive(root: Path, t: Templates) -> None:
    put(t.broken, root / "a" / "vmcore")
    put(t.good, root / "b" / "vmcore")
    (root / "readme").write_text("hello\n")


def test_json_summary_and_exit_0(tmp_path: Path, templates: Templates) -> None:
    """--json prints counts per status; nothing failed → exit 0."""
    small_archive(tmp_path / "in", templates)
    res = runner.invoke(app, ["batch", str(tmp_path / "in"), "--out-dir", str(tmp_path / "out"), "--workers", "1",
                              "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["counts"] == {"fixed": 1, "ok": 1, "skipped": 1, "failed": 0}
    assert data["report"] == str(tmp_path / "out" / "kdfix-batch-report.jsonl")


def test_table_and_exit_1_on_failure(tmp_path: Path, templates: Templates) -> None:
    """A failed file gives exit 1 and the table names it with its reason."""
    small_archive(tmp_path / "in", templates)
    (tmp_path / "in" / "cut").write_bytes(templates.broken.read_bytes()[:9000])
    report = tmp_path / "r.jsonl"
    res = runner.invoke(app, ["batch", str(tmp_path / "in"), "--in-place", "--report", str(report)])
    assert res.exit_code == 1, res.output
    assert "failed: cut:" in res.stdout and "fixed" in res.stdout
    assert {k: v["status"] for k, v in read_report(report).items()}["cut"] == "failed"


@pytest.mark.parametrize(
    "args",
    [
        [],  # neither --out-dir nor --in-place
        ["--in-place", "--out-dir", "X"],
        ["--in-place", "--shard", "0/3"],
        ["--in-place", "--resume"],
        ["--in-place", "--workers", "0"],
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, templates: Templates, args: list[str]) -> None:
    """The batch itself cannot run → exit 2 and no file touched."""
    put(templates.broken, tmp_path / "in" / "d")
    before = (tmp_path / "in" / "d").read_bytes()
    res = runner.invoke(app, ["batch", str(tmp_path / "in"), *[a.replace("X", str(tmp_path / "o")) for a in args]])
    assert res.exit_code == 2, res.output
    assert (tmp_path / "in" / "d").read_bytes() == before


def test_missing_path_exit_2(tmp_path: Path) -> None:
    res = runner.invoke(app, ["batch", str(tmp_path / "nope"), "--in-place"])
    assert res.exit_code == 2 and "no such file" in res.stderr


def big_archive(root: Path, t: Templates, n: int, size: int) -> None:
    """n dumps needing a header fix, each extended with a sparse hole so that copying one takes a while."""
    for i in range(n):
        p = put(t.broken, root / f"d{i // 4}" / f"dump{i}")
        os.truncate(p, size)


def _batch_proc(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-c", "from kdfix.cli import main; main()", "batch", *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})


def _wait_for_lines(report: Path, n: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if report.exists() and report.read_text().count("\n") >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"report never reached {n} lines (exit {proc.poll()})")


def _valid_lines(report: Path) -> list[dict[str, object]]:
    text = report.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_ctrl_c_leaves_no_temp_files_and_resumes(tmp_path: Path, templates: Templates) -> None:
    """SIGINT mid-batch: exit 130, no temp file, a valid report; --resume then finishes the rest."""
    big_archive(tmp_path / "in", templates, 10, 256 << 20)
    out, report = tmp_path / "out", tmp_path / "r.jsonl"
    proc = _batch_proc([str(tmp_path / "in"), "--out-dir", str(out), "--workers", "2", "--report", str(report)])
    _wait_for_lines(report, 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    assert list(out.rglob("*.kdfix-tmp")) == []
    first = _valid_lines(report)
    assert 1 <= len(first) < 10
    proc = _batch_proc([str(tmp_path / "in"), "--out-dir", str(out), "--workers", "2", "--report", str(report),
                        "--resume"])  # fmt: skip
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    lines = _valid_lines(report)
    assert sorted(r["path"] for r in lines) == sorted(f"d{i // 4}/dump{i}" for i in range(10))
    assert {r["status"] for r in lines} == {"fixed"}


def test_killed_by_fault_checkpoint_resumes_to_same_state(tmp_path: Path, templates: Templates) -> None:
    """SIGKILL of the batch after its 3rd report line (kdfix.faults): resume gives the same report and outputs."""
    big_archive(tmp_path / "in", templates, 8, 64 << 20)
    out, report = tmp_path / "out", tmp_path / "r.jsonl"
    args = [str(tmp_path / "in"), "--in-place", "--workers", "2", "--report", str(report)]
    proc = _batch_proc(args, env={"KDFIX_FAULT": "batch.report.line:3=kill"})
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert len(_valid_lines(report)) == 3
    time.sleep(0.5)  # orphaned workers get SIGTERM from the kernel (PR_SET_PDEATHSIG) and finish their edit
    proc = _batch_proc([*args, "--resume"])
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    lines = _valid_lines(report)
    assert sorted(r["path"] for r in lines) == sorted(f"d{i // 4}/dump{i}" for i in range(8))
    assert {r["status"] for r in lines} <= {"fixed", "ok"}
    again = _batch_proc([str(tmp_path / "in"), "--in-place", "--workers", "1", "--report", str(tmp_path / "2.jsonl"),
                         "--json"])  # fmt: skip
    stdout, _ = again.communicate(timeout=120)
    assert json.loads(stdout)["counts"]["fixed"] == 0 and json.loads(stdout)["counts"]["ok"] == 8
    assert out.exists() is False


def test_dry_run_needs_neither_out_dir_nor_in_place(tmp_path: Path, templates: Templates) -> None:
    """``batch --dry-run`` diagnoses and plans without a destination, writes nothing (issue 14, item 9)."""
    small_archive(tmp_path / "in", templates)
    before = {p: p.read_bytes() for p in (tmp_path / "in").rglob("*") if p.is_file()}
    res = runner.invoke(app, ["batch", str(tmp_path / "in"), "--dry-run", "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["counts"] == {"fixed": 1, "ok": 1, "skipped": 1, "failed": 0}
    assert {p: p.read_bytes() for p in (tmp_path / "in").rglob("*") if p.is_file()} == before
