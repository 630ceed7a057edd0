"""fix_dump on synthetic QEMU-like dumps: exact phys_base, VMCOREINFO placement, idempotency, dry run, undo, modes."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdfix import open_dump
from kdfix.errors import KdfixError
from kdfix.fix import fix_dump
from kdfix.fix.diagnose import early_strings
from kdfix.fix.journal import journal_path, undo
from kdfix.fix.options import parse_phys_base
from kdfix.format.constants import DumpFlag
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.readiness import FLATTENED_FINDING, reader_findings
from kdfix.units import cstr
from kdfix.write import reassemble
from kdfix.write.utsname import is_sane, utsname_fields
from tests.fix.conftest import MiB, file_state, make_dump


def _copy(src: Path, dst: Path, mode: int = 0o644) -> Path:
    shutil.copyfile(src, dst)
    dst.chmod(mode)
    return dst


def _check_fixed(path: Path, truth) -> None:  # type: ignore[no-untyped-def]
    """Header phys_base exact; VMCOREINFO note in the notes and the header pointer at its text; sane utsname."""
    with open_dump(path) as dump:
        assert dump.sub_header.phys_base == truth.phys_base
        k = dump.kdump
        text, problems = k.vmcoreinfo_text()
        assert not problems
        note = next(n for n in k.notes if n.name == b"VMCOREINFO")
        assert k.vmcoreinfo_raw == note.desc == text
        assert dump.sub_header.offset_vmcoreinfo == note.offset + 24
        assert VmcoreInfo.parse(text).phys_base == truth.phys_base
        fields = utsname_fields(dump.main_header.utsname)
        assert is_sane(fields) and cstr(fields["release"]) == truth.release
        assert dump.main_header.timestamp.tv_usec == 0


@pytest.mark.parametrize("container", ["plain", "flat"])
def test_in_place_fix_then_undo_restores_the_file(tmp_path: Path, synthetic_plain, synthetic_flat, container) -> None:  # type: ignore[no-untyped-def]
    src, truth = synthetic_plain if container == "plain" else synthetic_flat
    path = _copy(src, tmp_path / "d")
    before = file_state(path)
    result = fix_dump(path, in_place=True)
    assert result.status == "fixed" and result.journal == journal_path(path)
    assert result.phys_base == f"{truth.phys_base:#x}"
    assert result.bytes_written < 64 * 1024
    _check_fixed(path, truth)
    undo(path)
    assert file_state(path)[:2] == before[:2]
    assert not Path(journal_path(path)).exists()


def test_fix_of_a_fixed_file_is_ok_with_no_edits(tmp_path: Path, synthetic_plain) -> None:  # type: ignore[no-untyped-def]
    path = _copy(synthetic_plain[0], tmp_path / "d")
    assert fix_dump(path, in_place=True).status == "fixed"
    state = file_state(path)
    again = fix_dump(path, in_place=True)
    assert (again.status, again.edits, again.bytes_written) == ("ok", [], 0)
    assert "nothing to fix" in again.messages
    assert file_state(path) == state


def test_dry_run_changes_nothing_and_lists_the_edits(tmp_path: Path, synthetic_flat) -> None:  # type: ignore[no-untyped-def]
    path = _copy(synthetic_flat[0], tmp_path / "d")
    state = file_state(path)
    result = fix_dump(path, in_place=True, dry_run=True)
    assert result.status == "fixed" and result.dry_run
    fields = {e["field"] for e in result.edits}
    assert {"sub_header.phys_base", "sub_header.offset_note", "notes", "main_header.utsname.release"} <= fields
    assert all(isinstance(e["file_offset"], int) for e in result.edits)
    assert file_state(path) == state
    assert not Path(journal_path(path)).exists()


@pytest.mark.parametrize("flat", [False, True], ids=["random-access", "flat"])
def test_output_is_random_access_unless_flat_keeps_mode_and_leaves_the_input(
    tmp_path: Path, synthetic_flat, synthetic_plain, flat: bool
) -> None:  # type: ignore[no-untyped-def]
    """-o of a flattened stream writes a KDUMP file every reader opens (issue 14 item 1); --flat keeps a stream,
    and also flattens a plain input; the pages are those of the input."""
    for src, truth in (synthetic_flat, synthetic_plain):
        path = _copy(src, tmp_path / "in", 0o400)
        state = file_state(path)
        out = tmp_path / "out"
        result = fix_dump(path, output=out, flat=flat)
        assert result.status == "fixed" and result.output == str(out)
        assert file_state(path) == state
        assert out.stat().st_mode & 0o777 == 0o400
        with open_dump(out) as dump, open_dump(path) as original:
            assert dump.container == ("flattened" if flat else "kdump")
            assert dict(dump.memory.iter_pages()) == dict(original.memory.iter_pages())
            assert not any("flattened stream" in f for f in reader_findings(dump)) or flat
        _check_fixed(out, truth)
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".kdfix-tmp")]
        out.unlink()
        path.unlink()


def test_flattened_in_place_stays_flattened_and_info_says_so(tmp_path: Path, synthetic_flat) -> None:  # type: ignore[no-untyped-def]
    path = _copy(synthetic_flat[0], tmp_path / "in", 0o600)
    result = fix_dump(path, in_place=True)
    assert result.status == "fixed" and any("kdfix convert --no-flat" in m for m in result.messages)
    with open_dump(path) as dump:
        assert dump.container == "flattened"
        assert FLATTENED_FINDING in reader_findings(dump)
    with pytest.raises(KdfixError, match="--flat needs -o"):
        fix_dump(path, in_place=True, flat=True)


def test_read_only_input_refuses_in_place(tmp_path: Path, synthetic_plain) -> None:  # type: ignore[no-untyped-def]
    path = _copy(synthetic_plain[0], tmp_path / "d", 0o400)
    with pytest.raises(KdfixError, match="read-only"):
        fix_dump(path, in_place=True)


def test_flattened_in_place_equals_fixing_the_reassembled_file(tmp_path: Path, synthetic_flat) -> None:  # type: ignore[no-untyped-def]
    """-R(fix(flat)) == fix(-R(flat)) byte for byte (the OSRELEASE hint lives in the stream header only)."""
    flat = _copy(synthetic_flat[0], tmp_path / "d.flat")
    plain = tmp_path / "d.plain"
    reassemble(flat, plain)
    fix_dump(flat, in_place=True)
    fix_dump(plain, in_place=True)
    again = tmp_path / "again"
    reassemble(flat, again)
    assert again.read_bytes() == plain.read_bytes()
    head = flat.read_bytes()[: 1 << 16]
    assert any(b"OSRELEASE=" in s for s in early_strings(head))


def test_explicit_phys_base_and_flags(tmp_path: Path, synthetic_plain) -> None:  # type: ignore[no-untyped-def]
    path = _copy(synthetic_plain[0], tmp_path / "d")
    result = fix_dump(path, in_place=True, phys_base="-0x400000", vmcoreinfo="none", utsname="none",
                      set_flags=["incomplete"])  # fmt: skip
    assert result.status == "fixed"
    with open_dump(path) as dump:
        assert dump.sub_header.phys_base == (1 << 64) - 0x400000
        assert dump.main_header.status & DumpFlag.COMPRESSED_INCOMPLETE
        assert dump.vmcoreinfo is None
    cleared = fix_dump(path, in_place=True, phys_base="-4194304", vmcoreinfo="none", utsname="none",
                       clear_flags=["incomplete"])  # fmt: skip
    assert [e["field"] for e in cleared.edits] == ["main_header.status"]
    undo(path)
    assert file_state(path)[0] == file_state(synthetic_plain[0])[0]


def test_vmcoreinfo_file_and_undetermined(tmp_path: Path, synthetic_plain) -> None:  # type: ignore[no-untyped-def]
    src, truth = synthetic_plain
    path = _copy(src, tmp_path / "d")
    vmci = tmp_path / "vmcoreinfo.txt"
    vmci.write_bytes(truth.vmcoreinfo)
    result = fix_dump(path, output=tmp_path / "o", vmcoreinfo=str(vmci))
    assert result.status == "fixed"
    _check_fixed(tmp_path / "o", truth)
    # A dump whose memory holds no kernel: nothing can be determined, nothing is written.
    from kdfix.read.memory import DictMemory
    from kdfix.write import write_kdump
    from tests import strategies as S

    empty = tmp_path / "empty"
    write_kdump(empty, dataclasses.replace(S.drgn_model(), vmcoreinfo=None, notes=()),
                DictMemory({i: bytes([i]) * 4096 for i in range(64)}, max_pfn=64))  # fmt: skip
    state = file_state(empty)
    res = fix_dump(empty, in_place=True)
    assert res.status == "undetermined" and res.missing and res.edits == []
    assert file_state(empty) == state


def test_elf_without_kernel_and_vmcoreinfo_none_needs_no_phys_base(tmp_path: Path) -> None:
    """An ELF vmcore has no header phys_base: with --vmcoreinfo none, an unknown phys_base is not "undetermined"."""
    from kdfix.read.memory import DictMemory
    from kdfix.write.elf import write_elf
    from tests import strategies as S

    path = tmp_path / "core.elf"
    write_elf(path, dataclasses.replace(S.drgn_model(), vmcoreinfo=None, notes=()),
              DictMemory({i: bytes([i]) * 4096 for i in range(32)}, max_pfn=32))  # fmt: skip
    res = fix_dump(path, output=tmp_path / "o", vmcoreinfo="none")
    assert res.status in ("ok", "fixed") and not res.missing, res.missing
    assert (tmp_path / "o").exists()


def test_parse_phys_base() -> None:
    assert parse_phys_base("auto") == "auto"
    assert parse_phys_base("-840957952") == (1 << 64) - 840957952
    assert parse_phys_base("0x6000000") == 0x6000000
    assert parse_phys_base("12") == 12
    with pytest.raises(KdfixError):
        parse_phys_base("zz")


@pytest.mark.parametrize("text", ["--5", "+-5", "-+5", "-0x8000000000000001", "-18446744073709551615", "0x-10"])
def test_parse_phys_base_rejects_double_signs_and_negatives_below_s64(text: str) -> None:
    """One optional sign; a negative value must fit s64, else it would silently wrap to a small positive u64."""
    with pytest.raises(KdfixError):
        parse_phys_base(text)


def test_parse_phys_base_s64_bounds() -> None:
    assert parse_phys_base("-0x8000000000000000") == 1 << 63
    assert parse_phys_base("+0x10") == 0x10
    assert parse_phys_base("-0x10") == (1 << 64) - 0x10
    assert parse_phys_base("0xffffffffffffffff") == (1 << 64) - 1


def test_header_v1_is_upgraded_to_v6_with_defined_fields(tmp_path: Path) -> None:
    path = tmp_path / "v1"
    model, memory, truth = __import__("kdfix.generate.synthetic", fromlist=["x"]).build_linux_image(
        memory_size=32 * MiB, phys_base=-6 * MiB, kaslr_offset=10 * MiB, vmcoreinfo_in_notes=False
    )
    from kdfix.write import write_kdump

    write_kdump(path, dataclasses.replace(model, header_version=1), memory, phys_base_from_vmcoreinfo=False)
    with open_dump(path) as dump:
        assert dump.header_version == 1
    result = fix_dump(path, in_place=True)
    assert any(e["field"] == "main_header.header_version" for e in result.edits)
    with open_dump(path) as dump:
        assert dump.header_version == 6 and dump.sub_header.max_mapnr_64 == dump.kdump.max_mapnr
    _check_fixed(path, truth)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    slot=st.integers(0, 12),
    kaslr_slots=st.integers(0, 40),
    flat=st.booleans(),
)
def test_synthetic_dumps_are_fixed_with_the_exact_phys_base(tmp_path_factory, slot, kaslr_slots, flat) -> None:  # type: ignore[no-untyped-def]
    memory_size = 64 * MiB
    kaslr = kaslr_slots * 2 * MiB if kaslr_slots % 3 else 0
    text = slot * 2 * MiB
    phys_base = text - 16 * MiB - kaslr
    path = tmp_path_factory.mktemp("h") / "d"
    truth = make_dump(path, flat=flat, memory_size=memory_size, phys_base=phys_base, kaslr_offset=kaslr,
                      seed=slot)  # fmt: skip
    os.chmod(path, 0o600)
    result = fix_dump(path, in_place=True)
    assert result.status == "fixed"
    _check_fixed(path, truth)


def _elf_without_vmcoreinfo(path: Path) -> Path:
    from kdfix.generate.synthetic import build_linux_image
    from kdfix.write.elf import write_elf

    model, memory, _truth = build_linux_image(memory_size=32 * MiB, vmcoreinfo_in_notes=False, firmware=False)
    write_elf(path, model, memory)
    return path


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_elf_in_place_keeps_the_original_and_undo_restores_it(tmp_path: Path) -> None:
    """An ELF fixed --in-place is replaced whole; its original inode is kept (hard link) and undo puts it back."""
    from kdfix.fix.journal import original_path

    path = _elf_without_vmcoreinfo(tmp_path / "core.elf")
    before, inode = _sha(path), path.stat().st_ino
    res = fix_dump(path, in_place=True)
    assert res.status == "fixed" and res.journal == original_path(path)
    keep = Path(original_path(path))
    assert keep.stat().st_ino == inode and _sha(keep) == before  # the original, not a copy
    with open_dump(path) as dump:
        assert dump.vmcoreinfo is not None and dump.elf.phdrs_follow_ehdr
    assert fix_dump(path, in_place=True).status == "ok"  # idempotent: nothing more to keep
    undo(path)
    assert _sha(path) == before and not keep.exists()


def test_elf_in_place_through_a_symlink_fixes_the_target_and_keeps_the_link(tmp_path: Path) -> None:
    """--in-place on a symlink to an ELF rewrites the file it points at; the link itself stays a link."""
    real = _elf_without_vmcoreinfo(tmp_path / "real.elf")
    link = tmp_path / "link.elf"
    link.symlink_to(real)
    fix_dump(link, in_place=True)
    assert link.is_symlink() and os.readlink(link) == str(real)
    with open_dump(real) as dump:
        assert dump.vmcoreinfo is not None


def test_elf_in_place_refuses_while_an_earlier_original_is_kept(tmp_path: Path) -> None:
    """A kept original is never overwritten by a second whole-file fix: it must be undone or removed first."""
    from kdfix.fix.journal import original_path

    path = _elf_without_vmcoreinfo(tmp_path / "core.elf")
    Path(original_path(path)).write_bytes(b"earlier original")
    with pytest.raises(KdfixError, match="earlier in-place fix"):
        fix_dump(path, in_place=True)
    assert Path(original_path(path)).read_bytes() == b"earlier original"
    assert not list(tmp_path.glob(".*kdfix-tmp"))  # the rewritten temp file is gone too


def test_fix_of_a_truncated_dump_warns(tmp_path: Path) -> None:
    """The header of a truncated dump is still fixable, but the result says the dump is truncated."""
    path = tmp_path / "t.dump"
    make_dump(path, vmcoreinfo=True)
    with open_dump(path) as dump:
        cut = dump.kdump.data_offset + 24 * 10  # inside the descriptor table
    with open(path, "r+b") as fh:
        fh.truncate(cut)
    res = fix_dump(path, output=tmp_path / "out")
    assert any(m.startswith("warning:") and "truncated" in m for m in res.messages), res.messages
