"""``--help`` reads well (issue 14, item 10): paragraphs wrapped once, no Python types shown as option values,
every option that takes a value names what it takes, and the command list cuts no sentence off."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from kdfix.cli import app

WIDTH = 100


def commands() -> dict[str, Any]:
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(WIDTH)}, terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("name", sorted(commands()))
def test_command_help(name: str) -> None:
    text = help_text(name)
    assert not re.search(r"<(bool|str|path|int|list\[[^]]*\]|int range|float)>", text), text
    assert "{" not in text.splitlines()[0], "the usage line shows metavars as written"
    description = text.split("\n\n", 1)[1].split("\nArguments:", 1)[0].split("\nOptions:", 1)[0]
    lines = description.splitlines()
    for line, after in zip(lines, [*lines[1:], ""], strict=True):
        if line.strip() and after.strip():  # a line followed by more of its paragraph fills the width
            assert len(line) > WIDTH * 0.6, f"kdfix {name} --help breaks a sentence early: {line!r}"
    for param in commands()[name].params:
        if getattr(param, "is_flag", True) or param.param_type_name != "option":
            continue
        assert param.metavar is not None or re.search(rf"{re.escape(param.opts[-1])} [A-Za-z0-9|]+", text), param.opts


def test_dump_level_shows_what_it_accepts() -> None:
    text = " ".join(help_text("convert").split())
    assert re.search(r"--dump-level 0-31 ", text)
    bits = ((1, "zero"), (2, "non-private cache"), (4, "cache incl. private"), (8, "user"), (16, "free"))
    assert all(f"{bit} {name}" in text for bit, name in bits)


def test_command_list_cuts_no_sentence() -> None:
    text = help_text()
    listed = text.split("Commands:", 1)[1]
    for name in commands():
        assert re.search(rf"^  {re.escape(name)} ", listed, re.M), name
    assert "..." not in listed.replace("PATH...", "").replace("IN...", "")
