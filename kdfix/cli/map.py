"""``kdfix map``: the dump's physical memory map, in the terminal, as JSON, or drawn as SVG."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kdfix.cli.dumps import Answer, DumpPaths, SplitSetFlag, Unit, run_per_dump
from kdfix.cli.output import JsonFlag, handle_errors

if TYPE_CHECKING:
    from kdfix.kernel.memmap import MemoryMap

BAR_CHARS = {"data": "#", "zero": ".", "excluded": "x", "hole": " "}
BAR_WIDTH = 64


def describe_map(mm: MemoryMap) -> dict[str, Any]:
    """The shape ``kdfix map --json`` prints for one dump (README "JSON shapes")."""
    return {
        "path": mm.paths[0],
        "paths": list(mm.paths),
        "page_size": mm.page_size,
        "max_pfn": mm.max_pfn,
        "counts": mm.counts,
        "regions": [{"start": r.start, "end": r.end, "kind": r.kind, "label": r.label} for r in mm.regions],
        "page_runs": [{"start_pfn": a, "end_pfn": b, "kind": k} for a, b, k in mm.page_runs],
        "notes": list(mm.notes),
    }


def render_map(mm: MemoryMap) -> str:
    """One line per region; RAM regions get a bar where each character is the majority kind of its slice."""
    ps = mm.page_size
    lines = ["pages: " + ", ".join(f"{k} {v}" for k, v in mm.counts.items()) + f" (page size {ps})",
             "bar: # data  . zero  x excluded", ""]  # fmt: skip
    for r in mm.regions:
        lines.append(f"{r.start:#014x}-{r.end:#014x}  {(r.end - r.start) >> 10:>9} KiB  {r.label}")
        if r.kind != "ram":
            continue
        step = max((r.end - r.start) // BAR_WIDTH, 1)
        bar = []
        for i in range(min(BAR_WIDTH, (r.end - r.start) // step)):
            a, b = r.start + i * step, r.start + (i + 1) * step
            weight = dict.fromkeys(BAR_CHARS, 0)
            for first, end, kind in mm.page_runs:
                overlap = min(end * ps, b) - max(first * ps, a)
                if overlap > 0:
                    weight[kind] += overlap
            bar.append(BAR_CHARS[max(weight, key=lambda k: weight[k])])
        lines.append(f"    [{''.join(bar)}]")
    lines += [f"note: {n}" for n in mm.notes]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("map")
    @handle_errors
    def map_command(
        dumps: DumpPaths,
        svg: Annotated[Path | None, typer.Option("--svg", metavar="FILE", help="Also draw the map as SVG.")] = None,
        split_set: SplitSetFlag = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Show the physical memory map: RAM and holes, dumped / zero / excluded page runs, kernel image,
        VMCOREINFO note and split parts."""

        from kdfix.kernel.memmap import memory_map
        from kdfix.write.atomic import atomic_output

        def answer(unit: Unit) -> Answer:
            mm = memory_map(*unit)
            if svg is not None:
                from kdfix.kernel.memmap_svg import render_svg

                text = render_svg(mm)
                with atomic_output(svg) as tmp:
                    Path(tmp).write_text(text)
            return Answer(unit, describe_map(mm), render_map(mm))

        run_per_dump(dumps, split_set, as_json, answer)
