"""The memory map drawn as SVG with drawsvg: one bar per RAM region (page runs coloured by kind), labelled
regions below it, a legend and addresses. Every drawn element carries ``data-kind`` / ``data-start`` / ``data-end``
so the picture can be checked against the JSON."""

from __future__ import annotations

import drawsvg  # type: ignore[import-untyped]

from kdfix.kernel.memmap import MemoryMap

COLOURS = {"data": "#2b6cb0", "zero": "#bee3f8", "excluded": "#f6ad55", "hole": "#e2e8f0",
           "kernel_image": "#c53030", "vmcoreinfo": "#38a169", "split_part": "#805ad5", "crashkernel": "#d69e2e",
           "firmware": "#4a5568"}  # fmt: skip
WIDTH, BAR, ROW = 900, 28, 70
LEFT = 10


def render_svg(mm: MemoryMap) -> str:
    """SVG text of ``mm``: RAM regions stacked as rows, each drawn at its own scale."""
    ram = [r for r in mm.regions if r.kind == "ram"]
    others = [r for r in mm.regions if r.kind != "ram"]
    height = 60 + ROW * len(ram) + 24 * len(COLOURS)
    d = drawsvg.Drawing(WIDTH, height, font_family="monospace", font_size=12)
    d.append(drawsvg.Rectangle(0, 0, WIDTH, height, fill="white"))
    d.append(drawsvg.Text("physical memory map", 14, LEFT, 20))
    ps = mm.page_size
    for row, region in enumerate(ram):
        y = 40 + row * ROW
        span = region.end - region.start
        scale = (WIDTH - 2 * LEFT) / span

        def x_of(paddr: int, region_start: int = region.start, scale: float = scale) -> float:
            return LEFT + (paddr - region_start) * scale

        for first, end, kind in mm.page_runs:
            a, b = max(first * ps, region.start), min(end * ps, region.end)
            if a >= b:
                continue
            d.append(drawsvg.Rectangle(x_of(a), y, max((b - a) * scale, 0.5), BAR, fill=COLOURS[kind],
                                       data_kind=kind, data_start=f"{a:#x}", data_end=f"{b:#x}"))  # fmt: skip
        for other in others:
            a, b = max(other.start, region.start), min(other.end, region.end)
            if a >= b:
                continue
            d.append(drawsvg.Rectangle(x_of(a), y + BAR + 2, max((b - a) * scale, 2), 8, fill=COLOURS[other.kind],
                                       data_kind=other.kind, data_start=f"{other.start:#x}",
                                       data_end=f"{other.end:#x}"))  # fmt: skip
        d.append(drawsvg.Text(f"{region.start:#x}", 11, LEFT, y + BAR + 24))
        d.append(drawsvg.Text(f"{region.end:#x}", 11, WIDTH - LEFT, y + BAR + 24, text_anchor="end"))
    y = 50 + ROW * len(ram)
    for i, (kind, colour) in enumerate(COLOURS.items()):
        d.append(drawsvg.Rectangle(LEFT, y + 24 * i, 16, 16, fill=colour, data_legend=kind))
        d.append(drawsvg.Text(kind.replace("_", " "), 12, LEFT + 24, y + 24 * i + 13))
    return str(d.as_svg())
