"""DumpModel: everything about a dump except its page data — what readers report and writers consume."""

from __future__ import annotations

from dataclasses import dataclass, field

from kdfix.format.constants import KDUMP_HEADER_VERSION, KDUMP_SIGNATURE, NOTE_NAME_VMCOREINFO
from kdfix.format.kdump import NEW_UTSNAME, UTS_LEN, Utsname
from kdfix.format.layout import LP64_LE, Abi
from kdfix.notes.framing import Note
from kdfix.notes.vmcoreinfo import VmcoreInfo


def make_utsname(**fields: str | bytes) -> Utsname:
    """Build a utsname record from strings (each at most 64 characters, NUL-padded to 65)."""
    values: dict[str, bytes] = {}
    for name, value in fields.items():
        raw = value.encode("latin-1") if isinstance(value, str) else value
        if len(raw) > UTS_LEN:
            raise ValueError(f"utsname.{name} longer than {UTS_LEN} bytes")
        values[name] = raw.ljust(UTS_LEN, b"\0")
    return NEW_UTSNAME.make(**{f.name: bytes(UTS_LEN) for f in NEW_UTSNAME.fields} | values)


@dataclass(frozen=True)
class DumpModel:
    """Header metadata and notes of a dump.

    Compression is not part of the model (it is a property of how a file is written); nor
    are the derived layout fields (sub_hdr_size, bitmap_blocks, offsets, sizes).
    ``status`` holds the non-compression header flags (INCOMPLETE, EXCLUDED_VMEMMAP).
    """

    abi: Abi = LP64_LE
    signature: bytes = KDUMP_SIGNATURE
    header_version: int = KDUMP_HEADER_VERSION
    utsname: Utsname = field(default_factory=make_utsname)
    tv_sec: int = 0
    tv_usec: int = 0
    status: int = 0
    block_size: int = 4096
    max_mapnr: int = 0
    total_ram_blocks: int = 0
    device_blocks: int = 0
    written_blocks: int = 0
    current_cpu: int = 0
    nr_cpus: int = 1
    phys_base: int = 0  # unsigned 64-bit two's complement, as stored
    dump_level: int = 0
    notes: tuple[Note, ...] = ()
    vmcoreinfo: bytes | None = None  # text referenced by offset_vmcoreinfo (normally the note's desc)
    eraseinfo: bytes = b""
    e_machine: int | None = None  # ELF machine, when known

    def vmcoreinfo_note(self) -> Note | None:
        for note in self.notes:
            if note.name == NOTE_NAME_VMCOREINFO:
                return note
        return None

    def parsed_vmcoreinfo(self) -> VmcoreInfo | None:
        """VMCOREINFO from the header pointer, else from the note."""
        raw = self.vmcoreinfo
        if raw is None:
            note = self.vmcoreinfo_note()
            raw = note.desc if note is not None else None
        return None if raw is None else VmcoreInfo.parse(raw)
