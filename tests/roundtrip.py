"""Round-trip helpers: write a model + memory in any container, read it back, compare what must survive."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import kdfix
from kdfix.codecs import codec_named
from kdfix.format.abi import probe_abi
from kdfix.format.layout import ARM32_BE, ARM32_LE, I386_BE, I386_LE, BoundLayout
from kdfix.model import DumpModel
from kdfix.notes.framing import Note
from kdfix.read.memory import PhysicalMemory
from kdfix.write import write_elf, write_kdump, write_split
from kdfix.write.elf import elf_notes
from kdfix.write.kdump import HeaderValues, WriteResult, pack_main_header, plan_kdump

SPLIT_PARTS = 3


def write_container(
    container: str, directory: Path, model: DumpModel, memory: PhysicalMemory, *, codec: str = "zlib", **kw: object
) -> tuple[list[str], WriteResult]:
    """Write ``container`` (kdump, flat, split, elf) into ``directory``; return the paths and the result."""
    directory.mkdir(parents=True, exist_ok=True)
    if container == "elf":
        path = str(directory / "dump.elf")
        return [path], write_elf(path, model, memory, **kw)  # type: ignore[arg-type]
    if container == "split":
        paths = [str(directory / f"dump.{i}") for i in range(1, SPLIT_PARTS + 1)]
        return paths, write_split(paths, model, memory, codec=codec, **kw)  # type: ignore[arg-type]
    path = str(directory / ("dump.flat" if container == "flat" else "dump.kdump"))
    return [path], write_kdump(path, model, memory, codec=codec, flat=container == "flat", **kw)  # type: ignore[arg-type]


def abi_probes_back(model: DumpModel, memory: PhysicalMemory, codec: str = "zlib") -> bool:
    """True if probe_abi recognises the main header's ABI (word size and byte order)."""
    layout = plan_kdump(model, max(model.max_mapnr, memory.max_pfn))
    head = pack_main_header(HeaderValues.of(model), layout, codec_named(codec).flag)
    abi = probe_abi(head.ljust(model.block_size, b"\0"))
    return abi is not None and (abi.word_size, abi.byte_order) == (model.abi.word_size, model.abi.byte_order)


def same_sub_header_abi(a: object, b: object, version: int) -> bool:
    """i386 and ARM32 sub headers coincide below v3 (no 64-bit members yet; kdump-format.md §4)."""
    if a == b:
        return True
    pair = {a, b}
    return version < 3 and pair in ({I386_LE, ARM32_LE}, {I386_BE, ARM32_BE})


# kdump-format.md §4: the header version that introduced each group of sub-header members.
SINCE = {"dump_level": 1, "split": 2, "vmcoreinfo": 3, "notes": 4, "eraseinfo": 5, "pfn64": 6}
# kdump-format.md §5: DUMP_DH_COMPRESSED_ZLIB, _LZO, _SNAPPY, _ZSTD; the writer sets the one of its codec.
COMPRESSION_BITS = 0x1 | 0x2 | 0x4 | 0x20
VMCOREINFO_NOTE = (b"VMCOREINFO", 0)  # notes-and-vmcoreinfo.md §1: name, type
_PHYS_BASE = re.compile(rb"^NUMBER\(phys_base\)=(-?\d+)$", re.M)  # signed decimal (notes-and-vmcoreinfo.md §4)


def expected_kdump_model(model: DumpModel, memory: PhysicalMemory) -> DumpModel:
    """What a reader must report for a KDUMP file (or split set: eraseinfo only in part 1) written from ``model``.

    Derived from the reference tables, not from the writer: each header version keeps only the members it has
    (§4); VMCOREINFO goes into a note from v4 and through the header pointer from v3 (notes-and-vmcoreinfo.md §5);
    the sub header's phys_base is VMCOREINFO's NUMBER(phys_base) when the text has one.
    """
    version = model.header_version
    notes = tuple(model.notes)
    note_text = next((n.desc for n in notes if (n.name, n.type) == VMCOREINFO_NOTE), None)
    if model.vmcoreinfo is not None and note_text is None:
        notes += (Note(VMCOREINFO_NOTE[0], VMCOREINFO_NOTE[1], model.vmcoreinfo),)
    text = model.vmcoreinfo if model.vmcoreinfo is not None else note_text
    if version >= SINCE["notes"]:
        stored_text = text
    elif version >= SINCE["vmcoreinfo"]:
        stored_text = model.vmcoreinfo
    else:
        stored_text = None
    found = _PHYS_BASE.search(text) if text is not None else None
    phys_base = int(found[1]) if found else model.phys_base
    return dataclasses.replace(
        model,
        max_mapnr=max(model.max_mapnr, memory.max_pfn),
        phys_base=phys_base & ((1 << (8 * model.abi.word_size)) - 1),
        status=model.status & ~COMPRESSION_BITS,
        notes=notes if version >= SINCE["notes"] else (),
        vmcoreinfo=stored_text,
        eraseinfo=model.eraseinfo if version >= SINCE["eraseinfo"] else b"",
        dump_level=model.dump_level if version >= SINCE["dump_level"] else 0,
    )


def assert_roundtrip(layout: BoundLayout[Any], data: bytes, record: object) -> None:
    """``data`` unpacks to ``record``, ``record`` packs to ``data``, and the layout's size is ``len(data)``."""
    assert layout.size == len(data), (layout, layout.size, len(data))
    assert layout.unpack(data) == record
    assert layout.pack(record) == data


def assert_models_equal(got: DumpModel, want: DumpModel) -> None:
    """Field-by-field comparison with readable failures (abi compared with the i386/ARM32 v<3 equivalence)."""
    assert same_sub_header_abi(got.abi, want.abi, want.header_version), (got.abi, want.abi)
    for field in dataclasses.fields(DumpModel):
        if field.name in ("abi", "e_machine"):
            continue
        g, w = getattr(got, field.name), getattr(want, field.name)
        assert g == w, f"{field.name}: read {g!r}, wrote {w!r}"


def assert_elf_model(got: DumpModel, model: DumpModel) -> None:
    """An ELF keeps notes (VMCOREINFO and ERASEINFO as notes), the word size, byte order and eraseinfo."""
    assert got.notes == elf_notes(model)
    assert got.abi.word_size == model.abi.word_size and got.abi.byte_order == model.abi.byte_order
    assert got.eraseinfo == model.eraseinfo
    want_vi = model.vmcoreinfo if model.vmcoreinfo is not None else getattr(model.vmcoreinfo_note(), "desc", None)
    assert got.vmcoreinfo == want_vi


def assert_same_pages(got: PhysicalMemory, want: PhysicalMemory, *, exclude_zero: bool = False) -> None:
    """Every page written reads back identically, and nothing else is present (zero pages may be dropped)."""
    want_pfns = [pfn for pfn, page in want.iter_pages() if not (exclude_zero and not any(page))]
    got_pages = dict(got.iter_pages())
    assert sorted(got_pages) == want_pfns
    for pfn in want_pfns:
        assert got_pages[pfn] == want.page(pfn), f"pfn {pfn:#x} differs"


def assert_same_bitmaps(got: PhysicalMemory, want: PhysicalMemory) -> None:
    """1st bitmap = valid pfns (with the dumped ones), 2nd = dumped pfns."""
    valid = set(want.valid.iter_set()) | set(want.dumped.iter_set())
    assert set(got.valid.iter_set()) == valid
    assert set(got.dumped.iter_set()) == set(want.dumped.iter_set())


def read_back(paths: list[str]) -> kdfix.read.dump.Dump:  # type: ignore[name-defined]
    return kdfix.open_dump(*paths)


def file_bytes(path: str | os.PathLike[str]) -> bytes:
    with open(path, "rb") as f:
        return f.read()
