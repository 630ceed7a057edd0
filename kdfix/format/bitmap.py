"""Page bitmaps (LSB-first, pfn n is bit n&7 of byte n>>3) with rank queries (kdump-format.md §7)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

_SECTION_PFNS = 4096  # pfns per prefix-sum section, as crash and makedumpfile do
_SECTION_BYTES = _SECTION_PFNS // 8


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

    def count(self, start: int = 0, end: int | None = None) -> int:
        """Number of set bits in ``[start, end)``."""
        end = self.nbits if end is None else end
        return max(0, self.rank(end) - self.rank(start))

    def iter_set(self, start: int = 0, end: int | None = None) -> Iterator[int]:
        """Yield set pfns in ascending order within ``[start, end)``, skipping zero bytes quickly."""
        end = self.nbits if end is None else min(end, self.nbits)
        data = self._data
        pfn = max(0, start)
        while pfn < end:
            if pfn & 7 == 0:
                # skip whole zero words
                byte_index = pfn >> 3
                chunk = bytes(data[byte_index : byte_index + 512])
                stripped = len(chunk) - len(chunk.lstrip(b"\0"))
                if stripped:
                    pfn += stripped * 8
                    continue
            byte = data[pfn >> 3]
            if byte >> (pfn & 7) & 1:
                yield pfn
            pfn += 1

    def iter_runs(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
        """Yield maximal runs ``(first, end_exclusive)`` of set pfns."""
        run_start = None
        prev = None
        for pfn in self.iter_set(start, end):
            if run_start is None:
                run_start = pfn
            elif pfn != prev + 1:  # type: ignore[operator]
                yield run_start, prev + 1  # type: ignore[operator]
                run_start = pfn
            prev = pfn
        if run_start is not None:
            yield run_start, prev + 1  # type: ignore[operator]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bitmap) and self.nbits == other.nbits and self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash((self.nbits, self.to_bytes()))

    def __repr__(self) -> str:
        return f"Bitmap(nbits={self.nbits:#x}, set={self.count()})"
