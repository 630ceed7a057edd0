"""early_strings (what crash --osrelease sees of a flattened stream) against a byte-by-byte reading of `strings -n`."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kdfix.fix.diagnose import early_strings

PRINTABLE = set(range(0x20, 0x7F)) | {0x09}


def naive_strings(head: bytes, minimum: int, lines: int) -> list[bytes]:
    """Runs of >= minimum printable bytes that end before the end of ``head``, first ``lines`` of them."""
    runs: list[bytes] = []
    start = None
    for i, b in enumerate(head):
        if b in PRINTABLE:
            start = i if start is None else start
            continue
        if start is not None and i - start >= minimum:
            runs.append(head[start:i])
        start = None
    return runs[:lines]


# bytes drawn mostly from the interesting edges: printable, tab, NUL, newline, DEL, high bytes
_BYTE = st.sampled_from([0x00, 0x09, 0x0A, 0x1F, 0x20, 0x41, 0x7E, 0x7F, 0x80, 0xFF]) | st.integers(0, 255)


@given(st.lists(_BYTE, max_size=400).map(bytes), st.integers(1, 12), st.integers(1, 6))
def test_early_strings_matches_a_bytewise_reading(head: bytes, minimum: int, lines: int) -> None:
    assert early_strings(head, minimum=minimum, lines=lines) == naive_strings(head, minimum, lines)


def test_a_run_open_at_the_end_is_not_counted() -> None:
    head = b"\0" + b"OSRELEASE=6.1.0\0" + b"A" * 20
    assert early_strings(head) == [b"OSRELEASE=6.1.0"]
