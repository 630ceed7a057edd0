"""``kdfix undo``: revert an in-place fix from its journal (DUMP.kdfix-undo)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kdfix.cli.output import JsonFlag, handle_errors, print_json, stdout


def register(app: typer.Typer) -> None:
    @app.command("undo")
    @handle_errors
    def undo_command(
        dump: Annotated[Path, typer.Argument(metavar="DUMP", help="A dump fixed with kdfix fix --in-place.")],
        force: Annotated[
            bool, typer.Option("--force", help="Restore even if the fixed bytes were changed since.")
        ] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Restore the original bytes of DUMP exactly (patched bytes back, appended data truncated), verify, and
        remove the journal."""
        from kdfix.fix.journal import journal_path, undo

        journal = undo(dump, force=force)
        summary = {
            "path": str(dump),
            "journal": journal_path(dump),
            "restored_writes": len(journal.writes),
            "size": journal.original_size,
            "status": "restored",
        }
        if as_json:
            print_json(summary)
        else:
            stdout.print(f"{dump}: restored {len(journal.writes)} write(s), size {journal.original_size}", markup=False)
