"""kdfix.generate.qemu: QEMU-style kdump output (qemu-dumps.md §2-§6).

Synthetic QEMU-like ELF inputs are checked against the rules of qemu-dumps.md with an independent parser; live
firmware-only QEMU dumps (no OS) are compared byte for byte with QEMU's own kdump-zlib.
"""

from __future__ import annotations

import random
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from kdfix.arch import get_arch
from kdfix.codecs import deflate_bound
from kdfix.errors import FormatError, KdfixError, UnsupportedError
from kdfix.generate.qemu import QemuVersion, generate_qemu, qemu_phys_base
from kdfix.write import unit_compressor
from tests.generate import qemu_helpers as h

PS = 4096
VMCI = b"OSRELEASE=6.1.0\nPAGESIZE=4096\nNUMBER(phys_base)=-710934528\nKERNELOFFSET=35600000\nNUMBER(x)=1\n"


# --- the phys_base misparse (qemu-dumps.md §6.1) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"NUMBER(phys_base)=-710934528\n", 0xFFFFFFF8EF6CBAD8),  # measured, QEMU 7.2.22
        (b"NUMBER(phys_base)=-840957952\n", 0xFFFFFFF7BF6A86AE),  # measured, QEMU 10.0.2
        (b"NUMBER(phys_base)=0\n", 0),
        (b"NUMBER(phys_base)=16777216\n", 0x16777216),
        (b"NUMBER(phys_base)=0x1000\n", 0x1000),
        (b"NUMBER(phys_base)= 10\n", 0x10),  # strtoull skips leading blanks
        (b"NUMBER(phys_base)=12abc\n", 0x12ABC),
        (b"NUMBER(phys_base)=12z\n", 0),  # trailing junk: qemu_strtou64 fails, phys_base stays 0
        (b"NUMBER(phys_base)=\n", 0),
        (b"NUMBER(phys_base)=10000000000000000\n", 0),  # > 2**64-1: ERANGE
        (b"A=1\nNUMBER(phys_base)=z\nNUMBER(phys_base)=5\n", 0),  # first match decides even when it fails
        (b"A=1\nNUMBER(phys_base)=20\nNUMBER(phys_base)=5\n", 0x20),
        (b"NUMBER(phys_base_x)=20\n", 0x0),  # prefix includes '='
        (b"A=1\0NUMBER(phys_base)=20\n", 0),  # the text ends at the first NUL
        (b"NUMBER(phys_base)=20", 0x20),  # no final newline
    ],
)
def test_qemu_phys_base_parses_base16(text: bytes, expected: int) -> None:
    assert qemu_phys_base(text, "x86_64") == expected


def test_qemu_phys_base_key_per_target() -> None:
    """x86_64 parses NUMBER(phys_base), aarch64 NUMBER(PHYS_OFFSET) (hex, so right), others nothing (§7 step 4)."""
    assert qemu_phys_base(b"NUMBER(phys_base)=20\n", "i386") == 0
    assert qemu_phys_base(b"NUMBER(PHYS_OFFSET)=0x40000000\n", "x86_64") == 0
    measured = b"NUMBER(PHYS_OFFSET)=0xffffd09f00000000\n"  # a KASLR arm64 guest (arch-kernels... §1.1)
    assert qemu_phys_base(measured, "aarch64") == 0xFFFFD09F00000000
    assert qemu_phys_base(b"NUMBER(phys_base)=20\n", "aarch64", 0x40000000) == 0x40000000
    assert qemu_phys_base(b"NUMBER(PHYS_OFFSET)=junk\n", "aarch64", 0x40000000) == 0x40000000  # warns, keeps


@pytest.mark.parametrize(
    ("arch", "version", "machine"),
    [  # qemu-dumps.md §3 and §6.2: the target's ELF_MACHINE_UNAME up to 7.2, "Unknown" from 8.0
        ("x86_64", "7.2", b"x86_64"),
        ("i386", "7.2", b"i686"),
        ("aarch64", "7.2", b"Unknown"),  # target/arm defines none (measured on 7.2 arm64 dumps)
        ("x86_64", "8.0", b"Unknown"),
        ("i386", "10.0.2", b"Unknown"),
    ],
)
def test_qemu_machine_name(arch: str, version: str, machine: bytes) -> None:
    assert QemuVersion.parse(version).machine_uname(get_arch(arch)) == machine


def test_qemu_version_rules() -> None:
    assert not QemuVersion.parse("8.1").has_raw
    assert QemuVersion.parse("8.2").has_raw
    assert not QemuVersion.parse("2.10").has_guest_note
    for bad in ("7", "x.y", "1.7"):
        with pytest.raises(UnsupportedError):
            QemuVersion.parse(bad)


# --- synthetic QEMU-like ELF --------------------------------------------------------------------------------------


def _pages(rng: random.Random, n: int) -> bytes:
    """Mixed pages: zero, compressible text, incompressible random."""
    out = bytearray()
    for i in range(n):
        kind = i % 5
        if kind in (0, 3):
            out += bytes(PS)
        elif kind == 4:
            out += rng.randbytes(PS)
        else:
            out += (f"page {i} ".encode() * 600)[:PS]
    return bytes(out)


@pytest.fixture
def synth_elf(tmp_path: Path) -> tuple[Path, dict[int, bytes]]:
    """Blocks like a PC guest (low RAM, hole, RAM, VRAM-like block far above, BIOS-like block ending at 4 GiB)."""
    rng = random.Random(7)
    blocks = [
        (0, _pages(rng, 160)),
        (0xC0000, _pages(rng, 3000)),  # > 682 pages: several descriptor records
        (0xFD000000, _pages(rng, 40)),
        (0xFFFC0000, _pages(rng, 64)),
    ]
    path = h.write_elf(tmp_path / "guest.elf", blocks, h.qemu_notes(2, VMCI, pad_byte=0))
    expected = {}
    for paddr, data in blocks:
        for i in range(len(data) // PS):
            expected[paddr // PS + i] = data[i * PS : (i + 1) * PS]
    return path, expected


def _decode(kdump: bytes, pfn: int, data_offset: int, rank: int) -> tuple[bytes, tuple]:
    off, size, flags, pflags = struct.unpack_from("<qIIQ", kdump, data_offset + 24 * rank)
    stored = kdump[off : off + size]
    if flags == 1:
        return zlib.decompress(stored), (off, size, flags, pflags)
    assert flags == 0 and size == PS
    return stored, (off, size, flags, pflags)


@pytest.mark.parametrize("raw_before_proofs", [unit_compressor.RAW_BEFORE_PROOFS, 0])
def test_synthetic_structure(
    synth_elf: tuple[Path, dict[int, bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw_before_proofs: int
) -> None:
    """Also with the incompressibility proofs from the first raw page on: the guest's 653 random pages are fewer
    than RAW_BEFORE_PROOFS, so by default no proof runs, and with 0 the proofs decide most raw pages."""
    src, expected = synth_elf
    monkeypatch.setattr(unit_compressor, "RAW_BEFORE_PROOFS", raw_before_proofs)
    proofs: list[bool] = []
    prove = deflate_bound.incompressible

    def counted(data: bytes, indices: list[int], page_size: int) -> list[bool]:
        proofs.extend(proven := prove(data, indices, page_size))
        return proven

    monkeypatch.setattr(deflate_bound, "incompressible", counted)
    out = tmp_path / "out.kdump"
    res = generate_qemu(src, out)
    assert (sum(proofs) > 300) if raw_before_proofs == 0 else not proofs
    stream = out.read_bytes()
    records = h.parse_flat(stream)
    kdump = h.reassemble(records)
    main, sub = h.headers(kdump)
    sig, hv, uts, _sec, _usec, status, bs, sub_hdr_size, bitmap_blocks, max_mapnr, *zeros, nr_cpus = main
    assert (sig, hv, status, bs, nr_cpus) == (b"KDUMP   ", 6, 1, PS, 2)
    assert uts == bytes(260) + b"x86_64".ljust(65, b"\0") + bytes(65)
    assert kdump[402:424] == bytes(22) and zeros == [0, 0, 0, 0]
    assert max_mapnr == 0x100000 and bitmap_blocks == 64
    phys_base, level, split, sp, ep, off_vmci, size_vmci, off_note, size_note, off_er, size_er, *pfn64 = sub
    assert (level, split, sp, ep, off_er, size_er) == (1, 0, 0, 0, 0, 0)
    assert pfn64 == [0, 0, 0x100000]
    assert phys_base == 0xFFFFFFF8EF6CBAD8  # the hex misparse of -710934528
    notes = h.qemu_notes(2, VMCI)
    assert off_note == 4200 and size_note == len(notes) and kdump[4200 : 4200 + size_note] == notes
    assert sub_hdr_size == -(-(104 + size_note) // PS)
    assert kdump[off_vmci : off_vmci + size_vmci] == VMCI and off_vmci == 4200 + 2 * 816 + 24

    # record order (qemu-dumps.md §2): main, sub, notes, bitmaps in lockstep, caches, all exact sizes
    assert [(o, len(d)) for o, d in records[:3]] == [(0, 464), (4096, 104), (4200, size_note)]
    bm1 = (1 + sub_hdr_size) * PS
    len1 = bitmap_blocks // 2 * PS
    last_chunk = (0x100000 - 1) // (8 * PS)
    bitmap_records = records[3 : 3 + 2 * (last_chunk + 1)]
    for i in range(last_chunk + 1):
        assert bitmap_records[2 * i][0] == bm1 + i * PS and bitmap_records[2 * i + 1][0] == bm1 + len1 + i * PS
        assert bitmap_records[2 * i][1] == bitmap_records[2 * i + 1][1] and len(bitmap_records[2 * i][1]) == PS
    bitmap = kdump[bm1 : bm1 + len1]
    assert bitmap == kdump[bm1 + len1 : bm1 + 2 * len1]
    set_pfns = [p for p in range(0x100000) if bitmap[p >> 3] >> (p & 7) & 1]
    assert set_pfns == sorted(expected)

    data_offset = (1 + sub_hdr_size + bitmap_blocks) * PS
    n = len(expected)
    cache_records = records[3 + 2 * (last_chunk + 1) :]
    desc_recs = [(o, d) for o, d in cache_records if o < data_offset + 24 * n]
    data_recs = [(o, d) for o, d in cache_records if o >= data_offset + 24 * n]
    assert all(len(d) == 16368 for _, d in desc_recs[:-1]) and sum(len(d) for _, d in desc_recs) == 24 * n
    assert all(len(d) <= 16384 for _, d in data_recs)
    assert data_recs[0][0] == data_offset + 24 * n and data_recs[0][1][:PS] == bytes(PS)  # shared zero page first
    assert cache_records[-2] == desc_recs[-1] and cache_records[-1] == data_recs[-1]  # final flush: desc, then data
    offsets = []
    for rank, pfn in enumerate(sorted(expected)):
        page, (off, size, flags, pflags) = _decode(kdump, pfn, data_offset, rank)
        assert page == expected[pfn], f"pfn {pfn:#x}"
        assert pflags == 0
        if expected[pfn] == bytes(PS):
            assert (off, size, flags) == (data_offset + 24 * n, PS, 0)
        else:
            packed = zlib.compress(expected[pfn], 1)
            assert (size, flags) == ((len(packed), 1) if len(packed) < PS else (PS, 0))
            offsets.append(off)
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert res.pages == n and res.raw_pages == sum(1 for i in range(n) if i % 5 == 4)


def test_workers_give_identical_output(synth_elf: tuple[Path, dict[int, bytes]], tmp_path: Path) -> None:
    src, _ = synth_elf
    outs = []
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}.kdump"
        generate_qemu(src, out, workers=workers)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]


def test_raw_equals_reassembled_stream(synth_elf: tuple[Path, dict[int, bytes]], tmp_path: Path) -> None:
    src, _ = synth_elf
    generate_qemu(src, tmp_path / "flat", qemu_version="8.2")
    generate_qemu(src, tmp_path / "raw", qemu_version="8.2", raw=True)
    assert (tmp_path / "raw").read_bytes() == h.reassemble(h.parse_flat((tmp_path / "flat").read_bytes()))
    with pytest.raises(UnsupportedError, match=r"8\.2"):
        generate_qemu(src, tmp_path / "raw72", raw=True)


def test_version_8_writes_unknown_machine(synth_elf: tuple[Path, dict[int, bytes]], tmp_path: Path) -> None:
    src, _ = synth_elf
    generate_qemu(src, tmp_path / "a", qemu_version="7.2")
    generate_qemu(src, tmp_path / "b", qemu_version="8.0")
    a, b = (tmp_path / "a").read_bytes(), (tmp_path / "b").read_bytes()
    machine = 4096 + 16 + 12 + 4 * 65  # flat header + record header + signature/version + 4 utsname fields
    assert a[machine : machine + 65] == b"x86_64".ljust(65, b"\0")
    assert b[machine : machine + 65] == b"Unknown".ljust(65, b"\0")
    assert a[:machine] == b[:machine] and a[machine + 65 :] == b[machine + 65 :]


@pytest.mark.parametrize("codec", ["lzo", "snappy"])
def test_other_codecs_decode(codec: str, synth_elf: tuple[Path, dict[int, bytes]], tmp_path: Path) -> None:
    from kdfix.codecs import codec_named

    src, expected = synth_elf
    out = tmp_path / "out"
    generate_qemu(src, out, compress=codec)
    kdump = h.reassemble(h.parse_flat(out.read_bytes()))
    main, _ = h.headers(kdump)
    flag = codec_named(codec).flag
    assert main[5] == flag
    data_offset = (1 + main[7] + main[8]) * PS
    for rank, pfn in enumerate(sorted(expected)):
        off, size, flags, _ = struct.unpack_from("<qIIQ", kdump, data_offset + 24 * rank)
        stored = kdump[off : off + size]
        page = codec_named(codec).decompress(stored, PS) if flags else stored
        assert flags in (0, flag) and page == expected[pfn]


def test_guest_note_copied_verbatim_with_padding(tmp_path: Path) -> None:
    """QEMU copies the guest note with its padding bytes (qemu-dumps.md §4); offset_vmcoreinfo points at the desc."""
    text = b"NUMBER(phys_base)=0\nOSRELEASE=x\n"  # 32 bytes: no padding; use 33 to force 3 padding bytes
    text += b"Z"
    notes = h.qemu_notes(1, text, pad_byte=0xAB)
    src = h.write_elf(tmp_path / "g.elf", [(0, bytes(PS) + b"\1" * PS)], notes)
    generate_qemu(src, tmp_path / "o")
    kdump = h.reassemble(h.parse_flat((tmp_path / "o").read_bytes()))
    _, sub = h.headers(kdump)
    assert kdump[4200 : 4200 + sub[8]] == notes
    assert kdump[sub[5] : sub[5] + sub[6]] == text


def test_unaligned_blocks_zero_fill_and_merge(tmp_path: Path) -> None:
    """Partial pages are zero-filled; a page spanning two blocks is one page (qemu-dumps.md §5, QEMU >= 7.2)."""
    a = b"\x11" * (PS + 100)  # pfn 0 full, pfn 1 partly
    b = b"\x22" * (PS - 100 + 50)  # rest of pfn 1, then pfn 2 partly
    c = b"\x33" * 10  # inside pfn 5
    src = h.write_elf(tmp_path / "u.elf", [(0, a), (PS + 100, b), (5 * PS + 7, c)], h.qemu_notes(1))
    generate_qemu(src, tmp_path / "o")
    kdump = h.reassemble(h.parse_flat((tmp_path / "o").read_bytes()))
    main, _ = h.headers(kdump)
    assert main[9] == 5  # max_mapnr = end pfn (floor) of the last block
    data_offset = (1 + main[7] + main[8]) * PS
    pages = [_decode(kdump, pfn, data_offset, rank)[0] for rank, pfn in enumerate((0, 1, 2, 5))]
    assert pages[0] == b"\x11" * PS
    assert pages[1] == b"\x11" * 100 + b"\x22" * (PS - 100)
    assert pages[2] == b"\x22" * 50 + bytes(PS - 50)
    assert pages[3] == bytes(7) + b"\x33" * 10 + bytes(PS - 17)


def test_mark_adds_kdfix_note(synth_elf: tuple[Path, dict[int, bytes]], tmp_path: Path) -> None:
    from kdfix.format.constants import NOTE_NAME_KDFIX

    src, _ = synth_elf
    generate_qemu(src, tmp_path / "m", mark=True)
    kdump = h.reassemble(h.parse_flat((tmp_path / "m").read_bytes()))
    _, sub = h.headers(kdump)
    blob = kdump[sub[7] : sub[7] + sub[8]]
    plain = h.qemu_notes(2, VMCI)
    assert blob.startswith(plain)
    namesz = struct.unpack_from("<I", blob, len(plain))[0]
    assert blob[len(plain) + 12 : len(plain) + 12 + namesz] == NOTE_NAME_KDFIX + b"\0"
    assert kdump[sub[5] : sub[5] + sub[6]] == VMCI  # the VMCOREINFO pointers are unchanged


AARCH64_BLOCK = 65536  # QEMU's aarch64 block, whatever the guest's page size (qemu-dumps.md §3)


def test_aarch64_guest_follows_the_target_rules(tmp_path: Path) -> None:
    """An aarch64 QEMU ELF (EM_AARCH64, CORE PRSTATUS + PRFPREG per vCPU, no QEMU notes; arch-kernels... §1.6):
    64 KiB blocks, pfns from PA 0, phys_base = lowest RAM address without a guest note, NUMBER(PHYS_OFFSET) with
    one, machine "Unknown" even on 7.2."""
    rng = random.Random(7)
    ram = 0x40000000
    data = b"".join(bytes(AARCH64_BLOCK) if i % 3 == 0 else rng.randbytes(64) * (AARCH64_BLOCK // 64) for i in range(5))
    cpu = b"".join(h.note(b"CORE", 1, bytes(392)) + h.note(b"CORE", 2, bytes(528)) for _ in range(2))
    vmci = b"OSRELEASE=6.1.0\nPAGESIZE=4096\nNUMBER(PHYS_OFFSET)=0xffffd09f00000000\n"
    for guest_note, phys_base in ((b"", ram), (h.note(b"VMCOREINFO", 0, vmci), 0xFFFFD09F00000000)):
        src = h.write_elf(tmp_path / "a64.elf", [(ram, data)], cpu + guest_note, machine=183)
        out = tmp_path / "a64.kdump"
        res = generate_qemu(src, out)
        kdump = h.reassemble(h.parse_flat(out.read_bytes()))
        main, sub = h.headers(kdump)
        _sig, _hv, uts, _sec, _usec, status, bs, _shs, _bmb, max_mapnr, *_zeros, nr_cpus = main
        assert (status, bs, nr_cpus) == (1, AARCH64_BLOCK, 2)
        assert uts == bytes(260) + b"Unknown".ljust(65, b"\0") + bytes(65)
        assert max_mapnr == (ram + len(data)) // AARCH64_BLOCK
        assert sub[0] == phys_base == res.phys_base
        assert kdump[sub[7] : sub[7] + sub[8]] == cpu + guest_note and res.vmcoreinfo == bool(guest_note)
        assert res.pages == 5 and res.zero_pages == 2
        src.unlink()


def test_bad_inputs_raise_kdfix_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + bytes(100))
    with pytest.raises(KdfixError):
        generate_qemu(junk, tmp_path / "o")
    mips = h.write_elf(tmp_path / "mips.elf", [(0, bytes(PS))], h.qemu_notes(1), machine=8)
    with pytest.raises(UnsupportedError, match="e_machine 8"):
        generate_qemu(mips, tmp_path / "o")
    overlap = h.write_elf(tmp_path / "ov.elf", [(0, bytes(2 * PS)), (PS, bytes(PS))], h.qemu_notes(1))
    with pytest.raises(FormatError, match="overlap"):
        generate_qemu(overlap, tmp_path / "o")
    ok = h.write_elf(tmp_path / "ok.elf", [(0, bytes(PS))], h.qemu_notes(1))
    with pytest.raises(UnsupportedError):
        generate_qemu(ok, tmp_path / "o", compress="zstd")
    truncated = tmp_path / "trunc.elf"
    truncated.write_bytes(ok.read_bytes()[:-100])
    with pytest.raises(FormatError):
        generate_qemu(truncated, tmp_path / "o")


# --- real QEMU, firmware-only guests (fast: no OS boot) ----------------------------------------------------------


def _qemu_firmware_dumps(tmp_path_factory: pytest.TempPathFactory, vmcoreinfo: bool):
    from tests.oracle import guest as g
    from tests.oracle.fixtures import require_tool

    require_tool(g.QEMU)
    return g.cached_firmware_only_dumps(16, vmcoreinfo_device=vmcoreinfo)


@pytest.mark.oracle
@pytest.mark.parametrize("vmcoreinfo", [False, True], ids=["plain", "vmcoreinfo-device"])
def test_firmware_guest_byte_identical(
    vmcoreinfo: bool, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    dumps = _qemu_firmware_dumps(tmp_path_factory, vmcoreinfo)
    if not dumps.qemu_version.startswith("7.2"):
        pytest.skip(f"reference dumps come from QEMU {dumps.qemu_version}; expectations are for 7.2")
    src = tmp_path / "vmcore.elf"
    shutil.copyfile(dumps.elf, src)
    for workers in (1, 2):
        out = tmp_path / f"gen{workers}"
        generate_qemu(src, out, workers=workers, qemu_target="x86_64")  # real-mode vCPUs: EM_386 dumps
        assert out.read_bytes() == dumps.kdump_zlib.read_bytes(), f"workers={workers}"


# --- committed QEMU 7.2 fixtures (fixtures/MANIFEST.toml): no QEMU needed ---------------------------------------


@pytest.mark.parametrize("stem", ["firmware-16m", "firmware-16m-vmcoreinfo-note"])
def test_committed_fixture_byte_identical(stem: str, tmp_path: Path) -> None:
    """The ELF and kdump-zlib of one stopped QEMU 7.2 guest; the -note variant carries a guest VMCOREINFO note
    with real-mode vCPUs (EM_386 notes, so QEMU does not parse phys_base)."""
    import gzip

    from tests.oracle.fixtures import repo_fixture

    src = tmp_path / f"{stem}.elf"
    with gzip.open(repo_fixture(f"{stem}.elf.gz"), "rb") as fin:
        src.write_bytes(fin.read())
    reference = repo_fixture(f"{stem}.kdump-zlib").read_bytes()
    res = generate_qemu(src, tmp_path / "out", qemu_target="x86_64")  # taken by qemu-system-x86_64
    assert (tmp_path / "out").read_bytes() == reference
    assert res.vmcoreinfo == stem.endswith("-note") and res.phys_base == 0
    assert (res.arch, res.qemu_target) == ("i386", "x86_64")
    generate_qemu(src, tmp_path / "i386")  # the default target is the dump's own: qemu-system-i386 says "i686"
    assert h.headers(h.reassemble(h.parse_flat((tmp_path / "i386").read_bytes())))[0][2][260:264] == b"i686"
    with pytest.raises(UnsupportedError, match="qemu-system-aarch64 does not write i386 dumps"):
        generate_qemu(src, tmp_path / "no", qemu_target="aarch64")


def test_kdump_source_through_open_dump(tmp_path: Path) -> None:
    """A QEMU kdump read back through kdfix.open_dump regenerates to itself (pages, notes, guest note)."""
    from tests.oracle.fixtures import repo_fixture

    src = repo_fixture("firmware-16m-vmcoreinfo-note.kdump-zlib")
    generate_qemu(src, tmp_path / "out", workers=2)
    assert (tmp_path / "out").read_bytes() == src.read_bytes()


def test_non_qemu_notes_get_qemu_layout(tmp_path: Path) -> None:
    """A /proc/vmcore-like ELF (CORE notes + VMCOREINFO, no QEMU notes): QEMU notes are made from prstatus."""
    from typer.testing import CliRunner

    from kdfix.cli import app

    notes = b"".join(h.note(b"CORE", 1, h.prstatus_x86_64(100 + i, 0xFFFFFFFF81000000 + i)) for i in range(2))
    notes += h.note(b"VMCOREINFO", 0, VMCI) + bytes(12)  # the kernel's terminating empty note
    src = h.write_elf(tmp_path / "k.elf", [(0, bytes(PS) + b"\5" * PS)], notes)
    out = tmp_path / "out"
    res = generate_qemu(src, out)
    kdump = h.reassemble(h.parse_flat(out.read_bytes()))
    main, sub = h.headers(kdump)
    blob = kdump[sub[7] : sub[7] + sub[8]]
    assert main[-1] == 2 and res.nr_cpus == 2
    pos, seen = 0, []
    while pos < len(blob):
        namesz, descsz, ntype = struct.unpack_from("<III", blob, pos)
        name = blob[pos + 12 : pos + 12 + namesz - 1]
        desc = blob[pos + 12 + (-(-namesz // 4) * 4) :][:descsz]
        seen.append((name, ntype, descsz))
        if name == b"QEMU":
            assert struct.unpack_from("<II", desc) == (1, 440)
            assert struct.unpack_from("<Q", desc, 136)[0] == 0xFFFFFFFF81000000 + len(seen) - 3  # rip
        pos += 12 + (-(-namesz // 4) * 4) + (-(-descsz // 4) * 4)
    assert seen == [(b"CORE", 1, 336)] * 2 + [(b"QEMU", 0, 440)] * 2 + [(b"VMCOREINFO", 0, len(VMCI))]
    assert kdump[sub[5] : sub[5] + sub[6]] == VMCI and sub[0] == 0xFFFFFFF8EF6CBAD8
    info = CliRunner().invoke(app, ["info", str(out), "--json"])
    assert info.exit_code == 0, info.output
    assert '"origin": "qemu"' in info.stdout
