"""Where each region of a KDUMP file lies, from the few numbers that decide it (kdump-format.md §1, Formulas).

:func:`plan_file` is the forward direction, used by every writer (through kdfix.write.kdump.plan_layout):
from (ABI, header version, block size, max_mapnr, bytes stored after the sub header) to every derived header
field and region offset. :meth:`FileLayout.from_header` is the inverse, used by readers and fixers: the regions a
header read off a file declares, and whether its derived fields agree with the formulas.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdfix.format.kdump import (
    DISK_DUMP_HEADER,
    KDUMP_SUB_HEADER,
    PAGE_DESC_SIZE,
    MainHeader,
    SubHeader,
    header_features,
)
from kdfix.format.layout import Abi, BoundLayout
from kdfix.units import ceil_div


def one_bitmap_len(max_mapnr: int, block_size: int) -> int:
    """Bytes of one bitmap for ``max_mapnr`` pfns: whole blocks of 8 * block_size bits."""
    return ceil_div(ceil_div(max_mapnr, 8), block_size) * block_size


@dataclass(frozen=True)
class FileLayout:
    """The derived header fields and region offsets of one KDUMP file (absolute file offsets)."""

    abi: Abi
    header_version: int
    block_size: int
    max_mapnr: int
    sub_hdr_size: int  # blocks holding the sub header and what follows it (notes, VMCOREINFO text)
    bitmap_len: int  # bytes of one bitmap
    bitmap_blocks: int  # blocks of both bitmaps
    offset_note: int  # where the notes start (0 for versions without notes)

    @property
    def main_header(self) -> BoundLayout[MainHeader]:
        return DISK_DUMP_HEADER.bind(self.abi)

    @property
    def sub_header(self) -> BoundLayout[SubHeader]:
        return KDUMP_SUB_HEADER.bind(self.abi, self.header_version)

    @property
    def bitmap1_offset(self) -> int:
        return (1 + self.sub_hdr_size) * self.block_size

    @property
    def bitmap2_offset(self) -> int:
        return self.bitmap1_offset + self.bitmap_len

    @property
    def data_offset(self) -> int:
        """Start of the page-descriptor table."""
        return (1 + self.sub_hdr_size + self.bitmap_blocks) * self.block_size

    def desc_offset(self, index: int) -> int:
        """File offset of the ``index``-th page descriptor."""
        return self.data_offset + PAGE_DESC_SIZE * index

    def data_start(self, dumped: int) -> int:
        """First page-data byte when the table holds ``dumped`` descriptors."""
        return self.desc_offset(dumped)

    @classmethod
    def from_header(cls, abi: Abi, main: MainHeader, *, max_mapnr: int | None = None) -> FileLayout:
        """The regions ``main`` declares (as read: its derived fields are taken, not recomputed)."""
        bs = main.block_size
        version = main.header_version
        return cls(
            abi=abi,
            header_version=version,
            block_size=bs,
            max_mapnr=main.max_mapnr if max_mapnr is None else max_mapnr,
            sub_hdr_size=main.sub_hdr_size,
            bitmap_len=main.bitmap_blocks * bs // 2,
            bitmap_blocks=main.bitmap_blocks,
            offset_note=_offset_note(abi, version, bs),
        )

    def counts_one_bitmap(self) -> bool:
        """True when bitmap_blocks is too small for two bitmaps of max_mapnr bits (old diskdump, kdumpling)."""
        return self.bitmap_blocks * self.block_size < 2 * one_bitmap_len(self.max_mapnr, self.block_size)


def _offset_note(abi: Abi, version: int, block_size: int) -> int:
    if not header_features(version).notes:
        return 0
    return block_size + KDUMP_SUB_HEADER.bind(abi, version).size


def plan_file(abi: Abi, header_version: int, block_size: int, max_mapnr: int, *, after_sub_header: int) -> FileLayout:
    """The layout of a file whose sub header is followed by ``after_sub_header`` bytes (notes, VMCOREINFO).

    The notes go right after the sub header; ``sub_hdr_size`` counts the blocks of both, and
    ``bitmap_blocks`` counts both bitmaps (kdump-format.md §1, Formulas).
    """
    sub_size = KDUMP_SUB_HEADER.bind(abi, header_version).size
    bitmap_len = one_bitmap_len(max_mapnr, block_size)
    return FileLayout(
        abi=abi,
        header_version=header_version,
        block_size=block_size,
        max_mapnr=max_mapnr,
        sub_hdr_size=ceil_div(sub_size + after_sub_header, block_size),
        bitmap_len=bitmap_len,
        bitmap_blocks=2 * bitmap_len // block_size,
        offset_note=_offset_note(abi, header_version, block_size),
    )


__all__ = ["FileLayout", "one_bitmap_len", "plan_file"]
