"""``kdfix batch``: fix every dump under some folders (parallel, resumable, JSON Lines report, shardable)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kdfix.cli.output import EXIT_UNUSABLE, JsonFlag, fail, handle_errors, print_json, stderr, stdout
from kdfix.errors import KdfixError

if TYPE_CHECKING:
    from kdfix.batch.report import Summary
    from kdfix.batch.runner import BatchProgress, BatchResult

_MAX_LISTED = 20


# The options of ``kdfix batch``, declared once here so that the command reads as its signature.
PathsArgument = Annotated[list[Path], typer.Argument(metavar="PATH...", help="Folders (walked recursively) or files.")]
OutDirOption = Annotated[
    Path | None, typer.Option("--out-dir", help="Write fixed copies here, mirroring the input tree.")
]
InPlaceOption = Annotated[
    bool, typer.Option("--in-place", help="Patch the dumps themselves (undo records beside each).")
]
WorkersOption = Annotated[
    int | None, typer.Option("--workers", min=1, help="Worker processes (default: number of cores).")
]
ReportOption = Annotated[
    Path | None,
    typer.Option("--report", help="JSON Lines report (default with --out-dir: OUT/kdfix-batch-report.jsonl)."),
]
ResumeOption = Annotated[
    bool, typer.Option("--resume", help="Skip the files the report already lists; redo only the rest.")
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Diagnose and plan only; write no dump.")]
IncludeOption = Annotated[
    list[str] | None, typer.Option("--include", help="Only paths matching GLOB (path or file name).")
]
ExcludeOption = Annotated[list[str] | None, typer.Option("--exclude", help="Leave out paths matching GLOB.")]
ShardOption = Annotated[
    str | None, typer.Option("--shard", help="K/N: only the K-th of N stable subsets (hash of the path).")
]


def register(app: typer.Typer) -> None:
    @app.command("batch")
    @handle_errors
    def batch_command(
        paths: PathsArgument,
        out_dir: OutDirOption = None,
        in_place: InPlaceOption = False,
        workers: WorkersOption = None,
        report: ReportOption = None,
        resume: ResumeOption = False,
        dry_run: DryRunOption = False,
        include: IncludeOption = None,
        exclude: ExcludeOption = None,
        shard: ShardOption = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Fix every dump found under PATH... as `kdfix fix` would; exit 0 if none failed, 1 if some did.

        Dumps are recognised by content (KDUMP, DISKDUMP, flattened, ELF core) and split sets are grouped;
        every other file is reported as skipped. The report gets one JSON line per file as it finishes.
        """
        if (out_dir is not None and in_place) or (out_dir is None and not in_place and not dry_run):
            raise fail("give exactly one of --out-dir DIR and --in-place (or neither with --dry-run)", EXIT_UNUSABLE)
        from kdfix.batch.runner import run_batch
        from kdfix.batch.shard import parse_shard

        try:
            the_shard = parse_shard(shard) if shard is not None else None
        except KdfixError as exc:
            raise typer.BadParameter(exc.message, param_hint="--shard") from None
        with _progress() as update:
            result = run_batch(
                [str(p) for p in paths],
                out_dir=out_dir,
                in_place=in_place,
                workers=workers,
                report=report,
                resume=resume,
                dry_run=dry_run,
                include=include or (),
                exclude=exclude or (),
                shard=the_shard,
                progress=update,
            )
        if as_json:
            print_json({"report": result.report, **result.summary.to_json(), "exit_code": result.exit_code})
        else:
            _print_summary(result)
        if result.exit_code:
            raise typer.Exit(result.exit_code)


class _progress:
    """Two rich bars on stderr (files, bytes); hidden when stderr is not a terminal."""

    def __enter__(self) -> Any:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self._p = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=stderr.console,
            transient=True,
            disable=not stderr.is_terminal,
        )
        self._p.__enter__()
        self._files = self._p.add_task("files", total=None, detail="")

        def update(p: BatchProgress) -> None:
            self._p.update(self._files, completed=p.bytes_done, total=p.bytes_total or None,
                           detail=f"{p.files_done}/{p.files_total} files")  # fmt: skip

        return update

    def __exit__(self, *exc: object) -> None:
        self._p.__exit__(None, None, None)


def _print_summary(result: BatchResult) -> None:
    from rich.table import Table

    from kdfix.batch.report import STATUSES

    s: Summary = result.summary
    table = Table(title="kdfix batch", title_justify="left")
    table.add_column("status")
    table.add_column("files", justify="right")
    table.add_column("bytes", justify="right")
    for status in STATUSES:
        table.add_row(status, str(s.counts[status]), f"{s.bytes[status]:,}")
    if s.resumed:
        table.add_row("done before (--resume)", str(s.resumed), "")
    if s.not_done:
        table.add_row("not done (interrupted)", str(s.not_done), "")
    stdout.print(table)
    if s.reasons:
        reasons = Table(title="reasons", title_justify="left")
        reasons.add_column("status")
        reasons.add_column("files", justify="right")
        reasons.add_column("reason", overflow="fold")
        for (status, reason), n in sorted(s.reasons.items(), key=lambda kv: (kv[0][0], -kv[1])):
            reasons.add_row(status, str(n), reason)
        stdout.print(reasons)
    for path, error in s.failures[:_MAX_LISTED]:
        stdout.print(f"failed: {path}: {error}", markup=False, soft_wrap=True)
    if len(s.failures) > _MAX_LISTED:
        stdout.print(f"... and {len(s.failures) - _MAX_LISTED} more failures (see the report)", markup=False)
    if result.report:
        stdout.print(f"report: {result.report}", markup=False, soft_wrap=True)
    if s.interrupted:
        stderr.print("kdfix: interrupted; run again with --resume to finish", markup=False)
