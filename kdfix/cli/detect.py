"""``kdfix detect``: recover the header phys_base and KERNELOFFSET (exit 0 found, 1 undetermined, 2 unusable)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kdfix.cli.dumps import Answer, DumpPaths, SplitSetFlag, Unit, run_per_dump
from kdfix.cli.output import EXIT_CHECK_FAILED, JsonFlag, handle_errors
from kdfix.errors import KdfixError
from kdfix.units import to_s64

if TYPE_CHECKING:
    from kdfix.detect.candidate import DetectResult
    from kdfix.detect.kernels import Wanted

KernelOption = Annotated[
    str,
    typer.Option(
        "--kernel",
        help="With several kernels in memory (a dump of a running kdump capture kernel): describe the 'crashed' "
        "one (default, as the capture kernel's /proc/vmcore would) or the 'running' one.",
    ),
]
SymbolsOption = Annotated[
    Path | None,
    typer.Option("--system-map", help="System.map of the vmlinux (link-time symbols for the IDT and banner methods)."),
]


def parse_kernel(text: str) -> Wanted:
    """``--kernel``: crashed or running (UsageError-style KdfixError otherwise)."""
    from kdfix.detect.kernels import WANTED

    for wanted in WANTED:
        if text == wanted:
            return wanted
    raise KdfixError(f"{text!r} is not one of {', '.join(WANTED)}", field="--kernel")


def result_json(result: DetectResult) -> dict[str, Any]:
    """The ``--json`` shape: phys_base as an int (u64), kernel_offset, method, confidence, evidence, vmcoreinfo."""
    text = None if result.vmcoreinfo is None else result.vmcoreinfo.split(b"\0", 1)[0].decode("latin-1")
    return {
        "arch": result.arch,
        "phys_base": result.phys_base,
        "phys_base_signed": None if result.phys_base is None else to_s64(result.phys_base),
        "kernel_offset": result.kernel_offset,
        "method": result.method,
        "confidence": result.confidence,
        "evidence": list(result.evidence),
        "vmcoreinfo": text,
        "candidates": [
            {"method": c.method, "arch": c.arch, "phys_base": c.phys_base, "kernel_offset": c.kernel_offset}
            for c in result.candidates
        ],
        "kernels": result.kernels.as_json() if result.kernels is not None else [],
        "kernel": None if result.choice is None or result.choice.kernel is None else result.choice.kernel.role,
        "kernel_reason": None if result.choice is None else result.choice.reason,
    }


def _render(result: DetectResult) -> str:
    lines = []
    if result.phys_base is None:
        lines.append("phys_base: undetermined")
    else:
        lines.append(f"phys_base: {result.phys_base:#x} ({to_s64(result.phys_base)})")
        offset = "unknown" if result.kernel_offset is None else f"{result.kernel_offset:#x}"
        lines.append(f"kernel_offset: {offset}")
    lines.append(f"method: {result.method}  confidence: {result.confidence}  arch: {result.arch or 'unknown'}")
    if result.kernels is not None and result.kernels.several and result.choice is not None:
        chosen = result.choice.kernel
        role = "no" if chosen is None else f"the {chosen.role}"
        lines.append(f"{result.kernels.problem()}; this describes {role} kernel: {result.choice.reason}")
    lines.extend(f"  {line}" for line in result.evidence)
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("detect")
    @handle_errors
    def detect_command(
        dumps: DumpPaths,
        system_map: SymbolsOption = None,
        kernel: KernelOption = "crashed",
        split_set: SplitSetFlag = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Find phys_base and the KASLR offset of each dump.

        Sources, in order: VMCOREINFO, a memory scan, a CR3 walk, the IDT, the banner, the ELF PT_LOAD.
        Exit 1 if a dump's phys_base could not be determined.
        """
        from kdfix.detect.combine import detect
        from kdfix.kernel.system_map import read_system_map
        from kdfix.read.probe import open_dump

        symbols = read_system_map(system_map) if system_map is not None else None
        wanted = parse_kernel(kernel)

        def answer(unit: Unit) -> Answer:
            with open_dump(*unit) as dump:
                result = detect(dump.model, dump.memory, vmlinux_symbols=symbols, kernel=wanted)
            text = _render(result)
            if len(dumps) > 1:
                text = f"{' '.join(unit)}:\n{text}"
            code = EXIT_CHECK_FAILED if result.phys_base is None else 0
            return Answer(unit, {"path": unit[0], "paths": list(unit)} | result_json(result), text, code)

        run_per_dump(dumps, split_set, as_json, answer)
