"""kdfix.kernel.triage on synthetic logs and stacks: the crash record, the crashing task and the stack scan."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from kdfix.cli import build_app
from kdfix.kernel.kallsyms import read_kallsyms
from kdfix.kernel.printk import KernelLog, LogRecord
from kdfix.kernel.triage import crashing_task, find_crash_record, scan_stack
from kdfix.notes.vmcoreinfo import VmcoreInfo
from tests.cli.test_json_shapes import assert_documented
from tests.fix.conftest import make_dump
from tests.kernel.kallsyms_writer import write_kallsyms
from tests.kernel.printk_writer import SegmentMemory

BASE = 0xFFFFFFFF81000000


def _log(*texts: bytes) -> KernelLog:
    return KernelLog("printk_ringbuffer", tuple(LogRecord(i, i, 0, 0, 0, 1, t) for i, t in enumerate(texts)))


def test_the_first_oops_and_the_panic_are_found_with_the_task_after_them() -> None:
    log = _log(b"booting", b"CPU: 0 PID: 1 Comm: init Not tainted", b"BUG: kernel NULL pointer dereference, address: 0",
               b"CPU: 3 PID: 42 Comm: bash Tainted: G", b"Kernel panic - not syncing: Fatal exception")  # fmt: skip
    oops, panic = find_crash_record(log)
    assert oops is not None and oops.seq == 2 and panic is not None and panic.seq == 4
    assert crashing_task(log, oops) == (3, 42, "bash")
    assert find_crash_record(_log(b"all is well")) == (None, None)


def test_stack_scan_lists_text_words_in_stack_order() -> None:
    symbols = [("T", "_stext", BASE), ("T", "panic", BASE + 0x100), ("t", "sysrq_handle_crash", BASE + 0x400),
               ("T", "vfs_write", BASE + 0x800), ("D", "some_data", BASE + 0x10000)]  # fmt: skip
    memory, info = write_kallsyms(symbols, scheme="base-relative")
    ks = read_kallsyms(VmcoreInfo.parse(info), memory, word_size=8, endian="little")
    stack_top = 0xFFFFC90000004000
    sp = stack_top - 0x100
    words = [0, BASE + 0x150, 12345, BASE + 0x400, BASE + 0x416, BASE + 0x10008, BASE + 0x888] + [0] * 25
    stack = SegmentMemory({sp: b"".join(w.to_bytes(8, "little") for w in words), stack_top: bytes(8)})
    found = scan_stack(stack, ks, sp, word_size=8, endian="little")
    # a symbol's own start is not a return address; data symbols and other values are not text
    assert [(e.slot - sp, e.function, e.symbol) for e in found] == [
        (8, "panic", "panic+0x50/0x300"), (32, "sysrq_handle_crash", "sysrq_handle_crash+0x16/0x400"),
        (48, "vfs_write", "vfs_write+0x88/0xf800")]  # fmt: skip


def test_cli_on_a_dump_without_a_kernel_log_reports_what_is_missing(tmp_path: Path) -> None:
    out = tmp_path / "synthetic.kdump"
    make_dump(out, vmcoreinfo=True)
    res = CliRunner().invoke(build_app(["triage"]), ["triage", str(out), "--json"])
    assert res.exit_code == 1, res.output  # no panic found
    data = json.loads(res.stdout)
    assert_documented("triage", set(data))
    assert data["panic_message"] is None and any("kernel log" in n for n in data["notes"])
    human = CliRunner().invoke(build_app(["triage"]), ["triage", str(out)])
    assert human.exit_code == 1 and "release:" in human.stdout and "notes:" in human.stdout
