"""Hostile input: structured mutations of every declared field, byte flips and truncations, for every container.

Invariant: reading a mutated dump (open, model, notes, VMCOREINFO, info, verify, memory reads) raises
nothing but KdfixError (one line), within a time bound; verify reports every bad page.
"""

from __future__ import annotations

import random
import signal
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.errors import FormatError, KdfixError
from kdfix.read.dump import verify_dump
from kdfix.read.probe import open_dump
from tests.reliability.harness import (
    FieldSlot,
    exercise,
    fields_of,
    flip_bytes,
    interesting_values,
    kdump_fields,
    set_field,
    write_variant,
)

TIME_LIMIT = 20  # seconds per exercised file (the seeds are < 20 MiB; a healthy read takes < 1 s)
SYNTHETIC = ("syn-zlib-kdump", "syn-none-kdump", "syn-zlib-flat", "syn-none-flat", "syn-split", "syn-elf")
ALL_SEEDS = (*SYNTHETIC, "firmware-16m.kdump-zlib", "firmware-16m-vmcoreinfo-note.kdump-zlib", "firmware-16m.elf.gz")


@contextmanager
def time_limit(seconds: int, what: str) -> Iterator[None]:
    def expired(*_: object) -> None:
        raise AssertionError(f"{what}: no answer within {seconds} s (hang or work sized by an untrusted field)")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_variant(tmp: Path, paths: list[str], index: int, data: bytes, what: str) -> str:
    variant = write_variant(tmp, paths, index, data)
    with time_limit(TIME_LIMIT, what):
        return exercise(variant)


# ---- deterministic sweep: every field of the synthetic seeds, every interesting value ----------------------


@pytest.mark.parametrize("seed", SYNTHETIC)
def test_every_field_every_value(tmp_path: Path, seeds: dict[str, list[str]], seed: str) -> None:
    """Each declared field (BoundLayout.iter_fields) set to 0, -1, huge, EOF±1 … gives a result or a KdfixError."""
    paths = seeds[seed]
    data = Path(paths[0]).read_bytes()
    slots = fields_of(paths[0])
    assert len(slots) >= 20, [s.name for s in slots]
    outcomes: dict[str, int] = {}
    for slot in slots:
        for value in interesting_values(slot.size, len(data)):
            buf = bytearray(data)
            set_field(buf, slot, value)
            tag = run_variant(tmp_path / "v", paths, 0, bytes(buf), f"{seed} {slot.name}={value:#x}")
            outcomes[tag] = outcomes.get(tag, 0) + 1
    assert outcomes.get("error", 0) > 0 and outcomes.get("ok", 0) > 0, outcomes


@pytest.mark.parametrize("seed", SYNTHETIC)
def test_truncation_at_every_offset(tmp_path: Path, seeds: dict[str, list[str]], seed: str) -> None:
    """Cut at every 97th byte (and at 0, 1, EOF-1): KdfixError or a readable prefix, never anything else."""
    paths = seeds[seed]
    for index, part in enumerate(paths[:2]):
        data = Path(part).read_bytes()
        for cut in sorted({0, 1, len(data) - 1, *range(0, len(data), 97)}):
            run_variant(tmp_path / "t", paths, index, data[:cut], f"{seed} part {index} cut at {cut:#x}")


# ---- hypothesis: structured mutations of every seed, committed QEMU fixtures included --------------------


@st.composite
def mutations(draw: st.DrawFn, slots: list[FieldSlot], size: int) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["field", "field", "field", "flip", "truncate"]))
        if kind == "field" and slots:
            slot = draw(st.sampled_from(slots))
            value = draw(
                st.one_of(
                    st.sampled_from(interesting_values(slot.size, size)),
                    st.integers(0, (1 << (8 * slot.size)) - 1),
                )
            )
            out.append(("field", (slot, value)))
        elif kind == "flip":
            out.append(
                (
                    "flip",
                    (
                        draw(st.integers(0, 2**32)),
                        draw(st.integers(1, 32)),
                        draw(st.sampled_from([4096, 1 << 16, None])),
                    ),
                )
            )
        else:
            out.append(("truncate", draw(st.integers(0, size))))
    return out


@pytest.mark.parametrize("seed", ALL_SEEDS)
@given(data=st.data())
def test_structured_mutations(tmp_path_factory: pytest.TempPathFactory, seeds: dict[str, list[str]], seed: str,
                              data: st.DataObject) -> None:  # fmt: skip
    """1-3 mutations (declared field := value, byte flips, truncation) of a seed: KdfixError or a result."""
    paths = seeds[seed]
    index = data.draw(st.integers(0, len(paths) - 1))
    raw = Path(paths[index]).read_bytes()
    slots = fields_of(paths[index])
    buf = bytearray(raw)
    for kind, arg in data.draw(mutations(slots, len(raw))):
        if kind == "field":
            slot, value = arg  # type: ignore[misc]
            set_field(buf, slot, value)
        elif kind == "flip":
            seed_, count, limit = arg  # type: ignore[misc]
            flip_bytes(buf, random.Random(seed_), count, limit)
        else:
            del buf[arg:]  # type: ignore[misc]
    tmp = tmp_path_factory.mktemp("mut")
    run_variant(tmp, paths, index, bytes(buf), f"{seed} mutated")


# ---- targeted hostile constructions -------------------------------------------------------------------


def _kdump_with(seeds: dict[str, list[str]], tmp: Path, edit: object) -> str:
    data = bytearray(Path(seeds["syn-zlib-kdump"][0]).read_bytes())
    fields = {s.name: s for s in kdump_fields(bytes(data))}
    edit(data, fields)  # type: ignore[operator]
    path = tmp / "hostile.kdump"
    path.write_bytes(data)
    return str(path)


def _verify(path: str) -> list[dict[str, object]]:
    with time_limit(TIME_LIMIT, path), open_dump(path) as dump:
        return verify_dump(dump).bad_pages


def test_verify_reports_every_bad_page(tmp_path: Path, seeds: dict[str, list[str]]) -> None:
    """Three corrupt descriptors (size > page, offset 0, offset past EOF): three bad pages, all named."""

    def edit(data: bytearray, f: dict[str, FieldSlot]) -> None:
        set_field(data, f["page_desc[1].size"], 0x2000)
        set_field(data, f["page_desc[3].offset"], 0)
        set_field(data, f["page_desc[5].offset"], len(data) + 4096)

    bad = _verify(_kdump_with(seeds, tmp_path, edit))
    errors = " | ".join(str(b["error"]) for b in bad)
    assert len(bad) == 3, errors
    assert "page_desc.size" in errors and "incomplete" in errors and "outside the file" in errors


def test_decompression_bomb_and_garbage_page(tmp_path: Path, seeds: dict[str, list[str]]) -> None:
    """A zlib page that inflates far past one page, and one that is not zlib: bad pages, bounded memory."""
    bomb = zlib.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in ~64 KiB: larger than a page, so cut below
    small_bomb = zlib.compress(bytes(1 << 20), 9)[:4000]  # fits a page, would inflate to 1 MiB

    def edit(data: bytearray, f: dict[str, FieldSlot]) -> None:
        for i, payload in ((1, small_bomb), (2, b"\xff" * 100)):
            off = struct.unpack_from("<q", data, f[f"page_desc[{i}].offset"].offset)[0]
            data[off : off + len(payload)] = payload
            set_field(data, f[f"page_desc[{i}].size"], len(payload))
            set_field(data, f[f"page_desc[{i}].flags"], 1)
        set_field(data, f["page_desc[4].size"], len(bomb))  # compressed size larger than a page

    bad = _verify(_kdump_with(seeds, tmp_path, edit))
    assert len(bad) >= 3, bad


def test_descriptor_pointing_into_headers(tmp_path: Path, seeds: dict[str, list[str]]) -> None:
    """Descriptors whose data overlaps the main header or the bitmaps read those bytes, as crash would."""

    def edit(data: bytearray, f: dict[str, FieldSlot]) -> None:
        set_field(data, f["page_desc[1].offset"], 8)
        set_field(data, f["page_desc[2].offset"], f["bitmap1[0:8]"].offset)

    _verify(_kdump_with(seeds, tmp_path, edit))


def test_bitmaps_inconsistent_with_descriptors(tmp_path: Path, seeds: dict[str, list[str]]) -> None:
    """2nd bitmap claims pages missing from the 1st and more pages than descriptors: errors, no crash."""

    def edit(data: bytearray, f: dict[str, FieldSlot]) -> None:
        set_field(data, f["bitmap1[0:8]"], 0)
        set_field(data, f["bitmap2[0:8]"], (1 << 64) - 1)

    path = _kdump_with(seeds, tmp_path, edit)
    with time_limit(TIME_LIMIT, path), open_dump(path) as dump:
        report = verify_dump(dump)
    assert not report.ok and any("missing from the 1st" in e for e in report.errors), report.errors


def test_note_with_bogus_sizes(tmp_path: Path, seeds: dict[str, list[str]]) -> None:
    """An Nhdr with n_namesz/n_descsz of 0xffffffff: the notes are reported as a problem, the dump still opens."""

    def edit(data: bytearray, f: dict[str, FieldSlot]) -> None:
        off = struct.unpack_from("<q", data, f["sub_header.offset_note"].offset)[0]
        struct.pack_into("<II", data, off, 0xFFFFFFFF, 0xFFFFFFFF)

    assert exercise([_kdump_with(seeds, tmp_path, edit)]) in ("ok", "verify-failed", "error")


@pytest.mark.parametrize(("offset", "size"), [(-2, 16), (0, -5), (1 << 62, 16), (0, 1 << 62), (4096, 0), (-1, 5)])
def test_flattened_record_sizes(tmp_path: Path, seeds: dict[str, list[str]], offset: int, size: int) -> None:
    """Negative, zero and huge record offsets/sizes: a FormatError naming flat_record.*, or a readable prefix."""
    data = bytearray(Path(seeds["syn-zlib-flat"][0]).read_bytes())
    second = 4096 + 16 + struct.unpack_from(">q", data, 4096 + 8)[0]
    struct.pack_into(">qq", data, second, offset, size)
    path = tmp_path / "f.flat"
    path.write_bytes(data)
    try:
        with time_limit(TIME_LIMIT, str(path)), open_dump(path) as dump:
            verify_dump(dump)
    except KdfixError as exc:
        assert "\n" not in str(exc)
        if (offset < 0 and (offset, size) != (-1, 5)) or size <= 0:
            assert exc.field is not None and exc.field.startswith("flat_record"), str(exc)


def test_flattened_hole_is_not_allocated(tmp_path: Path, seeds: dict[str, list[str]]) -> None:
    """A record at 2**50 makes the reassembled file huge; reading bitmaps from the hole is refused, not allocated."""
    data = bytearray(Path(seeds["syn-zlib-flat"][0]).read_bytes())
    fields = {s.name: s for s in fields_of(seeds["syn-zlib-flat"][0])}
    set_field(data, fields["flat_record[2].offset"], 1 << 50)
    set_field(data, fields["main_header.bitmap_blocks"], 0xFFFFFFF0)
    path = tmp_path / "hole.flat"
    path.write_bytes(data)
    with pytest.raises(KdfixError) as info, time_limit(TIME_LIMIT, str(path)):
        open_dump(path)
    assert "never written" in str(info.value) or "bitmap" in str(info.value)


def test_split_set_loops_and_gaps(tmp_path: Path, seeds: dict[str, list[str]]) -> None:
    """A part given twice (also via a symlink), a part of another dump: one-line FormatError; a missing part is
    readable, its pfns named as a problem."""
    parts = seeds["syn-split"]
    link = tmp_path / "alias"
    link.symlink_to(parts[0])
    other = seeds["syn-none-kdump"][0]
    for combo in ([parts[0], parts[0], parts[1], parts[2]], [parts[0], str(link), parts[1], parts[2]],
                  [parts[0], parts[1], parts[2], other], [parts[1], parts[1]]):  # fmt: skip
        with pytest.raises(FormatError) as info, time_limit(TIME_LIMIT, str(combo)):
            open_dump(*combo)
        assert "\n" not in str(info.value)
    with time_limit(TIME_LIMIT, "gap"), open_dump(parts[0], parts[2]) as dump:
        assert dump.split is not None and dump.split.gaps and not verify_dump(dump).ok
