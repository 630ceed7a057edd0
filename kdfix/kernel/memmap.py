"""``kdfix map``: the physical memory of a dump as regions — RAM and holes, dumped / zero / excluded page runs,
the kernel image, the VMCOREINFO note, the crashkernel reservation, firmware ranges (kdfix.arch.firmware) and each
split part's range.

The reservation is the hole an ELF core header in memory leaves among its PT_LOADs (kexec-tools writes it for the
capture kernel, arch-kernels-and-introspection.md §3.3), else the ``size@offset`` of the kernel's own
``crashkernel=`` (its log's command line, §3.6); a ``crashkernel=`` whose place the kernel chose, with no header in
memory (no capture kernel loaded), is a note, not a region."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from kdfix.arch.firmware import firmware_ranges
from kdfix.detect.cmdline import command_line, parse_crashkernel
from kdfix.detect.kernels import find_core_headers
from kdfix.errors import KdfixError
from kdfix.kernel.kallsyms import read_kallsyms
from kdfix.kernel.view import kernel_view
from kdfix.model import DumpModel
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.memory import PhysicalMemory
from kdfix.read.probe import open_dump

PAGE_KINDS = ("data", "zero", "excluded", "hole")


@dataclass(frozen=True, slots=True)
class Region:
    """A physical range ``[start, end)`` in bytes, of ``kind``, with a label for people."""

    start: int
    end: int
    kind: str
    label: str


@dataclass(frozen=True)
class MemoryMap:
    """Page runs (kinds of PAGE_KINDS, in pfns) and labelled regions (in bytes) of one dump."""

    paths: tuple[str, ...]
    page_size: int
    max_pfn: int
    page_runs: tuple[tuple[int, int, str], ...]
    regions: tuple[Region, ...]
    counts: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def _dumped_runs(memory: PhysicalMemory, start: int, end: int) -> Iterator[tuple[int, int, str]]:
    """Runs of "data" and "zero" pages in a dumped range (the kdump zero descriptor, else the page bytes)."""
    zero_runs = getattr(memory, "zero_runs", None)
    if callable(zero_runs):  # containers answer for a whole range from their descriptor tables
        for first, stop, z in zero_runs(start, end):
            yield first, stop, "zero" if z else "data"
        return
    is_zero = getattr(memory, "is_zero_page", None)
    zero = bytes(memory.page_size)
    kinds: Iterator[tuple[int, bool]]
    if callable(is_zero):
        kinds = ((pfn, bool(is_zero(pfn))) for pfn in range(start, end))
    else:
        kinds = ((pfn, page == zero) for pfn, page in memory.iter_pages(start, end))
    run_start, run_zero = start, None
    for pfn, z in kinds:
        if run_zero is None:
            run_start, run_zero = pfn, z
        elif z != run_zero:
            yield run_start, pfn, "zero" if run_zero else "data"
            run_start, run_zero = pfn, z
    if run_zero is not None:
        yield run_start, end, "zero" if run_zero else "data"


def iter_page_runs(memory: PhysicalMemory) -> Iterator[tuple[int, int, str]]:
    """Maximal runs ``(first_pfn, end_pfn, kind)`` covering ``[0, max_pfn)``: hole, excluded, zero or data."""
    pos = 0
    for vstart, vend in memory.valid.iter_runs(0, memory.max_pfn):
        if vstart > pos:
            yield pos, vstart, "hole"
        cur = vstart
        for dstart, dend in memory.dumped.iter_runs(vstart, vend):
            if dstart > cur:
                yield cur, dstart, "excluded"
            yield from _dumped_runs(memory, dstart, dend)
            cur = dend
        if cur < vend:
            yield cur, vend, "excluded"
        pos = vend
    if pos < memory.max_pfn:
        yield pos, memory.max_pfn, "hole"


def _crashkernel(model: DumpModel, memory: PhysicalMemory, info: VmcoreInfo, notes: list[str]) -> list[Region]:
    """The crashkernel reservation (see the module docstring), with the ``crashkernel=`` asked for in its label."""
    cmdline = command_line(model, memory, info)
    asked = parse_crashkernel(cmdline or "")
    said = f" ({' '.join(c.text for c in asked)})" if asked else ""
    for header in find_core_headers(memory):
        hole = header.reservation()
        if hole is not None:
            return [Region(hole[0], hole[1], "crashkernel", f"crashkernel reservation{said}, holding the ELF core "
                                                            f"header at {header.paddr:#x}")]  # fmt: skip
    fixed = [c.region() for c in asked if c.region() is not None]
    if fixed and fixed[0] is not None:
        return [Region(fixed[0][0], fixed[0][1], "crashkernel", f"crashkernel reservation{said}")]
    if asked:
        notes.append(f"{said.strip(' ()')} on the kernel's command line, but no capture kernel's ELF core header in "
                     "memory: where the kernel reserved it is unknown")  # fmt: skip
    return []


def memory_map(*paths: str | os.PathLike[str]) -> MemoryMap:
    """The memory map of the dump at ``paths`` (several: one split set)."""
    notes: list[str] = []
    regions: list[Region] = []
    with open_dump(*paths) as dump:
        memory = dump.memory
        ps = memory.page_size
        runs = list(iter_page_runs(memory))
        for first, end, kind in runs:
            if kind != "hole" and (not regions or regions[-1].end != first * ps or regions[-1].kind != "ram"):
                regions.append(Region(first * ps, end * ps, "ram", "RAM in the dump"))
            elif kind != "hole":
                regions[-1] = Region(regions[-1].start, end * ps, "ram", "RAM in the dump")
        if dump.split is not None:
            for i, part in enumerate(dump.split.parts):
                regions.append(Region(part.start_pfn * ps, part.end_pfn * ps, "split_part", f"split part {i + 1}"))
        try:
            view = kernel_view(dump)
            symbols = read_kallsyms(view.vmcoreinfo, view.memory, word_size=view.word_size, endian=view.endian)
            text, image_end = symbols.address_of("_stext"), symbols.address_of("_end")
            if text is not None and image_end is not None and image_end > text:
                pstart, plast = view.memory.try_vtop(text), view.memory.try_vtop(image_end - 1)
                if pstart is not None and plast is not None and plast >= pstart:
                    regions.append(Region(pstart, plast + 1, "kernel_image", "kernel image (_stext.._end)"))
            note = symbols.address_of("vmcoreinfo_note")
            if note is not None:
                pointer = int.from_bytes(view.memory.read(note, view.word_size), view.endian)
                paddr = view.memory.try_vtop(pointer)
                if paddr is not None:
                    regions.append(Region(paddr, paddr + ps, "vmcoreinfo", "VMCOREINFO note"))
            dumped = [(r.start, r.end) for r in regions if r.kind == "ram"]
            regions += [Region(a, b, "firmware", label) for a, b, label in firmware_ranges(view.arch.name, dumped,
                                                                                          memory.read)]  # fmt: skip
            regions += _crashkernel(dump.model, memory, view.vmcoreinfo, notes)
        except KdfixError as exc:
            notes.append(f"kernel regions unknown: {exc}")
    counts = dict.fromkeys(PAGE_KINDS, 0)
    for first, end, kind in runs:
        counts[kind] += end - first
    return MemoryMap(tuple(os.fspath(p) for p in paths), ps, memory.max_pfn, tuple(runs), tuple(regions), counts,
                     tuple(notes))  # fmt: skip
