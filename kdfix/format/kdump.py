"""KDUMP-compressed structures: disk_dump_header, kdump_sub_header and page_desc (kdump-format.md §3-§6)."""

from __future__ import annotations

from dataclasses import dataclass

from kdfix.format.constants import DumpFlag
from kdfix.format.layout import LP64_LE, BoundLayout, Layout, cfield, replace


@dataclass(frozen=True, slots=True)
class Utsname:
    """``struct new_utsname``: six NUL-padded 65-byte strings."""

    sysname: bytes = cfield("char[65]")
    nodename: bytes = cfield("char[65]")
    release: bytes = cfield("char[65]")
    version: bytes = cfield("char[65]")
    machine: bytes = cfield("char[65]")
    domainname: bytes = cfield("char[65]")


NEW_UTSNAME = Layout.declare("new_utsname", Utsname)
UTSNAME_FIELDS = tuple(f.name for f in NEW_UTSNAME.fields)
UTS_LEN = 65


@dataclass(frozen=True, slots=True)
class Timeval:
    """``struct timeval`` of the main header (``long`` members)."""

    tv_sec: int = cfield("long")
    tv_usec: int = cfield("long")


TIMEVAL = Layout.declare("timeval", Timeval)


@dataclass(frozen=True, slots=True)
class MainHeader:
    """``struct disk_dump_header`` (kdump-format.md §3)."""

    signature: bytes = cfield("char[8]")
    header_version: int = cfield("int")
    utsname: Utsname = cfield(Utsname)
    timestamp: Timeval = cfield(Timeval)
    status: int = cfield("u32")
    block_size: int = cfield("int")
    sub_hdr_size: int = cfield("int", derived=True)
    bitmap_blocks: int = cfield("u32", derived=True)
    max_mapnr: int = cfield("u32")
    total_ram_blocks: int = cfield("u32")
    device_blocks: int = cfield("u32")
    written_blocks: int = cfield("u32")
    current_cpu: int = cfield("u32")
    nr_cpus: int = cfield("int")


DISK_DUMP_HEADER = Layout.declare("disk_dump_header", MainHeader)


@dataclass(frozen=True, slots=True)
class SubHeader:
    """``struct kdump_sub_header``; each member exists from the header version in its ``since`` (§4)."""

    phys_base: int = cfield("ulong")
    dump_level: int = cfield("int", since=1)
    split: int = cfield("int", since=2)
    start_pfn: int = cfield("ulong", since=2)
    end_pfn: int = cfield("ulong", since=2)
    offset_vmcoreinfo: int = cfield("off_t", since=3, derived=True)
    size_vmcoreinfo: int = cfield("ulong", since=3, derived=True)
    offset_note: int = cfield("off_t", since=4, derived=True)
    size_note: int = cfield("ulong", since=4, derived=True)
    offset_eraseinfo: int = cfield("off_t", since=5, derived=True)
    size_eraseinfo: int = cfield("ulong", since=5, derived=True)
    start_pfn_64: int = cfield("u64", since=6)
    end_pfn_64: int = cfield("u64", since=6)
    max_mapnr_64: int = cfield("u64", since=6)


KDUMP_SUB_HEADER = Layout.declare("kdump_sub_header", SubHeader)


@dataclass(frozen=True, slots=True)
class PageDesc:
    """``struct page_desc``: where one dumped page is stored and how (§6)."""

    offset: int = cfield("off_t")
    size: int = cfield("u32")
    flags: int = cfield("u32")
    page_flags: int = cfield("u64")


PAGE_DESC = Layout.declare("page_desc", PageDesc)
PAGE_DESC_SIZE = PAGE_DESC.bind(LP64_LE).size  # the same on every ABI (§6; checked in tests/format)


def since(name: str) -> int:
    """The header version that added sub-header member ``name`` (its ``since=`` tag)."""
    for f in KDUMP_SUB_HEADER.fields:
        if f.name == name:
            return f.since
    raise KeyError(f"kdump_sub_header has no member {name!r}")


@dataclass(frozen=True, slots=True)
class HeaderFeatures:
    """What a KDUMP file of one ``header_version`` can carry, read off the sub header's ``since=`` tags (§4)."""

    version: int
    dump_level: bool  # sub_header.dump_level
    split: bool  # split, start_pfn, end_pfn
    vmcoreinfo: bool  # offset_vmcoreinfo / size_vmcoreinfo
    notes: bool  # offset_note / size_note
    eraseinfo: bool  # offset_eraseinfo / size_eraseinfo
    pfn64: bool  # start_pfn_64, end_pfn_64, max_mapnr_64


def header_features(version: int) -> HeaderFeatures:
    """The :class:`HeaderFeatures` of ``header_version`` ``version``; the only place a version is compared."""
    return HeaderFeatures(
        version=version,
        dump_level=version >= since("dump_level"),
        split=version >= since("split"),
        vmcoreinfo=version >= since("offset_vmcoreinfo"),
        notes=version >= since("offset_note"),
        eraseinfo=version >= since("offset_eraseinfo"),
        pfn64=version >= since("start_pfn_64"),
    )


def pfn_range(sub: SubHeader, version: int) -> tuple[int, int]:
    """A split part's [start_pfn, end_pfn): the 64-bit members where the version has them (§9)."""
    if header_features(version).pfn64:
        return sub.start_pfn_64, sub.end_pfn_64
    return sub.start_pfn, sub.end_pfn


def split_identity(layout: BoundLayout[MainHeader], main: MainHeader) -> bytes:
    """What the parts of one split set share: the main header without the INCOMPLETE bit (any part may carry it)
    and without the timestamp (makedumpfile stamps each part as it writes it), kdump-format.md §9."""
    same = replace(main, status=main.status & ~DumpFlag.COMPRESSED_INCOMPLETE, timestamp=Timeval(0, 0))
    return layout.pack(same)


def pfn_range_fields(version: int) -> tuple[str, str]:
    """The sub-header member names :func:`pfn_range` reads for ``version``."""
    return ("start_pfn_64", "end_pfn_64") if header_features(version).pfn64 else ("start_pfn", "end_pfn")
