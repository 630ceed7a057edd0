"""VMCOREINFO text: ordered KEY=VALUE parsing and the value rules of each key (notes-and-vmcoreinfo.md §4)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from kdfix.errors import KdfixError
from kdfix.units import U64_MASK, to_u64

MAX_VMCOREINFO_FILE = 1 << 20  # a real VMCOREINFO is a few KiB; a larger file is not one


@dataclass(frozen=True)
class VmcoreInfo:
    """Parsed VMCOREINFO: the raw bytes and the ordered key/value pairs (first occurrence wins)."""

    raw: bytes
    entries: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, raw: bytes) -> VmcoreInfo:
        text = raw.split(b"\0", 1)[0].decode("latin-1")
        entries: list[tuple[str, str]] = []
        seen: set[str] = set()
        for line in text.split("\n"):
            key, sep, value = line.partition("=")
            if not sep or not key or key in seen:
                continue
            seen.add(key)
            entries.append((key, value))
        return cls(raw, tuple(entries))

    @classmethod
    def from_items(cls, items: list[tuple[str, str]]) -> VmcoreInfo:
        raw = "".join(f"{k}={v}\n" for k, v in items).encode("latin-1")
        return cls.parse(raw)

    def as_dict(self) -> dict[str, str]:
        return dict(self.entries)

    def get(self, key: str) -> str | None:
        for k, v in self.entries:
            if k == key:
                return v
        return None

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def symbol(self, name: str) -> int | None:
        """``SYMBOL(name)``: hex without 0x."""
        return parse_hex(self.get(f"SYMBOL({name})"))

    def number(self, name: str) -> int | None:
        """``NUMBER(name)``: signed decimal (or 0x-hex for the kernel's exceptions)."""
        return parse_number(self.get(f"NUMBER({name})"))

    def offset(self, name: str) -> int | None:
        return parse_number(self.get(f"OFFSET({name})"))

    def size(self, name: str) -> int | None:
        return parse_number(self.get(f"SIZE({name})"))

    @property
    def osrelease(self) -> str | None:
        return self.get("OSRELEASE")

    @property
    def page_size(self) -> int | None:
        return parse_number(self.get("PAGESIZE"))

    @property
    def phys_base(self) -> int | None:
        """``NUMBER(phys_base)`` as unsigned 64-bit two's complement, or None."""
        value = self.number("phys_base")
        return None if value is None else to_u64(value)

    @property
    def kernel_offset(self) -> int | None:
        """``KERNELOFFSET`` (hex)."""
        return parse_hex(self.get("KERNELOFFSET"))

    @property
    def crashtime(self) -> int | None:
        return parse_number(self.get("CRASHTIME"))


def parse_hex(value: str | None) -> int | None:
    """Parse hex with or without 0x; None if absent or malformed."""
    if value is None:
        return None
    try:
        return int(value.strip(), 16)
    except ValueError:
        return None


def parse_number(value: str | None) -> int | None:
    """Parse a signed decimal, or 0x-prefixed hex; None if absent or malformed."""
    if value is None:
        return None
    value = value.strip()
    try:
        sign = -1 if value.startswith("-") else 1
        body = value.lstrip("+-")
        if body.lower().startswith("0x"):
            return sign * int(body, 16)
        return sign * int(body, 10)
    except ValueError:
        return None


def qemu_misparse(value: str | bytes) -> int | None:
    """The phys_base QEMU ≥ 2.11 stores for the text after ``NUMBER(phys_base)=`` (qemu-dumps.md §6 bug 1).

    QEMU runs ``qemu_strtou64(text, base 16)``: leading whitespace, a sign and a ``0x`` prefix are accepted, a
    leading ``-`` negates modulo 2**64; overflow, no digits or trailing characters give None (QEMU then warns
    and keeps phys_base 0).  The kernel prints the value in signed decimal, hence the bug.
    """
    s = (value.encode("latin-1") if isinstance(value, str) else value).lstrip(b" \t\n\v\f\r")
    negative = False
    if s[:1] in (b"+", b"-"):
        negative = s[:1] == b"-"
        s = s[1:]
    if s[:2].lower() == b"0x" and re.match(rb"[0-9a-fA-F]", s[2:3]):
        s = s[2:]
    m = re.match(rb"[0-9a-fA-F]+", s)
    if not m or m.end() != len(s):
        return None
    parsed = int(m.group(0), 16)
    if parsed > U64_MASK:
        return None
    return (-parsed) & U64_MASK if negative else parsed


def read_vmcoreinfo_file(path: str) -> bytes:
    """VMCOREINFO text from a file (``makedumpfile -g`` output or /sys/kernel/vmcoreinfo-style text)."""
    try:
        size = os.path.getsize(path)
        if size > MAX_VMCOREINFO_FILE:
            raise KdfixError(f"{size} bytes is too large for VMCOREINFO", field="--vmcoreinfo", path=path)
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise KdfixError(f"cannot read: {exc.strerror or exc}", field="--vmcoreinfo", path=path) from exc
    raw = raw.split(b"\0", 1)[0]
    if not raw.endswith(b"\n"):
        raw += b"\n"
    if not VmcoreInfo.parse(raw).osrelease:
        raise KdfixError("no OSRELEASE= line: not a VMCOREINFO text", field="--vmcoreinfo", path=path)
    return raw
