"""The ``kdfix`` command line: one module per command, joined here."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="kdfix",
    help="Read, convert, generate, detect and fix Linux kernel crash dumps (KDUMP-compressed and ELF).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module defines ``register(app)``; add a command by adding its module name here.
COMMAND_MODULES = (
    "info", "notes", "vmcoreinfo", "read_mem", "verify", "detect", "generate", "convert", "batch", "fix", "undo",
)  # fmt: skip


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"kdfix.cli.{name}").register(app)


_register()


def _print_version(value: bool) -> None:
    if value:
        from kdfix import __version__

        typer.echo(f"kdfix {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version."),
) -> None:
    """Exit codes: 0 all is well; 1 a check failed or a fix could not be determined; 2 unusable input or usage."""


def main() -> None:
    """Entry point of the ``kdfix`` script."""
    app()
