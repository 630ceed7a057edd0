"""``kdfix dmesg`` on dumps without a kernel log: one line on stderr, exit 2."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from kdfix.cli import build_app
from tests.fix.conftest import make_dump


def test_dump_without_printk_keys_is_unusable_input(tmp_path: Path) -> None:
    out = tmp_path / "synthetic.kdump"
    make_dump(out, vmcoreinfo=True)
    res = CliRunner().invoke(build_app(["dmesg"]), ["dmesg", str(out)])
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "kdfix:" in res.stderr


def test_missing_file_is_unusable_input(tmp_path: Path) -> None:
    res = CliRunner().invoke(build_app(["dmesg"]), ["dmesg", str(tmp_path / "nope")])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
