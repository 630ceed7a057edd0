"""Shared hypothesis strategies: sparse memory, DumpModel headers, notes, VMCOREINFO, codecs, versions, ABIs.

Every strategy keeps examples small (at most ``MAX_PAGES`` pages of 4 KiB, bitmaps of a few blocks)
so the CI profile (40 examples) of a property runs in seconds.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from hypothesis import strategies as st

from kdfix.codecs import CODECS
from kdfix.format.bitmap import Bitmap
from kdfix.format.constants import KDUMP_HEADER_VERSION, NOTE_NAME_ERASEINFO, NOTE_NAME_VMCOREINFO, DumpFlag, NoteType
from kdfix.format.layout import ARM32_BE, ARM32_LE, I386_BE, I386_LE, LP64_BE, LP64_LE, Abi
from kdfix.model import DumpModel, make_utsname
from kdfix.notes.framing import Note
from kdfix.read.memory import DictMemory

PAGE_SIZE = 4096
MAX_PAGES = 64
MAX_PFN = 1 << 17  # 128 Ki pfns: bitmaps of at most 4 blocks each

ABIS = (LP64_LE, LP64_BE, I386_LE, I386_BE, ARM32_LE, ARM32_BE)
ABI_IDS = {abi: abi.name for abi in ABIS}
CONTAINERS = ("kdump", "flat", "split", "elf")
# libkdumpfile's ABI probe mistakes these tv_usec values for a 32-bit header (kdump-format.md §12 hazard).
HAZARD_TV_USEC = frozenset({256, 512, 1024, 4096, 8192, 16384, 32768, 65536, 131072, 262144})

# drgn needs these keys even for physical reads (notes-and-vmcoreinfo.md §4).
DRGN_VMCOREINFO_KEYS = (
    ("OSRELEASE", "6.1.0-kdfix"),
    ("PAGESIZE", str(PAGE_SIZE)),
    ("SYMBOL(swapper_pg_dir)", "ffffffff82010000"),
    ("SYMBOL(_stext)", "ffffffff81000000"),
    ("NUMBER(pgtable_l5_enabled)", "0"),
)


def available_codecs() -> list[str]:
    return [c.name for c in CODECS if c.available()]


codecs = st.sampled_from(available_codecs())
abis = st.sampled_from(ABIS)
header_versions = st.integers(0, KDUMP_HEADER_VERSION)
containers = st.sampled_from(CONTAINERS)


# ---- page contents -----------------------------------------------------------------------------------


def zero_page() -> bytes:
    return bytes(PAGE_SIZE)


@st.composite
def incompressible_pages(draw: st.DrawFn) -> bytes:
    """Random bytes (from a drawn seed, to keep hypothesis' buffer small): stored raw by every codec."""
    return random.Random(draw(st.integers(0, 2**32))).randbytes(PAGE_SIZE)


@st.composite
def compressible_pages(draw: st.DrawFn) -> bytes:
    """A short pattern repeated, optionally with a random tail."""
    pattern = draw(st.binary(min_size=1, max_size=32))
    page = (pattern * (PAGE_SIZE // len(pattern) + 1))[:PAGE_SIZE]
    tail = draw(st.integers(0, PAGE_SIZE // 2))
    if tail:
        page = page[: PAGE_SIZE - tail] + random.Random(draw(st.integers(0, 2**32))).randbytes(tail)
    return page


@st.composite
def almost_zero_pages(draw: st.DrawFn) -> bytes:
    """All zero but one byte: must never be taken for a zero page."""
    pos = draw(st.integers(0, PAGE_SIZE - 1))
    value = draw(st.integers(1, 255))
    return bytes(pos) + bytes([value]) + bytes(PAGE_SIZE - pos - 1)


pages = st.one_of(st.just(zero_page()), incompressible_pages(), compressible_pages(), almost_zero_pages())


@st.composite
def pfn_sets(draw: st.DrawFn, max_pages: int = MAX_PAGES, max_pfn: int = MAX_PFN) -> list[int]:
    """Sorted pfns: runs and isolated pages, possibly empty, spread over ``[0, max_pfn)``."""
    pfns: set[int] = set()
    for _ in range(draw(st.integers(0, 6))):
        start = draw(st.integers(0, max_pfn - 1))
        length = draw(st.integers(1, 16))
        pfns.update(range(start, min(start + length, max_pfn)))
    pfns.update(draw(st.lists(st.integers(0, max_pfn - 1), max_size=8)))
    return sorted(pfns)[:max_pages]


@st.composite
def memories(draw: st.DrawFn, max_pages: int = MAX_PAGES, min_pages: int = 0) -> DictMemory:
    """Sparse physical memory: dumped pages (zero, incompressible, compressible), extra valid-only pfns, a tail."""
    pfns = draw(pfn_sets(max_pages))
    if len(pfns) < min_pages:
        pfns = sorted(set(pfns) | set(range(min_pages)))[:max_pages]
    content = {pfn: draw(pages) for pfn in pfns}
    top = max(pfns, default=-1) + 1
    max_pfn = top + draw(st.integers(0, 3 * 8 * PAGE_SIZE))
    max_pfn = max(max_pfn, 1)
    holes = draw(st.lists(st.integers(0, max_pfn - 1), max_size=8))  # valid but not dumped (excluded)
    valid = Bitmap.from_pfns(set(pfns) | set(holes), max_pfn)
    return DictMemory(content, page_size=PAGE_SIZE, max_pfn=max_pfn, valid=valid)


# ---- notes and VMCOREINFO ---------------------------------------------------------------------------

_key_chars = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz0123456789().")
_value_chars = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


@st.composite
def vmcoreinfo_texts(draw: st.DrawFn, *, for_drgn: bool = True) -> bytes:
    """VMCOREINFO text: drgn's required keys, maybe NUMBER(phys_base) (negative allowed), random extras."""
    items: list[tuple[str, str]] = list(DRGN_VMCOREINFO_KEYS) if for_drgn else []
    if draw(st.booleans()):
        items.append(("NUMBER(phys_base)", str(draw(st.integers(-(1 << 40), 1 << 40)))))
    if draw(st.booleans()):
        items.append(("KERNELOFFSET", f"{draw(st.integers(0, 1 << 30)):x}"))
    seen = {k for k, _ in items}
    for _ in range(draw(st.integers(0 if items else 1, 5))):
        key = "X_" + draw(st.text(_key_chars, min_size=1, max_size=20))
        if key not in seen:
            seen.add(key)
            items.append((key, draw(st.text(_value_chars, max_size=40)).replace("=", "-")))
    return "".join(f"{k}={v}\n" for k, v in items).encode("latin-1")


@st.composite
def notes(draw: st.DrawFn) -> Note:
    """A non-VMCOREINFO note: CORE/QEMU/arbitrary name, any type, desc of any length (padding exercised)."""
    name = draw(
        st.one_of(st.sampled_from([b"CORE", b"QEMU", b"LINUX"]), st.binary(min_size=1, max_size=12))
        .map(lambda b: b.replace(b"\0", b"x"))
        .filter(lambda b: b not in (NOTE_NAME_VMCOREINFO, NOTE_NAME_ERASEINFO))  # those two carry model fields
    )
    ntype = draw(st.sampled_from([int(NoteType.NT_PRSTATUS), 0, int(NoteType.NT_VMCOREDD), 0x7FFFFFFF]))
    desc = draw(st.binary(max_size=300))
    return Note(name, ntype, desc)


# ---- headers and models ------------------------------------------------------------------------------

_uts_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=64)


@st.composite
def utsnames(draw: st.DrawFn) -> Any:
    """Either a sane Linux utsname (libkdumpfile takes the arch from it) or arbitrary text."""
    if draw(st.booleans()):
        return make_utsname(sysname="Linux", nodename=draw(_uts_text), release="6.1.0-kdfix", version="#1 SMP",
                            machine="x86_64", domainname="(none)")  # fmt: skip
    return make_utsname(**{f: draw(_uts_text) for f in ("sysname", "nodename", "release", "version", "machine")})


@st.composite
def models(
    draw: st.DrawFn,
    *,
    abi: Abi | None = None,
    header_version: int | None = None,
    for_drgn: bool = False,
    with_notes: bool = True,
) -> DumpModel:
    """A DumpModel with random header fields, notes, VMCOREINFO and eraseinfo."""
    abi = draw(abis) if abi is None else abi
    version = draw(header_versions) if header_version is None else header_version
    signed_long = (1 << (8 * abi.word_size - 1)) - 1
    tv_usec = draw(st.one_of(st.just(0), st.integers(0, 999_999).filter(lambda v: v not in HAZARD_TV_USEC)))
    note_list = tuple(draw(st.lists(notes(), max_size=4))) if with_notes else ()
    vmcoreinfo = (
        draw(vmcoreinfo_texts(for_drgn=True))
        if for_drgn
        else draw(st.one_of(st.none(), vmcoreinfo_texts(for_drgn=False)))
    )
    if vmcoreinfo is not None and draw(st.booleans()):
        # Already present as a note, placed among the others (QEMU puts it last, makedumpfile after CORE).
        pos = draw(st.integers(0, len(note_list)))
        note_list = (*note_list[:pos], Note(NOTE_NAME_VMCOREINFO, 0, vmcoreinfo), *note_list[pos:])
    eraseinfo = draw(st.one_of(st.just(b""), st.binary(min_size=1, max_size=200)))
    status = draw(st.sampled_from([0, int(DumpFlag.EXCLUDED_VMEMMAP), int(DumpFlag.COMPRESSED_INCOMPLETE)]))
    return DumpModel(
        abi=abi,
        header_version=version,
        utsname=draw(utsnames()),
        tv_sec=draw(st.integers(0, signed_long)),
        tv_usec=tv_usec,
        status=status,
        block_size=PAGE_SIZE,
        total_ram_blocks=draw(st.integers(0, 0xFFFFFFFF)),
        device_blocks=draw(st.integers(0, 0xFFFFFFFF)),
        written_blocks=draw(st.integers(0, 0xFFFFFFFF)),
        current_cpu=draw(st.integers(0, 0xFFFFFFFF)),
        nr_cpus=draw(st.integers(-(1 << 31), (1 << 31) - 1)),
        phys_base=draw(st.integers(0, (1 << (8 * abi.word_size)) - 1)),
        dump_level=draw(st.integers(0, 31)),
        notes=note_list,
        vmcoreinfo=vmcoreinfo,
        eraseinfo=eraseinfo,
    )


def drgn_model(**changes: Any) -> DumpModel:
    """A fixed LP64 LE model that drgn opens without a platform hint."""
    base = DumpModel(
        utsname=make_utsname(sysname="Linux", release="6.1.0-kdfix", version="#1 SMP", machine="x86_64"),
        vmcoreinfo="".join(f"{k}={v}\n" for k, v in DRGN_VMCOREINFO_KEYS).encode(),
    )
    return dataclasses.replace(base, **changes)
