"""``kdfix fix``: diagnose → plan → apply → verify (``-o OUT`` or ``--in-place``), and ``--dry-run``; several DUMPs
are the parts of one split set, fixed together."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from kdfix.cli.output import EXIT_CHECK_FAILED, JsonFlag, handle_errors, print_json, progress_bar, stdout
from kdfix.errors import KdfixError
from kdfix.fix import FixResult, SplitFixResult, fix_dump, fix_split_set
from kdfix.format.constants import STATUS_FLAG_NAMES


def _show(result: FixResult | SplitFixResult) -> None:
    out = stdout.print
    mode = " (dry run)" if result.dry_run else ""
    name = result.path if isinstance(result, FixResult) else " ".join(result.paths)
    out(f"{name}: {result.container}, {result.status}{mode}", markup=False, soft_wrap=True)
    if result.phys_base is not None:
        out(f"  phys_base {result.phys_base}", markup=False)
    for e in result.edits:
        where = f"{e['file_offset']:#x}"
        if e["dump_offset"] is not None and e["dump_offset"] != e["file_offset"]:
            where += f" (dump offset {e['dump_offset']:#x})"
        part = f"{e['file']}: " if "file" in e else ""
        out(f"  {part}{e['field']} @ {where}: {e['old']!r} → {e['new']!r}", markup=False, soft_wrap=True)
    for line in result.messages + [f"missing: {m}" for m in result.missing]:
        out(f"  {line}", markup=False, soft_wrap=True)
    written = [result.output] if isinstance(result, FixResult) and result.output else []
    if isinstance(result, SplitFixResult):
        written = result.outputs
    if not result.dry_run and result.bytes_written:  # an in-place no-op writes nothing
        for path in written:
            out(f"  written: {path} ({os.path.getsize(path)} bytes)", markup=False, soft_wrap=True)


def split_outputs(parts: list[Path], output: Path) -> list[Path]:
    """Where ``-o DIR`` puts the fixed parts of a split set: ``DIR/<part's file name>``, one per part."""
    if not output.is_dir():
        raise KdfixError("with several parts (a split set), -o names an existing directory", path=str(output))
    names = [p.name for p in parts]
    if len(set(names)) != len(names):
        raise KdfixError("split set parts share a file name; -o DIR needs distinct names", path=str(output))
    return [output / name for name in names]


def register(app: typer.Typer) -> None:
    @app.command("fix")
    @handle_errors
    def fix_command(
        dump: Annotated[
            list[Path],
            typer.Argument(metavar="DUMP...", help="KDUMP, flattened or ELF dump; several: parts of one split set."),
        ],
        output: Annotated[
            Path | None,
            typer.Option(
                "-o", "--output", help="Write the fixed dump here; for a split set, an existing directory (DIR/PART)."
            ),
        ] = None,
        in_place: Annotated[
            bool, typer.Option("--in-place", help="Patch DUMP itself (undo journal beside it; each part's own).")
        ] = False,
        phys_base: Annotated[
            str, typer.Option("--phys-base", help="auto (VMCOREINFO, else detection) or N (decimal, 0x-hex, negative).")
        ] = "auto",
        vmcoreinfo: Annotated[
            str, typer.Option("--vmcoreinfo", help="auto (recover from memory), FILE, or none.")
        ] = "auto",
        utsname: Annotated[str, typer.Option("--utsname", help="auto or none.")] = "auto",
        set_flag: Annotated[
            list[str] | None, typer.Option("--set-flag", help=f"Set a status flag: {', '.join(STATUS_FLAG_NAMES)}.")
        ] = None,
        clear_flag: Annotated[list[str] | None, typer.Option("--clear-flag", help="Clear a status flag.")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Make DUMP readable by crash, makedumpfile, libkdumpfile and drgn.

        Fixes the header phys_base, injects VMCOREINFO (note + header pointer), fills the utsname and the
        timestamp, sets or clears status flags; an ELF dump gets a VMCOREINFO note and the /proc/vmcore layout.

        Several DUMPs are the parts of one makedumpfile --split set: the set is diagnosed as one dump and every
        part gets the same header edits; -o DIR writes DIR/<part name> for each part, and --in-place leaves an
        undo journal beside each part (kdfix undo PART).

        Exit 0: fixed or already fine; 1: a needed value could not be determined (nothing written); 2: unusable.
        """
        if (output is None) == (not in_place) and not dry_run:
            raise typer.BadParameter("give exactly one of -o OUT or --in-place", param_hint="-o/--in-place")
        if output is not None and in_place:
            raise typer.BadParameter("give exactly one of -o OUT or --in-place", param_hint="-o/--in-place")
        for name in (set_flag or []) + (clear_flag or []):
            if name.lower() not in STATUS_FLAG_NAMES:
                raise typer.BadParameter(f"{name!r} is not one of {', '.join(STATUS_FLAG_NAMES)}", param_hint="flag")
        options = {
            "phys_base": phys_base,
            "vmcoreinfo": vmcoreinfo,
            "utsname": utsname,
            "set_flags": tuple(set_flag or ()),
            "clear_flags": tuple(clear_flag or ()),
            "dry_run": dry_run,
        }
        result: FixResult | SplitFixResult
        with progress_bar("fix", None) as progress:
            if len(dump) == 1:
                result = fix_dump(dump[0], output=output, in_place=in_place, progress=progress, **options)
            else:
                outputs = None if output is None else split_outputs(dump, output)
                result = fix_split_set(dump, outputs=outputs, in_place=in_place, progress=progress, **options)
        if as_json:
            print_json(result.as_json())
        else:
            _show(result)
        if result.status == "undetermined":
            raise typer.Exit(EXIT_CHECK_FAILED)
