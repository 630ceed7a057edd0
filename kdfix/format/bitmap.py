"""Page bitmaps (LSB-first, pfn n is bit n&7 of byte n>>3) with rank queries (kdump-format.md §7)."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator

_SECTION_PFNS = 4096  # pfns per prefix-sum section, as crash and makedumpfile do
_SECTION_BYTES = _SECTION_PFNS // 8
_SCAN_BYTES = 4096  # bytes tested at once for all-zero / all-one in iter_set
_BITS = tuple(tuple(i for i in range(8) if b >> i & 1) for b in range(256))  # set bit positions of each byte
_NONZERO = re.compile(rb"[^\x00]+")
_FULL_OR_PARTIAL = re.compile(rb"\xff+|[^\xff]")


class Bitmap:
    """A read-only bitmap over pfns ``[0, nbits)`` backed by any bytes-like buffer (bytes, mmap slice)."""

    def __init__(self, data: bytes | bytearray | memoryview, nbits: int) -> None:
        self._data = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        self.nbits = min(nbits, len(data) * 8)
        self._ranks: list[int] | None = None

    @classmethod
    def from_pfns(cls, pfns: Iterable[int], nbits: int) -> Bitmap:
        """Build a bitmap with the given pfns set."""
        buf = bytearray((nbits + 7) // 8)
        for pfn in pfns:
            if not 0 <= pfn < nbits:
                raise ValueError(f"pfn {pfn:#x} outside bitmap of {nbits:#x} bits")
            buf[pfn >> 3] |= 1 << (pfn & 7)
        return cls(bytes(buf), nbits)

    def to_bytes(self, length: int | None = None) -> bytes:
        """The bitmap bytes, zero-padded (or cut) to ``length``; bits at and above ``nbits`` are cleared."""
        used = (self.nbits + 7) // 8
        raw = bytearray(self._data[:used])
        if self.nbits % 8 and raw:
            raw[-1] &= (1 << (self.nbits % 8)) - 1
        if length is None:
            return bytes(raw)
        return bytes(raw[:length]) + bytes(max(0, length - len(raw)))

    def __contains__(self, pfn: int) -> bool:
        return self.test(pfn)

    def test(self, pfn: int) -> bool:
        if not 0 <= pfn < self.nbits:
            return False
        return bool(self._data[pfn >> 3] >> (pfn & 7) & 1)

    def _build_ranks(self) -> list[int]:
        ranks = [0]
        used = (self.nbits + 7) // 8
        total = 0
        for start in range(0, used, _SECTION_BYTES):
            total += int.from_bytes(self._data[start : min(start + _SECTION_BYTES, used)], "little").bit_count()
            ranks.append(total)
        return ranks

    def rank(self, pfn: int) -> int:
        """Number of set bits in ``[0, pfn)``."""
        pfn = max(0, min(pfn, self.nbits))
        if self._ranks is None:
            self._ranks = self._build_ranks()
        section, rest = divmod(pfn, _SECTION_PFNS)
        base = section * _SECTION_BYTES
        count = self._ranks[section]
        full, bits = divmod(rest, 8)
        if full:
            count += int.from_bytes(self._data[base : base + full], "little").bit_count()
        if bits:
            count += (self._data[base + full] & ((1 << bits) - 1)).bit_count()
        return count

    def select(self, k: int) -> int:
        """The pfn of the set bit of rank ``k`` (0-based: ``rank(pfn) == k`` and the bit is set), by the
        section prefix sums, then words, then bits; ValueError when fewer than ``k + 1`` bits are set."""
        if self._ranks is None:
            self._ranks = self._build_ranks()
        if not 0 <= k < self._ranks[-1]:
            raise ValueError(f"no set bit of rank {k} in a bitmap with {self._ranks[-1]} set")
        section = bisect.bisect_right(self._ranks, k) - 1
        left = k - self._ranks[section]
        at = section * _SECTION_BYTES
        while True:
            word = int.from_bytes(self._data[at : at + 8], "little")
            n = word.bit_count()
            if left < n:
                break
            left -= n
            at += 8
        for byte in word.to_bytes(8, "little"):
            bits = _BITS[byte]
            if left < len(bits):
                return at * 8 + bits[left]
            left -= len(bits)
            at += 1
        raise AssertionError("unreachable: the word holds the bit")  # pragma: no cover

    def count(self, start: int = 0, end: int | None = None) -> int:
        """Number of set bits in ``[start, end)``."""
        end = self.nbits if end is None else end
        return max(0, self.rank(end) - self.rank(start))

    def union(self, other: Bitmap, nbits: int | None = None) -> Bitmap:
        """A new bitmap of ``nbits`` (default: the larger) with the pfns set in either bitmap."""
        nbits = max(self.nbits, other.nbits) if nbits is None else nbits
        n = (nbits + 7) // 8
        value = int.from_bytes(self.to_bytes(n), "little") | int.from_bytes(other.to_bytes(n), "little")
        return Bitmap(value.to_bytes(n, "little"), nbits)

    def difference(self, other: Bitmap) -> Bitmap:
        """A new bitmap of ``self.nbits`` with the pfns set here and not in ``other``."""
        n = (self.nbits + 7) // 8
        value = int.from_bytes(self.to_bytes(n), "little") & ~int.from_bytes(other.to_bytes(n), "little")
        return Bitmap(value.to_bytes(n, "little"), self.nbits)

    def iter_set(self, start: int = 0, end: int | None = None) -> Iterator[int]:
        """Yield set pfns in ascending order within ``[start, end)``; all-zero and all-one chunks are skipped in C."""
        end = self.nbits if end is None else min(end, self.nbits)
        pfn = max(0, start)
        if pfn >= end:
            return
        data = self._data
        while pfn < end and pfn & 7:  # up to the first whole byte
            if data[pfn >> 3] >> (pfn & 7) & 1:
                yield pfn
            pfn += 1
        byte, end_byte = pfn >> 3, end >> 3
        while byte < end_byte:
            stop = min(byte + _SCAN_BYTES, end_byte)
            chunk = bytes(data[byte:stop])
            if not chunk.strip(b"\0"):
                byte = stop
                continue
            if not chunk.strip(b"\xff"):
                yield from range(byte * 8, stop * 8)
                byte = stop
                continue
            base = byte * 8
            for i, value in enumerate(chunk):
                if value:
                    b8 = base + 8 * i
                    for bit in _BITS[value]:
                        yield b8 + bit
            byte = stop
        pfn = max(pfn, end_byte * 8)
        while pfn < end:  # the bits of a last partial byte
            if data[pfn >> 3] >> (pfn & 7) & 1:
                yield pfn
            pfn += 1

    def iter_runs(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
        """Yield maximal runs ``(first, end_exclusive)`` of set pfns within ``[start, end)`` (zero and 0xff
        bytes are skipped in C)."""
        end = self.nbits if end is None else min(end, self.nbits)
        start = max(0, start)
        if start >= end:
            return
        for a, b in _byte_runs(self._data, start >> 3, (end + 7) >> 3):
            # bits of the first and last bytes outside [start, end) are cut off
            a, b = max(a, start), min(b, end)
            if a < b:
                yield a, b

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bitmap) and self.nbits == other.nbits and self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash((self.nbits, self.to_bytes()))

    def __repr__(self) -> str:
        return f"Bitmap(nbits={self.nbits:#x}, set={self.count()})"


def _byte_runs(data: bytes | memoryview, lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """Maximal runs of set bits in bytes ``[lo, hi)`` of ``data``."""
    start = end = -1
    for span in _NONZERO.finditer(data, lo, hi):
        for m in _FULL_OR_PARTIAL.finditer(data, span.start(), span.end()):
            byte = m.start()
            value = data[byte]
            if value == 0xFF:
                a, b = byte * 8, m.end() * 8
                if a == end:
                    end = b
                else:
                    if start >= 0:
                        yield start, end
                    start, end = a, b
                continue
            for bit in range(8):
                if value >> bit & 1:
                    pfn = byte * 8 + bit
                    if pfn == end:
                        end += 1
                    else:
                        if start >= 0:
                            yield start, end
                        start, end = pfn, pfn + 1
    if start >= 0:
        yield start, end
