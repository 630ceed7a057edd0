"""Shared helpers of the reliability tests: seed dumps, structured field mutations, and the read "workout".

A *seed* is a small valid dump (committed QEMU fixtures, or writer-made files of every container from
synthetic memory). A *mutation* rewrites one declared field (found with ``BoundLayout.iter_fields()``),
flips bytes, or truncates. ``exercise`` runs everything a read-only command does on the result and lets
only KdfixError out: anything else is a bug.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import itertools
import os
import random
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

from kdfix.errors import KdfixError
from kdfix.format.abi import probe_abi
from kdfix.format.elf import ehdr_layout, phdr_layout
from kdfix.format.flattened import FLAT_HEADER_BOUND, FLAT_RECORD_BOUND, FLAT_RECORD_SIZE
from kdfix.format.kdump import DISK_DUMP_HEADER, KDUMP_SUB_HEADER, PAGE_DESC
from kdfix.format.layout import BoundLayout
from kdfix.read.dump import verify_dump
from kdfix.read.flattened import FlattenedSource
from kdfix.read.probe import open_dump
from kdfix.read.source import BytesSource

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
QEMU_FIXTURES = ("firmware-16m.kdump-zlib", "firmware-16m-vmcoreinfo-note.kdump-zlib", "firmware-16m.elf.gz")


@dataclasses.dataclass(frozen=True)
class FieldSlot:
    """One mutable field of a seed: absolute offset in the file (stream offset for flattened input)."""

    name: str
    offset: int
    size: int
    byte_order: str


# ---- seeds --------------------------------------------------------------------------------------------


def fixture_bytes(name: str, tmp: Path) -> Path:
    """A committed fixture as a plain file in ``tmp`` (ELF fixtures are gzipped in the repo)."""
    src = FIXTURES / name
    if name.endswith(".gz"):
        out = tmp / name[:-3]
        if not out.exists():
            with gzip.open(src) as g, open(out, "wb") as f:
                shutil.copyfileobj(g, f)
        return out
    return src


def synthetic_seeds(directory: Path) -> dict[str, list[str]]:
    """Writer-made dumps of every container (kdump, flat, split, elf) and codec, from small sparse memory."""
    from kdfix.format.bitmap import Bitmap
    from kdfix.model import DumpModel, make_utsname
    from kdfix.notes.framing import Note
    from kdfix.read.memory import DictMemory
    from kdfix.write import write_elf, write_kdump, write_split

    rnd = random.Random(7)
    ps = 4096
    pages = {0: bytes(ps), 1: b"kdfix" * 819 + b"x", 2: rnd.randbytes(ps), 5: bytes(ps), 9: b"\x01" * ps}
    pages.update({p: (p.to_bytes(4, "little") * 1024) for p in range(40, 56)})
    valid = Bitmap.from_pfns(set(pages) | {3, 4, 77}, 100)
    memory = DictMemory(pages, page_size=ps, max_pfn=100, valid=valid)
    vmcoreinfo = b"OSRELEASE=6.1.0-kdfix\nPAGESIZE=4096\nNUMBER(phys_base)=16777216\nSYMBOL(_stext)=ffffffff81000000\n"
    model = DumpModel(
        utsname=make_utsname(sysname="Linux", release="6.1.0-kdfix", version="#1 SMP", machine="x86_64"),
        nr_cpus=1,
        dump_level=1,
        notes=(Note(b"CORE", 1, bytes(336)), Note(b"VMCOREINFO", 0, vmcoreinfo)),
        vmcoreinfo=vmcoreinfo,
        eraseinfo=b"erase init_task.comm size 16\n",
    )
    directory.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, list[str]] = {}
    for codec in ("zlib", "none"):
        for flat in (False, True):
            path = str(directory / f"syn-{codec}.{'flat' if flat else 'kdump'}")
            write_kdump(path, model, memory, codec=codec, flat=flat)
            seeds[f"syn-{codec}-{'flat' if flat else 'kdump'}"] = [path]
    parts = [str(directory / f"syn.split.{i}") for i in (1, 2, 3)]
    write_split(parts, model, memory, codec="zlib")
    seeds["syn-split"] = parts
    path = str(directory / "syn.elf")
    write_elf(path, model, memory)
    seeds["syn-elf"] = [path]
    return seeds


# ---- field maps ---------------------------------------------------------------------------------------


def _slots(layout: BoundLayout, base: int, prefix: str) -> Iterator[FieldSlot]:
    for path, off, size in layout.iter_fields():
        yield FieldSlot(f"{prefix}.{path}", base + off, size, layout.abi.byte_order)


def kdump_fields(data: bytes, *, max_descriptors: int = 6) -> list[FieldSlot]:
    """Main header, sub header and the first page descriptors of a plain KDUMP file (offsets in ``data``)."""
    abi = probe_abi(data[:512])
    if abi is None:
        return []
    main = DISK_DUMP_HEADER.bind(abi)
    hdr = main.unpack(data)
    out = list(_slots(main, 0, "main_header"))
    bs = hdr.block_size
    version = max(0, min(hdr.header_version, KDUMP_SUB_HEADER.max_version))
    sub = KDUMP_SUB_HEADER.bind(abi, version)
    out += _slots(sub, bs, "sub_header")
    data_offset = (1 + hdr.sub_hdr_size + hdr.bitmap_blocks) * bs
    desc = PAGE_DESC.bind(abi)
    for i in range(max_descriptors):
        out += _slots(desc, data_offset + i * desc.size, f"page_desc[{i}]")
    # The bitmaps as two "fields" (their first 8 bytes): inconsistencies with the descriptors.
    bm1 = (1 + hdr.sub_hdr_size) * bs
    out.append(FieldSlot("bitmap1[0:8]", bm1, 8, "<"))
    out.append(FieldSlot("bitmap2[0:8]", bm1 + hdr.bitmap_blocks * bs // 2, 8, "<"))
    return [f for f in out if f.offset + f.size <= len(data)]


def flattened_fields(path: str, *, max_records: int = 6) -> list[FieldSlot]:
    """Flat header, the first record headers, and the inner KDUMP fields mapped to their stream offsets."""
    with open(path, "rb") as f:
        stream = f.read()
    out = list(_slots(FLAT_HEADER_BOUND, 0, "flat_header"))
    flat = FlattenedSource(BytesSource(stream))
    extents = list(flat.iter_extents())
    pos = 4096
    for i in range(max_records):
        if pos + FLAT_RECORD_SIZE > len(stream):
            break
        out += _slots(FLAT_RECORD_BOUND, pos, f"flat_record[{i}]")
        size = struct.unpack_from(">q", stream, pos + 8)[0]
        if size <= 0:
            break
        pos += FLAT_RECORD_SIZE + size
    head = flat.read_at(0, 1 << 16)
    for slot in kdump_fields(flat.read_at(0, flat.size) if flat.size <= 1 << 22 else head):
        for start, end, src in extents:
            if start <= slot.offset and slot.offset + slot.size <= end:
                out.append(dataclasses.replace(slot, offset=src + slot.offset - start))
                break
    return out


def elf_fields(data: bytes, *, max_phdrs: int = 8) -> list[FieldSlot]:
    """ELF header and program headers."""
    from kdfix.format.layout import I386_BE, I386_LE, LP64_BE, LP64_LE

    abi = {(2, 1): LP64_LE, (2, 2): LP64_BE, (1, 1): I386_LE, (1, 2): I386_BE}.get((data[4], data[5]))
    if abi is None:
        return []
    eh = ehdr_layout(abi)
    out = list(_slots(eh, 0, "elf_header"))
    hdr = eh.unpack(data)
    ph = phdr_layout(abi)
    for i in range(min(hdr.e_phnum, max_phdrs)):
        out += _slots(ph, hdr.e_phoff + i * ph.size, f"phdr[{i}]")
    return [f for f in out if f.offset + f.size <= len(data)]


def fields_of(path: str) -> list[FieldSlot]:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"makedumpfile"):
        return flattened_fields(path)
    data = Path(path).read_bytes()
    if head.startswith(b"\x7fELF"):
        return elf_fields(data)
    return kdump_fields(data)


# ---- mutations ----------------------------------------------------------------------------------------


def interesting_values(size: int, file_size: int) -> list[int]:
    """0, -1, huge, just past EOF, sign-bit and page-ish values for an unsigned field of ``size`` bytes."""
    top = (1 << (8 * size)) - 1
    vals = {0, top, top >> 1, (top >> 1) + 1, 1, 0x1000, file_size, file_size + 1, file_size - 1, 0x100000, 0x7FFF}
    return sorted(v & top for v in vals)


def set_field(data: bytearray, slot: FieldSlot, value: int) -> None:
    top = (1 << (8 * slot.size)) - 1
    data[slot.offset : slot.offset + slot.size] = (value & top).to_bytes(
        slot.size, "little" if slot.byte_order == "<" else "big"
    )


def flip_bytes(data: bytearray, rnd: random.Random, count: int, limit: int | None = None) -> None:
    n = min(len(data), limit or len(data))
    for _ in range(count):
        if n:
            data[rnd.randrange(n)] ^= 1 << rnd.randrange(8)


# ---- the workout -------------------------------------------------------------------------------------


def exercise(paths: list[str]) -> str:
    """Open, build the model, read notes/VMCOREINFO, verify every page, read memory: return an outcome tag.

    Only KdfixError may escape from the library; every other exception propagates (and fails the test).
    """
    try:
        with open_dump(*paths) as dump:
            _ = dump.model, dump.vmcoreinfo, dump.notes, dump.status_flags, dump.problems
            if dump.vmcoreinfo is not None:
                _ = dump.vmcoreinfo.phys_base, dump.vmcoreinfo.osrelease
            from kdfix.cli.info import describe_dump

            describe_dump(dump)
            report = verify_dump(dump)
            mem = dump.memory
            for pfn in itertools.islice(mem.dumped.iter_set(), 4):
                with contextlib.suppress(KdfixError):
                    mem.read(pfn * mem.page_size, 64)
            return "ok" if report.ok else "verify-failed"
    except KdfixError as exc:
        text = str(exc)
        assert "\n" not in text, text
        return "error"


def write_variant(directory: Path, paths: list[str], index: int, data: bytes) -> list[str]:
    """Copy a seed set into ``directory`` with part ``index`` replaced by ``data``."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i, p in enumerate(paths):
        target = directory / os.path.basename(p)
        if i == index:
            target.write_bytes(data)
        else:
            shutil.copyfile(p, target)
        out.append(str(target))
    return out
