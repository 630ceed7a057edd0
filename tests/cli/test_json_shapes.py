"""Every command takes ``--json`` and prints the shape the README documents for it (issue 14, item 8)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from kdfix.cli import app

runner = CliRunner()
README = Path(__file__).resolve().parents[2] / "README.md"
OPTIONAL = {"kdump", "elf", "hint"}  # keys present only for some containers or outcomes


def documented_shapes() -> dict[str, set[str]]:
    """The README's "JSON output" table: command (with its style qualifier) → documented keys."""
    section = README.read_text().split("### JSON output", 1)[1].split("\n#", 1)[0]
    shapes: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        top = re.sub(r"\([^)]*\)", "", cells[1])  # nested keys are given in parentheses
        shapes[cells[0].strip("`")] = set(re.findall(r"`([a-z_0-9]+)`", top))
    return shapes


def commands() -> dict[str, Any]:
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_command_has_json_and_a_documented_shape(name: str) -> None:
    options = {opt for p in commands()[name].params for opt in getattr(p, "opts", ())}
    assert "--json" in options, f"kdfix {name} has no --json"
    assert any(cmd.split()[0] == name for cmd in documented_shapes()), f"README documents no JSON shape for {name}"


def keys_of(*args: object) -> set[str]:
    result = runner.invoke(app, [str(a) for a in args] + ["--json"])
    assert result.exit_code in (0, 1), result.output
    value = json.loads(result.stdout)
    assert isinstance(value, dict), f"{args[0]}: one dump gives one object"
    return set(value)


def assert_documented(command: str, keys: set[str]) -> None:
    documented = documented_shapes()[command]
    assert keys <= documented, f"{command}: undocumented keys {sorted(keys - documented)}"
    assert documented - keys <= OPTIONAL, f"{command}: documented but missing {sorted(documented - keys - OPTIONAL)}"


def test_shapes_match_the_readme(tmp_path: Path) -> None:
    dump = tmp_path / "g.kdump"
    assert_documented("generate --style linux", keys_of("generate", "-o", dump, "--memory", "40M", "--no-firmware"))
    for command in ("info", "notes", "vmcoreinfo", "verify", "detect"):
        assert_documented(command, keys_of(command, dump))
    assert_documented("read-mem", keys_of("read-mem", dump, "0x1000", "16"))
    assert_documented("convert", keys_of("convert", dump, "-o", tmp_path / "c.elf", "--to", "elf"))
    qemu = keys_of("generate", "--style", "qemu", "--from", tmp_path / "c.elf", "-o", tmp_path / "q")
    assert_documented("generate --style qemu", qemu)
    bare = tmp_path / "bare.kdump"
    keys_of("generate", "-o", bare, "--memory", "40M", "--no-firmware", "--no-vmcoreinfo")
    assert_documented("vmcoreinfo", keys_of("vmcoreinfo", bare))
    shutil.copyfile(bare, tmp_path / "work")
    assert_documented("fix", keys_of("fix", tmp_path / "work", "--in-place"))
    assert_documented("undo", keys_of("undo", tmp_path / "work"))
    (tmp_path / "out").mkdir()
    assert_documented("batch", keys_of("batch", bare, "--out-dir", tmp_path / "out", "--workers", "1"))
