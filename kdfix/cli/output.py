"""Shared CLI plumbing: JSON/human output, progress bars, and KdfixError → one stderr line + exit code."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from kdfix.errors import KdfixError

if TYPE_CHECKING:
    from rich.console import Console

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_UNUSABLE = 2
EXIT_SIGPIPE = 141  # what a shell reports for a process killed by SIGPIPE


class LazyConsole:
    """A rich Console made on first use: importing rich costs more than most commands' own work."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False)
        return self._console

    @property
    def is_terminal(self) -> bool:
        return (sys.stderr if self._stderr else sys.stdout).isatty()

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Plain text goes straight to the stream; tables and other renderables through rich."""
        if all(isinstance(o, str) for o in objects) and kwargs.get("markup") is False:
            stream = sys.stderr if self._stderr else sys.stdout
            stream.write(" ".join(objects) + kwargs.get("end", "\n"))
            stream.flush()
            return
        self.console.print(*objects, **kwargs)


stderr = LazyConsole(stderr=True)
stdout = LazyConsole(stderr=False)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = EXIT_UNUSABLE) -> typer.Exit:
    """Print one line on stderr and return the Exit to raise."""
    stderr.print(f"kdfix: {message}", markup=False, soft_wrap=True)
    return typer.Exit(code)


def error_message(exc: BaseException) -> str:
    """The one line that names what went wrong (KdfixError: field, offset and path; OSError: path and reason)."""
    if isinstance(exc, OSError) and not isinstance(exc, KdfixError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return str(exc)


def handle_errors(func: F) -> F:
    """Route KdfixError (and OSError) to one stderr line and exit 2; re-raise with KDFIX_DEBUG=1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KdfixError as exc:
            if os.environ.get("KDFIX_DEBUG"):
                raise
            raise fail(str(exc), exc.exit_code) from None
        except BrokenPipeError:  # the reader went away (`kdfix read-mem ... | head`): stop quietly, as on SIGPIPE
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(EXIT_SIGPIPE) from None
        except OSError as exc:
            if os.environ.get("KDFIX_DEBUG"):
                raise
            raise fail(error_message(exc)) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper  # type: ignore[return-value]


def to_jsonable(value: Any) -> Any:
    """Convert records, bytes and enums into JSON-friendly values."""
    import dataclasses
    import enum

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.split(b"\0", 1)[0].decode("latin-1")
    if isinstance(value, enum.Enum):
        return value.value
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


@contextmanager
def progress_bar(
    description: str, total: int | None, *, bytes_mode: bool = False
) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields a ``progress(done, total)`` callback. Hidden when stderr is not a TTY."""
    if not stderr.is_terminal:  # nothing to show: do not even import rich
        yield lambda done, new_total: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    columns: list[Any] = [TextColumn("{task.description}"), BarColumn()]
    columns.append(DownloadColumn() if bytes_mode else TextColumn("{task.completed}/{task.total}"))
    columns.append(TimeRemainingColumn())
    with Progress(*columns, console=stderr.console, transient=True) as progress:
        task = progress.add_task(description, total=total)

        def update(done: int, new_total: int) -> None:
            progress.update(task, completed=done, total=new_total)

        yield update
