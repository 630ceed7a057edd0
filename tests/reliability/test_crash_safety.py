"""Crash safety by fault injection (kdfix.faults): kill -9 at every checkpoint, ENOSPC and EIO on write.

Invariant: after any kill the dump is byte-equal to the original, or to the finished result, or
``kdfix undo`` restores the original exactly; an -o target is its old content or the complete output.
An injected or real write error leaves the input intact and is reported on one stderr line (exit 2).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from kdfix.fix.journal import Journal, journal_path
from tests.reliability.conftest import run_kdfix, sha256

KILLED = -signal.SIGKILL


def _trace(tmp: Path, *args: object) -> list[str]:
    """Run a command with KDFIX_FAULT_TRACE and return the checkpoints it passed, in order."""
    trace = tmp / "trace.txt"
    trace.unlink(missing_ok=True)
    res = run_kdfix(*args, env={"KDFIX_FAULT_TRACE": str(trace)})
    assert res.code in (0, 1), res.stderr
    return trace.read_text().split() if trace.exists() else []


def _one_line_error(res: object, code: int = 2) -> None:
    assert res.code == code, (res.code, res.stderr)  # type: ignore[attr-defined]
    lines = res.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr  # type: ignore[attr-defined]


def _sample(n: int, at_most: int) -> list[int]:
    """Hit numbers 1..n, all of them or ``at_most`` spread evenly (first and last included)."""
    if n <= at_most:
        return list(range(1, n + 1))
    return sorted({1 + round(i * (n - 1) / (at_most - 1)) for i in range(at_most)})


def _fix_killed_at(tmp: Path, src: Path, k: int, hits: list[str], name: str) -> Path:
    """A fresh copy of ``src`` after ``kdfix fix --in-place`` was SIGKILLed at its ``k``-th checkpoint."""
    work = tmp / f"k{k}"
    work.mkdir()
    dump = work / name
    shutil.copyfile(src, dump)
    res = run_kdfix("fix", dump, "--in-place", env={"KDFIX_FAULT": f"*:{k}=kill"})
    assert res.code == KILLED, (k, hits[k - 1], res.code, res.stderr)
    return dump


# ---- in-place fix and undo -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "at_most"), [("plain", 64), ("flat", 8)])
def test_fix_in_place_killed_at_every_checkpoint(
    tmp_path: Path, fixable: dict[str, Path], kind: str, at_most: int
) -> None:
    """Kill -9 at each checkpoint of an in-place fix (flattened: a sample): original, finished, or undo restores."""
    src = fixable[kind]
    original = sha256(src)
    ref = tmp_path / "ref"
    shutil.copyfile(src, ref)
    hits = _trace(tmp_path, "fix", ref, "--in-place")
    assert "fix.journal_saved" in hits and hits.count("fix.patch") >= 2, hits
    finished = sha256(ref)
    assert finished != original
    outcomes = set()
    for k in _sample(len(hits), at_most):
        dump = _fix_killed_at(tmp_path, src, k, hits, "dump")
        now = sha256(dump)
        has_journal = os.path.exists(journal_path(dump))
        assert now in (original, finished) or has_journal, (k, hits[k - 1])
        if not has_journal:
            assert now == original, f"bytes changed without an undo record (killed at {hits[k - 1]})"
            outcomes.add("original")
            continue
        outcomes.add("finished" if now == finished else "original" if now == original else "partial")
        undo = run_kdfix("undo", dump)
        assert undo.code == 0, (k, hits[k - 1], undo.stderr)
        assert sha256(dump) == original, f"undo after a kill at {hits[k - 1]} did not restore the original"
        assert not os.path.exists(journal_path(dump))
    assert {"original", "partial", "finished"} <= outcomes, outcomes


def test_elf_fix_in_place_killed_at_every_checkpoint(tmp_path: Path) -> None:
    """Kill -9 at each checkpoint of an ELF rewritten in place: the dump is the original or the fixed file, no
    temp file survives a finished run, and where the original was kept, ``kdfix undo`` restores it exactly."""
    from kdfix.fix.journal import original_path
    from tests.fix.test_fix import _elf_without_vmcoreinfo

    src = _elf_without_vmcoreinfo(tmp_path / "src.elf")
    original = sha256(src)
    ref = tmp_path / "ref.elf"
    shutil.copyfile(src, ref)
    hits = _trace(tmp_path, "fix", ref, "--in-place")
    assert "journal.original_linked" in hits and "atomic.before_rename" in hits, hits
    finished = sha256(ref)
    assert finished != original
    outcomes = set()
    for k in range(1, len(hits) + 1):
        dump = _fix_killed_at(tmp_path, src, k, hits, "core.elf")
        now = sha256(dump)
        assert now in (original, finished), f"killed at {hits[k - 1]}: neither original nor fixed"
        outcomes.add("finished" if now == finished else "original")
        if os.path.exists(original_path(dump)):
            assert run_kdfix("undo", dump).code == 0
            assert sha256(dump) == original, f"undo after a kill at {hits[k - 1]} did not restore the original"
        else:
            assert now == original, f"replaced without keeping the original (killed at {hits[k - 1]})"
    assert outcomes == {"original", "finished"}, outcomes


def _copy_fixed(fixed: Path, dst: Path) -> Path:
    """A copy of a dump fixed in place with its journal, the journal re-addressed to the copy's inode."""
    shutil.copyfile(fixed, dst)
    record = json.loads(Path(journal_path(fixed)).read_text())
    st = dst.stat()
    record["device"], record["inode"] = st.st_dev, st.st_ino
    Path(journal_path(dst)).write_text(json.dumps(record))
    return dst


def test_undo_killed_at_every_checkpoint_then_rerun(tmp_path: Path, fixable: dict[str, Path]) -> None:
    """A killed undo can be run again and restores the original exactly."""
    src = fixable["plain"]
    original = sha256(src)
    fixed = tmp_path / "fixed"
    shutil.copyfile(src, fixed)
    assert run_kdfix("fix", fixed, "--in-place").code == 0
    probe = _copy_fixed(fixed, tmp_path / "probe")
    hits = _trace(tmp_path, "undo", probe)
    assert "undo.restore" in hits and sha256(probe) == original
    for k in _sample(len(hits), 6):
        dump = _copy_fixed(fixed, tmp_path / f"u{k}")
        res = run_kdfix("undo", dump, env={"KDFIX_FAULT": f"*:{k}=kill"})
        assert res.code == KILLED, (k, res.stderr)
        again = run_kdfix("undo", dump)
        assert again.code == 0, (k, hits[k - 1], again.stderr)
        assert sha256(dump) == original


def test_torn_patch_is_undone(tmp_path: Path, fixable: dict[str, Path]) -> None:
    """A kill inside one pwrite (half of its bytes new) is still undone exactly."""
    src = fixable["plain"]
    original = sha256(src)
    dump = tmp_path / "dump"
    shutil.copyfile(src, dump)
    res = run_kdfix("fix", dump, "--in-place", env={"KDFIX_FAULT": "fix.patch:3=kill"})
    assert res.code == KILLED
    writes = Journal.load(dump).writes
    torn = next(w for w in writes[2:] if len(w.new) >= 2)
    with open(dump, "r+b") as fh:
        fh.seek(torn.file_offset)
        fh.write(torn.new[: len(torn.new) // 2])
    assert run_kdfix("undo", dump).code == 0
    assert sha256(dump) == original


def test_undo_refuses_foreign_changes(tmp_path: Path, fixable: dict[str, Path]) -> None:
    """If a patched byte holds neither its original nor a fixed value, undo refuses (one line, exit 2)."""
    dump = tmp_path / "dump"
    shutil.copyfile(fixable["plain"], dump)
    assert run_kdfix("fix", dump, "--in-place").code == 0
    w = Journal.load(dump).writes[0]
    with open(dump, "r+b") as fh:
        fh.seek(w.file_offset)
        fh.write(bytes((b ^ 0x5A) if b not in (0x5A,) else 0x11 for b in w.new[:1]))
    if bytes(Path(dump).read_bytes()[w.file_offset : w.file_offset + 1]) in (w.old[:1], w.new[:1]):
        pytest.skip("the scribbled byte happens to equal the old or new value")
    _one_line_error(run_kdfix("undo", dump))


@pytest.mark.parametrize(
    ("fault", "journal_left"),
    [
        ("fix.patch:2=eio", False),
        ("fix.patch:4=enospc", False),
        ("fix.before_fsync=eio", False),
        ("journal.before_fsync=enospc", False),
        ("journal.before_rename=eio", False),
    ],
)
def test_fix_in_place_write_errors(tmp_path: Path, fixable: dict[str, Path], fault: str, journal_left: bool) -> None:
    """ENOSPC/EIO during an in-place fix: the original bytes are back, one stderr line, exit 2."""
    dump = tmp_path / "dump"
    shutil.copyfile(fixable["plain"], dump)
    original = sha256(dump)
    res = run_kdfix("fix", dump, "--in-place", env={"KDFIX_FAULT": fault})
    _one_line_error(res)
    assert sha256(dump) == original
    assert os.path.exists(journal_path(dump)) == journal_left
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".kdfix-undo.")], "temp journal left behind"


# ---- -o writes: convert, fix -o, generate --------------------------------------------------------------


def _check_killed_output(tmp_path: Path, args: list[object], target: Path, at_most: int) -> None:
    """Kill at sampled checkpoints of a command writing ``target``: it holds its old content or the full result."""
    hits = _trace(tmp_path, *args)
    assert "atomic.before_rename" in hits, hits
    complete = sha256(target)
    old = b"previous content of the target\n"
    ks = sorted(set(_sample(len(hits), at_most)) | {i + 1 for i, h in enumerate(hits) if h.startswith("atomic.")})
    for k in ks:
        target.write_bytes(old)
        res = run_kdfix(*args, env={"KDFIX_FAULT": f"*:{k}=kill"})
        assert res.code == KILLED, (k, hits[k - 1], res.stderr)
        now = target.read_bytes()
        assert now == old or sha256(target) == complete, f"partial target after a kill at {hits[k - 1]}"


def test_convert_output_killed(tmp_path: Path, seeds: dict[str, list[str]]) -> None:
    src = seeds["syn-none-kdump"][0]
    target = tmp_path / "out.flat"
    _check_killed_output(tmp_path, ["convert", src, "-o", target, "--flat"], target, at_most=10)


def test_fix_output_killed(tmp_path: Path, fixable: dict[str, Path]) -> None:
    target = tmp_path / "fixed"
    _check_killed_output(tmp_path, ["fix", fixable["plain"], "-o", target], target, at_most=8)


def test_generate_output_killed(tmp_path: Path) -> None:
    target = tmp_path / "gen.kdump"
    args: list[object] = ["generate", "--style", "linux", "--memory", "32M", "-o", target]
    _check_killed_output(tmp_path, args, target, at_most=6)


@pytest.mark.parametrize("fault", ["sink.write:3=enospc", "sink.write:1=eio", "atomic.before_fsync=eio"])
def test_convert_write_errors(tmp_path: Path, seeds: dict[str, list[str]], fault: str) -> None:
    """Injected ENOSPC/EIO while converting: input intact, old target intact, no temp file, one line, exit 2."""
    src = seeds["syn-zlib-kdump"][0]
    before = sha256(src)
    target = tmp_path / "out"
    target.write_bytes(b"old")
    res = run_kdfix("convert", src, "-o", target, "--compress", "none", env={"KDFIX_FAULT": fault})
    _one_line_error(res)
    assert sha256(src) == before and target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out"], os.listdir(tmp_path)


@contextlib.contextmanager
def _small_tmpfs(path: Path, size: str) -> object:
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_real_enospc_on_small_tmpfs(tmp_path: Path, fixable: dict[str, Path]) -> None:
    """A real full disk (256 KiB tmpfs): one-line error, exit 2, nothing left in the directory, input intact."""
    src = fixable["plain"]
    before = sha256(src)
    with _small_tmpfs(tmp_path / "small", "256k") as small:
        res = run_kdfix("convert", src, "-o", small / "out", "--compress", "none", "--flat")
        _one_line_error(res)
        assert "no space" in res.stderr.lower()
        assert os.listdir(small) == []
    assert sha256(src) == before


# ---- modes, read-only inputs ---------------------------------------------------------------------------


def test_read_only_input(tmp_path: Path, fixable: dict[str, Path]) -> None:
    """A 0400 dump (as QEMU creates them): -o works and keeps 0400; --in-place refuses, saying why."""
    dump = tmp_path / "ro.dump"
    shutil.copyfile(fixable["plain"], dump)
    dump.chmod(0o400)
    before = sha256(dump)
    res = run_kdfix("fix", dump, "--in-place")
    _one_line_error(res)
    assert "read-only" in res.stderr
    for args, out in (
        (["fix", dump, "-o", tmp_path / "fixed"], tmp_path / "fixed"),
        (["convert", dump, "-o", tmp_path / "conv", "--flat"], tmp_path / "conv"),
    ):
        res = run_kdfix(*args)
        assert res.code == 0, res.stderr
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o400
    assert sha256(dump) == before


def test_output_keeps_mode(tmp_path: Path, seeds: dict[str, list[str]]) -> None:
    src = tmp_path / "in"
    shutil.copyfile(seeds["syn-zlib-kdump"][0], src)
    src.chmod(0o640)
    assert run_kdfix("convert", src, "-o", tmp_path / "out", "--compress", "none").code == 0
    assert stat.S_IMODE(os.stat(tmp_path / "out").st_mode) == 0o640


# ---- batch ---------------------------------------------------------------------------------------------


def test_batch_in_place_killed(tmp_path: Path, fixable: dict[str, Path]) -> None:
    """A batch killed mid-way: every dump is original or undo restores it; a resumed batch finishes."""
    originals = {}
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(3):
        p = tree / f"d{i}.dump"
        shutil.copyfile(fixable["plain"], p)
        originals[p] = sha256(p)
    for fault in ("fix.patch:5=kill", "fix.after_fsync=kill", "journal.before_rename=kill"):
        for p in originals:
            shutil.copyfile(fixable["plain"], p)
            Path(journal_path(p)).unlink(missing_ok=True)
        res = run_kdfix("batch", tree, "--in-place", "--workers", "1", env={"KDFIX_FAULT": fault}, timeout=300)
        assert res.code == KILLED, (fault, res.stderr)  # one worker: the batch process itself is killed
        for p, want in originals.items():
            if os.path.exists(journal_path(p)):
                assert run_kdfix("undo", p).code == 0, fault
            assert sha256(p) == want, (fault, p)
    # Two workers: a worker killed at its second patch; the runner reports it and the dumps stay recoverable.
    res = run_kdfix("batch", tree, "--in-place", "--workers", "2", env={"KDFIX_FAULT": "fix.patch:2=kill"},
                    timeout=300)  # fmt: skip
    assert "Traceback" not in res.stderr and res.code in (1, 2), (res.code, res.stderr)
    for p, want in originals.items():
        if os.path.exists(journal_path(p)):
            assert run_kdfix("undo", p).code == 0
        assert sha256(p) == want, p
    res = run_kdfix("batch", tree, "--in-place", "--workers", "1", timeout=300)
    assert res.code == 0, res.stderr
    assert all(sha256(p) != want for p, want in originals.items())
