"""``kdfix read-mem``: raw physical bytes of a dump to stdout or a file."""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from kdfix.cli.output import EXIT_UNUSABLE, fail, handle_errors, print_json
from kdfix.errors import AddressError
from kdfix.units import ceil_div

if TYPE_CHECKING:
    from kdfix.read.memory import PhysicalMemory


def parse_int(text: str, what: str) -> int:
    """Decimal or 0x-hex; a usage error (exit 2) otherwise."""
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise fail(f"{what} {text!r} is not a decimal or 0x-hex number", EXIT_UNUSABLE) from None
    if value < 0:
        raise fail(f"{what} {text!r} is negative", EXIT_UNUSABLE)
    return value


def register(app: typer.Typer) -> None:
    @app.command("read-mem")
    @handle_errors
    def read_mem_command(
        args: Annotated[list[str], typer.Argument(metavar="DUMP... ADDR LENGTH", help="Dump file(s), ADDR, LENGTH.")],
        output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to FILE, not stdout.")] = None,
        zero_fill: Annotated[bool, typer.Option("--zero-fill", help="Read missing pages as zeros.")] = False,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print JSON on stdout: the bytes as hex (or, with -o, their sha256).")
        ] = False,
    ) -> None:
        """Write LENGTH raw physical bytes starting at ADDR (decimal or 0x-hex)."""
        if len(args) < 3:
            raise fail("usage: kdfix read-mem DUMP... ADDR LENGTH", EXIT_UNUSABLE)
        from kdfix.read.probe import open_dump
        from kdfix.write.atomic import atomic_output

        *paths, addr_text, length_text = args
        paddr = parse_int(addr_text, "ADDR")
        length = parse_int(length_text, "LENGTH")
        with open_dump(*paths) as dump:
            mem = dump.memory
            ps = mem.page_size
            if not zero_fill:  # fail before writing anything
                for pfn in range(paddr // ps, ceil_div(paddr + length, ps) if length else 0):
                    if not mem.present(pfn):
                        what = "excluded from" if mem.valid.test(pfn) else "not in"
                        raise AddressError(f"physical address {max(paddr, pfn * ps):#x} (pfn {pfn:#x}) is {what} "
                                           "the dump; use --zero-fill to read zeros", paddr=pfn * ps)  # fmt: skip
            digest = hashlib.sha256()
            shape = {"path": str(paths[0]), "paths": [str(p) for p in paths], "paddr": paddr, "length": length,
                     "output": None if output is None else str(output)}  # fmt: skip
            if output is None and as_json:
                buffer = io.BytesIO()
                _copy(mem, paddr, length, buffer, zero_fill=zero_fill, digest=digest)
                print_json(shape | {"sha256": digest.hexdigest(), "data": buffer.getvalue().hex()})
                return
            if output is None:
                _copy(mem, paddr, length, sys.stdout.buffer, zero_fill=zero_fill)
                sys.stdout.buffer.flush()
                return
            with atomic_output(output) as tmp, open(tmp, "wb") as out:  # a failed read leaves no partial FILE
                _copy(mem, paddr, length, out, zero_fill=zero_fill, digest=digest)
        if as_json:
            print_json(shape | {"sha256": digest.hexdigest(), "data": None})


def _copy(mem: PhysicalMemory, paddr: int, length: int, out: BinaryIO, *, zero_fill: bool, digest: Any = None) -> None:
    """Stream ``length`` bytes from physical address ``paddr`` to ``out`` in chunks of at most 1 MiB."""
    ps = mem.page_size
    pos, end = paddr, paddr + length
    while pos < end:
        take = min(end - pos, (1 << 20) - pos % ps)
        chunk = mem.read(pos, take, zero_fill=zero_fill)
        out.write(chunk)
        if digest is not None:
            digest.update(chunk)
        pos += take
