"""KDUMP-compressed structures: disk_dump_header, kdump_sub_header and page_desc (kdump-format.md §3-§6)."""

from __future__ import annotations

from dataclasses import dataclass

from kdfix.format.layout import Layout, cfield


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
PAGE_DESC_SIZE = 24
