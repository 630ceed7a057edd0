"""``kdfix vmcoreinfo``: print the VMCOREINFO text of each dump (exit 1 if one has none, with a hint)."""

from __future__ import annotations

from typing import Any

import typer

from kdfix.cli.dumps import Answer, DumpPaths, SplitSetFlag, Unit, run_per_dump
from kdfix.cli.output import EXIT_CHECK_FAILED, JsonFlag, handle_errors, stderr


def missing_hint(unit: Unit) -> str:
    """Where to go when a dump has no VMCOREINFO: detect recovers it from memory, fix writes it in."""
    name = " ".join(unit)
    return (f"{name}: no VMCOREINFO in the dump; `kdfix detect {name}` recovers it from guest memory and "
            f"`kdfix fix` adds it")  # fmt: skip


def register(app: typer.Typer) -> None:
    @app.command("vmcoreinfo")
    @handle_errors
    def vmcoreinfo_command(dumps: DumpPaths, split_set: SplitSetFlag = False, as_json: JsonFlag = False) -> None:
        """Print the VMCOREINFO text of each dump, as crash and libkdumpfile find it.

        Exit 1 if a dump has none (kdfix detect recovers it from memory).
        """

        from kdfix.read.probe import open_dump

        def answer(unit: Unit) -> Answer:
            with open_dump(*unit) as dump:
                info = dump.vmcoreinfo
            shape: dict[str, Any] = {"path": unit[0], "paths": list(unit), "vmcoreinfo": None, "entries": None,
                                     "osrelease": None}  # fmt: skip
            if info is None:
                stderr.print(f"kdfix: {missing_hint(unit)}", markup=False, soft_wrap=True)
                return Answer(unit, shape | {"hint": missing_hint(unit)}, "", EXIT_CHECK_FAILED)
            text = info.raw.split(b"\0", 1)[0].decode("latin-1")
            shape |= {"vmcoreinfo": text, "entries": info.as_dict(), "osrelease": info.osrelease}
            shown = text.rstrip("\n")
            return Answer(unit, shape, f"==> {' '.join(unit)} <==\n{shown}" if len(dumps) > 1 else shown)

        run_per_dump(dumps, split_set, as_json, answer)
