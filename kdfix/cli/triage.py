"""``kdfix triage``: release, crash time, the panic message and each CPU's IP/SP symbolized from kallsyms."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from kdfix.cli.dumps import Answer, DumpPaths, SplitSetFlag, Unit, run_per_dump
from kdfix.cli.output import JsonFlag, handle_errors, to_jsonable

if TYPE_CHECKING:
    from kdfix.kernel.triage import TriageReport


def describe_triage(report: TriageReport) -> dict[str, Any]:
    """The shape ``kdfix triage --json`` prints for one dump (README "JSON shapes")."""
    shape: dict[str, Any] = to_jsonable(report)
    shape["path"] = report.paths[0]
    shape["crashtime_utc"] = report.crashtime_utc
    return {"path": shape.pop("path"), **shape}


def render_triage(report: TriageReport) -> str:
    """The human view: one fact per line, then CPUs, the stack scan and the log before the crash."""
    crashtime = (f"{report.crashtime_utc} (CRASHTIME)" if report.crashtime is not None
                 else "not recorded (no CRASHTIME in VMCOREINFO)")  # fmt: skip
    uptime = f"{report.uptime_ns / 1e9:.6f} s (last log record)" if report.uptime_ns is not None else "unknown"
    crashed = "unknown"
    if report.panic_cpu is not None:
        crashed = f"CPU {report.panic_cpu}, PID {report.panic_pid} ({report.panic_comm})"
    lines = [
        f"release:     {report.release or 'unknown'}" + (f" {report.version}" if report.version else ""),
        f"machine:     {report.machine or 'unknown'}",
        f"crash time:  {crashtime}",
        f"uptime:      {uptime}",
        f"panic:       {report.panic_message or '-'}",
        f"oops:        {report.oops_message or '-'}",
        f"crashed on:  {crashed}",
        f"vmcoreinfo:  {report.vmcoreinfo_source}; {report.symbols} kallsyms symbols",
        "",
        "CPU  IP                SP                function",
    ]
    for c in report.cpus:
        lines.append(f"{c.cpu:<4} {c.ip:016x}  {c.sp:016x}  {'(user mode)' if c.user_mode else c.ip_symbol or '?'}")
    if report.stack_cpu is not None:
        lines += ["", f"stack of CPU {report.stack_cpu} (words pointing into kernel text, innermost first):"]
        lines += [f"  {e.slot:016x}: {e.value:016x} {e.symbol}" for e in report.stack] or ["  (none found)"]
    if report.last_lines:
        lines += ["", "log up to the crash:"] + [f"  {line}" for line in report.last_lines]
    if report.notes:
        lines += ["", "notes:"] + [f"  {note}" for note in report.notes]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("triage")
    @handle_errors
    def triage_command(dumps: DumpPaths, split_set: SplitSetFlag = False, as_json: JsonFlag = False) -> None:
        """Summarize the crash: release, crash time, panic message, crashing CPU and task, each CPU's IP and SP
        symbolized from the kernel's own kallsyms, and a scan of the crashing CPU's stack. No vmlinux needed.

        Exit 1 when the dump shows no panic or oops.
        """

        def answer(unit: Unit) -> Answer:
            from kdfix.kernel.triage import triage

            report = triage(*unit)
            text = render_triage(report)
            if len(dumps) > 1:
                text = f"==> {' '.join(unit)} <==\n{text}"
            crashed = report.panic_message is not None or report.oops_message is not None
            return Answer(unit, describe_triage(report), text, 0 if crashed else 1)

        run_per_dump(dumps, split_set, as_json, answer)
