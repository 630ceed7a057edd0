"""Every command on hostile files, as a subprocess with RLIMIT_AS = 1 GiB and a timeout.

Invariant: exit 2 (or 1 for a failed verify / undetermined fix) with exactly one stderr line naming
the problem, or exit 0; never a traceback, a hang, or an allocation sized by an untrusted field.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.reliability.conftest import run_kdfix
from tests.reliability.harness import elf_fields, fields_of, set_field


def _hostile_files(seeds: dict[str, list[str]], tmp: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}

    def mutate(name: str, seed: str, changes: dict[str, int], fields_fn: object = fields_of) -> None:
        src = seeds[seed][0]
        data = bytearray(Path(src).read_bytes())
        fields = {s.name: s for s in (fields_fn(src) if fields_fn is fields_of else fields_fn(bytes(data)))}  # type: ignore[operator]
        for field, value in changes.items():
            set_field(data, fields[field], value)
        out[name] = tmp / name
        out[name].write_bytes(data)

    mutate("bitmap-blocks-huge", "syn-zlib-kdump", {"main_header.bitmap_blocks": 0xFFFFFFFF})
    mutate("sub-hdr-size-negative", "syn-zlib-kdump", {"main_header.sub_hdr_size": 0x7FFFFFFF})
    mutate("max-mapnr-64-huge", "syn-zlib-kdump", {"sub_header.max_mapnr_64": (1 << 64) - 1})
    mutate("size-note-huge", "syn-zlib-kdump", {"sub_header.size_note": 1 << 62})
    mutate("eraseinfo-outside", "syn-zlib-kdump", {"sub_header.offset_eraseinfo": 1 << 40})
    mutate("desc-size-huge", "syn-zlib-kdump", {"page_desc[0].size": 0xFFFFFFFF, "page_desc[2].offset": 1 << 60})
    mutate(
        "flat-record-huge", "syn-zlib-flat", {"flat_record[2].offset": 1 << 50, "main_header.bitmap_blocks": 0xFFFFFFF0}
    )
    mutate("flat-size-negative", "syn-zlib-flat", {"flat_record[1].buf_size": (1 << 64) - 100})
    mutate("flat-type", "syn-zlib-flat", {"flat_header.type": 7})
    mutate("elf-phnum", "syn-elf", {"elf_header.e_phnum": 0xFFFF}, elf_fields)
    mutate("elf-memsz-64g", "syn-elf", {"phdr[1].p_memsz": 1 << 36}, elf_fields)
    mutate("elf-filesz-past-eof", "syn-elf", {"phdr[1].p_filesz": 1 << 40}, elf_fields)
    mutate("elf-offset-huge", "syn-elf", {"phdr[1].p_offset": (1 << 63) + 5}, elf_fields)
    trunc = tmp / "truncated-headers"
    trunc.write_bytes(Path(seeds["syn-zlib-kdump"][0]).read_bytes()[:4500])
    out["truncated-headers"] = trunc
    empty = tmp / "empty"
    empty.write_bytes(b"")
    out["empty"] = empty
    garbage = tmp / "garbage"
    garbage.write_bytes(b"KDUMP   " + struct.pack("<i", 6) + bytes(500))
    out["garbage"] = garbage
    return out


COMMANDS = {
    "info": lambda p, t: ["info", p, "--json"],
    "notes": lambda p, t: ["notes", p],
    "verify": lambda p, t: ["verify", p],
    "read-mem": lambda p, t: ["read-mem", p, "0x1000", "64"],
    "detect": lambda p, t: ["detect", p],
    "convert": lambda p, t: ["convert", p, "-o", t / "out"],
    "fix": lambda p, t: ["fix", p, "-o", t / "fixed"],
}


@pytest.fixture(scope="module")
def hostile(seeds: dict[str, list[str]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _hostile_files(seeds, tmp_path_factory.mktemp("hostile"))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_commands_on_hostile_files(hostile: dict[str, Path], tmp_path: Path, command: str) -> None:
    """Each command on each hostile file: exit 0/1/2, no traceback, at most one stderr line when it fails."""
    codes = {}
    for name, path in sorted(hostile.items()):
        res = run_kdfix(*COMMANDS[command](path, tmp_path))
        assert "Traceback" not in res.stderr and "MemoryError" not in res.stderr, (name, res.stderr[-2000:])
        assert res.code in (0, 1, 2), (name, res.code, res.stderr[-2000:])
        lines = res.stderr.strip().splitlines()
        if res.code == 2:
            assert len(lines) == 1 and lines[0].startswith("kdfix: "), (name, res.stderr)
        else:  # 1: a failed verify or no fix determined, reported on stdout
            assert len(lines) <= 1, (name, res.stderr)
        codes[name] = res.code
    # The unreadable ones must fail (not "succeed" on garbage).
    for name in ("empty", "garbage", "flat-type", "sub-hdr-size-negative"):
        assert codes[name] == 2, (command, name, codes[name])


def test_error_names_field_and_offset(hostile: dict[str, Path]) -> None:
    """The one line names the field and its offset in the file."""
    res = run_kdfix("info", hostile["sub-hdr-size-negative"])
    assert res.code == 2 and "main_header.sub_hdr_size at 0x1b0" in res.stderr, res.stderr
    res = run_kdfix("info", hostile["flat-type"])
    assert res.code == 2 and "flat_header.type at 0x10" in res.stderr, res.stderr
