"""kdfix.kernel.kallsyms decodes what the test-side writer laid out: names, types and addresses under each
address scheme (arch-kernels-and-introspection.md §5.2, §5.3), and lookup gives symbol+offset."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.errors import FormatError, UnsupportedError
from kdfix.kernel.kallsyms import read_kallsyms
from kdfix.notes.vmcoreinfo import VmcoreInfo
from tests.kernel.kallsyms_writer import NUM, OFFSETS, write_kallsyms

BASE = 0xFFFFFFFF81000000
TEXT = [
    ("T", "_stext", BASE),
    ("T", "start_kernel", BASE + 0x100),
    ("t", "do_one_initcall", BASE + 0x180),
    ("T", "panic", BASE + 0x1000),
    ("D", "init_uts_ns", BASE + 0x200000),
    ("B", "__bss_stop", BASE + 0x300000),
]
PERCPU = [("A", "fixed_percpu_data", 0), ("A", "cpu_tss_rw", 0x6000)]


def _read(symbols: list[tuple[str, str, int]], scheme: str, **kw: object) -> object:
    memory, info = write_kallsyms(symbols, scheme=scheme, **kw)  # type: ignore[arg-type]
    return read_kallsyms(VmcoreInfo.parse(info), memory, word_size=8, endian="little")


@pytest.mark.parametrize("scheme", ["base-relative", "absolute-percpu", "place-relative"])
def test_each_address_scheme_is_found_from_stext(scheme: str) -> None:
    symbols = (PERCPU if scheme == "absolute-percpu" else []) + TEXT
    ks = _read(symbols, scheme)
    assert ks.scheme == scheme  # type: ignore[attr-defined]
    assert [(chr(ks.types[i]), ks.name(i), int(ks.addresses[i])) for i in range(len(symbols))] == symbols  # type: ignore[attr-defined]
    assert ks.address_of("init_uts_ns") == BASE + 0x200000  # type: ignore[attr-defined]
    assert ks.address_of("nope") is None  # type: ignore[attr-defined]


def test_lookup_gives_symbol_offset_and_size() -> None:
    ks = _read(TEXT, "base-relative")
    sym = ks.lookup(BASE + 0x1010)  # type: ignore[attr-defined]
    assert (sym.name, sym.type, sym.offset, str(sym)) == ("panic", "T", 0x10, "panic+0x10/0x10000")
    assert str(ks.lookup(BASE + 0x1A0)) == "do_one_initcall+0x20/0xe80"  # type: ignore[attr-defined]
    assert ks.lookup(BASE - 1) is None  # type: ignore[attr-defined]
    assert ks.is_text(BASE + 0x1000) and not ks.is_text(BASE + 0x300000)  # type: ignore[attr-defined]


def test_long_names_use_two_length_bytes_from_6_1() -> None:
    long_name = "x" * 300  # 300 single-character tokens
    ks = _read([*TEXT, ("T", long_name, BASE + 0x2000)], "base-relative")
    assert ks.address_of(long_name) == BASE + 0x2000  # type: ignore[attr-defined]


@given(
    names=st.lists(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789.", min_size=1, max_size=40),
        min_size=1,
        max_size=60,
        unique=True,
    ),
    gaps=st.lists(st.integers(2, 0x3000), min_size=60, max_size=60),
    scheme=st.sampled_from(["base-relative", "place-relative"]),
    long_lengths=st.booleans(),
)
def test_roundtrip(names: list[str], gaps: list[int], scheme: str, long_lengths: bool) -> None:
    addr, symbols = BASE, [("T", "_stext", BASE)]
    for name, gap in zip(names, gaps, strict=False):
        addr += gap
        symbols.append(("t", "s_" + name, addr))
    ks = _read(symbols, scheme, long_lengths=long_lengths)
    assert [ks.name(i) for i in range(len(symbols))] == [n for _, n, _ in symbols]  # type: ignore[attr-defined]
    for _, name, a in symbols[1:]:
        sym = ks.lookup(a + 1)  # type: ignore[attr-defined]
        assert sym is not None and sym.name == name and sym.offset == 1


def test_missing_keys_and_bad_counts() -> None:
    memory, info = write_kallsyms(TEXT, scheme="base-relative")
    with pytest.raises(UnsupportedError, match="kallsyms_names"):
        read_kallsyms(VmcoreInfo.parse(b"OSRELEASE=6.1\n"), memory, word_size=8, endian="little")
    memory.segments[NUM][0:4] = (1 << 30).to_bytes(4, "little")
    with pytest.raises(FormatError, match="implausible"):
        read_kallsyms(VmcoreInfo.parse(info), memory, word_size=8, endian="little")


def test_no_scheme_matching_stext_is_a_format_error() -> None:
    memory, info = write_kallsyms(TEXT, scheme="base-relative")
    memory.segments[OFFSETS][0:4] = (0x1234).to_bytes(4, "little")  # _stext's offset now points elsewhere
    with pytest.raises(FormatError, match="_stext"):
        read_kallsyms(VmcoreInfo.parse(info), memory, word_size=8, endian="little")
