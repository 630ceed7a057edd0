"""What a fix is asked to do: ``FixOptions`` from the arguments of ``fix_dump`` (the same text ``kdfix fix`` takes).

The library accepts the command line's text (``phys_base="-0x400000"``) so that batch jobs and scripts pass
options through unchanged; the diagnosis only ever sees checked values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kdfix.detect.kernels import WANTED, Wanted
from kdfix.errors import KdfixError
from kdfix.format.constants import STATUS_FLAG_NAMES
from kdfix.units import to_u64


@dataclass(frozen=True)
class FixOptions:
    """What the user asked for: ``phys_base`` "auto" or a u64; ``vmcoreinfo`` "auto", "none" or a file path."""

    phys_base: str | int = "auto"
    vmcoreinfo: str = "auto"
    utsname: str = "auto"
    set_flags: tuple[str, ...] = ()
    clear_flags: tuple[str, ...] = ()
    kernel: Wanted = "crashed"  # with several kernels in memory: which one the fixed dump describes


def parse_phys_base(text: str | int) -> str | int:
    """``auto`` or a u64 from decimal, 0x-hex or a negative number."""
    if isinstance(text, int):
        return to_u64(text)
    value = text.strip().lower()
    if value == "auto":
        return "auto"
    sign = -1 if value.startswith("-") else 1
    body = value[1:] if value[:1] in ("+", "-") else value
    try:
        if body[:1] in ("+", "-"):
            raise ValueError(text)
        number = int(body, 16) if body.startswith("0x") else int(body, 10)
    except ValueError:
        raise KdfixError(f"{text!r} is not auto, a decimal, 0x-hex or negative number", field="--phys-base") from None
    if number >= 1 << 64 or (sign < 0 and number > 1 << 63):
        raise KdfixError(f"{text!r} does not fit 64 bits (u64, or s64 when negative)", field="--phys-base")
    return to_u64(sign * number)


def status_mask(names: Sequence[str], option: str) -> int:
    """The header status bits named by ``names`` (kdump-format.md §5); ``option`` names the argument in errors."""
    mask = 0
    for name in names:
        flag = STATUS_FLAG_NAMES.get(name.strip().lower())
        if flag is None:
            raise KdfixError(f"unknown flag {name!r}; known: {', '.join(STATUS_FLAG_NAMES)}", field=option)
        mask |= int(flag)
    return mask


def make_options(
    # the keywords of fix_dump and fix_split_set, which pass them on
    phys_base: str | int = "auto",
    vmcoreinfo: str = "auto",
    utsname: str = "auto",
    set_flags: Sequence[str] = (),
    clear_flags: Sequence[str] = (),
    kernel: str = "crashed",
) -> FixOptions:
    """FixOptions from the ``kdfix fix`` arguments; raises KdfixError on a bad phys_base, utsname or kernel."""
    if utsname not in ("auto", "none"):
        raise KdfixError(f"{utsname!r} is not auto or none", field="--utsname")
    wanted = next((w for w in WANTED if w == kernel), None)
    if wanted is None:
        raise KdfixError(f"{kernel!r} is not one of {', '.join(WANTED)}", field="--kernel")
    return FixOptions(parse_phys_base(phys_base), vmcoreinfo, utsname, tuple(set_flags), tuple(clear_flags), wanted)


def check_target(has_output: bool, in_place: bool, dry_run: bool, outputs: str = "an output file") -> None:
    """A fix writes to exactly one place: ``outputs`` (-o) or the input itself (--in-place); a dry run may name none."""
    if has_output == in_place and (has_output or not dry_run):
        raise KdfixError(f"give exactly one of {outputs} (-o) or in_place (--in-place)")
