"""Compressing one unit of pages as QEMU compresses pages (qemu-dumps.md §5), in whichever process runs it."""

from __future__ import annotations

from array import array
from collections.abc import Callable

from kdfix.codecs import codec_named, deflate_bound
from kdfix.write.page_cache import LocalPageCache, PageCache
from kdfix.write.page_units import PageSource, Unit, fill_unit, zeros

# Pages a compressor stores raw before it starts proving pages incompressible: loading numpy for the proofs costs
# about 50 ms once, as much as some 800 failed zlib attempts at about 65 µs each on 4 KiB pages.
RAW_BEFORE_PROOFS = 800


class UnitCompressor:
    """Reads and compresses units in one process as QEMU compresses pages (qemu-dumps.md §5).

    A page whose bytes equal a recently compressed page is not compressed again: the codecs are pure functions
    of the page, so the earlier result is the same bytes. The :class:`PageCache` proposes the earlier page by
    hash; it is used only after re-reading that page from the source and comparing it in full.

    With zlib, a high-entropy page that :mod:`kdfix.codecs.deflate_bound` proves incompressible is stored raw
    without the attempt, as the attempt would have ended. The proofs start once a unit stored a page raw (random
    data comes in runs) and stop after a unit with no such page, so compressible dumps pay nothing for them; they
    wait until :data:`RAW_BEFORE_PROOFS` pages were stored raw, so a few raw pages do not pay for loading numpy.
    """

    def __init__(
        self,
        source: PageSource,
        codec: str,
        page_size: int,
        *,
        cache: PageCache | LocalPageCache | None = None,
        zero_page: bool = True,
    ) -> None:
        self.source = source
        self.page_size = page_size
        self.compress = page_compressor(codec)
        self._zero_page = zeros(page_size)
        self.cache = cache if cache is not None else LocalPageCache()
        self.hits = 0
        self.proven_raw = 0
        self._provable = codec == "zlib" and deflate_bound.applies(page_size)
        self._prove_next = False  # look for provably raw pages in the next unit (see the class docstring)
        self._raw_total = 0  # pages stored raw so far
        # zero_page=False: an all-zero page is stored like any other (its own compressed bytes, or raw)
        self._zero_stored: bytes | None = None
        if not zero_page:
            packed = self.compress(self._zero_page)
            self._zero_stored = packed if len(packed) < page_size else self._zero_page

    def __call__(self, unit: Unit) -> tuple[bytes, bytes]:
        ps = self.page_size
        data = fill_unit(self.source, unit, ps)
        p0 = unit.pieces[0] if len(unit.pieces) == 1 else None
        base = p0.src if p0 is not None and p0.buf_offset == 0 and p0.length == len(data) else None
        return self.pages(data, unit.npages, base)

    def pages(self, data: bytes | bytearray, npages: int, base: int | None = None) -> tuple[bytes, bytes]:
        """Compress ``npages`` pages of ``data`` (the source's bytes from ``base`` on, when given).

        Returns ``(sizes, stored)``: ``sizes`` is an ``array('I')`` as bytes with 0 for an all-zero page (shared
        zero descriptor; with ``zero_page=False`` such a page is stored like any other), the compressed size
        when smaller than a page, or ``page_size`` for a raw page;
        ``stored`` is the concatenation of the stored bytes of the non-zero pages. Only pages with a ``base``
        (read whole from the source) are remembered, since a hit is confirmed against the source.
        """
        ps = self.page_size
        zero_stored = self._zero_stored
        if data == zeros(len(data)):
            if zero_stored is None:
                return bytes(4 * npages), b""
            return array("I", [len(zero_stored)] * npages).tobytes(), zero_stored * npages
        zero_page, compress, read = self._zero_page, self.compress, self.source.read
        reread = getattr(self.source, "cheap_rereads", True)  # else only in-unit repeats are confirmed
        get, put = self.cache.get, self.cache.put
        sizes = array("I", bytes(4 * npages))
        out: list[bytes] = []
        hits = 0
        raw = self._proven_raw(data, npages) if self._prove_next else frozenset()
        stored_raw = len(raw)
        view = memoryview(data)
        for i in range(npages):
            at = i * ps
            if data.startswith(zero_page, at):
                if zero_stored is not None:
                    out.append(zero_stored)
                    sizes[i] = len(zero_stored)
                continue
            page = view[at : at + ps].tobytes()
            if i in raw:
                out.append(page)
                sizes[i] = ps
                continue
            key = hash(page)
            hit = get(key)
            if hit is not None and (
                data.startswith(page, hit[0] - base)
                if base is not None and base <= hit[0] < at + base
                else reread and read(hit[0], ps) == page
            ):  # confirmed in full: in this unit's buffer when the earlier page is in it, else from the source
                hits += 1
                packed = hit[1]
            else:
                packed = compress(page)
                if len(packed) >= ps:
                    packed = None
                    stored_raw += 1
                if base is not None:
                    put(key, base + at, packed)
            if packed is None:
                out.append(page)
                sizes[i] = ps
            else:
                out.append(packed)
                sizes[i] = len(packed)
        view.release()
        self.hits += hits
        self.proven_raw += len(raw)
        self._raw_total += stored_raw
        self._prove_next = self._provable and stored_raw > 0 and self._raw_total >= RAW_BEFORE_PROOFS
        return sizes.tobytes(), b"".join(out)

    def _proven_raw(self, data: bytes | bytearray, npages: int) -> frozenset[int]:
        """Pages of ``data`` that zlib provably cannot shrink, when enough look random to pay for the proof."""
        ps, zero_page, worth = self.page_size, self._zero_page, deflate_bound.worth_proving
        likely = [i for i in range(npages) if not data.startswith(zero_page, i * ps) and worth(data, i * ps)]
        if len(likely) < deflate_bound.MIN_BATCH:
            return frozenset()
        proofs = deflate_bound.incompressible(data, likely, ps)
        return frozenset(i for i, proven in zip(likely, proofs, strict=True) if proven)


def page_compressor(codec: str) -> Callable[[bytes], bytes]:
    """The codec's level-1 page compressor, bound once (no per-page module lookup on the hot path)."""
    if codec == "zlib":
        import functools
        import zlib

        return functools.partial(zlib.compress, level=1)  # compress2(..., Z_BEST_SPEED) as QEMU
    compress = codec_named(codec).compress
    return lambda page: compress(bytes(page))  # python-lzo wants read-only bytes
