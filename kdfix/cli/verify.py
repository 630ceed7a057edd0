"""``kdfix verify``: decode every page and check the structure; exit 0 only if the dump is sound."""

from __future__ import annotations

import typer

from kdfix.cli.info import DumpPaths
from kdfix.cli.output import EXIT_CHECK_FAILED, JsonFlag, handle_errors, print_json, progress_bar, stdout
from kdfix.read.dump import default_workers, verify_dump
from kdfix.read.probe import open_dump


def register(app: typer.Typer) -> None:
    @app.command("verify")
    @handle_errors
    def verify_command(
        dumps: DumpPaths,
        workers: int = typer.Option(0, "--workers", min=0, help="Processes decoding pages (0: one per CPU)."),
        as_json: JsonFlag = False,
    ) -> None:
        """Decompress every page; check bitmaps, descriptors, offsets and sizes. Reports every bad page."""
        with open_dump(*dumps) as dump, progress_bar("verifying", dump.memory.dumped.count()) as progress:
            report = verify_dump(dump, progress, workers=workers or default_workers())
        if as_json:
            print_json({"ok": report.ok, "path": str(dumps[0]), "format": report.format,
                        "pages_checked": report.pages_checked, "bad_pages": report.bad_pages,
                        "errors": report.errors, "warnings": report.warnings})  # fmt: skip
        else:
            for err in report.errors:
                stdout.print(f"error: {err}", markup=False, soft_wrap=True)
            for bad in report.bad_pages:
                stdout.print(f"bad page pfn {bad['pfn']:#x}: {bad['error']}", markup=False, soft_wrap=True)
            for warn in report.warnings:
                stdout.print(f"warning: {warn}", markup=False, soft_wrap=True)
            verdict = "OK" if report.ok else "FAILED"
            stdout.print(f"{dumps[0]}: {report.format}, {report.pages_checked} pages checked, "
                         f"{len(report.bad_pages)} bad, {len(report.errors)} errors: {verdict}", markup=False,
                         soft_wrap=True)  # fmt: skip
        if not report.ok:
            raise typer.Exit(EXIT_CHECK_FAILED)
