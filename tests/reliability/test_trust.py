"""The trust cases, run as a user would (CLI subprocesses): owners, holes, locks, unfinished ELF fixes, honest
"fixed", disk-full messages, and kill -9 during convert, batch --out-dir and of one batch worker."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdfix.fix.journal import journal_path, original_path
from tests.reliability.conftest import REPO, run_kdfix, sha256

KILLED = -signal.SIGKILL
MiB = 1 << 20


def _one_line(res: object, code: int) -> str:
    assert res.code == code, (res.code, res.stdout, res.stderr)  # type: ignore[attr-defined]
    lines = res.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr  # type: ignore[attr-defined]
    return lines[0]


def _elf(tmp: Path) -> Path:
    from tests.fix.test_fix import _elf_without_vmcoreinfo

    return _elf_without_vmcoreinfo(tmp)


# ---- 3: owner, group, mode, xattrs and ACLs survive every rewrite ----------------------------------------


def _acl(uid: int) -> bytes:
    """A POSIX access ACL (the ``system.posix_acl_access`` xattr): owner rw, user ``uid`` r, group r, mask r."""
    undefined = 0xFFFFFFFF
    entries = [(0x01, 6, undefined), (0x02, 4, uid), (0x04, 4, undefined), (0x10, 4, undefined), (0x20, 0, undefined)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another owner needs root")
def test_rewrites_keep_owner_group_mode_and_xattrs(tmp_path: Path, fixable: dict[str, Path]) -> None:
    elf = _elf(tmp_path / "e.elf")
    plain = tmp_path / "k.dump"
    shutil.copyfile(fixable["plain"], plain)
    for src in (elf, plain):
        os.chown(src, 65534, 65534)
        os.chmod(src, 0o640)
        os.setxattr(src, "user.kdfix-test", b"kept")
        try:
            os.setxattr(src, "system.posix_acl_access", _acl(4321))
        except OSError:
            pytest.skip("this filesystem has no POSIX ACLs")
    cases = [(["fix", elf, "--in-place"], elf), (["fix", plain, "-o", tmp_path / "k.fixed"], tmp_path / "k.fixed"),
             (["convert", plain, "-o", tmp_path / "k.flat", "--flat"], tmp_path / "k.flat")]  # fmt: skip
    out_dir = tmp_path / "out"
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy2(plain, tree / "k.dump")
    os.chown(tree / "k.dump", 65534, 65534)
    cases.append((["batch", tree, "--out-dir", out_dir, "--workers", "1"], out_dir / "k.dump"))
    for args, out in cases:
        res = run_kdfix(*args)
        assert res.code == 0, (args, res.stderr)
        st = os.stat(out)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o640), (args, st)
        assert os.getxattr(out, "user.kdfix-test") == b"kept", args
        assert os.getxattr(out, "system.posix_acl_access") == _acl(4321), args


# ---- 4: holes stay holes, and time follows the data -------------------------------------------------------


def _sparse_dump(src: Path, dst: Path, hole: int) -> None:
    """``src`` followed by a ``hole``-byte hole (trailing bytes after the dump are ignored by every reader)."""
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as fh:
        fh.truncate(os.path.getsize(src) + hole)


def test_outputs_keep_holes(tmp_path: Path, fixable: dict[str, Path]) -> None:
    src = tmp_path / "sparse.dump"
    _sparse_dump(fixable["plain"], src, 512 * MiB)
    on_disk = os.stat(src).st_blocks * 512
    assert on_disk < 8 * MiB, "the test file itself must be sparse"
    tree = tmp_path / "tree"
    tree.mkdir()
    os.rename(src, tree / "sparse.dump")
    src = tree / "sparse.dump"
    began = time.monotonic()
    batch = ["batch", tree, "--out-dir", tmp_path / "out", "--workers", "1"]
    fix = ["fix", src, "-o", tmp_path / "fixed"]
    for args, out in ((fix, tmp_path / "fixed"), (batch, tmp_path / "out/sparse.dump")):
        res = run_kdfix(*args)
        assert res.code == 0, (args, res.stderr)
        st = os.stat(out)
        assert st.st_size >= os.path.getsize(src)
        assert st.st_blocks * 512 < on_disk + 4 * MiB, f"{out} inflated to {st.st_blocks * 512} bytes on disk"
    assert time.monotonic() - began < 60


def test_elf_rewrite_keeps_holes_and_time_follows_the_data(tmp_path: Path) -> None:
    """An ELF whose PT_LOAD ends in a 512 MiB hole: fix -o and fix --in-place keep it sparse, quickly."""
    from kdfix.generate.synthetic import build_linux_image
    from kdfix.write.elf import LoadSegment, write_elf
    from kdfix.write.sparse import SparseFileSink

    model, memory, _ = build_linux_image(memory_size=32 * MiB, vmcoreinfo_in_notes=False, firmware=False)
    src = tmp_path / "sparse.elf"
    sink = SparseFileSink(src)
    write_elf(sink, model, memory, segments=[LoadSegment(0, 0, 544 * MiB)])
    sink.close()
    on_disk = os.stat(src).st_blocks * 512
    assert os.path.getsize(src) > 544 * MiB > 16 * on_disk, "the test file itself must be sparse"
    began = time.monotonic()
    res = run_kdfix("fix", src, "-o", tmp_path / "fixed.elf")
    assert res.code == 0, res.stderr
    res = run_kdfix("fix", src, "--in-place", timeout=120)
    assert res.code == 0, res.stderr
    assert time.monotonic() - began < 90
    for out in (tmp_path / "fixed.elf", src):
        assert os.path.getsize(out) > 544 * MiB
        assert os.stat(out).st_blocks * 512 < on_disk + 4 * MiB, f"{out} inflated"
    assert sha256(tmp_path / "fixed.elf") == sha256(src)


def test_copy_sparse_keeps_a_middle_hole_and_the_bytes(tmp_path: Path) -> None:
    from kdfix.write.sparse import copy_sparse

    src, dst = tmp_path / "s", tmp_path / "d"
    with open(src, "wb") as fh:
        fh.write(b"head" * 1024)
        fh.seek(600 * MiB)
        fh.write(b"tail" * 1024)
        fh.truncate(700 * MiB)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        copied = copy_sparse(fin.fileno(), fout.fileno(), os.path.getsize(src))
    assert copied < 4 * MiB and os.path.getsize(dst) == 700 * MiB
    assert os.stat(dst).st_blocks * 512 < 4 * MiB
    with open(src, "rb") as a, open(dst, "rb") as b:
        for off in (0, 4096, 600 * MiB, 600 * MiB + 4096, 700 * MiB - 4096):
            a.seek(off)
            b.seek(off)
            assert a.read(8192) == b.read(8192)


# ---- 5: one writer at a time ----------------------------------------------------------------------------


def _spawn(*args: object, fault: str | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KDFIX_")}
    if fault is not None:
        env["KDFIX_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-c", "from kdfix.cli import main; main()", *map(str, args)],
                            cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _blocked_on(path: Path) -> int:
    """How many flock requests wait for ``path`` (the ``->`` lines of /proc/locks)."""
    st = path.stat()
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as fh:
        return sum(1 for line in fh if "->" in line and inode in line.split())


def test_two_in_place_fixes_of_one_flattened_dump_do_not_interleave(tmp_path: Path, fixable: dict[str, Path]) -> None:
    """Started together: one fixes, the other waits and then finds nothing to fix; one tail, one fix journaled."""
    dump = tmp_path / "v.flat"
    shutil.copyfile(fixable["flat"], dump)
    ref = tmp_path / "ref.flat"
    shutil.copyfile(fixable["flat"], ref)
    assert run_kdfix("fix", ref, "--in-place").code == 0
    procs = [_spawn("fix", dump, "--in-place") for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sha256(dump) == sha256(ref), "the tail was appended twice or the fixes interleaved"
    assert sum("nothing to fix" in o for o, _ in outs) == 1, outs
    assert run_kdfix("undo", dump).code == 0 and sha256(dump) == sha256(fixable["flat"])


def test_no_wait_and_waiting_and_batch_share_the_lock(tmp_path: Path, fixable: dict[str, Path]) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    dump = tree / "d.dump"
    shutil.copyfile(fixable["plain"], dump)
    holder = subprocess.Popen([sys.executable, "-c", "import time; from kdfix.lock import dump_lock\n"
                               f"with dump_lock({str(dump)!r}):\n print('held', flush=True); time.sleep(60)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for args in (["fix", dump, "--in-place", "--no-wait"], ["undo", dump, "--no-wait"]):
            line = _one_line(run_kdfix(*args), 2)
            assert "another kdfix" in line and "--no-wait" in line, line
        waiting = [_spawn("fix", dump, "--in-place"), _spawn("batch", tree, "--in-place", "--workers", "1")]
        assert waiting[0].stderr is not None
        assert "waiting for another kdfix" in waiting[0].stderr.readline()
        deadline = time.monotonic() + 120
        while _blocked_on(dump) < 2:  # the batch's fix queues behind the lock too
            assert time.monotonic() < deadline and waiting[1].poll() is None, "batch did not wait for the lock"
            time.sleep(0.2)
        assert all(p.poll() is None for p in waiting)
        assert not os.path.exists(journal_path(dump))
    finally:
        holder.kill()
        holder.wait()
    outs = [p.communicate(timeout=180) for p in waiting]
    assert [p.returncode for p in waiting] == [0, 0], outs
    assert run_kdfix("undo", dump).code == 0 and sha256(dump) == sha256(fixable["plain"])


# ---- 6: an ELF fix killed between keeping the original and the rename -----------------------------------


@pytest.mark.parametrize("then", ["fix", "undo"])
def test_unfinished_elf_fix_is_rolled_back_by_a_rerun(tmp_path: Path, then: str) -> None:
    src = _elf(tmp_path / "src.elf")
    dump = tmp_path / "core.elf"
    for point in ("journal.original_linked", "journal.before_rename", "atomic.before_rename"):
        shutil.copyfile(src, dump)
        for leftover in (original_path(dump), journal_path(dump)):
            Path(leftover).unlink(missing_ok=True)
        res = run_kdfix("fix", dump, "--in-place", env={"KDFIX_FAULT": f"{point}=kill"})
        assert res.code == KILLED, (point, res.stderr)
        assert sha256(dump) == sha256(src) and os.path.exists(original_path(dump)), point
        again = run_kdfix(*([then, dump, "--in-place"] if then == "fix" else [then, dump]))
        assert again.code == 0, (point, again.stderr)
        if then == "undo":
            assert sha256(dump) == sha256(src) and not os.path.exists(original_path(dump)), point
        else:
            assert "rolled back an unfinished in-place fix" in again.stdout, again.stdout
            assert run_kdfix("undo", dump).code == 0 and sha256(dump) == sha256(src), point
        assert not os.path.exists(journal_path(dump)) and not os.path.exists(original_path(dump)), point


def test_elf_undo_refuses_a_file_put_there_since(tmp_path: Path, fixable: dict[str, Path]) -> None:
    """Fix an ELF in place, replace the dump by another file: undo would lose it, so it refuses."""
    dump = _elf(tmp_path / "core.elf")
    assert run_kdfix("fix", dump, "--in-place").code == 0
    dump.unlink()
    shutil.copyfile(fixable["plain"], dump)
    before = sha256(dump)
    line = _one_line(run_kdfix("undo", dump), 2)
    assert "not the file the fix wrote" in line
    assert sha256(dump) == before and os.path.exists(original_path(dump))


# ---- 7: hard links ------------------------------------------------------------------------------------


def test_hard_linked_dump_is_refused_unless_forced(tmp_path: Path, fixable: dict[str, Path]) -> None:
    dump = tmp_path / "d"
    shutil.copyfile(fixable["plain"], dump)
    os.link(dump, tmp_path / "other-name")
    line = _one_line(run_kdfix("fix", dump, "--in-place"), 2)
    assert "hard links" in line and sha256(dump) == sha256(fixable["plain"])
    assert run_kdfix("fix", dump, "--in-place", "--force").code == 0


# ---- 12: "fixed" and "written" only after the output verifies -------------------------------------------


def _last_pages_bad(src: Path, dst: Path, count: int = 3) -> None:
    """A dump whose headers are fine (and need a fix) but whose last compressed pages do not decode."""
    from kdfix import open_dump

    data = bytearray(src.read_bytes())
    with open_dump(src) as dump:
        k = dump.kdump
        locs = [loc for loc in k.iter_locations(k.start_pfn, k.end_pfn) if loc.desc.size > 8 and loc.desc.flags]
    for loc in locs[-count:]:
        d = loc.desc
        data[d.offset : d.offset + 8] = b"\xde\xad\xbe\xef" * 2
    dst.write_bytes(bytes(data))


def test_fix_of_an_unreadable_dump_is_not_fixed(tmp_path: Path, fixable: dict[str, Path]) -> None:
    dump = tmp_path / "bad.dump"
    _last_pages_bad(fixable["plain"], dump)
    before = sha256(dump)
    assert run_kdfix("verify", dump).code == 1
    line = _one_line(run_kdfix("fix", dump, "--in-place"), 1)
    assert "does not pass verify" in line and "bad page" in line, line
    assert sha256(dump) == before and not os.path.exists(journal_path(dump))
    line = _one_line(run_kdfix("fix", dump, "-o", tmp_path / "out"), 1)
    assert not os.path.exists(tmp_path / "out") and sha256(dump) == before
    # the error names the output (its temp file is gone) and says it was not created
    assert ".kdfix-tmp" not in line and f"{tmp_path / 'out'}: " in line and "was not created" in line, line
    assert [p for p in os.listdir(tmp_path) if p.endswith(".kdfix-tmp")] == []


def test_convert_of_an_empty_dump_reopens_or_refuses(tmp_path: Path) -> None:
    """A valid dump with no pages: convert writes a file kdfix reads again, or refuses and writes nothing."""
    from kdfix.model import DumpModel, make_utsname
    from kdfix.read.memory import DictMemory
    from kdfix.write import write_kdump

    empty = tmp_path / "empty.dump"
    model = DumpModel(utsname=make_utsname(sysname="Linux", release="6.1.0", version="#1", machine="x86_64"))
    write_kdump(empty, model, DictMemory({}, page_size=4096, max_pfn=0), codec="zlib")
    assert run_kdfix("info", empty).code == 0
    for flag in ("--no-flat", "--flat"):
        out = tmp_path / f"Y{flag}"
        res = run_kdfix("convert", empty, "-o", out, flag)
        if res.code == 0:
            assert run_kdfix("info", out).code == 0, flag
        else:
            _one_line(res, 1)
            assert not out.exists()


# ---- 14: a full disk names what was being written and what was left alone ---------------------------


def test_enospc_names_the_file_and_what_is_untouched(tmp_path: Path, fixable: dict[str, Path]) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"old")
    res = run_kdfix("fix", fixable["plain"], "-o", out, env={"KDFIX_FAULT": "copy.extent=enospc"})
    line = _one_line(res, 2)
    assert "no space left on device" in line and str(out) in line and "kept its old content" in line, line
    assert f"{fixable['plain']} is untouched" in line
    dump = tmp_path / "d"
    shutil.copyfile(fixable["plain"], dump)
    line = _one_line(run_kdfix("fix", dump, "--in-place", env={"KDFIX_FAULT": "journal.before_fsync=enospc"}), 2)
    assert "no space left on device" in line and journal_path(dump) in line and "untouched" in line, line


# ---- kill -9: convert, batch --out-dir, one batch worker ------------------------------------------------


def _trace(tmp: Path, *args: object) -> list[str]:
    trace = tmp / "trace.txt"
    trace.unlink(missing_ok=True)
    res = run_kdfix(*args, env={"KDFIX_FAULT_TRACE": str(trace)}, timeout=300)
    assert res.code == 0, res.stderr
    return trace.read_text().split()


def test_batch_out_dir_killed_at_checkpoints_then_resumed(tmp_path: Path, fixable: dict[str, Path]) -> None:
    """Kill -9 a batch --out-dir at sampled checkpoints: every output is absent or complete, inputs untouched,
    and --resume finishes with every output verifying."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i, kind in enumerate(("plain", "flat", "plain")):
        shutil.copyfile(fixable[kind], tree / f"d{i}")
    inputs = {p: sha256(p) for p in tree.iterdir()}
    hits = _trace(tmp_path, "batch", tree, "--out-dir", tmp_path / "ref", "--workers", "1")
    complete = {p.name: sha256(tmp_path / "ref" / p.name) for p in inputs}
    ks = sorted({1 + round(i * (len(hits) - 1) / 7) for i in range(8)})
    for k in ks:
        out = tmp_path / f"out{k}"
        res = run_kdfix("batch", tree, "--out-dir", out, "--workers", "1", env={"KDFIX_FAULT": f"*:{k}=kill"},
                        timeout=300)  # fmt: skip
        assert res.code == KILLED, (k, hits[k - 1], res.stderr)
        for name, want in complete.items():
            if (out / name).exists():
                assert sha256(out / name) == want, f"partial output after a kill at {hits[k - 1]}"
        res = run_kdfix("batch", tree, "--out-dir", out, "--workers", "1", "--resume", timeout=300)
        assert res.code == 0, (k, res.stderr)
        assert {n: sha256(out / n) for n in complete} == complete
        assert not [p for p in out.rglob("*.kdfix-tmp")]
    assert {p: sha256(p) for p in inputs} == inputs


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped by a signal (state T in /proc/PID/stat)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


def test_killing_one_batch_worker(tmp_path: Path, fixable: dict[str, Path]) -> None:
    """SIGKILL one worker process of a running batch --out-dir: the batch replaces it, retries that file, and
    finishes with every output complete and verifying; no temp file is left and the inputs are untouched."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(8):
        shutil.copyfile(fixable["plain" if i % 2 else "flat"], tree / f"d{i}")
    inputs = {p: sha256(p) for p in tree.iterdir()}
    out = tmp_path / "out"
    # Every process stops itself before its first fsync of an output (a temp file exists then): the first worker
    # found stopped is killed, the others (its replacement included) are let go on.
    proc = _spawn("batch", tree, "--out-dir", out, "--workers", "2", fault="atomic.before_fsync=stop")
    victim = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        for pid in [proc.pid, *_children(proc.pid)]:
            if not _stopped(pid):
                continue
            if victim is None and pid != proc.pid:
                assert list(out.rglob("*.kdfix-tmp")), "a stopped worker has no output in progress"
                victim = pid
                os.kill(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)
    _, stderr = proc.communicate(timeout=600)
    assert victim is not None, "the batch ended before a worker could be killed"
    assert proc.returncode == 0 and "Traceback" not in stderr, (proc.returncode, stderr)
    assert not list(out.rglob("*.kdfix-tmp"))
    for p in tree.iterdir():
        assert run_kdfix("verify", out / p.name).code == 0, p.name
    assert {p: sha256(p) for p in inputs} == inputs


def test_convert_killed_at_every_atomic_checkpoint(tmp_path: Path, seeds: dict[str, list[str]]) -> None:
    src = seeds["syn-zlib-kdump"][0]
    target = tmp_path / "out.elf"
    hits = _trace(tmp_path, "convert", src, "-o", target, "--to", "elf")
    complete = sha256(target)
    for k, name in enumerate(hits, 1):
        if not name.startswith(("atomic.", "recheck")) and k not in (1, len(hits)):
            continue
        target.write_bytes(b"old")
        res = run_kdfix("convert", src, "-o", target, "--to", "elf", env={"KDFIX_FAULT": f"*:{k}=kill"})
        assert res.code == KILLED, (k, name)
        assert target.read_bytes() == b"old" or sha256(target) == complete, name
