"""``kdfix dmesg`` on dumps without a kernel log: one line on stderr, exit 2."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from typer.testing import CliRunner

from kdfix.cli import build_app
from kdfix.format.constants import NOTE_NAME_VMCOREINFO
from kdfix.generate.synthetic import build_linux_image
from kdfix.notes.framing import Note
from kdfix.write import write_kdump

# the printk ring's VMCOREINFO lines (arch-kernels-and-introspection.md §4.1)
PRINTK_KEY_PREFIXES = (b"SYMBOL(prb)", b"SYMBOL(printk_rb_static)", b"SYMBOL(clear_seq)", b"SIZE(printk",
                       b"OFFSET(printk", b"SIZE(prb", b"OFFSET(prb", b"SIZE(dev_printk", b"OFFSET(dev_printk",
                       b"LENGTH(printk", b"SIZE(latched", b"OFFSET(latched")  # fmt: skip


def _generated(path: Path, *, printk_keys: bool) -> tuple[str, ...]:
    """A synthetic dump (its kernel log in memory); without ``printk_keys`` its VMCOREINFO does not describe it."""
    model, memory, truth = build_linux_image(memory_size=32 << 20, firmware=False)
    text = truth.vmcoreinfo
    if not printk_keys:
        text = b"".join(line for line in text.splitlines(keepends=True) if not line.startswith(PRINTK_KEY_PREFIXES))
    notes = tuple(Note(n.name, n.type, text) if n.name == NOTE_NAME_VMCOREINFO else n for n in model.notes)
    write_kdump(path, dataclasses.replace(model, vmcoreinfo=text, notes=notes), memory)
    return truth.log


def test_dump_without_printk_keys_is_unusable_input(tmp_path: Path) -> None:
    out = tmp_path / "synthetic.kdump"
    _generated(out, printk_keys=False)
    res = CliRunner().invoke(build_app(["dmesg"]), ["dmesg", str(out)])
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "kdfix:" in res.stderr


def test_generated_dump_has_its_kernel_log(tmp_path: Path) -> None:
    """The generator's printk ring (arch-kernels-and-introspection.md §4) reads back record by record."""
    out = tmp_path / "synthetic.kdump"
    log = _generated(out, printk_keys=True)
    res = CliRunner().invoke(build_app(["dmesg"]), ["dmesg", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == len(log) >= 2
    assert [line.split("] ", 1)[1] for line in lines] == list(log)


def test_missing_file_is_unusable_input(tmp_path: Path) -> None:
    res = CliRunner().invoke(build_app(["dmesg"]), ["dmesg", str(tmp_path / "nope")])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
