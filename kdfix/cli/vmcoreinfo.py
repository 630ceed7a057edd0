"""``kdfix vmcoreinfo``: print the VMCOREINFO text of a dump (exit 1 if it has none)."""

from __future__ import annotations

import sys

import typer

from kdfix.cli.info import DumpPaths
from kdfix.cli.output import EXIT_CHECK_FAILED, fail, handle_errors
from kdfix.read.probe import open_dump


def register(app: typer.Typer) -> None:
    @app.command("vmcoreinfo")
    @handle_errors
    def vmcoreinfo_command(dumps: DumpPaths) -> None:
        """Print the VMCOREINFO text (as libkdumpfile/crash would find it)."""
        with open_dump(*dumps) as dump:
            info = dump.vmcoreinfo
        if info is None:
            raise fail(f"{dumps[0]}: no VMCOREINFO", EXIT_CHECK_FAILED)
        text = info.raw.split(b"\0", 1)[0]
        sys.stdout.buffer.write(text if text.endswith(b"\n") or not text else text + b"\n")
        sys.stdout.flush()
