"""``--help`` as users read it: paragraphs wrapped once, no Python type names shown as option values.

Every command is built with :class:`HelpfulCommand` (``kdfix.cli.build_app`` sets it). Typer shows an
argument's annotation (``<list[Path]>``) and an option's type (``<str>``, ``<int range>``) in the usage
column; here arguments show only their metavar, and an option without an explicit metavar gets a plain one
(TEXT, N, PATH). Flags show no value at all.
"""

from __future__ import annotations

import functools
from typing import Any

import typer.core

PLAIN_METAVARS = {"str": "TEXT", "int": "N", "int range": "N", "path": "PATH", "float": "X", "float range": "X"}


def _shown_as(shown: str, ctx: Any = None, *, usage: bool = False) -> str:
    return shown


class HelpfulCommand(typer.core.TyperCommand):
    """A TyperCommand whose parameters are shown by metavar only."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, typer.core.TyperArgument):
                # the usage line and the argument list show the metavar as written (DUMP..., not {DUMP...}:path)
                name = param.metavar or (param.name or "ARG").upper()
                shown = name if param.required else f"[{name}]"
                param.make_metavar = functools.partial(_shown_as, shown)  # type: ignore[method-assign]
            elif isinstance(param, typer.core.TyperOption) and param.metavar is None and not param.is_flag:
                kind = (param.type.get_metavar(param=param, ctx=ctx) or param.type.name).strip("<>")
                param.metavar = PLAIN_METAVARS.get(kind, "VALUE")
        return params

    def get_short_help_str(self, limit: int = 45) -> str:
        """The first paragraph of the help, whole: the command list never cuts a sentence off mid-way."""
        if self.short_help:
            return self.short_help
        return " ".join((self.help or "").split("\n\n", 1)[0].split()).removesuffix(".")


def use_helpful_commands(app: typer.Typer) -> None:
    """Build every command of ``app`` (whoever registered it) as a HelpfulCommand."""
    for info in app.registered_commands:
        if info.cls is None or info.cls is typer.core.TyperCommand:
            info.cls = HelpfulCommand
