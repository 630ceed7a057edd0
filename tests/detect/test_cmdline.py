"""``crashkernel=`` parsing against the syntax of Linux kernel/crash_core.c (arch-kernels-and-introspection.md §3.1).

Expected values are written out from that syntax (sizes with K/M/G suffixes are powers of two), not computed by the
code under test.
"""

from __future__ import annotations

import pytest

from kdfix.detect.cmdline import parse_crashkernel


@pytest.mark.parametrize(
    ("cmdline", "size", "offset", "placement", "region"),
    [
        ("console=ttyS0 crashkernel=256M", 0x10000000, None, "", None),
        ("crashkernel=64M@16M quiet", 0x4000000, 0x1000000, "", (0x1000000, 0x5000000)),
        ("crashkernel=1G,high crashkernel=128M,low", 0x40000000, None, "high", None),
        ("crashkernel=512K@0", 0x80000, 0, "", None),  # @0: the kernel picks the place
        ("crashkernel=1024", 1024, None, "", None),
    ],
)
def test_simple_forms(
    cmdline: str, size: int, offset: int | None, placement: str, region: tuple[int, int] | None
) -> None:
    first = parse_crashkernel(cmdline)[0]
    assert (first.size, first.offset, first.placement, first.region()) == (size, offset, placement, region)
    assert first.text == next(w for w in cmdline.split() if w.startswith("crashkernel="))


def test_range_list_has_no_single_size() -> None:
    (ck,) = parse_crashkernel("crashkernel=512M-2G:64M,2G-:128M@16M")
    assert ck.size is None and ck.offset == 0x1000000 and ck.region() is None


def test_both_high_and_low_are_reported() -> None:
    assert [c.placement for c in parse_crashkernel("crashkernel=1G,high crashkernel=128M,low")] == ["high", "low"]


@pytest.mark.parametrize("cmdline", ["", "console=ttyS0", "crashkernel=", "crashkernel=abc", "crashkernel=5X"])
def test_absent_or_malformed(cmdline: str) -> None:
    assert parse_crashkernel(cmdline) == []
