"""Typed view of the QEMU CPU note (QEMUCPUState, 432 or 440 B) and decode_note (notes-and-vmcoreinfo.md §3)."""

from __future__ import annotations

from typing import Any

from kdfix.errors import FormatError
from kdfix.format.constants import NOTE_NAME_CORE, NOTE_NAME_LINUX, NOTE_NAME_QEMU, NOTE_NAME_VMCOREINFO, NoteType
from kdfix.format.layout import LP64_BE, LP64_LE, Abi
from kdfix.format.notes import QEMU_CPU_STATE, QEMU_CPU_STATE_SIZES
from kdfix.notes.framing import Note
from kdfix.notes.prstatus import parse_prstatus
from kdfix.notes.vmcoreinfo import VmcoreInfo

_VERSION_BY_SIZE = {size: version for version, size in QEMU_CPU_STATE_SIZES.items()}


def parse_qemu_cpu_state(desc: bytes, abi: Abi) -> Any:
    """Decode a QEMU note desc; its ``size`` field (440 or 432) picks the layout."""
    state_abi = LP64_LE if abi.byte_order == "<" else LP64_BE  # QEMUCPUState is naturally aligned u32/u64
    head = QEMU_CPU_STATE.bind(state_abi, 0)
    size_at = head.offset_of("size")
    if len(desc) < size_at + head.size_of("size"):
        raise FormatError(f"QEMU CPU state of {len(desc)} bytes is too short", field="QEMUCPUState")
    size = int.from_bytes(desc[size_at : size_at + head.size_of("size")], abi.endian)
    if size not in _VERSION_BY_SIZE:
        raise FormatError(f"QEMU CPU state size field {size} is neither 440 nor 432", field="QEMUCPUState.size",
                          offset=size_at)  # fmt: skip
    if len(desc) < size:
        raise FormatError(f"QEMU CPU state declares {size} bytes, desc has {len(desc)}", field="QEMUCPUState.size",
                          offset=size_at)  # fmt: skip
    layout = QEMU_CPU_STATE.bind(state_abi, _VERSION_BY_SIZE[size])
    return layout.unpack(desc, what="QEMUCPUState")


def decode_note(note: Note, abi: Abi) -> Any:
    """A typed record for known notes (prstatus, QEMU CPU state, VMCOREINFO); None for others or bad payloads."""
    try:
        if note.type == NoteType.NT_PRSTATUS and note.name in (NOTE_NAME_CORE, NOTE_NAME_LINUX, b""):
            return parse_prstatus(note.desc, abi)
        if note.name.startswith(NOTE_NAME_QEMU):
            return parse_qemu_cpu_state(note.desc, abi)
        if note.name == NOTE_NAME_VMCOREINFO:
            return VmcoreInfo.parse(note.desc)
    except FormatError:
        return None
    return None
