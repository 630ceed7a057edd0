"""Several DUMP arguments: group them into dumps (a file, or the parts of one split set) and answer per dump.

Commands that read dumps take ``DUMP...``. Independent files are answered one by one; the parts of a
``makedumpfile --split`` set are found by content wherever they appear among the arguments (same main header
identity and pfn ranges that fit together, as ``kdfix batch`` groups them: kdfix/batch/walk.py), and
``--split-set`` makes all the arguments one set. A command builds one :class:`Answer` per dump with
:func:`answer_each` and prints them with :func:`emit`: the JSON of one dump is an object, of several a list of
such objects in argument order (a dump that could not be read is ``{"path", "paths", "error", "exit_code"}``);
the exit code is the worst of the dumps' codes.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from kdfix.cli.output import EXIT_UNUSABLE, error_message, print_json, stderr
from kdfix.errors import KdfixError

DumpPaths = Annotated[
    list[Path],
    typer.Argument(
        metavar="DUMP...",
        help="Dump files: each is answered on its own; the parts of a split set are found and read together.",
    ),
]
SplitSetFlag = Annotated[
    bool, typer.Option("--split-set", help="Read all DUMPs as the parts of one split set.")
]  # fmt: skip

Unit = tuple[str, ...]  # the paths of one dump: one file, or the parts of a split set


def _split_identity(path: str) -> Any:
    """The SplitPart of a KDUMP split part (kdfix.batch.walk.probe_split_part), or None."""
    from kdfix.batch.walk import HEAD_SIZE, probe_split_part
    from kdfix.read.probe import probe_container

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        head = os.pread(fd, HEAD_SIZE, 0)
        if probe_container(head) != "kdump":
            return None
        return probe_split_part(head, lambda off, n: os.pread(fd, n, off))
    except (OSError, KdfixError, ValueError):
        return None  # open_dump reports what is wrong with the file
    finally:
        os.close(fd)


def group_dumps(paths: Sequence[str | os.PathLike[str]], *, split_set: bool = False) -> list[Unit]:
    """The dumps the arguments name, in argument order: split parts that belong together form one unit."""
    names = [os.fspath(p) for p in paths]
    if split_set or len(names) == 1:
        return [tuple(names)]
    from kdfix.batch.walk import group_split_parts

    by_key: dict[bytes, list[tuple[Any, str, str, int]]] = defaultdict(list)
    units: list[Unit] = []
    for name in names:
        part = _split_identity(name)
        if part is None:
            units.append((name,))
        else:
            by_key[part.key].append((part, name, name, 0))
    for group in by_key.values():
        if len(group) == 1:
            units.append((group[0][1],))
            continue
        sets, leftovers = group_split_parts(group)
        units.extend(found.files for found in sets)
        left = [s.path for s in leftovers]
        if left:  # parts of one dump that do not make a whole set: read together, the reader names the gap
            units.append(tuple(left))
    first_seen = {name: i for i, name in reversed(list(enumerate(names)))}
    units.sort(key=lambda unit: min(first_seen[p] for p in unit))
    return units


@dataclass
class Answer:
    """What a command says about one dump: JSON value, human text, exit code (or the error that stopped it)."""

    paths: Unit
    json: Any = None
    text: str = ""
    code: int = 0
    error: str | None = None

    def as_json(self) -> Any:
        if self.error is None:
            return self.json
        return {"path": self.paths[0], "paths": list(self.paths), "error": self.error, "exit_code": self.code}


def answer_each(units: Sequence[Unit], answer: Callable[[Unit], Answer]) -> list[Answer]:
    """``answer(unit)`` for every dump; a KdfixError or OSError becomes that dump's error (exit 2, or the error's own
    code: 1 for a result that did not verify), not the run's."""
    answers = []
    for unit in units:
        try:
            answers.append(answer(unit))
        except (KdfixError, OSError) as exc:
            if os.environ.get("KDFIX_DEBUG") or isinstance(exc, BrokenPipeError):
                raise
            code = exc.exit_code if isinstance(exc, KdfixError) else EXIT_UNUSABLE  # 1: a result did not verify
            answers.append(Answer(unit, code=code, error=error_message(exc)))
    return answers


def emit(answers: Sequence[Answer], *, as_json: bool) -> int:
    """Print the answers (JSON object or list, or the texts one after another); return the worst exit code."""
    for a in answers:
        if a.error is not None:
            stderr.print(f"kdfix: {a.error}", markup=False, soft_wrap=True)
    shown = [a for a in answers if a.error is None or len(answers) > 1]
    if as_json and shown:
        print_json(shown[0].as_json() if len(answers) == 1 else [a.as_json() for a in answers])
    elif not as_json:
        texts = [a.text for a in answers if a.error is None and a.text]
        if texts:
            sys.stdout.write("\n\n".join(texts) + "\n")
            sys.stdout.flush()
    return max((a.code for a in answers), default=0)


def run_per_dump(
    paths: Sequence[str | os.PathLike[str]], split_set: bool, as_json: bool, answer: Callable[[Unit], Answer]
) -> None:
    """Group, answer each dump, print; exit with the worst code (the usual body of a read command)."""
    code = emit(answer_each(group_dumps(paths, split_set=split_set), answer), as_json=as_json)
    if code:
        raise typer.Exit(code)
