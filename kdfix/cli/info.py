"""``kdfix info``: header, notes and origin of a dump (human view like crash's ``help -n``, or JSON)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import typer

from kdfix.cli.dumps import Answer, DumpPaths, SplitSetFlag, Unit, run_per_dump
from kdfix.cli.output import JsonFlag, handle_errors
from kdfix.errors import KdfixError
from kdfix.units import cstr

if TYPE_CHECKING:
    from kdfix.read.dump import Dump
    from kdfix.read.elf import ElfContainer
    from kdfix.read.kdump import KdumpContainer


def _kernel_problems(dump: Dump) -> list[str]:
    """ "two kernels in memory: ..." when the CPU notes hint at a running kdump capture kernel (cpu_hints.py)."""
    from kdfix.detect.cpu_hints import several_kernels_problem

    try:
        line = several_kernels_problem(dump.model, dump.memory)
    except KdfixError:
        return []
    return [line] if line is not None else []


def describe_dump(dump: Dump) -> dict[str, Any]:
    """The facts ``kdfix info --json`` prints."""
    from kdfix.arch import recognise
    from kdfix.read.origin import identify_origin
    from kdfix.read.readiness import reader_findings

    model = dump.model
    origin, evidence = identify_origin(dump)
    k = dump.kdump
    arch = recognise(model, dump.vmcoreinfo)
    info: dict[str, Any] = {
        "path": dump.path,
        "paths": list(dump.paths),
        "format": dump.container,
        "signature": dump.signature.decode("latin-1") if dump.signature is not None else None,
        "header_version": dump.header_version,
        "abi": dump.abi.name,
        "arch": None if arch is None else arch.arch.name,
        "arch_evidence": [] if arch is None else list(arch.evidence),
        "block_size": model.block_size,
        "max_mapnr": model.max_mapnr,
        "phys_base": model.phys_base,
        "dump_level": model.dump_level,
        "compression": dump.compression,
        "page_codecs": None,  # {codec: pages} the page flags name, when the header's status names no codec
        "status": k.status if k is not None else model.status,
        "status_flags": dump.status_flags,
        "utsname": {f: cstr(getattr(model.utsname, f)) for f in _field_names(model.utsname)},
        "timestamp": {"tv_sec": model.tv_sec, "tv_usec": model.tv_usec},
        "nr_cpus": model.nr_cpus,
        "dumped_pages": dump.memory.dumped.count(),
        "notes": [{"name": n.name.decode("latin-1"), "type": n.type, "size": len(n.desc)} for n in dump.notes],
        "vmcoreinfo": dump.vmcoreinfo is not None,
        "osrelease": dump.vmcoreinfo.osrelease if dump.vmcoreinfo is not None else None,
        "eraseinfo": dump.eraseinfo.decode("latin-1") if dump.eraseinfo else None,
        "origin": origin,
        "origin_evidence": evidence,
        "problems": [*dump.problems, *_kernel_problems(dump)],
        "needs_fix": reader_findings(dump),
    }
    if k is not None and dump.compression == "none" and not k.is_diskdump:
        info["page_codecs"] = _page_codecs(dump, k)
    if k is not None:
        info["kdump"] = _describe_kdump(dump, k)
    if dump.elf is not None:
        info["elf"] = _describe_elf(dump.elf)
    return info


def _page_codecs(dump: Dump, k: KdumpContainer) -> dict[str, int] | None:
    """{codec: pages} the page flags of every part name; None when they agree with the header (no codec)."""
    parts = dump.split.parts if dump.split is not None else (k,)
    used: dict[str, int] = {}
    for part in parts:
        counts, _seen = part.page_codecs()
        for name, n in counts.items():
            used[name] = used.get(name, 0) + n
    return used if set(used) - {"none"} else None  # say it only when the pages disagree with the header


def _describe_kdump(dump: Dump, k: KdumpContainer) -> dict[str, Any]:
    """The KDUMP header fields and the file's regions (and, for a split set, each part's pfn range)."""
    mh = k.main_header
    out: dict[str, Any] = {
        "sub_hdr_size": mh.sub_hdr_size,
        "bitmap_blocks": mh.bitmap_blocks,
        "max_mapnr_32": mh.max_mapnr,
        "total_ram_blocks": mh.total_ram_blocks,
        "device_blocks": mh.device_blocks,
        "written_blocks": mh.written_blocks,
        "current_cpu": mh.current_cpu,
        "bitmap1_offset": k.bitmap1_offset,
        "bitmap2_offset": k.bitmap2_offset,
        "bitmap_len": k.bitmap_len,
        "data_offset": k.data_offset,
        "notes_offset": k.notes_offset,
        "notes_size": k.notes_size,
        "sub_header": None if k.sub_header is None else dict(_fields(k.sub_header)),
    }
    if dump.split is not None:
        out["parts"] = [{"path": p.path, "start_pfn": p.start_pfn, "end_pfn": p.end_pfn} for p in dump.split.parts]
    return out


def _describe_elf(e: ElfContainer) -> dict[str, Any]:
    """The ELF header facts kdfix reads and every PT_LOAD."""
    return {
        "ei_class": e.ei_class,
        "e_machine": e.e_machine,
        "pointer_size": e.pointer_size,
        "e_flags": e.e_flags,
        "incomplete": e.incomplete,
        "phdrs_follow_ehdr": e.phdrs_follow_ehdr,
        "notes_offset": e.notes_offset,
        "notes_size": e.notes_size,
        "segments": [
            {"paddr": s.paddr, "offset": s.file_offset, "filesz": s.filesz, "memsz": s.memsz, "vaddr": s.vaddr}
            for s in e.segments
        ],
    }


def _field_names(record: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(record)]


def _fields(record: Any) -> list[tuple[str, Any]]:
    return [(name, getattr(record, name)) for name in _field_names(record)]


def _hex(value: Any) -> str:
    return f"{value:#x}" if isinstance(value, int) else str(value)


VALUE_COLUMN = 22  # every value starts here, whatever the key's depth


def _row(key: str, value: Any = "", depth: int = 1) -> str:
    indent = "  " * depth
    return f"{indent}{key + ':':<{VALUE_COLUMN - len(indent)}}{value}".rstrip()


def render_info(info: dict[str, Any]) -> str:
    """A ``help -n``-like text view: one field per line, every value in one column."""
    lines = [f"{info['path']}:  {info['format']}"]
    lines.extend(_render_kdump_headers(info) if info["format"] != "elf" else _render_elf_header(info))
    lines.append("dump")
    used = info.get("page_codecs")
    if used:
        seen = sum(used.values())
        of = f" of the first {seen}" if seen < info["dumped_pages"] else ""
        shown = ", ".join(f"{name} {n}" for name, n in sorted(used.items()))
        lines.append(_row("compression", f"{info['compression']} (header status); pages{of}: {shown}"))
    else:
        lines.append(_row("compression", info["compression"]))
    lines.append(_row("dumped pages", info["dumped_pages"]))
    lines.append(_row("phys_base", f"{info['phys_base']:#x}"))
    lines.append(_row("dump_level", info["dump_level"]))
    notes = ", ".join(f"{n['name']}/{n['type']:#x}({n['size']})" for n in info["notes"]) or "none"
    lines.append(_row("notes", notes))
    osrelease = f"  OSRELEASE={info['osrelease']}" if info["osrelease"] else ""
    lines.append(_row("vmcoreinfo", f"{'yes' if info['vmcoreinfo'] else 'no'}{osrelease}"))
    if info["eraseinfo"]:
        lines.append(_row("eraseinfo"))
        lines.extend(_row("", line, 2) for line in info["eraseinfo"].splitlines())
    evidence = info["origin_evidence"]
    arch_evidence = f" ({'; '.join(info['arch_evidence'])})" if info["arch_evidence"] else ""
    lines.append(_row("arch", f"{info['arch'] or 'unknown'}{arch_evidence}"))
    lines.append(_row("origin", info["origin"] + (f" ({'; '.join(evidence)})" if evidence else "")))
    lines.extend(_row("problem", problem) for problem in info["problems"])
    lines.extend(_row("needs fix", finding) for finding in info["needs_fix"])
    return "\n".join(lines)


def _render_kdump_headers(info: dict[str, Any]) -> list[str]:
    """The main header, sub header and layout sections of a KDUMP-family dump."""
    lines: list[str] = []
    kd = info["kdump"]
    lines.append("header")
    lines.append(_row("signature", f'"{info["signature"]}"'))
    lines.append(_row("header_version", info["header_version"]))
    lines.append(_row("utsname"))
    lines.extend(_row(name, value, 2) for name, value in info["utsname"].items())
    ts = info["timestamp"]
    lines.append(_row("timestamp", f"tv_sec {ts['tv_sec']}  tv_usec {ts['tv_usec']}"))
    flags = " | ".join(info["status_flags"]) or "0"
    lines.append(_row("status", f"{info['status']:#x} ({flags})"))
    lines.append(_row("block_size", info["block_size"]))
    lines.extend(_row(key, kd[key]) for key in ("sub_hdr_size", "bitmap_blocks"))
    lines.append(_row("max_mapnr", f"{info['max_mapnr']} ({info['max_mapnr']:#x})"))
    lines.extend(_row(key, kd[key]) for key in ("total_ram_blocks", "device_blocks", "written_blocks",
                                                "current_cpu"))  # fmt: skip
    lines.append(_row("nr_cpus", info["nr_cpus"]))
    if kd["sub_header"] is not None:
        lines.append("sub header")
        for name, value in kd["sub_header"].items():
            lines.append(_row(name, _hex(value) if name != "dump_level" else value))
    lines.append("layout")
    lines.append(_row("bitmap1", f"{kd['bitmap1_offset']:#x}"))
    lines.append(_row("bitmap2", f"{kd['bitmap2_offset']:#x}"))
    lines.append(_row("bitmap size", f"{kd['bitmap_len']:#x} bytes each"))
    lines.append(_row("descriptors", f"{kd['data_offset']:#x}"))
    for part in kd.get("parts", []):
        lines.append(_row("part", f"{part['path']}: pfns [{part['start_pfn']:#x}, {part['end_pfn']:#x})"))
    return lines


def _render_elf_header(info: dict[str, Any]) -> list[str]:
    """The ELF header section and every PT_LOAD."""
    lines: list[str] = []
    e = info["elf"]
    lines.append("ELF header")
    lines.append(_row("class", f"ELF{e['ei_class'] * 32}"))
    lines.append(_row("e_machine", f"{e['e_machine']} ({e['pointer_size'] * 8}-bit pointers)"))
    lines.append(_row("e_flags", f"{e['e_flags']:#x}{' (INCOMPLETE)' if e['incomplete'] else ''}"))
    lines.append(_row("phdrs follow ehdr", e["phdrs_follow_ehdr"]))
    lines.append(_row("page size", info["block_size"]))
    lines.append(_row("nr_cpus", f"{info['nr_cpus']} (NT_PRSTATUS notes)"))
    for seg in e["segments"]:
        lines.append(_row("PT_LOAD", f"paddr {seg['paddr']:#014x} memsz {seg['memsz']:#x} filesz "
                                     f"{seg['filesz']:#x} at {seg['offset']:#x}"))  # fmt: skip
    return lines


def register(app: typer.Typer) -> None:
    @app.command("info")
    @handle_errors
    def info_command(dumps: DumpPaths, split_set: SplitSetFlag = False, as_json: JsonFlag = False) -> None:
        """Show the headers, notes, origin, problems and what readers need fixed, for each dump."""

        from kdfix.read.probe import open_dump

        def answer(unit: Unit) -> Answer:
            with open_dump(*unit) as dump:
                info = describe_dump(dump)
            return Answer(unit, info, render_info(info))

        run_per_dump(dumps, split_set, as_json, answer)
