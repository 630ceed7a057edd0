"""Firmware ranges in a dump's physical memory, per platform: what ``kdfix map`` labels as BIOS ROM or OVMF.

PC (x86_64, i386; qemu-dumps.md §5): QEMU dumps every RAM-backed block, ROM and pflash included. The firmware image
is mapped so that it ends at 4 GiB (SeaBIOS: a 128 or 256 KiB ROM, measured 0xfffc0000-0x100000000; OVMF: the
pflash code + vars volumes, 4 MiB for the _4M build), and the legacy BIOS window below 1 MiB holds the option ROMs
(0xc0000-0xe0000, the VGA BIOS first) and the BIOS copy (0xe0000-0x100000). aarch64 ``virt`` guests in the suite
boot their kernel directly and QEMU's flash there is not RAM-backed: no ranges. Which firmware it is comes from
the bytes: SeaBIOS carries its name in its image (measured in the 4 GiB ROM and both legacy windows). An OVMF
guest's legacy window holds no firmware volume (no ``_FVH``, measured) and its pflash is not in the dump, so OVMF is
not named: only the legacy window is labelled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kdfix.errors import KdfixError

FOUR_GIB = 1 << 32
LEGACY = ((0xC0000, 0xE0000, "option ROMs (VGA BIOS), legacy window"), (0xE0000, 0x100000, "BIOS ROM, legacy copy"))
HIGH_ROM_MAX = 64 << 20  # a RAM-backed block ending at 4 GiB, at most this big, is the firmware's mapping
PC_ARCHES = frozenset({"x86_64", "i386"})
SEABIOS = b"SeaBIOS"


def firmware_ranges(
    arch: str, dumped: Sequence[tuple[int, int]], read: Callable[[int, int], bytes]
) -> list[tuple[int, int, str]]:
    """``(start, end, label)`` of each firmware range of ``arch``'s platform inside the ``dumped`` byte ranges;
    ``read(paddr, size)`` gives their bytes (to name the firmware)."""
    if arch not in PC_ARCHES:
        return []
    wanted = [(a, b, label) for a, b, label in LEGACY if any(s <= a and b <= e for s, e in dumped)]
    wanted += [(a, b, "BIOS ROM, mapped below 4 GiB") for a, b in dumped if b == FOUR_GIB and b - a <= HIGH_ROM_MAX]
    out = []
    for a, b, label in wanted:
        try:
            named = SEABIOS in read(a, b - a)
        except KdfixError:
            named = False
        out.append((a, b, f"{label} (SeaBIOS)" if named else label))
    return out


__all__ = ["firmware_ranges"]
