"""kdfix.generate.qemu_stream: the page-dedup cache and the worker processes of QEMU-style generation.

The dedup cache (PageCache / LocalPageCache) must never change the output: the reference for every comparison is
the same file with each page compressed on its own by ``zlib.compress(page, 1)`` (``h.independent_units``, fed
through the real emitter). Worker failures must surface in the parent as errors, never as a hang or a leftover
temp file.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import multiprocessing
import os
import random
import signal
import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kdfix
import kdfix.generate.qemu as q
import kdfix.generate.qemu_stream as qs
import kdfix.write.parallel as par  # compressed_units, which makes the caches
import kdfix.write.unit_compressor as uc  # UnitCompressor, which hashes and fills units
from kdfix.errors import FormatError, WriteError
from kdfix.generate.qemu import generate_qemu
from tests.generate import qemu_helpers as h

PS = 4096
SMALL_UNIT = 16  # pages per unit in most tests, so that a small guest has many units to share between processes


# --- a guest full of repeats, one-byte variants and near-collisions -----------------------------------------------


def _diff(got: bytes, want: bytes) -> str | None:
    """None when equal, else where they first differ (pytest's own diff of megabytes of bytes is very slow)."""
    if got == want:
        return None
    at = next((i for i, (x, y) in enumerate(zip(got, want, strict=False)) if x != y), min(len(got), len(want)))
    return f"sizes {len(got)} vs {len(want)}, first difference at byte {at:#x}"


def _flip(page: bytes, at: int) -> bytes:
    b = bytearray(page)
    b[at] ^= 0x01
    return bytes(b)


def _dedup_blocks() -> list[tuple[int, bytes]]:
    """Three blocks (two adjacent, so one unit straddles them and has no single source base; one far away) whose
    pages are drawn from a few repeated pages, their one-byte variants (first, middle, last byte) and pages that
    are all zero but one byte."""
    rng = random.Random(2024)
    text = (b"kdfix dedup " * 400)[:PS]
    noise = rng.randbytes(PS)  # incompressible: stored raw
    half = bytes(PS // 2) + rng.randbytes(PS // 2)
    pool = [text, noise, half, bytes(PS)]
    pool += [_flip(p, at) for p in (text, noise, half) for at in (0, PS // 2, PS - 1)]
    pool += [_flip(bytes(PS), 0), _flip(bytes(PS), PS - 1)]
    weights = [12, 6, 4, 6] + [1] * 9 + [1, 1]  # the base pages repeat often, the variants sit among them

    def block(n: int) -> bytes:
        return b"".join(rng.choices(pool, weights, k=n))

    return [(0, block(40)), (40 * PS, block(150)), (0x100000, block(130))]


@pytest.fixture(scope="module")
def dedup_guest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, bytes], bytes]:
    """``(source ELF, {pfn: page}, reference output)``; the reference is made with the cache-free compressor."""
    d = tmp_path_factory.mktemp("dedup")
    blocks = _dedup_blocks()
    src = h.write_elf(d / "guest.elf", blocks, h.qemu_notes(2))
    pages = h.pages_by_pfn(blocks)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(q, "compressed_units", h.independent_units(pages))
        generate_qemu(src, d / "reference")
    return src, pages, (d / "reference").read_bytes()


def test_reference_is_what_it_claims(dedup_guest: tuple[Path, dict[int, bytes], bytes]) -> None:
    """The reference decodes to the source pages, every non-zero page stored as its own zlib level-1 result, and
    the guest really has repeats and one-byte variants (else the dedup tests would prove nothing)."""
    _, pages, reference = dedup_guest
    kdump = h.reassemble(h.parse_flat(reference))
    main, _ = h.headers(kdump)
    data_offset = (1 + main[7] + main[8]) * PS
    for rank, pfn in enumerate(sorted(pages)):
        off, size, flags, _ = struct.unpack_from("<qIIQ", kdump, data_offset + 24 * rank)
        page = pages[pfn]
        if flags:
            assert (
                kdump[off : off + size] == zlib.compress(page, 1) and zlib.decompress(kdump[off : off + size]) == page
            )
        else:
            assert kdump[off : off + size] == page
    distinct = set(pages.values())
    assert len(pages) - len(distinct) > 200
    assert any(_flip(a, at) in distinct for a in distinct for at in (0, PS // 2, PS - 1))


def _small_units(mp: pytest.MonkeyPatch, unit_pages: int) -> None:
    mp.setattr(q, "UnitTable", functools.partial(qs.UnitTable, unit_pages=unit_pages))


class _CheckedLocalCache(qs.LocalPageCache):
    """LocalPageCache that checks its own bounds after every put and counts proposals (gets that found an entry)
    and evictions."""

    ring_bytes = qs.DEDUP_CACHE_BYTES
    entries = qs.DEDUP_ENTRIES
    seen: list[_CheckedLocalCache] = []

    def __init__(self) -> None:
        super().__init__(self.ring_bytes, self.entries)
        self.puts = self.proposals = self.peak = 0
        inner = self.get

        def get(key: int) -> tuple[int, bytes | None] | None:
            found = inner(key)
            self.proposals += found is not None
            return found

        self.get = get  # type: ignore[method-assign]
        self.seen.append(self)

    def put(self, key: int, src: int, packed: bytes | None) -> None:
        super().put(key, src, packed)
        self.puts += 1
        _check_local_bounds(self)
        self.peak = max(self.peak, len(self))

    @property
    def evictions(self) -> int:
        return self.puts - len(self)  # a replaced key is not an eviction, but puts >= len always


def _check_local_bounds(cache: qs.LocalPageCache) -> None:
    """The held entries fit the index, and their bytes lie whole in the ring, apart, and not yet overwritten."""
    ring = cache._ring_bytes
    assert len(cache) <= cache._entries and len(cache._ring) == max(ring, 1)
    spans = sorted((pos, size) for _, pos, size in cache._items.values() if size >= 0)
    for pos, size in spans:
        assert cache._wpos - ring <= pos and pos + size <= cache._wpos and pos % ring + size <= ring
    assert all(a + n <= b for (a, n), (b, _) in itertools.pairwise(spans)), "two held entries share ring bytes"


class _CheckedSharedCache(qs.PageCache):
    """PageCache of a chosen size that records, before closing, its mapping size and how much it ever wrote."""

    ring = qs.DEDUP_CACHE_BYTES
    slots = qs.DEDUP_SLOTS
    seen: list[_CheckedSharedCache] = []

    def __init__(self, *, lock: object = None) -> None:
        super().__init__(self.ring, self.slots, lock=lock)
        self.mapped = len(self._mm)
        self.written = -1
        self.seen.append(self)

    def close(self) -> None:
        self.written = self._WPOS.unpack_from(self._mm, 0)[0]
        assert len(self._mm) == self.mapped == 8 + self.slots * self._ENTRY.size + self.ring
        super().close()


def _use_caches(mp: pytest.MonkeyPatch, *, local: tuple[int, int], ring: int, slots: int) -> None:
    _CheckedLocalCache.seen, _CheckedSharedCache.seen = [], []
    mp.setattr(_CheckedLocalCache, "ring_bytes", local[0])
    mp.setattr(_CheckedLocalCache, "entries", local[1])
    mp.setattr(_CheckedSharedCache, "ring", ring)
    mp.setattr(_CheckedSharedCache, "slots", slots)
    mp.setattr(par, "LocalPageCache", _CheckedLocalCache)
    mp.setattr(par, "PageCache", _CheckedSharedCache)


CACHES = {  # name: ((LocalPageCache ring bytes, entries), PageCache ring bytes, PageCache index slots)
    "default": ((qs.DEDUP_CACHE_BYTES, qs.DEDUP_ENTRIES), qs.DEDUP_CACHE_BYTES, qs.DEDUP_SLOTS),
    "zero": ((0, 0), 0, 1),
    "tiny": ((600, 3), 600, 4),
}

HASHES: dict[str, Callable[[bytes], int] | None] = {
    "builtin": None,
    "constant": lambda page: 7,  # every lookup proposes the page put last
    "prefix": lambda page: hash(bytes(page[:64])),  # pages equal in their first 64 bytes collide
    "weight": lambda page: sum(page) & 0xFF,  # near-collisions: a one-byte variant often shares the key
}


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("cache", list(CACHES))
@pytest.mark.parametrize("hash_name", list(HASHES))
def test_dedup_cache_never_changes_output(
    workers: int,
    cache: str,
    hash_name: str,
    dedup_guest: tuple[Path, dict[int, bytes], bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Invariant: the output is byte-identical to the cache-free reference for any cache size (default, zero,
    tiny with evictions), any worker count, and any hash, including ones that propose wrong pages (constant,
    prefix, byte-sum): a proposal is used only after a full comparison confirms it."""
    src, _, reference = dedup_guest
    _small_units(monkeypatch, SMALL_UNIT)
    _use_caches(monkeypatch, local=CACHES[cache][0], ring=CACHES[cache][1], slots=CACHES[cache][2])
    if HASHES[hash_name] is not None:
        monkeypatch.setattr(uc, "hash", HASHES[hash_name], raising=False)  # shadows the builtin there only
    if workers > 1:
        _in_helpers(monkeypatch, tmp_path / "started", _nothing)  # a helper surely compresses some units
    out = tmp_path / "out"
    res = generate_qemu(src, out, workers=workers)
    assert res.workers == workers
    assert _diff(out.read_bytes(), reference) is None
    # the run used the cache under test (the parent's one; helpers share it when workers > 1)
    if workers == 1:
        (local,) = _CheckedLocalCache.seen
        assert not _CheckedSharedCache.seen
        if cache == "default":
            assert local.proposals > 50, "the cache was never consulted with a hit: the test proves nothing"
        if cache == "zero":
            assert len(local) == 0 == local._wpos
    else:
        (shared,) = _CheckedSharedCache.seen
        assert shared.written >= 0


def test_default_unit_size_with_workers(dedup_guest: tuple[Path, dict[int, bytes], bytes], tmp_path: Path) -> None:
    """Invariant: with the real unit size (UNIT_PAGES) the output equals the reference for 1-3 workers."""
    src, _, reference = dedup_guest
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}"
        generate_qemu(src, out, workers=workers)
        assert _diff(out.read_bytes(), reference) is None, f"workers={workers}"


def test_kdump_source_dedup_under_collisions(
    dedup_guest: tuple[Path, dict[int, bytes], bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant: regenerating from the kdump itself (pages read through kdfix.open_dump, so a proposal is
    confirmed by reading guest-physical addresses) reproduces it, with a constant hash and 1 or 2 workers."""
    _, _, reference = dedup_guest
    src = tmp_path / "ref.kdump"
    src.write_bytes(reference)
    _small_units(monkeypatch, SMALL_UNIT)
    monkeypatch.setattr(uc, "hash", HASHES["constant"], raising=False)
    for workers in (1, 2):
        generate_qemu(src, tmp_path / f"again{workers}", workers=workers)
        assert _diff((tmp_path / f"again{workers}").read_bytes(), reference) is None, f"workers={workers}"


# --- the cache classes through their API ---------------------------------------------------------------------------


def test_page_cache_collision_misses() -> None:
    """Invariant: an index slot answers only for the exact key put there; another key that maps to the same slot
    (key + slots) or a different key is a miss, and a raw page (None) is returned as None bytes."""
    cache = qs.PageCache(4096, 8)
    try:
        cache.put(5, 0x1000, b"packed")
        assert cache.get(5) == (0x1000, b"packed")
        assert cache.get(5 + 8) is None and cache.get(6) is None
        cache.put(5 + 8, 0x2000, None)  # same slot: replaces
        assert cache.get(5 + 8) == (0x2000, None) and cache.get(5) is None
    finally:
        cache.close()
    local = qs.LocalPageCache(4096)
    local.put(5, 0x1000, b"packed")
    assert local.get(5 + 8) is None and local.get(5) == (0x1000, b"packed")


def test_page_cache_confirms_proposals(tmp_path: Path) -> None:
    """Invariant: UnitCompressor uses a cached result only when the proposed page equals the new one; two
    different pages with the same proposed hash (a forced collision) are both compressed on their own."""
    a = (b"A" * 100 + b"tail") * 40
    a = a[:PS]
    b = _flip(a, PS - 1)
    src_path = tmp_path / "pages"
    src_path.write_bytes(a + b + a)
    source = qs.FileRangeSource(str(src_path))
    for cache in (qs.LocalPageCache(), qs.PageCache(1 << 16, 16)):
        comp = qs.UnitCompressor(source, "zlib", PS, cache=cache)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(uc, "hash", lambda page: 1, raising=False)
            for first in range(3):  # one page per unit: every hit is confirmed from the source
                unit = qs.Unit(first, 1, (qs.Piece(0, first * PS, PS),))
                _sizes, stored = comp(unit)
                page = (a, b, a)[first]
                assert stored == zlib.compress(page, 1), f"page {first} with cache {type(cache).__name__}"
        assert comp.hits == 0  # each proposal was the previous, different page
        cache.close()
    source.close()


@given(st.lists(st.tuples(st.integers(0, 40), st.one_of(st.none(), st.integers(1, 900))), min_size=1, max_size=60))
def test_shared_ring_returns_only_what_was_put(puts: list[tuple[int, int | None]]) -> None:
    """Invariant: after any sequence of puts into a tiny ring (wrapping many times) and small index, get(key) is
    either None or exactly the (src, bytes) of the last put with that key; the last put is always retrievable."""
    ring, slots = 1000, 8
    cache = qs.PageCache(ring, slots)
    last: dict[int, tuple[int, bytes | None]] = {}
    try:
        for n, (key, size) in enumerate(puts):
            packed = None if size is None else bytes([n & 0xFF]) * size + n.to_bytes(4, "little")
            cache.put(key, n, packed)
            if packed is None or len(packed) <= ring:
                last[key] = (n, packed)
                assert cache.get(key) == (n, packed)
            for k in range(41):
                got = cache.get(k)
                assert got is None or got == last.get(k), f"key {k} after put {n}"
        written = cache._WPOS.unpack_from(cache._mm, 0)[0]
        assert len(cache._mm) == 8 + slots * cache._ENTRY.size + ring  # fixed memory whatever was written
        assert written >= 0
    finally:
        cache.close()


@given(
    st.integers(1, 1200),
    st.integers(0, 6),
    st.lists(st.tuples(st.integers(0, 30), st.one_of(st.none(), st.integers(1, 600))), max_size=80),
)
def test_local_cache_returns_only_what_was_put(ring: int, entries: int, puts: list[tuple[int, int | None]]) -> None:
    """Invariant: after any sequence of puts into a small ring and index (wrapping many times), get(key) is None or
    exactly the (src, bytes) of the last put with that key; the last put is held when it fits; the held entries
    stay within the index and their bytes whole in the ring's fixed mapping."""
    cache = qs.LocalPageCache(ring, entries)
    last: dict[int, tuple[int, bytes | None]] = {}
    try:
        for n, (key, size) in enumerate(puts):
            packed = None if size is None else bytes([n & 0xFF]) * size + n.to_bytes(4, "little")
            cache.put(key, n, packed)
            last[key] = (n, packed)
            if entries and (packed is None or len(packed) <= ring):
                assert cache.get(key) == (n, packed)
            _check_local_bounds(cache)
            for k in range(31):
                got = cache.get(k)
                assert got is None or got == last.get(k), f"key {k} after put {n}"
    finally:
        cache.close()


def test_tiny_cache_is_bounded_and_evicts(
    dedup_guest: tuple[Path, dict[int, bytes], bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant: with a tiny cache the memory stays bounded (LocalPageCache: its bounds hold after every put,
    entries evicted, ring wrapped; PageCache: fixed mapping, ring overwritten many times) and the output is
    unchanged."""
    src, _, reference = dedup_guest
    _small_units(monkeypatch, SMALL_UNIT)
    _use_caches(monkeypatch, local=(700, 4), ring=700, slots=4)
    generate_qemu(src, tmp_path / "w1", workers=1)
    (local,) = _CheckedLocalCache.seen
    assert local.evictions > 100 and local.peak <= 4 and local._wpos > 2 * 700  # the ring wrapped
    generate_qemu(src, tmp_path / "w2", workers=2)
    (shared,) = _CheckedSharedCache.seen
    assert shared.written > 2 * 700  # the ring wrapped: earlier entries were overwritten
    assert _diff((tmp_path / "w1").read_bytes(), reference) is None
    assert _diff((tmp_path / "w2").read_bytes(), reference) is None


# --- worker failures -----------------------------------------------------------------------------------------------


class Hang(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise Hang in the main thread if the block takes longer than ``seconds``."""

    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _in_helpers(mp: pytest.MonkeyPatch, marker: Path, act: Callable[[], None]) -> None:
    """Make every helper process run ``act`` when it starts its first unit; the parent waits (up to 20 s) for a
    helper to get there before compressing anything, so a helper surely takes a unit."""
    parent = os.getpid()
    real = qs.fill_unit

    def fill_unit(source: qs.PageSource, unit: qs.Unit, page_size: int) -> bytes | bytearray:
        if os.getpid() != parent:
            marker.touch()
            act()
        else:
            end = time.monotonic() + 20
            while not marker.exists() and time.monotonic() < end:
                time.sleep(0.005)
        return real(source, unit, page_size)

    mp.setattr(uc, "fill_unit", fill_unit)


def _assert_clean(outdir: Path) -> None:
    assert sorted(p.name for p in outdir.iterdir()) == [], "temp file or output left beside the output"
    end = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < end:
        time.sleep(0.05)
    assert not multiprocessing.active_children(), "helper processes left running"


def _nothing() -> None:
    pass


def _raise_format_error() -> None:
    raise FormatError("injected in a helper", field="PT_LOAD.p_filesz", offset=0x1234, path="/x/guest.elf")


def _raise_value_error() -> None:
    raise ValueError("not a KdfixError")


def _sigkill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _sigkill_first(flag: Path) -> None:
    """SIGKILL only the first helper that gets here; the others keep working (and fill their result slots)."""
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    _sigkill_self()


@pytest.mark.parametrize("workers", [2, 3])
def test_helper_kdfix_error_reraised(
    workers: int, dedup_guest: tuple[Path, dict[int, bytes], bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant: a KdfixError raised in a helper is raised in the parent with its type, message, field, offset
    and path; no temp file is left beside the output and no helper keeps running."""
    src, _, _ = dedup_guest
    _small_units(monkeypatch, SMALL_UNIT)
    _in_helpers(monkeypatch, tmp_path / "started", _raise_format_error)
    outdir = tmp_path / "out"
    outdir.mkdir()
    with deadline(60), pytest.raises(FormatError) as info:
        generate_qemu(src, outdir / "o", workers=workers)
    err = info.value
    assert type(err) is FormatError
    assert (err.message, err.field, err.offset, err.path) == (
        "injected in a helper",
        "PT_LOAD.p_filesz",
        0x1234,
        "/x/guest.elf",
    )
    _assert_clean(outdir)


def test_helper_other_exception_is_write_error(
    dedup_guest: tuple[Path, dict[int, bytes], bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant: a non-kdfix exception in a helper becomes WriteError(field="workers") naming the exception."""
    src, _, _ = dedup_guest
    _small_units(monkeypatch, SMALL_UNIT)
    _in_helpers(monkeypatch, tmp_path / "started", _raise_value_error)
    outdir = tmp_path / "out"
    outdir.mkdir()
    with deadline(60), pytest.raises(WriteError, match="ValueError") as info:
        generate_qemu(src, outdir / "o", workers=2)
    assert info.value.field == "workers"
    _assert_clean(outdir)


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("victims", ["all", "first"])
def test_helper_killed_fails_without_hanging(
    workers: int,
    victims: str,
    dedup_guest: tuple[Path, dict[int, bytes], bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Invariant: a helper SIGKILLed while it holds a unit makes generate fail with WriteError(field="workers")
    within the deadline (no hang), leaving no temp file beside the output and no helper running. With
    ``victims="first"`` and 3 workers the other helper stays alive, blocked on its full result slots, so the
    result pipe never reaches EOF: the parent must notice the dead helper itself."""
    src, _, _ = dedup_guest
    _small_units(monkeypatch, 4)  # 80 units: a surviving helper fills all its result slots
    act = _sigkill_self if victims == "all" else functools.partial(_sigkill_first, tmp_path / "killed")
    _in_helpers(monkeypatch, tmp_path / "started", act)
    outdir = tmp_path / "out"
    outdir.mkdir()
    started = time.monotonic()
    with deadline(30), pytest.raises(WriteError) as info:
        generate_qemu(src, outdir / "o", workers=workers)
    assert info.value.field == "workers"
    assert time.monotonic() - started < 30
    _assert_clean(outdir)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_truncated_source_found_mid_run(workers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Invariant: an ELF cut inside its last PT_LOAD (headers fine, so the cut is found only when that unit is
    read, by whichever process takes it) fails with FormatError field PT_LOAD.p_filesz and the source path, and
    leaves nothing beside the output."""
    blocks = _dedup_blocks()
    full = h.write_elf(tmp_path / "full.elf", blocks, h.qemu_notes(1))
    src = tmp_path / "cut.elf"
    src.write_bytes(full.read_bytes()[: -60 * PS - 100])
    _small_units(monkeypatch, SMALL_UNIT)
    outdir = tmp_path / "out"
    outdir.mkdir()
    with deadline(60), pytest.raises(FormatError) as info:
        generate_qemu(src, outdir / "o", workers=workers)
    assert info.value.field == "PT_LOAD.p_filesz" and info.value.path == str(src)
    _assert_clean(outdir)


# --- property: any small page set, 1 or 2 workers, read back through open_dump ------------------------------------

_POOL_RNG = random.Random(99)
_TEXT = (b"hypothesis page " * 300)[:PS]
_NOISE = _POOL_RNG.randbytes(PS)
POOL = [bytes(PS), _TEXT, _flip(_TEXT, 0), _flip(_TEXT, PS - 1), _NOISE, _flip(_NOISE, 77), _flip(bytes(PS), 9)]


@given(
    picks=st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=20),
    split=st.integers(0, 20),
    gap=st.integers(0, 3),
)
def test_property_workers_agree_and_read_back(picks: list[int], split: int, gap: int) -> None:
    """Invariant: for any small page set with repeats (one or two blocks, adjacent or with a hole), the output
    with workers=1 equals workers=2, and kdfix.open_dump of it returns every source page and no other page."""
    data = [POOL[i] for i in picks]
    split = min(split, len(data))
    blocks = [(0, b"".join(data[:split])), ((split + gap) * PS, b"".join(data[split:]))]
    blocks = [b for b in blocks if b[1]]
    pages = h.pages_by_pfn(blocks)
    with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
        _small_units(mp, 2)  # several units even for a few pages, so workers=2 really shares them
        src = h.write_elf(Path(d) / "g.elf", blocks, h.qemu_notes(1))
        generate_qemu(src, Path(d) / "w1", workers=1)
        runs = [len(data)] if gap == 0 else [split, len(data) - split]
        if sum(-(-n // 2) for n in runs) >= 2:  # helpers are started: make sure one of them compresses a unit
            _in_helpers(mp, Path(d) / "started", _nothing)
        generate_qemu(src, Path(d) / "w2", workers=2)
        one = (Path(d) / "w1").read_bytes()
        assert _diff(one, (Path(d) / "w2").read_bytes()) is None
        with kdfix.open_dump(Path(d) / "w1") as dump:
            mem = dump.memory
            assert list(mem.dumped.iter_set()) == sorted(pages)
            for pfn, page in pages.items():
                assert mem.page(pfn) == page, f"pfn {pfn}"
