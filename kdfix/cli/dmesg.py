"""``kdfix dmesg``: the kernel log from the dump's own memory, printed as ``makedumpfile --dump-dmesg`` does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from kdfix.cli.dumps import Answer, DumpPaths, SplitSetFlag, Unit, run_per_dump
from kdfix.cli.output import EXIT_CHECK_FAILED, JsonFlag, handle_errors, stderr

if TYPE_CHECKING:
    from kdfix.kernel.dmesg import DmesgResult


def parse_level(value: str | None) -> int | None:
    """A syslog level by number (0-7) or name (emerg … debug, also warning/error)."""
    if value is None:
        return None
    from kdfix.kernel.printk import LEVEL_NAMES

    name = {"warning": "warn", "error": "err"}.get(value.lower(), value.lower())
    if name in LEVEL_NAMES:
        return LEVEL_NAMES.index(name)
    if value.isdigit() and int(value) < len(LEVEL_NAMES):
        return int(value)
    raise typer.BadParameter(f"{value!r}: give 0-7 or one of {', '.join(LEVEL_NAMES)}")


def describe_dmesg(result: DmesgResult) -> dict[str, Any]:
    """The shape ``kdfix dmesg --json`` prints for one dump (README "JSON shapes")."""
    from kdfix.kernel.printk import format_timestamp

    log = result.log
    return {
        "path": result.paths[0],
        "paths": list(result.paths),
        "vmcoreinfo_source": result.vmcoreinfo_source,
        "layout": log.layout,
        "total_records": result.total_records,
        "overwritten": log.overwritten,
        "dropped": log.dropped,
        "damage": list(log.damage),
        "records": [
            {
                "seq": r.seq,
                "ts_nsec": r.ts_nsec,
                "timestamp": format_timestamp(r.ts_nsec).strip("[]").strip(),
                "level": r.level,
                "level_name": r.level_name,
                "facility": r.facility,
                "flags": r.flags,
                "caller": r.caller,
                "subsystem": r.subsystem,
                "device": r.device,
                "text": r.text.decode("utf-8", "backslashreplace"),
            }
            for r in log.records
        ],
    }


def register(app: typer.Typer) -> None:
    @app.command("dmesg")
    @handle_errors
    def dmesg_command(
        dumps: DumpPaths,
        since: Annotated[int | None, typer.Option("--since", metavar="SEQ", min=0,
                                                  help="Only records with sequence number ≥ SEQ.")] = None,
        level: Annotated[str | None, typer.Option("--level", metavar="L",
                                                  help="Only records at level L or more severe (0-7 or a name: "
                                                       "emerg alert crit err warn notice info debug).")] = None,
        show_caller: Annotated[bool, typer.Option("--caller", help="Print the caller id (T<pid> or C<cpu>).")] = False,
        show_level: Annotated[bool, typer.Option("--show-level", help="Prefix each line with <level>.")] = False,
        split_set: SplitSetFlag = False,
        as_json: JsonFlag = False,
    ) -> None:  # fmt: skip
        """Print the kernel log read from the dump's memory (VMCOREINFO from the file, or found in memory).

        Lines equal makedumpfile --dump-dmesg. Exit 1 when part of a log was damaged (listed on stderr).
        """
        max_level = parse_level(level)

        def answer(unit: Unit) -> Answer:
            from kdfix.kernel.dmesg import dmesg
            from kdfix.kernel.printk import iter_lines

            result = dmesg(*unit, since_seq=since, max_level=max_level)
            lines = iter_lines(result.log, show_caller=show_caller, show_level=show_level)
            text = "\n".join(lines) if not as_json else ""
            if len(dumps) > 1 and not as_json:
                text = f"==> {' '.join(unit)} <==\n{text}"
            code = 0
            for line in result.log.damage:
                stderr.print(f"kdfix: {unit[0]}: damaged log: {line}", markup=False, soft_wrap=True)
                code = EXIT_CHECK_FAILED
            return Answer(unit, describe_dmesg(result), text, code)

        run_per_dump(dumps, split_set, as_json, answer)
