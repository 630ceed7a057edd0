"""A kernel's own command line, read from its log in the dump, and the ``crashkernel=`` it asked for.

Neither ``saved_command_line`` nor the command line is in VMCOREINFO; the kernel prints it early in boot
(``Kernel command line: …``), and its printk ring is described by VMCOREINFO on every architecture
(arch-kernels-and-introspection.md §3.6, §4). The ``crashkernel=`` syntax is Linux ``kernel/crash_core.c``
``parse_crashkernel*`` (§3.1): ``size[@offset]``, ``range:size[,range:size…][@offset]``, ``size,high`` /
``size,low``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kdfix.errors import KdfixError
from kdfix.kernel.vmem import Endian
from kdfix.model import DumpModel
from kdfix.notes.vmcoreinfo import VmcoreInfo
from kdfix.read.memory import PhysicalMemory

CMDLINE_PREFIX = b"Kernel command line: "
_SIZE = r"(\d+)([KMGTPE]?)"
_SIMPLE = re.compile(rf"^{_SIZE}(?:@{_SIZE})?$")
_RANGES = re.compile(rf"^(?:(?:{_SIZE})?-(?:{_SIZE})?:{_SIZE},?)+(?:@{_SIZE})?$")
_SHIFT = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}


def _size(number: str, suffix: str) -> int:
    return int(number) << _SHIFT[suffix]


@dataclass(frozen=True)
class Crashkernel:
    """One ``crashkernel=`` parameter: its text, the size asked for (None for a range list), the fixed offset."""

    text: str
    size: int | None
    offset: int | None = None
    placement: str = ""  # "high" / "low" for the ``,high`` / ``,low`` forms

    def region(self) -> tuple[int, int] | None:
        """[start, end) when the parameter fixes it (``size@offset``), else None (the kernel chose the place)."""
        if self.size is None or self.offset is None or self.offset == 0:
            return None
        return self.offset, self.offset + self.size

    def as_json(self) -> dict[str, object]:
        return {"text": self.text, "size": self.size, "offset": self.offset, "placement": self.placement or None}


def parse_crashkernel(cmdline: str) -> list[Crashkernel]:
    """Every well-formed ``crashkernel=`` parameter of ``cmdline``, in order (malformed ones are left out)."""
    out = []
    for word in cmdline.split():
        if not word.startswith("crashkernel="):
            continue
        value = word.removeprefix("crashkernel=")
        placement = ""
        for tail in (",high", ",low"):
            if value.endswith(tail):
                value, placement = value.removesuffix(tail), tail[1:]
        m = _SIMPLE.match(value)
        if m:
            offset = _size(m.group(3), m.group(4)) if m.group(3) else None
            out.append(Crashkernel(word, _size(m.group(1), m.group(2)), offset, placement))
            continue
        m = _RANGES.match(value)
        if m and not placement:
            at = value.rfind("@")
            offset = None
            if at >= 0:
                om = re.fullmatch(_SIZE, value[at + 1 :])
                offset = _size(om.group(1), om.group(2)) if om else None
            out.append(Crashkernel(word, None, offset))
    return out


def command_line(model: DumpModel, memory: PhysicalMemory, info: VmcoreInfo) -> str | None:
    """The ``Kernel command line:`` the kernel ``info`` describes printed into its own log, or None when its log
    cannot be read or has lost that line (the ring wrapped)."""
    from kdfix.arch import kernel_reader
    from kdfix.kernel.printk import read_kernel_log  # here: only a fix that weighs two kernels reads a log

    try:
        mem = kernel_reader(model, memory, info)
        log = read_kernel_log(info, mem, word_size=mem.arch.word_size, endian=_endian(model))
    except KdfixError:
        return None
    for record in log.records:
        if record.text.startswith(CMDLINE_PREFIX):
            return record.text[len(CMDLINE_PREFIX) :].decode("latin-1").strip()
    return None


def _endian(model: DumpModel) -> Endian:
    return "little" if model.abi.byte_order == "<" else "big"


__all__ = ["CMDLINE_PREFIX", "Crashkernel", "command_line", "parse_crashkernel"]
