"""``kdfix verify``: decode every page and check the structure of each dump; exit 0 only if all are sound."""

from __future__ import annotations

from typing import Any

import typer

from kdfix.cli.dumps import Answer, DumpPaths, SplitSetFlag, Unit, run_per_dump
from kdfix.cli.output import EXIT_CHECK_FAILED, JsonFlag, handle_errors, progress_bar


def _render(unit: Unit, shape: dict[str, Any]) -> str:
    lines = [f"error: {err}" for err in shape["errors"]]
    lines += [f"bad page pfn {bad['pfn']:#x}: {bad['error']}" for bad in shape["bad_pages"]]
    lines += [f"missing: {run['error']}" for run in shape["missing"]]
    lines += [f"warning: {warn}" for warn in shape["warnings"]]
    verdict = "OK" if shape["ok"] else "FAILED"
    lines.append(f"{' '.join(unit)}: {shape['format']}, {shape['pages_checked']} pages checked, "
                 f"{len(shape['bad_pages'])} bad, {shape['missing_pages']} missing, {len(shape['errors'])} errors: "
                 f"{verdict}")  # fmt: skip
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("verify")
    @handle_errors
    def verify_command(
        dumps: DumpPaths,
        workers: int = typer.Option(0, "--workers", min=0, help="Processes decoding pages (0: one per CPU)."),
        split_set: SplitSetFlag = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Decompress every page; check bitmaps, descriptors, offsets and sizes. Reports every bad page."""
        from kdfix.read.dump import default_workers, verify_dump
        from kdfix.read.probe import open_dump

        def answer(unit: Unit) -> Answer:
            with open_dump(*unit) as dump, progress_bar("verifying", dump.memory.dumped.count()) as progress:
                report = verify_dump(dump, progress, workers=workers or default_workers())
            shape = {"ok": report.ok, "path": unit[0], "paths": list(unit), "format": report.format,
                     "pages_checked": report.pages_checked, "bad_pages": report.bad_pages,
                     "missing": [run.as_dict() for run in report.missing], "missing_pages": report.missing_pages,
                     "errors": report.errors, "warnings": report.warnings}  # fmt: skip
            return Answer(unit, shape, _render(unit, shape), 0 if report.ok else EXIT_CHECK_FAILED)

        run_per_dump(dumps, split_set, as_json, answer)
