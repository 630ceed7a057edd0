"""kdfix.batch.walk: dumps recognised by content (never by name), split sets grouped, everything else skipped."""

from __future__ import annotations

import os
from pathlib import Path

from kdfix.batch.walk import SplitPart, group_split_parts, matches, probe_elf_core, walk
from tests.batch.synthetic import Templates, build_archive, put


def test_archive_dumps_found_by_content(tmp_path: Path, templates: Templates) -> None:
    """Every dump under nested folders with arbitrary names is found with its kind; other files are skipped."""
    build_archive(tmp_path, templates)
    result = walk([tmp_path])
    kinds = {d.path: d.kind for d in result.dumps}
    assert kinds == {
        "case-001/vmcore": "kdump",
        "case-002/2024/x/dump.bin": "kdump",
        "case-002/flat-stream": "flattened",
        "case-003/already-fine": "kdump",
        "case-003/elfcore": "elf",
        "case-004/part-c": "split",
        "case-005/truncated": "kdump",
        "weird name (copy)/a b": "kdump",
    }
    skipped = {s.path: s.reason for s in result.skipped}
    assert set(skipped) == {"case-001/notes.txt", "case-005/prog"}
    assert "not a dump" in skipped["case-001/notes.txt"]
    assert "ET_CORE" in skipped["case-005/prog"]
    assert not any(s.failed for s in result.skipped)


def test_split_set_grouped_lowest_range_first(tmp_path: Path, templates: Templates) -> None:
    """The parts of a split set form one unit, ordered by pfn range, whatever their names."""
    build_archive(tmp_path, templates)
    (split,) = [d for d in walk([tmp_path]).dumps if d.kind == "split"]
    assert split.rel_files == ("case-004/part-c", "case-004/part-a", "case-004/part-b")
    assert split.size_bytes == sum(p.stat().st_size for p in templates.split)


def test_two_copies_of_a_split_set_stay_apart(tmp_path: Path, templates: Templates) -> None:
    """Identical main headers in two folders give two sets (same directory first), not one set with duplicates."""
    for folder in ("a", "b"):
        for i, part in enumerate(templates.split):
            put(part, tmp_path / folder / f"p{i}")
    sets = sorted(d.rel_files for d in walk([tmp_path]).dumps)
    assert sets == [("a/p0", "a/p1", "a/p2"), ("b/p0", "b/p1", "b/p2")]


def test_incomplete_split_set_is_a_failure(tmp_path: Path, templates: Templates) -> None:
    """A part whose siblings are missing cannot be fixed as a set: reported as failed, with the missing range."""
    put(templates.split[0], tmp_path / "only-part")
    result = walk([tmp_path])
    assert result.dumps == ()
    (s,) = result.skipped
    assert s.failed and "other parts were not found" in s.reason


def test_include_exclude_globs(tmp_path: Path, templates: Templates) -> None:
    """--include keeps only matching paths or names; --exclude removes matches; '*' crosses folders."""
    build_archive(tmp_path, templates)
    inc = walk([tmp_path], include=["case-002/*"])
    assert {d.path for d in inc.dumps} == {"case-002/2024/x/dump.bin", "case-002/flat-stream"}
    assert inc.skipped == ()
    exc = walk([tmp_path], exclude=["case-00[1-4]/*", "*.txt"])
    assert {d.path for d in exc.dumps} == {"case-005/truncated", "weird name (copy)/a b"}
    assert matches("x/y/vmcore", ["vmcore"]) and not matches("x/vmcore.1", ["vmcore"])


def test_symlinks_never_followed(tmp_path: Path, templates: Templates) -> None:
    """A link out of the root is skipped as such; a link inside is skipped (its target is processed once)."""
    outside = tmp_path / "outside"
    root = tmp_path / "root"
    put(templates.broken, outside / "secret.kdump")
    put(templates.broken, root / "real")
    os.symlink(outside / "secret.kdump", root / "link-out")
    os.symlink(outside, root / "dirlink-out")
    os.symlink(root / "real", root / "link-in")
    result = walk([root])
    assert [d.path for d in result.dumps] == ["real"]
    reasons = {s.path: s.reason for s in result.skipped}
    assert "out of the walked root" in reasons["link-out"]
    assert "out of the walked root" in reasons["dirlink-out"]
    assert "inside the root" in reasons["link-in"]


def test_files_as_paths_and_several_roots(tmp_path: Path, templates: Templates) -> None:
    """A file PATH is taken as is; with several roots, relative paths keep the roots apart."""
    put(templates.broken, tmp_path / "one" / "x")
    put(templates.broken, tmp_path / "two" / "x")
    assert [d.path for d in walk([tmp_path / "one" / "x"]).dumps] == ["x"]
    assert [d.path for d in walk([tmp_path / "one", tmp_path / "two"]).dumps] == ["one/x", "two/x"]


def test_ignore_prunes_output_dir(tmp_path: Path, templates: Templates) -> None:
    """The output directory and report inside the walked root are never looked at."""
    put(templates.broken, tmp_path / "in" / "d")
    put(templates.broken, tmp_path / "out" / "in" / "d")
    (tmp_path / "report.jsonl").write_text("{}\n")
    result = walk([tmp_path], ignore=[tmp_path / "out", tmp_path / "report.jsonl"])
    assert [d.path for d in result.dumps] == ["in/d"] and result.skipped == ()


def test_empty_and_temp_files(tmp_path: Path, templates: Templates) -> None:
    """Empty files and kdfix temp files are skipped with their reason."""
    (tmp_path / "empty").write_bytes(b"")
    put(templates.broken, tmp_path / ".vmcore.abc123.kdfix-tmp")
    reasons = {s.path: s.reason for s in walk([tmp_path]).skipped}
    assert reasons == {"empty": "empty file", ".vmcore.abc123.kdfix-tmp": reasons[".vmcore.abc123.kdfix-tmp"]}
    assert "temporary" in reasons[".vmcore.abc123.kdfix-tmp"]


def test_probe_elf_core_both_byte_orders() -> None:
    """ET_CORE is read in the file's own byte order."""
    le = b"\x7fELF\x02\x01\x01" + bytes(9) + (4).to_bytes(2, "little")
    be = b"\x7fELF\x02\x02\x01" + bytes(9) + (4).to_bytes(2, "big")
    exe = b"\x7fELF\x02\x01\x01" + bytes(9) + (2).to_bytes(2, "little")
    assert probe_elf_core(le) and probe_elf_core(be) and not probe_elf_core(exe)


def test_kept_original_beside_its_dump_is_not_a_dump_to_fix(tmp_path: Path, templates: Templates) -> None:
    """DUMP.kdfix-orig (the original of an ELF fixed in place) belongs to DUMP; alone it is an ordinary dump."""
    put(templates.elf, tmp_path / "a" / "core")
    put(templates.elf, tmp_path / "a" / "core.kdfix-orig")
    put(templates.elf, tmp_path / "b" / "lonely.kdfix-orig")
    found = sorted(d.path for d in walk([tmp_path]).dumps)
    assert found == ["a/core", "b/lonely.kdfix-orig"]


def _part(start: int, end: int, name: str, max_pfn: int = 0x8000) -> tuple[SplitPart, str, str, int]:
    return SplitPart(b"same header", start, end, max_pfn), f"/d/{name}", f"d/{name}", 1


def test_empty_parts_join_the_set_at_their_boundary() -> None:
    """makedumpfile --split into more parts than it has pages to share writes parts [max, max) (issue 14)."""
    group = [_part(0, 0x8000, "mdf.split1"), *(_part(0x8000, 0x8000, f"mdf.split{i}") for i in (5, 2, 4, 3))]
    sets, leftovers = group_split_parts(group)
    assert leftovers == []
    (found,) = sets
    assert found.rel_files == ("d/mdf.split1", "d/mdf.split2", "d/mdf.split3", "d/mdf.split4", "d/mdf.split5")
    middle = [_part(0, 0x100, "a"), _part(0x100, 0x100, "b"), _part(0x100, 0x8000, "c")]
    (found,) = group_split_parts(middle)[0]
    assert found.rel_files == ("d/a", "d/b", "d/c")


def test_a_lone_part_is_not_a_set() -> None:
    sets, leftovers = group_split_parts([_part(0, 0x8000, "only")])
    assert sets == [] and [s.path for s in leftovers] == ["d/only"]


def test_split_identity_ignores_the_timestamp(tmp_path: Path, templates: Templates) -> None:
    """Parts stamped at different times (makedumpfile stamps each) still group into one set."""
    from kdfix.format.kdump import DISK_DUMP_HEADER
    from kdfix.format.layout import LP64_LE

    layout = DISK_DUMP_HEADER.bind(LP64_LE)
    at = layout.offset_of("timestamp.tv_sec")
    for i, part in enumerate(templates.split):
        data = bytearray(part.read_bytes())
        data[at : at + 8] = layout.pack_field("timestamp.tv_sec", 1_700_000_000 + i)
        (tmp_path / f"p{i}").write_bytes(data)
    (found,) = walk([tmp_path]).dumps
    assert found.kind == "split" and len(found.files) == len(templates.split)
