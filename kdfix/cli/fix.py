"""``kdfix fix``: diagnose → plan → apply → verify (``-o OUT`` or ``--in-place``), and ``--dry-run``, per dump;
the parts of a split set among the DUMPs are fixed together (kdfix/cli/dumps.py groups them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kdfix.cli.dumps import Answer, SplitSetFlag, Unit, answer_each, emit, group_dumps
from kdfix.cli.output import EXIT_CHECK_FAILED, JsonFlag, handle_errors, progress_bar
from kdfix.errors import KdfixError
from kdfix.format.constants import STATUS_FLAG_NAMES

if TYPE_CHECKING:
    from kdfix.fix import FixResult, SplitFixResult


def fix_json(result: FixResult | SplitFixResult) -> dict[str, Any]:
    """One shape for a file and a split set: ``path``/``output``/``journal`` are the first of ``paths``/...``s``."""
    shape = result.as_json()
    if "paths" in shape:  # a split set
        outputs, journals = shape["outputs"], shape["journals"]
        return {"path": shape["paths"][0], **shape, "output": outputs[0] if outputs else None,
                "journal": journals[0] if journals else None}  # fmt: skip
    return {"path": shape["path"], "paths": [shape["path"]], **shape,
            "outputs": [shape["output"]] if shape["output"] else [],
            "journals": [shape["journal"]] if shape["journal"] else []}  # fmt: skip


def render_fix(shape: dict[str, Any]) -> str:
    """The human view: status, the edits with their offsets, messages, what was written."""
    mode = " (dry run)" if shape["dry_run"] else ""
    lines = [f"{' '.join(shape['paths'])}: {shape['container']}, {shape['status']}{mode}"]
    if shape["phys_base"] is not None:
        lines.append(f"  phys_base {shape['phys_base']}")
    for e in shape["edits"]:
        where = f"{e['file_offset']:#x}"
        if e["dump_offset"] is not None and e["dump_offset"] != e["file_offset"]:
            where += f" (dump offset {e['dump_offset']:#x})"
        part = f"{e['file']}: " if "file" in e else ""
        lines.append(f"  {part}{e['field']} @ {where}: {e['old']!r} → {e['new']!r}")
    lines.extend(f"  {line}" for line in shape["messages"] + [f"missing: {m}" for m in shape["missing"]])
    if not shape["dry_run"] and shape["bytes_written"]:  # an in-place no-op writes nothing
        lines.extend(f"  written: {path} ({os.path.getsize(path)} bytes)" for path in shape["outputs"])
    return "\n".join(lines)


def output_paths(units: list[Unit], output: Path) -> list[list[Path]]:
    """Where ``-o`` puts each dump's files: OUT itself for one file, else ``DIR/<file name>`` for every file."""
    if len(units) == 1 and len(units[0]) == 1:
        return [[output]]
    if not output.is_dir():
        raise KdfixError("with several dumps or a split set, -o names an existing directory", path=str(output))
    names = [Path(p).name for unit in units for p in unit]
    if len(set(names)) != len(names):
        raise KdfixError("the dumps share a file name; -o DIR needs distinct names", path=str(output))
    return [[output / Path(p).name for p in unit] for unit in units]


DumpArg = Annotated[
    list[Path],
    typer.Argument(
        metavar="DUMP...", help="KDUMP, flattened or ELF dumps; the parts of a split set are fixed together."
    ),
]
OutputOption = Annotated[
    Path | None,
    typer.Option(
        "-o",
        "--output",
        metavar="OUT",
        help="The fixed dump; with several dumps or a split set, an existing directory.",
    ),
]
InPlaceFlag = Annotated[
    bool, typer.Option("--in-place", help="Patch DUMP itself (undo journal beside it; each part's own).")
]
PhysBaseOption = Annotated[
    str,
    typer.Option(
        "--phys-base", metavar="auto|N", help="auto (VMCOREINFO, else detection) or N (decimal, 0x-hex, negative)."
    ),
]
VmcoreinfoOption = Annotated[
    str, typer.Option("--vmcoreinfo", metavar="auto|FILE|none", help="auto (recover from memory), FILE, or none.")
]
UtsnameOption = Annotated[str, typer.Option("--utsname", metavar="auto|none", help="auto or none.")]
SetFlagOption = Annotated[
    list[str] | None,
    typer.Option("--set-flag", metavar="FLAG", help=f"Set a status flag: {', '.join(STATUS_FLAG_NAMES)}."),
]
ClearFlagOption = Annotated[list[str] | None, typer.Option("--clear-flag", metavar="FLAG", help="Clear a status flag.")]
FixKernelOption = Annotated[
    str,
    typer.Option(
        "--kernel",
        help="With several kernels in memory (a dump of a running kdump capture kernel): describe the "
        "'crashed' one (default: its phys_base, VMCOREINFO and registers at panic, as the capture kernel's "
        "/proc/vmcore would) or the 'running' one (with QEMU's CPU registers). kdfix detect chooses alike.",
    ),
]
FlatFlag = Annotated[
    bool, typer.Option("--flat", help="With -o: write a flattened stream (default: a random-access KDUMP file).")
]
DryRunFlag = Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")]
ForceFlag = Annotated[bool, typer.Option("--force", help="--in-place even on a file with several hard links.")]
NoWaitFlag = Annotated[
    bool, typer.Option("--no-wait", help="Fail at once if another kdfix is using DUMP (default: wait).")
]


def check_fix_arguments(output: Path | None, in_place: bool, dry_run: bool, flags: list[str]) -> None:
    """Usage errors (exit 2 with the option named) before any dump is opened."""
    if (output is None) == (not in_place) and not dry_run:
        raise typer.BadParameter("give exactly one of -o OUT or --in-place", param_hint="-o/--in-place")
    if output is not None and in_place:
        raise typer.BadParameter("give exactly one of -o OUT or --in-place", param_hint="-o/--in-place")
    for name in flags:
        if name.lower() not in STATUS_FLAG_NAMES:
            raise typer.BadParameter(f"{name!r} is not one of {', '.join(STATUS_FLAG_NAMES)}", param_hint="flag")


def fix_answer(unit: Unit, out: list[Path] | None, *, in_place: bool, flat: bool, options: dict[str, Any]) -> Answer:
    """Fix one dump or split set (``out``: its output files, None in place) and shape the answer."""
    from kdfix.fix import fix_dump, fix_split_set

    result: FixResult | SplitFixResult
    with progress_bar("fix", None) as progress:
        if len(unit) == 1:
            target = None if out is None else out[0]
            result = fix_dump(unit[0], output=target, in_place=in_place, progress=progress, flat=flat, **options)
        else:
            if flat:
                raise KdfixError("--flat: split parts are written as they are", path=unit[0])
            result = fix_split_set(list(unit), outputs=out, in_place=in_place, progress=progress, **options)
    shape = fix_json(result)
    return Answer(unit, shape, render_fix(shape), EXIT_CHECK_FAILED if result.status == "undetermined" else 0)


def register(app: typer.Typer) -> None:
    @app.command("fix")
    @handle_errors
    def fix_command(
        dump: DumpArg,
        output: OutputOption = None,
        in_place: InPlaceFlag = False,
        phys_base: PhysBaseOption = "auto",
        vmcoreinfo: VmcoreinfoOption = "auto",
        utsname: UtsnameOption = "auto",
        set_flag: SetFlagOption = None,
        clear_flag: ClearFlagOption = None,
        kernel: FixKernelOption = "crashed",
        flat: FlatFlag = False,
        dry_run: DryRunFlag = False,
        split_set: SplitSetFlag = False,
        force: ForceFlag = False,
        no_wait: NoWaitFlag = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Make DUMP readable by crash, makedumpfile, libkdumpfile and drgn.

        Fixes the header phys_base, injects VMCOREINFO (note + header pointer), fills the utsname and the
        timestamp, sets or clears status flags; an ELF dump gets a VMCOREINFO note and the /proc/vmcore layout.
        With -o the result is a random-access KDUMP file (a flattened stream is reassembled, as makedumpfile -R
        does) unless --flat is given; --in-place keeps the container.

        Each DUMP is fixed on its own, except the parts of a makedumpfile --split set (found by content, or all
        DUMPs with --split-set): the set is diagnosed as one dump and every part gets the same header edits.
        With several dumps, -o DIR writes DIR/<file name> for each file; --in-place leaves an undo journal
        beside each file (kdfix undo FILE).

        DUMP is locked while it is fixed: a second kdfix on the same dump waits (or, with --no-wait, fails at
        once). --in-place refuses a file with several hard links unless --force (docs/GUARANTEES.md).

        Exit 0: fixed (re-read and verified) or already fine; 1: a needed value could not be determined, or the
        result did not verify (nothing replaced the input); 2: unusable input or a failed write.
        """
        check_fix_arguments(output, in_place, dry_run, (set_flag or []) + (clear_flag or []))
        options: dict[str, Any] = {
            "phys_base": phys_base,
            "vmcoreinfo": vmcoreinfo,
            "utsname": utsname,
            "set_flags": tuple(set_flag or ()),
            "clear_flags": tuple(clear_flag or ()),
            "kernel": kernel,
            "dry_run": dry_run,
            "force": force,
            "wait": not no_wait,
        }
        units = group_dumps(dump, split_set=split_set)
        targets = output_paths(units, output) if output is not None else [None] * len(units)
        where = dict(zip(units, targets, strict=True))

        def answer(unit: Unit) -> Answer:
            return fix_answer(unit, where[unit], in_place=in_place, flat=flat, options=options)

        code = emit(answer_each(units, answer), as_json=as_json)
        if code:
            raise typer.Exit(code)
