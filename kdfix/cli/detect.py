"""``kdfix detect``: recover phys_base and KERNELOFFSET of an x86_64 dump (exit 0 found, 1 undetermined, 2 unusable)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kdfix.cli.info import DumpPaths
from kdfix.cli.output import EXIT_CHECK_FAILED, JsonFlag, handle_errors, print_json, stdout
from kdfix.detect import DetectResult, detect
from kdfix.errors import FormatError
from kdfix.read.probe import open_dump
from kdfix.units import to_s64

SymbolsOption = Annotated[
    Path | None,
    typer.Option("--system-map", help="System.map of the vmlinux (link-time symbols for the IDT and banner methods)."),
]


def read_system_map(path: Path) -> dict[str, int]:
    """Symbols of a System.map (``ADDRESS TYPE NAME`` lines); FormatError if none parse."""
    symbols: dict[str, int] = {}
    with open(path, encoding="latin-1") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 3:
                try:
                    symbols.setdefault(parts[2], int(parts[0], 16))
                except ValueError:
                    continue
    if not symbols:
        raise FormatError("no symbols found", path=str(path))
    return symbols


def result_json(result: DetectResult) -> dict[str, Any]:
    """The ``--json`` shape: phys_base as an int (u64), kernel_offset, method, confidence, evidence, vmcoreinfo."""
    text = None if result.vmcoreinfo is None else result.vmcoreinfo.split(b"\0", 1)[0].decode("latin-1")
    return {
        "phys_base": result.phys_base,
        "phys_base_signed": None if result.phys_base is None else to_s64(result.phys_base),
        "kernel_offset": result.kernel_offset,
        "method": result.method,
        "confidence": result.confidence,
        "evidence": list(result.evidence),
        "vmcoreinfo": text,
        "candidates": [
            {"method": c.method, "phys_base": c.phys_base, "kernel_offset": c.kernel_offset} for c in result.candidates
        ],
    }


def register(app: typer.Typer) -> None:
    @app.command("detect")
    @handle_errors
    def detect_command(dumps: DumpPaths, system_map: SymbolsOption = None, as_json: JsonFlag = False) -> None:
        """Find phys_base and the KASLR offset (VMCOREINFO, memory scan, CR3 walk, IDT, banner, ELF PT_LOAD)."""
        symbols = read_system_map(system_map) if system_map is not None else None
        with open_dump(*dumps) as dump:
            result = detect(dump.model, dump.memory, vmlinux_symbols=symbols)
        if as_json:
            print_json(result_json(result))
        else:
            if result.phys_base is None:
                stdout.print("phys_base: undetermined", markup=False)
            else:
                stdout.print(
                    f"phys_base: {result.phys_base:#x} ({to_s64(result.phys_base)})", markup=False, soft_wrap=True
                )
                offset = "unknown" if result.kernel_offset is None else f"{result.kernel_offset:#x}"
                stdout.print(f"kernel_offset: {offset}", markup=False)
            stdout.print(f"method: {result.method}  confidence: {result.confidence}", markup=False)
            for line in result.evidence:
                stdout.print(f"  {line}", markup=False, soft_wrap=True)
        if result.phys_base is None:
            raise typer.Exit(EXIT_CHECK_FAILED)
