"""KDUMP-compressed structures: disk_dump_header, kdump_sub_header and page_desc (kdump-format.md §3-§6)."""

from __future__ import annotations

from kdfix.format.layout import Field, Layout

NEW_UTSNAME = Layout(
    "new_utsname",
    [
        Field("sysname", "char[65]"),
        Field("nodename", "char[65]"),
        Field("release", "char[65]"),
        Field("version", "char[65]"),
        Field("machine", "char[65]"),
        Field("domainname", "char[65]"),
    ],
)
UTSNAME_FIELDS = tuple(f.name for f in NEW_UTSNAME.fields)
UTS_LEN = 65

TIMEVAL = Layout("timeval", [Field("tv_sec", "long"), Field("tv_usec", "long")])

DISK_DUMP_HEADER = Layout(
    "disk_dump_header",
    [
        Field("signature", "char[8]"),
        Field("header_version", "int"),
        Field("utsname", NEW_UTSNAME),
        Field("timestamp", TIMEVAL),
        Field("status", "u32"),
        Field("block_size", "int"),
        Field("sub_hdr_size", "int", derived=True),
        Field("bitmap_blocks", "u32", derived=True),
        Field("max_mapnr", "u32"),
        Field("total_ram_blocks", "u32"),
        Field("device_blocks", "u32"),
        Field("written_blocks", "u32"),
        Field("current_cpu", "u32"),
        Field("nr_cpus", "int"),
    ],
)

KDUMP_SUB_HEADER = Layout(
    "kdump_sub_header",
    [
        Field("phys_base", "ulong"),
        Field("dump_level", "int", since=1),
        Field("split", "int", since=2),
        Field("start_pfn", "ulong", since=2),
        Field("end_pfn", "ulong", since=2),
        Field("offset_vmcoreinfo", "off_t", since=3, derived=True),
        Field("size_vmcoreinfo", "ulong", since=3, derived=True),
        Field("offset_note", "off_t", since=4, derived=True),
        Field("size_note", "ulong", since=4, derived=True),
        Field("offset_eraseinfo", "off_t", since=5, derived=True),
        Field("size_eraseinfo", "ulong", since=5, derived=True),
        Field("start_pfn_64", "u64", since=6),
        Field("end_pfn_64", "u64", since=6),
        Field("max_mapnr_64", "u64", since=6),
    ],
)

PAGE_DESC = Layout(
    "page_desc",
    [
        Field("offset", "off_t"),
        Field("size", "u32"),
        Field("flags", "u32"),
        Field("page_flags", "u64"),
    ],
)
PAGE_DESC_SIZE = 24

MainHeader = DISK_DUMP_HEADER.record_type
SubHeader = KDUMP_SUB_HEADER.record_type
PageDesc = PAGE_DESC.record_type
Utsname = NEW_UTSNAME.record_type
Timeval = TIMEVAL.record_type
