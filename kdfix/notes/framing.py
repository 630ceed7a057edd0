"""Split a notes blob into notes and pack notes back into a blob (notes-and-vmcoreinfo.md §1)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kdfix.errors import FormatError
from kdfix.format.layout import Abi
from kdfix.format.notes import NHDR, NHDR_SIZE
from kdfix.units import pad4


@dataclass(frozen=True, slots=True)
class Note:
    """One ELF note: name without its NUL, type, desc (unpadded); ``offset`` is where it began in its blob."""

    name: bytes
    type: int
    desc: bytes
    offset: int = -1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Note) and (self.name, self.type, self.desc) == (
            other.name,
            other.type,
            other.desc,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.type, self.desc))

    @property
    def packed_size(self) -> int:
        return NHDR_SIZE + pad4(len(self.name) + 1) + pad4(len(self.desc))

    @property
    def desc_offset(self) -> int:
        """Offset of the desc from the start of the note."""
        return NHDR_SIZE + pad4(len(self.name) + 1)


def iter_notes(blob: bytes | memoryview, abi: Abi, *, base_offset: int = 0) -> Iterator[Note]:
    """Yield the notes of a blob; stop at an all-zero header (the kernel's terminator) or the end."""
    nhdr = NHDR.bind(abi)
    pos = 0
    size = len(blob)
    while pos + NHDR_SIZE <= size:
        hdr = nhdr.unpack(blob, pos)
        if hdr.n_namesz == 0 and hdr.n_descsz == 0 and hdr.n_type == 0:
            return
        name_end = pos + NHDR_SIZE + hdr.n_namesz
        desc_start = pos + NHDR_SIZE + pad4(hdr.n_namesz)
        desc_end = desc_start + hdr.n_descsz
        if name_end > size or desc_end > size:
            raise FormatError(
                f"note (namesz {hdr.n_namesz}, descsz {hdr.n_descsz}) runs past the end of the notes",
                field="note.n_descsz" if name_end <= size else "note.n_namesz",
                offset=base_offset + pos,
            )
        name = bytes(blob[pos + NHDR_SIZE : name_end])
        if name.endswith(b"\0"):
            name = name[:-1]
        yield Note(name, hdr.n_type, bytes(blob[desc_start:desc_end]), base_offset + pos)
        pos = desc_start + pad4(hdr.n_descsz)
    if pos < size and any(bytes(blob[pos:])):
        raise FormatError(f"{size - pos} stray bytes after the last note", field="note", offset=base_offset + pos)


def pack_note(note: Note, abi: Abi) -> bytes:
    """Encode one note with 4-byte padding of name and desc."""
    name = note.name + b"\0"
    out = NHDR.bind(abi).pack(NHDR.make(n_namesz=len(name), n_descsz=len(note.desc), n_type=note.type))
    return out + name.ljust(pad4(len(name)), b"\0") + note.desc.ljust(pad4(len(note.desc)), b"\0")


def pack_notes(notes: Iterable[Note], abi: Abi) -> bytes:
    """Encode notes into one blob, in order."""
    return b"".join(pack_note(n, abi) for n in notes)


def note_offsets(notes: Iterable[Note]) -> list[int]:
    """Offsets of each note within the blob that ``pack_notes`` would produce."""
    offsets, pos = [], 0
    for n in notes:
        offsets.append(pos)
        pos += n.packed_size
    return offsets
