"""Split a notes blob into notes and pack notes back into a blob (notes-and-vmcoreinfo.md §1)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kdfix.errors import FormatError, KdfixError
from kdfix.format.constants import NOTE_NAME_VMCOREINFO
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


MAX_KEPT_NOTES = 1 << 15  # two notes per CPU for NR_CPUS 8192 (x86_64 MAXSMP) and room to spare
MAX_NOTES_BYTES = 64 << 20  # notes read from one segment; a real one is under 1 KiB per CPU plus VMCOREINFO


def notes_read_size(size: int) -> tuple[int, list[str]]:
    """How many bytes of a notes segment of ``size`` bytes a reader takes, and the problem if it takes fewer."""
    if size <= MAX_NOTES_BYTES:
        return size, []
    return MAX_NOTES_BYTES, [f"notes: only the first {MAX_NOTES_BYTES:#x} of {size:#x} bytes read"]


def _iter_headers(blob: bytes | memoryview, abi: Abi, base_offset: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(pos, n_namesz, n_type, desc_start, desc_end) of each note; the terminator and stray bytes as iter_notes."""
    nhdr = NHDR.bind(abi)
    pos = 0
    size = len(blob)
    while pos + NHDR_SIZE <= size:
        namesz, descsz, ntype = nhdr.unpack_values(blob, pos)
        if namesz == 0 and descsz == 0 and ntype == 0:
            return
        desc_start = pos + NHDR_SIZE + pad4(namesz)
        desc_end = desc_start + descsz
        if pos + NHDR_SIZE + namesz > size or desc_end > size:
            raise FormatError(
                f"note (namesz {namesz}, descsz {descsz}) runs past the end of the notes",
                field="note.n_descsz" if pos + NHDR_SIZE + namesz <= size else "note.n_namesz",
                offset=base_offset + pos,
            )
        yield pos, namesz, ntype, desc_start, desc_end
        pos = desc_start + pad4(descsz)
    if pos < size and any(bytes(blob[pos:])):
        raise FormatError(f"{size - pos} stray bytes after the last note", field="note", offset=base_offset + pos)


def _note_at(blob: bytes | memoryview, base_offset: int, head: tuple[int, int, int, int, int]) -> Note:
    pos, namesz, ntype, desc_start, desc_end = head
    name = bytes(blob[pos + NHDR_SIZE : pos + NHDR_SIZE + namesz])
    if name.endswith(b"\0"):
        name = name[:-1]
    return Note(name, ntype, bytes(blob[desc_start:desc_end]), base_offset + pos)


def iter_notes(blob: bytes | memoryview, abi: Abi, *, base_offset: int = 0) -> Iterator[Note]:
    """Yield the notes of a blob; stop at an all-zero header (the kernel's terminator) or the end."""
    for head in _iter_headers(blob, abi, base_offset):
        yield _note_at(blob, base_offset, head)


def read_notes(
    blob: bytes | memoryview, abi: Abi, *, base_offset: int = 0, limit: int = MAX_KEPT_NOTES
) -> tuple[tuple[Note, ...], list[str]]:
    """The notes a reader keeps, and the problems seen: bounded memory whatever the blob holds.

    Notes with neither name nor desc carry nothing and are only counted; beyond ``limit`` notes only
    VMCOREINFO is kept (readers look for it by name). A framing error ends the walk and is a problem.
    """
    blob = memoryview(blob)
    notes: list[Note] = []
    problems: list[str] = []
    empty = dropped = 0
    try:
        for head in _iter_headers(blob, abi, base_offset):
            pos, namesz, _, desc_start, desc_end = head
            if desc_start == desc_end and not any(blob[pos + NHDR_SIZE : pos + NHDR_SIZE + namesz]):
                empty += 1
            elif len(notes) < limit or bytes(blob[pos + NHDR_SIZE : pos + NHDR_SIZE + namesz]).rstrip(b"\0") == (
                NOTE_NAME_VMCOREINFO
            ):
                notes.append(_note_at(blob, base_offset, head))
            else:
                dropped += 1
    except KdfixError as exc:
        problems.append(f"notes: {exc}")
    if empty:
        problems.append(f"notes: {empty} empty notes (no name, no desc) skipped")
    if dropped:
        problems.append(f"notes: {dropped} notes beyond the first {limit} not kept (a real dump has far fewer)")
    return tuple(notes), problems


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
