"""System.map: the link-time symbol table ``nm`` prints (``ADDRESS TYPE NAME`` a line), for detection methods that
need a symbol the dump's VMCOREINFO does not carry."""

from __future__ import annotations

import os
from collections.abc import Iterable

from kdfix.errors import FormatError


def parse_system_map(lines: Iterable[str]) -> dict[str, int]:
    """{name: address} of the lines that parse (first occurrence wins); other lines are passed over."""
    symbols: dict[str, int] = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 3:
            try:
                symbols.setdefault(parts[2], int(parts[0], 16))
            except ValueError:
                continue
    return symbols


def read_system_map(path: str | os.PathLike[str]) -> dict[str, int]:
    """Symbols of a System.map file; FormatError if none parse."""
    with open(path, encoding="latin-1") as fh:
        symbols = parse_system_map(fh)
    if not symbols:
        raise FormatError("no symbols found", path=os.fspath(path))
    return symbols
