"""One description of the file: version rules and on-disk struct formats live in kdfix/format only.

The header-version rules come from the sub header's ``since=`` tags (kdfix.format.kdump.header_features); on-disk
bytes are packed through layouts. These tests read the package's source, so a new literal anywhere fails them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kdfix.format.kdump import KDUMP_SUB_HEADER, PAGE_DESC, PAGE_DESC_SIZE, header_features, since
from kdfix.format.layout import ALL_ABIS

PACKAGE = Path(__file__).resolve().parents[2] / "kdfix"
VERSION_LITERAL = re.compile(r"version\s*(>=|<=|<|>|==|!=)\s*\d")
STRUCT_FORMAT = re.compile(r"struct\.(Struct|pack|unpack|pack_into|unpack_from|iter_unpack|calcsize)\(\s*f?[\"']")
# Modules whose struct formats describe no file structure: process-to-process messages, and guest memory the
# kernel lays out (page-table entries), which the arch layer owns.
STRUCT_ALLOWED = {
    "write/parallel.py": "helper-process IPC records",
    "write/page_cache.py": "the shared-memory index of the page-dedup cache",
    "arch/": "page-table entries and kernel words in guest memory",
    "detect/paging.py": "x86_64 page-table entries in guest memory",
    "generate/pagetables.py": "x86_64 page-table entries built in synthetic guest memory",
}


def _struct_allowed(rel: str) -> bool:
    return any(rel == key or (key.endswith("/") and rel.startswith(key)) for key in STRUCT_ALLOWED)


def _sources_outside_format() -> list[tuple[str, str]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if not rel.startswith("format/"):
            out.append((rel, path.read_text()))
    return out


def test_no_header_version_literal_outside_format() -> None:
    hits = [
        f"{rel}:{n}: {line.strip()}"
        for rel, text in _sources_outside_format()
        for n, line in enumerate(text.splitlines(), 1)
        if VERSION_LITERAL.search(line)
    ]
    assert not hits, "compare header versions through kdfix.format.kdump.header_features:\n" + "\n".join(hits)


def test_no_on_disk_struct_format_outside_format() -> None:
    hits = [
        f"{rel}:{n}: {line.strip()}"
        for rel, text in _sources_outside_format()
        if not _struct_allowed(rel)
        for n, line in enumerate(text.splitlines(), 1)
        if STRUCT_FORMAT.search(line)
    ]
    assert not hits, "pack on-disk structures through a kdfix.format layout:\n" + "\n".join(hits)


# kdump-format.md §4: the version that introduced each group of sub-header members.
REFERENCE_SINCE = {"dump_level": 1, "split": 2, "vmcoreinfo": 3, "notes": 4, "eraseinfo": 5, "pfn64": 6}


@pytest.mark.parametrize("version", range(7))
def test_header_features_follow_the_reference_table(version: int) -> None:
    features = header_features(version)
    for name, introduced in REFERENCE_SINCE.items():
        assert getattr(features, name) is (version >= introduced), (name, version)


def test_since_reads_the_declaration() -> None:
    declared = {f.name: f.since for f in KDUMP_SUB_HEADER.fields}
    assert all(since(name) == tag for name, tag in declared.items())
    with pytest.raises(KeyError):
        since("no_such_member")


def test_page_desc_size_is_the_same_on_every_abi() -> None:
    assert {PAGE_DESC.bind(abi).size for abi in ALL_ABIS} == {PAGE_DESC_SIZE} == {24}
