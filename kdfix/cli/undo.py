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
            bool,
            typer.Option(
                "--force",
                help="Restore even if patched bytes were changed since, or into a copy (another inode) whose bytes "
                "prove it is the fixed file. Never truncates bytes the fix did not append.",
            ),
        ] = False,
        no_wait: Annotated[
            bool, typer.Option("--no-wait", help="Fail at once if another kdfix is using DUMP (default: wait).")
        ] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Restore the original bytes of DUMP exactly (patched bytes back, appended data truncated), verify, and
        remove the journal.

        The journal records which file it was made for (device, inode, sizes, digests of the header blocks and of
        the appended tail): for any other file, or one that grew or changed past the fix, undo refuses in one
        line and changes nothing."""
        from kdfix.fix.journal import journal_path, undo

        journal = undo(dump, force=force, wait=not no_wait)
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
            what = f"restored {len(journal.writes)} write(s)" if journal.writes else "restored the original file"
            stdout.print(f"{dump}: {what}, size {journal.original_size}", markup=False)
