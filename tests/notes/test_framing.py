"""Note framing (notes-and-vmcoreinfo.md §1): 12-byte Nhdr, name and desc each padded to 4, dump byte order."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.errors import FormatError
from kdfix.format.layout import ALL_ABIS, LP64_BE, LP64_LE
from kdfix.notes.framing import Note, iter_notes, note_offsets, pack_note, pack_notes


def reference_note(name: bytes, n_type: int, desc: bytes, order: str) -> bytes:
    """One note framed by hand from the table: namesz counts the NUL; both parts are zero-padded to 4."""

    def pad4(b: bytes) -> bytes:
        return b + bytes(-len(b) % 4)

    return struct.pack(order + "III", len(name) + 1, len(desc), n_type) + pad4(name + b"\0") + pad4(desc)


def test_vmcoreinfo_note_bytes_match_the_table():
    got = pack_note(Note(b"VMCOREINFO", 0, b"OSRELEASE=6.1\n"), LP64_LE)
    assert got[:12] == struct.pack("<III", 11, 14, 0)
    assert got[12:24] == b"VMCOREINFO\0\0"  # 11 bytes padded to 12
    assert got[24:] == b"OSRELEASE=6.1\n\0\0"  # 14 bytes padded to 16
    assert got == reference_note(b"VMCOREINFO", 0, b"OSRELEASE=6.1\n", "<")


@pytest.mark.parametrize("abi", [LP64_LE, LP64_BE], ids=lambda a: a.name)
def test_byte_order_follows_the_dump(abi):
    desc = bytes(range(7))
    assert pack_note(Note(b"CORE", 1, desc), abi) == reference_note(b"CORE", 1, desc, abi.byte_order)


notes = st.lists(
    st.builds(
        Note,
        st.binary(min_size=1, max_size=20).filter(lambda n: b"\0" not in n),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=64),
    ),
    max_size=6,
)


@given(notes=notes, abi=st.sampled_from(ALL_ABIS))
def test_blob_is_the_reference_framing_and_reads_back(notes, abi):
    blob = pack_notes(notes, abi)
    assert blob == b"".join(reference_note(n.name, n.type, n.desc, abi.byte_order) for n in notes)
    back = list(iter_notes(blob, abi, base_offset=0x1000))
    assert back == notes
    assert [n.offset - 0x1000 for n in back] == note_offsets(notes)


def test_an_empty_note_terminates_the_blob():
    blob = pack_note(Note(b"CORE", 1, b"abcd"), LP64_LE) + bytes(12) + b"junk after the terminator"
    assert [n.name for n in iter_notes(blob, LP64_LE)] == [b"CORE"]


def test_a_note_running_past_the_blob_names_its_field_and_offset():
    blob = pack_note(Note(b"CORE", 1, b"abcd"), LP64_LE) + struct.pack("<III", 5, 4096, 1) + b"CORE\0\0\0\0"
    with pytest.raises(FormatError) as err:
        list(iter_notes(blob, LP64_LE, base_offset=0x200))
    assert err.value.field == "note.n_descsz" and err.value.offset == 0x200 + 24  # after the first note: 12 + 8 + 4
