"""The Codec protocol and the registry that maps page flags and names to codecs."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from kdfix.errors import CodecError, UnsupportedError
from kdfix.format.constants import COMPRESSION_FLAGS, DumpFlag


@dataclass(frozen=True)
class Codec:
    """A page codec: its name, flag bit, the Python module it needs and the pip package that provides it."""

    name: str
    flag: int
    module: str | None
    package: str | None
    _compress: Callable[[ModuleType | None, bytes], bytes]
    _decompress: Callable[[ModuleType | None, bytes, int], bytes]

    def _lib(self) -> ModuleType | None:
        if self.module is None:
            return None
        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            raise UnsupportedError(
                f"{self.name} pages need the Python module {self.module!r}: pip install {self.package}"
            ) from exc

    def require(self) -> None:
        """Raise UnsupportedError now if the codec's Python module is missing (before any output is written)."""
        self._lib()

    def available(self) -> bool:
        try:
            self.require()
        except UnsupportedError:
            return False
        return True

    def compress(self, page: bytes) -> bytes:
        """Compress one page as the kdump writers do (zlib/lzo/zstd level 1, raw snappy block)."""
        return self._compress(self._lib(), page)

    def decompress(self, data: bytes, page_size: int, *, pfn: int | None = None) -> bytes:
        """Decompress one page; the result must be exactly ``page_size`` bytes."""
        lib = self._lib()
        try:
            out = self._decompress(lib, data, page_size)
        except UnsupportedError:
            raise
        except Exception as exc:  # every codec library has its own error type
            raise CodecError(f"{self.name} data does not decompress: {exc}", pfn=pfn) from exc
        if len(out) != page_size:
            raise CodecError(f"{self.name} data decompresses to {len(out)} bytes, expected {page_size}", pfn=pfn)
        return out


def _zlib_compress(lib: ModuleType | None, page: bytes) -> bytes:
    assert lib is not None
    return lib.compress(page, 1)


def _zlib_decompress(lib: ModuleType | None, data: bytes, page_size: int) -> bytes:
    assert lib is not None
    d = lib.decompressobj()
    out = d.decompress(data, page_size + 1)  # bounded: a bomb cannot grow past one page
    if not d.eof and len(out) <= page_size:
        raise ValueError("truncated zlib stream")
    return out


def _lzo_compress(lib: ModuleType | None, page: bytes) -> bytes:
    assert lib is not None
    return lib.compress(page, 1, False)


def _lzo_decompress(lib: ModuleType | None, data: bytes, page_size: int) -> bytes:
    assert lib is not None
    return lib.decompress(data, False, page_size)


def _snappy_compress(lib: ModuleType | None, page: bytes) -> bytes:
    assert lib is not None
    return bytes(lib.compress(page))


def _snappy_decompress(lib: ModuleType | None, data: bytes, page_size: int) -> bytes:
    assert lib is not None
    # The raw block starts with its uncompressed length as a varint: check it before inflating.
    length, shift = 0, 0
    for i, byte in enumerate(data[:10]):
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
        if i == 9:
            raise ValueError("bad snappy length varint")
    if length != page_size:
        raise ValueError(f"snappy block declares {length} bytes")
    return bytes(lib.uncompress(data))


# one level-1 compressor and one decompressor per process and library (by pid: a forked helper makes its own)
_ZSTD_COMPRESSORS: dict[tuple[int, ModuleType], object] = {}
_ZSTD_DECOMPRESSORS: dict[tuple[int, ModuleType], object] = {}


def _zstd_compress(lib: ModuleType | None, page: bytes) -> bytes:
    """A one-shot level-1 frame; the compressor is reused (same bytes, without a new context per page)."""
    assert lib is not None
    key = (os.getpid(), lib)
    compressor: Any = _ZSTD_COMPRESSORS.get(key)
    if compressor is None:
        _ZSTD_COMPRESSORS.clear()
        compressor = _ZSTD_COMPRESSORS[key] = lib.ZstdCompressor(level=1)
    # copied to its own size: the library's bytes keep the whole compress bound (~4 KiB) allocated, which a page
    # cache holding thousands of them would pay four times over
    return bytes(memoryview(compressor.compress(page)))


def _zstd_decompress(lib: ModuleType | None, data: bytes, page_size: int) -> bytes:
    assert lib is not None
    declared = lib.frame_content_size(data)
    if declared > page_size:  # -1 means "not recorded"; a larger value would be a bomb
        raise ValueError(f"zstd frame declares {declared} bytes")
    key = (os.getpid(), lib)
    decompressor: Any = _ZSTD_DECOMPRESSORS.get(key)
    if decompressor is None:
        _ZSTD_DECOMPRESSORS.clear()
        decompressor = _ZSTD_DECOMPRESSORS[key] = lib.ZstdDecompressor()
    return decompressor.decompress(data, max_output_size=page_size)  # type: ignore[no-any-return]


def _raw_compress(lib: ModuleType | None, page: bytes) -> bytes:
    return bytes(page)


def _raw_decompress(lib: ModuleType | None, data: bytes, page_size: int) -> bytes:
    return bytes(data)


CODECS: tuple[Codec, ...] = (
    Codec("zlib", DumpFlag.COMPRESSED_ZLIB, "zlib", None, _zlib_compress, _zlib_decompress),
    Codec("lzo", DumpFlag.COMPRESSED_LZO, "lzo", "python-lzo", _lzo_compress, _lzo_decompress),
    Codec("snappy", DumpFlag.COMPRESSED_SNAPPY, "snappy", "python-snappy", _snappy_compress, _snappy_decompress),
    Codec("zstd", DumpFlag.COMPRESSED_ZSTD, "zstandard", "zstandard", _zstd_compress, _zstd_decompress),
    Codec("none", 0, None, None, _raw_compress, _raw_decompress),
)
CODECS_BY_NAME = {c.name: c for c in CODECS}
_CODECS_BY_FLAG = {c.flag: c for c in CODECS}
RAW = CODECS_BY_NAME["none"]


def codec_named(name: str) -> Codec:
    """Return the codec called ``name`` (zlib, lzo, snappy, zstd, none)."""
    try:
        return CODECS_BY_NAME[name]
    except KeyError:
        raise UnsupportedError(f"unknown codec {name!r}; choose one of {', '.join(CODECS_BY_NAME)}") from None


def codec_for_flags(flags: int) -> Codec:
    """Return the codec a page's (or header's) flags name; raw when no compression bit is set."""
    bits = flags & COMPRESSION_FLAGS
    if bits == 0:
        return RAW
    try:
        return _CODECS_BY_FLAG[bits]
    except KeyError:
        raise CodecError(f"flags {flags:#x} name more than one compression method") from None


def decode_page(data: bytes, flags: int, page_size: int, *, pfn: int | None = None) -> bytes:
    """Decode stored page bytes by the page's own flags."""
    codec = codec_for_flags(flags)
    if codec is RAW and len(data) != page_size:
        raise CodecError(f"raw page is {len(data)} bytes, expected {page_size}", pfn=pfn)
    return codec.decompress(data, page_size, pfn=pfn)
