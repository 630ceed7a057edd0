"""Read-side commands via CliRunner: info, notes, vmcoreinfo, read-mem, verify (exit codes, one-line errors, JSON)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdfix.cli import app
from kdfix.format.kdump import PAGE_DESC_SIZE
from kdfix.read.memory import DictMemory
from kdfix.read.origin import ORIGINS
from kdfix.write import write_kdump, write_split
from tests.oracle.fixtures import repo_fixture
from tests.read.conftest import sample_pages
from tests.read.test_kdump import VMCOREINFO, make_model

runner = CliRunner()


def run(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    return lines[0]


@pytest.fixture
def dump(tmp_path) -> Path:
    path = tmp_path / "d.kdump"
    write_kdump(path, make_model(), DictMemory(sample_pages(), max_pfn=0x2000), codec="zlib", exclude_zero=True)
    return path


@pytest.fixture
def qemu_kdump() -> Path:
    return repo_fixture("firmware-16m.kdump-zlib")


def test_info_json_has_the_contract_keys(dump):
    result = run("info", dump, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    for key in ("format", "signature", "header_version", "block_size", "max_mapnr", "phys_base", "dump_level",
                "compression", "status_flags", "utsname", "timestamp", "nr_cpus", "notes", "vmcoreinfo",
                "origin", "problems"):  # fmt: skip
        assert key in info, key
    assert info["format"] == "kdump" and info["signature"] == "KDUMP   " and info["header_version"] == 6
    assert info["compression"] == "zlib" and info["status_flags"] == ["compressed_zlib"]
    assert info["utsname"]["release"] == "6.1.0-test" and info["max_mapnr"] == 0x2000
    assert info["notes"] == [{"name": "VMCOREINFO", "type": 0, "size": len(VMCOREINFO)}]
    assert info["vmcoreinfo"] is True and isinstance(info["phys_base"], int)
    assert info["origin"] in ORIGINS and isinstance(info["origin_evidence"], list) and info["problems"] == []


def test_info_on_qemu_fixture(qemu_kdump):
    result = run("info", qemu_kdump, "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["format"] == "flattened" and info["origin"] == "qemu" and info["nr_cpus"] == 2
    assert [n["name"] for n in info["notes"]] == ["CORE", "CORE", "QEMU", "QEMU"]
    human = run("info", qemu_kdump)
    assert human.exit_code == 0 and re.search(r"max_mapnr: +1048576", human.stdout)
    assert re.search(r"origin: +qemu", human.stdout)


def test_info_of_split_set(tmp_path):
    parts = [tmp_path / "a", tmp_path / "b"]
    write_split(parts, make_model(), DictMemory(sample_pages(), max_pfn=0x2000))
    result = run("info", parts[1], parts[0], "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    listed = info["kdump"]["parts"]
    assert info["format"] == "split" and [p["path"] for p in listed] == [str(parts[0]), str(parts[1])]
    assert listed[0]["start_pfn"] == 0 and listed[0]["end_pfn"] == listed[1]["start_pfn"]
    assert listed[1]["end_pfn"] == info["max_mapnr"]


def test_notes_decodes_registers(qemu_kdump):
    result = run("notes", qemu_kdump, "--json")
    assert result.exit_code == 0
    notes = json.loads(result.stdout)["notes"]
    assert [n["kind"] for n in notes] == ["prstatus", "prstatus", "qemu_cpu_state", "qemu_cpu_state"]
    assert notes[0]["decoded"]["pr_pid"] == 1 and notes[0]["decoded"]["registers"]["eip"] == 0xFFF0
    assert notes[2]["decoded"]["size"] == 440
    human = run("notes", qemu_kdump)
    assert "(cpu 1)" in human.stdout and "eip: 000000000000fff0" in human.stdout


def test_vmcoreinfo_prints_text_or_exits_1(dump, qemu_kdump):
    result = run("vmcoreinfo", dump)
    assert result.exit_code == 0 and result.stdout_bytes == VMCOREINFO
    missing = run("vmcoreinfo", qemu_kdump)
    assert missing.exit_code == 1 and "no VMCOREINFO" in one_line_error(missing)


def test_read_mem(dump, tmp_path):
    pages = sample_pages()
    result = run("read-mem", dump, "0x5000", "8192")
    assert result.exit_code == 0 and result.stdout_bytes == pages[5] + pages[6]
    result = run("read-mem", dump, str(5 * 4096 + 10), "0x10")
    assert result.stdout_bytes == pages[5][10:26]
    out = tmp_path / "out.bin"
    result = run("read-mem", dump, "0x3ff8", "16", "-o", out, "--zero-fill")
    assert result.exit_code == 0 and out.read_bytes() == bytes(16)


def test_read_mem_length_zero_touches_no_page(dump):
    """LENGTH 0 reads nothing, whether or not ADDR is page-aligned (no page is checked for presence)."""
    for addr in ("0x3000", "0x3001", "0x2001"):  # 0x3000: pfn 3 not in the dump; pfn 2 excluded
        result = run("read-mem", dump, addr, "0")
        assert result.exit_code == 0, (addr, result.stderr)
        assert result.stdout_bytes == b""


@pytest.mark.parametrize(
    ("args", "needle"),
    [(("0x3000", "8"), "not in"), (("0x2000", "8"), "excluded"), (("zz", "8"), "ADDR"), (("0x0",), "usage")],
)
def test_read_mem_errors(dump, args, needle):
    """Missing pages, excluded pages (zero pages excluded here) and bad numbers: one line, exit 2."""
    result = run("read-mem", dump, *args)
    assert result.exit_code == 2
    assert needle in one_line_error(result)
    assert result.stdout_bytes == b""


def test_verify_sound_files(dump, qemu_kdump):
    for path in (dump, qemu_kdump):
        result = run("verify", path, "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["ok"] and report["bad_pages"] == [] and report["pages_checked"] > 0


def test_verify_reports_every_bad_page(tmp_path):
    """Two corrupted pages and an oversized descriptor: all three reported, exit 1."""
    from kdfix import open_dump

    path = tmp_path / "bad.kdump"
    write_kdump(path, make_model(), DictMemory(sample_pages(), max_pfn=0x2000), codec="zlib")
    raw = bytearray(path.read_bytes())
    with open_dump(path) as d:
        k = d.kdump
        targets = {}
        for pfn, desc in k.iter_descriptors():
            if desc.flags and len(targets) < 2:
                targets[pfn] = desc
        for desc in targets.values():
            raw[desc.offset + 2 : desc.offset + 10] = b"\xde\xad\xbe\xef" * 2
        bad_size_pfn = 300
        size_at = k.descriptor_offset(bad_size_pfn) + 8
        raw[size_at : size_at + 4] = (4097).to_bytes(4, "little")
        assert k.data_offset + PAGE_DESC_SIZE * k.num_dumped < len(raw)
    path.write_bytes(bytes(raw))
    result = run("verify", path, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert not report["ok"]
    assert {b["pfn"] for b in report["bad_pages"]} == {*targets, bad_size_pfn}
    human = run("verify", path)
    assert human.exit_code == 1 and "FAILED" in human.stdout and human.stdout.count("bad page") == 3


def test_verify_flags_bitmap_subset_violation(dump):
    raw = bytearray(dump.read_bytes())
    from kdfix import open_dump

    with open_dump(dump) as d:
        off1 = d.kdump.bitmap1_offset
    raw[off1] &= ~1  # pfn 0 removed from the 1st bitmap, still in the 2nd
    dump.write_bytes(bytes(raw))
    result = run("verify", dump, "--json")
    assert result.exit_code == 1
    assert any("2nd bitmap" in e for e in json.loads(result.stdout)["errors"])


@pytest.mark.parametrize("command", ["info", "notes", "vmcoreinfo", "verify"])
def test_unusable_input_is_one_line_exit_2(tmp_path, command):
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a dump at all" * 100)
    result = run(command, junk)
    assert result.exit_code == 2
    assert "junk" in one_line_error(result)
    missing = run(command, tmp_path / "nope")
    assert missing.exit_code == 2
    one_line_error(missing)


@pytest.mark.parametrize("command", ["info", "notes", "vmcoreinfo", "verify"])
def test_directory_and_fifo_are_one_line_exit_2_naming_the_path(tmp_path, command):
    """A directory is named in the error (not a bare "Is a directory"); a FIFO is refused, not opened (blocks)."""
    import os

    folder = tmp_path / "somedir"
    folder.mkdir()
    fifo = tmp_path / "somefifo"
    os.mkfifo(fifo)
    for path in (folder, fifo):
        result = run(command, path)
        assert result.exit_code == 2
        assert path.name in one_line_error(result)


def test_truncated_file_is_one_line_exit_2(dump, tmp_path):
    cut = tmp_path / "cut"
    cut.write_bytes(dump.read_bytes()[:6000])
    result = run("info", cut)
    assert result.exit_code == 2
    one_line_error(result)


def test_info_needs_fix_names_what_blocks_each_reader_and_clears_after_fix(tmp_path):
    """A raw QEMU dump lists the obstacles (no VMCOREINFO, insane utsname); the fixed copy lists none."""
    qemu = repo_fixture("firmware-16m-vmcoreinfo-note.kdump-zlib")
    info = json.loads(run("info", str(qemu), "--json").stdout)
    assert info["vmcoreinfo"] is True
    assert any("phys_base" in f for f in info["needs_fix"]) or any("utsname" in f for f in info["needs_fix"])
    assert any("utsname is not sane" in f for f in info["needs_fix"])
    bare = json.loads(run("info", str(repo_fixture("firmware-16m.kdump-zlib")), "--json").stdout)
    assert any(f.startswith("no VMCOREINFO") for f in bare["needs_fix"])
    fixed = tmp_path / "fixed.kdump"
    result = run("fix", str(qemu), "-o", str(fixed))
    assert result.exit_code == 0, result.output
    assert json.loads(run("info", str(fixed), "--json").stdout)["needs_fix"] == []
