"""Undo never destroys data, journals know their file, bounded journals, O(1) flattened fixes, hard links, locks."""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from pathlib import Path

import pytest

from kdfix import open_dump
from kdfix.errors import JournalError, KdfixError, UnsupportedError
from kdfix.fix import fix_dump
from kdfix.fix.journal import MAX_JOURNAL_BYTES, MAX_PATCH_BYTES, Journal, journal_path, undo
from kdfix.format.constants import FLAT_HEADER_SIZE
from kdfix.format.flattened import FLAT_RECORD_SIZE
from kdfix.lock import LockBusyError, dump_lock
from tests.fix.conftest import file_state, make_dump


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def _fixed(tmp_path: Path, src: Path, name: str = "vmcore") -> tuple[Path, tuple[str, int, int]]:
    path = _copy(src, tmp_path / name)
    before = file_state(path)
    assert fix_dump(path, in_place=True).status == "fixed"
    return path, before


# ---- 1: undo truncates only what the fix appended -------------------------------------------------------


@pytest.mark.parametrize("container", ["plain", "flat"])
def test_undo_refuses_when_data_follows_the_fix_and_keeps_it(tmp_path: Path, synthetic_plain, synthetic_flat,
                                                             container: str) -> None:  # fmt: skip
    src = (synthetic_plain if container == "plain" else synthetic_flat)[0]
    path, before = _fixed(tmp_path, src)
    extra = os.urandom(100_000)
    with open(path, "ab") as fh:
        fh.write(extra)
    grown = file_state(path)
    with pytest.raises(JournalError, match="100000 bytes follow the end of the fixed file") as info:
        undo(path)
    assert "\n" not in str(info.value)
    with pytest.raises(JournalError, match="follow the end"):
        undo(path, force=True)  # --force never shortens below bytes the fix did not write
    assert file_state(path)[:2] == grown[:2] and Path(journal_path(path)).exists()
    os.truncate(path, grown[1] - len(extra))  # take the appended bytes away again: undo proves the rest
    undo(path)
    assert file_state(path)[:2] == before[:2]


def test_undo_refuses_a_changed_tail(tmp_path: Path, synthetic_plain) -> None:
    """The appended tail is proven by its digest: a byte the fix did not write there stops undo, even forced."""
    path, _ = _fixed(tmp_path, synthetic_plain[0])
    j = Journal.load(path)
    size = path.stat().st_size
    assert j.fixed_size == size > j.original_size
    with open(path, "r+b") as fh:
        fh.seek(size - 3)
        old = fh.read(1)
        fh.seek(size - 3)
        fh.write(bytes([old[0] ^ 0xA5 or 1]))
    state = file_state(path)
    for force in (False, True):
        with pytest.raises(JournalError, match="tail"):
            undo(path, force=force)
    assert file_state(path)[:2] == state[:2]


# ---- 2: a journal knows which file it belongs to --------------------------------------------------------


def test_journal_refused_for_another_file(tmp_path: Path, synthetic_plain, synthetic_flat) -> None:
    """rm the fixed dump, copy another dump to its name: undo, fix --in-place and undo --force all refuse."""
    path, _ = _fixed(tmp_path, synthetic_plain[0])
    journal_before = Path(journal_path(path)).read_bytes()
    similar = tmp_path / "similar"
    make_dump(similar, seed=11)  # same layout and size class, other contents
    for other in (synthetic_flat[0], similar):  # the freed inode number is often reused for the copy
        path.unlink()
        _copy(other, path)
        state = file_state(path)
        for force in (False, True):
            with pytest.raises(JournalError) as info:
                undo(path, force=force)
            assert "nothing changed" in str(info.value) and "\n" not in str(info.value)
        with pytest.raises(JournalError):
            fix_dump(path, in_place=True)  # never merged into a stale journal
        assert file_state(path)[:2] == state[:2]
        assert Path(journal_path(path)).read_bytes() == journal_before


def test_journal_records_identity_and_digests(tmp_path: Path, synthetic_plain) -> None:
    path, _ = _fixed(tmp_path, synthetic_plain[0])
    data = json.loads(Path(journal_path(path)).read_text())
    st = path.stat()
    assert (data["device"], data["inode"], data["fixed_size"]) == (st.st_dev, st.st_ino, st.st_size)
    for key in ("context_sha256", "tail_sha256", "original_sha256", "fixed_sha256"):
        assert len(data[key]) == 64


def test_force_undoes_a_copy_whose_bytes_prove_it_is_the_fixed_file(tmp_path: Path, synthetic_plain) -> None:
    path, before = _fixed(tmp_path, synthetic_plain[0])
    copy = tmp_path / "copy"
    shutil.copyfile(path, copy)
    shutil.copyfile(journal_path(path), journal_path(copy))
    with pytest.raises(JournalError, match="another file"):
        undo(copy)
    undo(copy, force=True)
    assert file_state(copy)[:2] == before[:2]


def test_changed_header_context_is_refused_even_forced(tmp_path: Path, synthetic_plain) -> None:
    """A byte in the header block the fix did not write changed: not the file the journal was made for."""
    path, _ = _fixed(tmp_path, synthetic_plain[0])
    written = {off for w in Journal.load(path).writes for off in range(w.file_offset, w.file_offset + len(w.new))}
    off = next(i for i in range(64, 4096) if i not in written)
    data = bytearray(path.read_bytes())
    data[off] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(JournalError, match="header blocks"):
        undo(path, force=True)
    assert path.read_bytes() == bytes(data)


def test_shorter_file_is_never_padded(tmp_path: Path, synthetic_plain) -> None:
    path, _ = _fixed(tmp_path, synthetic_plain[0])
    j = Journal.load(path)
    os.truncate(path, j.original_size - 4096)
    for force in (False, True):
        with pytest.raises(JournalError, match="the file is"):
            undo(path, force=force)
    assert path.stat().st_size == j.original_size - 4096


# ---- 11: journals are bounded by what a fix writes ------------------------------------------------------


def test_oversized_hand_made_journal_is_refused_before_any_write(tmp_path: Path) -> None:
    """A self-consistent 8 MB journal of patches: refused at once (no parsing of it), the file untouched."""
    path = tmp_path / "f"
    path.write_bytes(bytes(4 << 20))
    writes = [{"offset": i * 4096, "old": "00" * 2048, "new": "ff" * 2048} for i in range(1000)]
    st = path.stat()
    record = {"kdfix_undo": 2, "kind": "patch", "path": str(path), "device": st.st_dev, "inode": st.st_ino,
              "original_size": st.st_size, "fixed_size": st.st_size, "context_sha256": "0" * 64, "writes": writes,
              "original_sha256": "0" * 64, "fixed_sha256": "0" * 64, "tail_sha256": "0" * 64}  # fmt: skip
    Path(journal_path(path)).write_text(json.dumps(record))
    assert os.path.getsize(journal_path(path)) > 8_000_000 > MAX_JOURNAL_BYTES // 3
    began = time.process_time()
    with pytest.raises(JournalError, match=r"more than an in-place fix|bigger than any journal"):
        undo(path)
    assert time.process_time() - began < 2
    assert path.read_bytes() == bytes(4 << 20)


def test_journal_over_the_file_bound_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(100))
    with open(journal_path(path), "wb") as fh:
        fh.truncate(MAX_JOURNAL_BYTES + 1)
    with pytest.raises(JournalError, match="bigger than any journal"):
        undo(path)


def test_patch_bytes_over_the_bound_are_refused_by_begin(tmp_path: Path) -> None:
    from kdfix.fix.journal import Write, begin

    path = tmp_path / "f"
    path.write_bytes(bytes(MAX_PATCH_BYTES * 2))
    with pytest.raises(JournalError, match="patches"):
        begin(path, [Write(0, bytes(MAX_PATCH_BYTES + 1), b"\1" * (MAX_PATCH_BYTES + 1))], MAX_PATCH_BYTES * 2)
    assert not Path(journal_path(path)).exists()


# ---- 10: a flattened header covered by many records: the fix stays O(1) ---------------------------------


def _covered_stream(src: Path, dst: Path, copies: int) -> None:
    """``src`` (flattened) with ``copies`` extra records re-writing its header block, before the end marker."""
    data = src.read_bytes()
    with open_dump(src) as dump:
        head = dump.source.read_at(0, 4096)
    end = data.rindex(b"\xff" * FLAT_RECORD_SIZE)
    assert end >= FLAT_HEADER_SIZE
    record = struct.pack(">qq", 0, len(head)) + head
    dst.write_bytes(data[:end] + record * copies + data[end:])


def test_flattened_header_under_many_records_fixes_in_o1(tmp_path: Path, synthetic_flat) -> None:
    path = tmp_path / "many.flat"
    _covered_stream(synthetic_flat[0], path, 4000)
    before = file_state(path)
    began = time.process_time()
    res = fix_dump(path, in_place=True)
    assert res.status == "fixed"
    assert os.path.getsize(journal_path(path)) < 256 << 10, "the journal grows with the covering records"
    with open_dump(path) as dump:  # last write wins: the new values are read
        assert dump.sub_header.phys_base == synthetic_flat[1].phys_base and dump.vmcoreinfo is not None
    undo(path)
    assert time.process_time() - began < 20
    assert file_state(path)[:2] == before[:2]


# ---- 7: hard links, one rule ------------------------------------------------------------------------


def test_in_place_refuses_a_file_with_several_names(tmp_path: Path, synthetic_plain) -> None:
    from tests.fix.test_fix import _elf_without_vmcoreinfo

    for path in (_copy(synthetic_plain[0], tmp_path / "k"), _elf_without_vmcoreinfo(tmp_path / "e.elf")):
        other = Path(f"{path}.other-name")
        os.link(path, other)
        state = file_state(path)
        with pytest.raises(UnsupportedError, match="2 names"):
            fix_dump(path, in_place=True)
        assert file_state(path)[:2] == state[:2]
        assert fix_dump(path, in_place=True, force=True).status == "fixed"


# ---- 5: one writer at a time ------------------------------------------------------------------------


def test_no_wait_fails_at_once_while_another_holds_the_lock(tmp_path: Path, synthetic_plain) -> None:
    import subprocess
    import sys

    path = _copy(synthetic_plain[0], tmp_path / "d")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from kdfix.lock import dump_lock\n"
                               f"with dump_lock({str(path)!r}):\n print('held', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        state = file_state(path)
        for call in (lambda: fix_dump(path, in_place=True, wait=False), lambda: undo(path, wait=False)):
            with pytest.raises(LockBusyError, match="another kdfix") as info:
                call()
            assert "\n" not in str(info.value) and str(holder.pid) in str(info.value)
        with pytest.raises(LockBusyError):
            fix_dump(path, output=tmp_path / "o", wait=False)  # a reader waits for a writer too
        assert file_state(path)[:2] == state[:2]
    finally:
        holder.kill()
        holder.wait()
    assert fix_dump(path, in_place=True, wait=False).status == "fixed"


def test_lock_follows_a_replaced_file(tmp_path: Path) -> None:
    """A waiter whose inode was replaced (an ELF rewritten in place) locks the new file, not the old one."""
    path = tmp_path / "f"
    path.write_bytes(b"old")
    with dump_lock(path):
        tmp = tmp_path / "new"
        tmp.write_bytes(b"new")
        os.replace(tmp, path)
    with dump_lock(path), dump_lock(path):  # reentrant within a process
        pass


def test_lock_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KdfixError, match="cannot open"), dump_lock(tmp_path / "missing"):
        pass


def test_make_dump_fixture_is_valid(tmp_path: Path) -> None:
    """The dumps above are fixable as made (a guard against a test that cannot fail)."""
    p = tmp_path / "x"
    make_dump(p)
    assert fix_dump(p, dry_run=True).status == "fixed"
