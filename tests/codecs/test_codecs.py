"""Page codecs: flags from kdump-format.md §5, interchange with each codec's reference library, bounded output."""

from __future__ import annotations

import os
import random
import zlib

import lzo
import pytest
import snappy
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from kdfix.codecs import CODECS, codec_for_flags, codec_named, decode_page
from kdfix.errors import CodecError

PAGE = 4096
# kdump-format.md §5: DUMP_DH_COMPRESSED_ZLIB 0x1, _LZO 0x2, _SNAPPY 0x4, _ZSTD 0x20; raw pages carry no bit.
REFERENCE_FLAGS = {"zlib": 0x1, "lzo": 0x2, "snappy": 0x4, "zstd": 0x20, "none": 0x0}
# What another writer (makedumpfile, QEMU) would store for a page, made with the codec's own library.
FOREIGN = {
    "zlib": lambda page: zlib.compress(page, 6),
    "lzo": lambda page: lzo.compress(page, 1, False),
    "snappy": lambda page: snappy.compress(page),
    "zstd": lambda page: zstandard.ZstdCompressor(level=3).compress(page),
}
REFERENCE_DECOMPRESS = {
    "zlib": lambda data: zlib.decompress(data),
    "lzo": lambda data: lzo.decompress(data, False, PAGE),
    "snappy": lambda data: snappy.uncompress(data),
    "zstd": lambda data: zstandard.ZstdDecompressor().decompress(data, max_output_size=PAGE),
}


def _page(pattern: bytes, seed: int, noisy: bool) -> bytes:
    """A page of a repeated pattern (compressible) or of seeded random bytes (incompressible)."""
    if noisy:
        return random.Random(seed).randbytes(PAGE)
    return (pattern * (PAGE // max(1, len(pattern)) + 1))[:PAGE] if pattern else bytes(PAGE)


pages = st.builds(_page, st.binary(max_size=64), st.integers(0, 2**32), st.booleans())


def test_every_codec_has_its_reference_flag():
    assert {c.name: int(c.flag) for c in CODECS} == REFERENCE_FLAGS
    for name, flag in REFERENCE_FLAGS.items():
        assert codec_for_flags(flag).name == name


def test_two_compression_bits_are_refused():
    with pytest.raises(CodecError):
        codec_for_flags(0x1 | 0x20)


@pytest.mark.parametrize("name", sorted(FOREIGN))
@given(page=pages)
def test_reads_what_the_reference_library_wrote(name, page):
    assert decode_page(FOREIGN[name](page), REFERENCE_FLAGS[name], PAGE) == page


@pytest.mark.parametrize("name", sorted(FOREIGN))
@given(page=pages)
def test_writes_what_the_reference_library_reads(name, page):
    assert REFERENCE_DECOMPRESS[name](codec_named(name).compress(page)) == page


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_a_bomb_is_refused_without_inflating_it(name):
    bomb = FOREIGN[name](bytes(64 * PAGE))
    with pytest.raises(CodecError) as err:
        decode_page(bomb, REFERENCE_FLAGS[name], PAGE, pfn=7)
    assert err.value.pfn == 7


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_garbage_is_a_codec_error(name):
    with pytest.raises(CodecError):
        decode_page(os.urandom(100), REFERENCE_FLAGS[name], PAGE)


def test_a_raw_page_must_be_one_page():
    assert decode_page(b"x" * PAGE, 0, PAGE) == b"x" * PAGE
    with pytest.raises(CodecError):
        decode_page(b"x" * (PAGE - 1), 0, PAGE)
