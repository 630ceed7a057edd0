"""`kdfix batch` over an archive of real QEMU 7.2 dumps, checked with the real readers (crash, drgn).

The archive mixes flattened kdump-zlib (as `virsh dump --memory-only --format kdump-zlib` writes), a plain
KDUMP file, a split set, an ELF core, a truncated dump and a text file in nested folders. Every dump must come
out with header phys_base = the guest's truth, `crash --osrelease` = its release, and drgn opening it with no
hints; a second run with --resume does nothing; a run SIGKILLed after its first report lines resumes to the
same final state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdfix import open_dump
from kdfix.batch import read_report, run_batch
from kdfix.write.convert import convert
from kdfix.write.flattened import reassemble
from tests.oracle.fixtures import require_tool
from tests.oracle.tools import crash_osrelease, drgn_program

pytestmark = pytest.mark.oracle


def _archive(root: Path, seabios: object, ovmf: object) -> dict[str, tuple[tuple[str, ...], object]]:
    """Build the archive; returns {report path: (files, guest)} for every dump that must be fixed."""
    (root / "cust-A/2024-05").mkdir(parents=True)
    (root / "cust-B/host 7").mkdir(parents=True)
    (root / "cust-C").mkdir()
    shutil.copyfile(seabios.kdump_zlib, root / "cust-A/2024-05/vmcore")  # flattened, as QEMU wrote it
    reassemble(ovmf.kdump_zlib, root / "cust-B/host 7/memory.dump")  # plain KDUMP
    shutil.copyfile(seabios.elf, root / "cust-C/core")
    convert([ovmf.kdump_zlib], root / "cust-C/set", split=2, flat=False)  # set.1, set.2
    data = Path(seabios.kdump_zlib).read_bytes()[: 64 << 10]
    (root / "cust-A/2024-05/vmcore.partial").write_bytes(data)
    (root / "cust-B/README").write_text("customer says: crashed twice\n")
    return {
        "cust-A/2024-05/vmcore": (("cust-A/2024-05/vmcore",), seabios),
        "cust-B/host 7/memory.dump": (("cust-B/host 7/memory.dump",), ovmf),
        "cust-C/set.1": (("cust-C/set.1", "cust-C/set.2"), ovmf),
    }


def _check_fixed(root: Path, files: tuple[str, ...], guest: object) -> None:
    paths = [root / f for f in files]
    with open_dump(*paths) as d:
        parts = d.split.parts if d.split is not None else [d.kdump]
        assert {p.phys_base for p in parts} == {guest.truth.phys_base}
    for p in paths:
        res = crash_osrelease(p)
        assert res.returncode == 0 and res.output.strip() == guest.truth.osrelease, res.output
    if len(paths) == 1:
        prog = drgn_program(paths[0])  # no platform, no vmcoreinfo: everything from the dump
        assert prog.platform is not None
        assert b"VMCOREINFO" in prog.read(guest.truth.vmcoreinfo_paddr, 32, True)  # the guest's note, by paddr


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture
def archive(tmp_path: Path, guest_seabios_kaslr_vmcoreinfo: object, guest_ovmf_nokaslr_vmcoreinfo: object):
    require_tool("crash")
    require_tool("drgn")
    root = tmp_path / "archive"
    expect = _archive(root, guest_seabios_kaslr_vmcoreinfo, guest_ovmf_nokaslr_vmcoreinfo)
    with open_dump(root / "cust-C/set.1", root / "cust-C/set.2") as d:  # the bug the batch must fix is there
        assert d.split.first.phys_base != guest_ovmf_nokaslr_vmcoreinfo.truth.phys_base
    return root, expect


def test_batch_fixes_real_archive(archive: tuple[Path, dict], tmp_path: Path) -> None:
    root, expect = archive
    before = _digest(root)
    out = tmp_path / "out"
    result = run_batch([root], out_dir=out, workers=2)
    assert _digest(root) == before  # originals untouched
    report = read_report(out / "kdfix-batch-report.jsonl")
    assert {k: v["status"] for k, v in report.items()} == {
        "cust-A/2024-05/vmcore": "fixed",
        "cust-A/2024-05/vmcore.partial": "failed",
        "cust-B/README": "skipped",
        "cust-B/host 7/memory.dump": "fixed",
        "cust-C/core": report["cust-C/core"]["status"] if report["cust-C/core"]["status"] in ("ok", "fixed") else "?",
        "cust-C/set.1": "fixed",
    }
    assert result.exit_code == 1
    for files, guest in expect.values():
        _check_fixed(out, files, guest)
    again = run_batch([root], out_dir=out, workers=2, resume=True)
    assert again.outcomes == [] and again.summary.resumed == len(report)


def test_batch_killed_midway_resumes_to_same_state(archive: tuple[Path, dict], tmp_path: Path) -> None:
    """SIGKILL after the first report lines, then --resume: same statuses and byte-identical outputs as one run."""
    root, expect = archive
    ref = tmp_path / "ref"
    run_batch([root], out_dir=ref, workers=1)
    out = tmp_path / "out"
    report = out / "kdfix-batch-report.jsonl"
    argv = [sys.executable, "-c", "from kdfix.cli import main; main()", "batch", str(root), "--out-dir", str(out),
            "--workers", "1"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if report.exists() and report.read_text().count("\n") >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = report.read_text().count("\n")
    assert killed < 6, "the batch finished before it could be killed"
    time.sleep(0.5)
    done = subprocess.run([*argv, "--resume"], capture_output=True, timeout=600)
    assert done.returncode == 1, done.stderr  # the truncated dump
    lines = [json.loads(x) for x in report.read_text().splitlines()]
    assert len(lines) == len({x["path"] for x in lines}) == 6
    ref_report = read_report(ref / "kdfix-batch-report.jsonl")
    assert {x["path"]: x["status"] for x in lines} == {k: v["status"] for k, v in ref_report.items()}
    got, want = _digest(out), _digest(ref)
    got.pop("kdfix-batch-report.jsonl")
    want.pop("kdfix-batch-report.jsonl")
    assert got == want
    for files, guest in expect.values():
        _check_fixed(out, files, guest)
    assert not [p for p in out.rglob("*") if p.name.endswith(".kdfix-tmp")]
    assert os.listdir(root)  # originals still there
