"""``kdfix notes``: the ELF notes of a dump, decoded (registers per CPU, QEMU CPU state, VMCOREINFO keys)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from kdfix.cli.dumps import Answer, DumpPaths, SplitSetFlag, Unit, run_per_dump
from kdfix.cli.output import JsonFlag, handle_errors, to_jsonable

if TYPE_CHECKING:
    from kdfix.format.layout import Abi
    from kdfix.notes.framing import Note


def describe_note(note: Note, abi: Abi, index: int) -> dict[str, Any]:
    """One note as JSON-friendly data: header, and the decoded payload when kdfix knows it."""
    from kdfix.notes.qemu_cpu import decode_note
    from kdfix.notes.vmcoreinfo import VmcoreInfo

    out: dict[str, Any] = {
        "index": index,
        "name": note.name.decode("latin-1"),
        "type": note.type,
        "size": len(note.desc),
        "offset": note.offset,
    }
    decoded = decode_note(note, abi)
    if isinstance(decoded, VmcoreInfo):
        out["kind"] = "vmcoreinfo"
        out["decoded"] = {"keys": len(decoded.entries), "OSRELEASE": decoded.osrelease}
    elif decoded is not None and hasattr(decoded, "pr_reg"):
        out["kind"] = "prstatus"
        out["decoded"] = {"pr_pid": decoded.pr_pid, "registers": to_jsonable(decoded.pr_reg)}
    elif decoded is not None:
        out["kind"] = "qemu_cpu_state"
        out["decoded"] = to_jsonable(decoded)
    else:
        out["kind"] = None
        out["decoded"] = None
    return out


def _render(notes: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    cpu = {"prstatus": 0, "qemu_cpu_state": 0}
    for n in notes:
        head = f"[{n['index']}] {n['name']} type {n['type']:#x} size {n['size']} at {n['offset']:#x}"
        kind, dec = n["kind"], n["decoded"]
        if kind in cpu:
            head += f"  (cpu {cpu[kind]})"
            cpu[kind] += 1
        lines.append(head)
        if kind == "prstatus":
            lines.append(f"    pr_pid: {dec['pr_pid']}")
            regs = list(dec["registers"].items())
            for i in range(0, len(regs), 3):
                lines.append("    " + "  ".join(f"{k:>8}: {v:016x}" for k, v in regs[i : i + 3]))
        elif kind == "qemu_cpu_state":
            scalars = [(k, v) for k, v in dec.items() if isinstance(v, int)]
            for i in range(0, len(scalars), 3):
                lines.append("    " + "  ".join(f"{k:>14}: {v:016x}" for k, v in scalars[i : i + 3]))
            for k, v in dec.items():
                if isinstance(v, dict):
                    lines.append(f"    {k:>6}: selector {v['selector']:04x} base {v['base']:016x} "
                                 f"limit {v['limit']:08x} flags {v['flags']:08x}")  # fmt: skip
        elif kind == "vmcoreinfo":
            lines.append(f"    {dec['keys']} keys, OSRELEASE={dec['OSRELEASE']}")
    return "\n".join(lines) if lines else "no notes"


def register(app: typer.Typer) -> None:
    @app.command("notes")
    @handle_errors
    def notes_command(dumps: DumpPaths, split_set: SplitSetFlag = False, as_json: JsonFlag = False) -> None:
        """Show the ELF notes of each dump, decoded: registers per CPU, QEMU CPU state, VMCOREINFO."""

        from kdfix.read.probe import open_dump

        def answer(unit: Unit) -> Answer:
            with open_dump(*unit) as dump:
                notes = [describe_note(n, dump.abi, i) for i, n in enumerate(dump.notes)]
            shape = {"path": unit[0], "paths": list(unit), "notes": notes}
            return Answer(unit, shape, f"{' '.join(unit)}:\n{_render(notes)}" if len(dumps) > 1 else _render(notes))

        run_per_dump(dumps, split_set, as_json, answer)
