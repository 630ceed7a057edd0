"""The kernel's own symbol table, decoded from memory through VMCOREINFO's kallsyms keys (no vmlinux needed).

Tables and decoding: arch-kernels-and-introspection.md §5.2; address schemes and how one is chosen: §5.3.
Names are decoded lazily (the stream has no exported index), addresses and symbol types all at once with numpy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kdfix.errors import FormatError, KdfixError, UnsupportedError
from kdfix.kernel.vmem import Endian, VirtualReader
from kdfix.notes.vmcoreinfo import VmcoreInfo

REQUIRED = ("kallsyms_names", "kallsyms_token_table", "kallsyms_token_index", "kallsyms_num_syms",
            "kallsyms_offsets")  # fmt: skip
MAX_SYMS = 1 << 22  # a few hundred thousand in the largest kernels: bounds what num_syms may allocate
MAX_NAME_TOKENS = 0x7FFF  # a two-byte length (§5.2 step 1)
MAX_SYMBOL_SIZE = 0x10000  # as drgn caps sizes inferred from the next symbol (§5.2 step 4)
TEXT_TYPES = b"tTwW"
_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Symbol:
    """A symbol containing an address: ``offset`` bytes into ``name`` (type letter as in /proc/kallsyms)."""

    name: str
    type: str
    address: int
    offset: int
    size: int

    def __str__(self) -> str:
        return f"{self.name}+{self.offset:#x}/{self.size:#x}"


class _Stream:
    """Sequential bytes of kernel memory read in chunks, for a table whose length is not exported."""

    def __init__(self, mem: VirtualReader, vaddr: int, limit: int) -> None:
        self.mem, self.vaddr, self.limit = mem, vaddr, limit
        self.data = bytearray()

    def ensure(self, end: int) -> None:
        if end > self.limit:
            raise FormatError(f"kallsyms_names at {self.vaddr:#x}: the stream runs past {self.limit} bytes")
        while len(self.data) < end:
            start = self.vaddr + len(self.data)
            try:
                self.data += self.mem.read(start, _CHUNK - start % _CHUNK)
            except KdfixError:  # the table may end just before an unreadable page: read only what is needed
                self.data += self.mem.read(start, end - len(self.data))


def _version_at_least(release: str | None, major: int, minor: int) -> bool | None:
    m = re.match(r"(\d+)\.(\d+)", release or "")
    return None if m is None else (int(m.group(1)), int(m.group(2))) >= (major, minor)


class Kallsyms:
    """Symbols of a kernel image: ``lookup(address)`` finds the symbol containing it; ``address_of(name)``."""

    def __init__(self, addresses: np.ndarray, types: bytes, name_of: Callable[[int], str], scheme: str) -> None:
        order = np.argsort(addresses, kind="stable")
        self._order = order
        self._sorted = addresses[order]
        self.addresses = addresses
        self.types = types
        self._name_of = name_of
        self.scheme = scheme
        self._by_name: dict[str, int] | None = None
        text = np.frombuffer(types, dtype=np.uint8)
        is_text = np.isin(text, np.frombuffer(TEXT_TYPES, dtype=np.uint8))
        self.text_range = (int(addresses[is_text].min()), int(addresses[is_text].max())) if is_text.any() else None

    def __len__(self) -> int:
        return len(self.addresses)

    def name(self, index: int) -> str:
        return self._name_of(index)

    def lookup(self, address: int) -> Symbol | None:
        """The symbol at or before ``address``, if ``address`` is within its (inferred) size."""
        pos = int(np.searchsorted(self._sorted, np.uint64(address), side="right")) - 1
        if pos < 0:
            return None
        start = int(self._sorted[pos])
        first = int(np.searchsorted(self._sorted, self._sorted[pos], side="left"))
        index = int(self._order[first])  # of several aliases, the first in the kernel's table
        after = pos + 1  # searchsorted(side="right") already put ``pos`` on the last alias of ``start``
        size = int(self._sorted[after]) - start if after < len(self._sorted) else MAX_SYMBOL_SIZE
        size = min(size, MAX_SYMBOL_SIZE)
        if address - start >= size:
            return None
        return Symbol(self.name(index), chr(self.types[index]), start, address - start, size)

    def is_text(self, address: int) -> bool:
        """True for an address inside the kernel's text (between its first and last text symbol)."""
        return self.text_range is not None and self.text_range[0] <= address <= self.text_range[1] + MAX_SYMBOL_SIZE

    def address_of(self, name: str) -> int | None:
        """The address of the first symbol called ``name`` (every name is decoded once, on first use)."""
        if self._by_name is None:
            by_name: dict[str, int] = {}
            for i in range(len(self)):
                by_name.setdefault(self.name(i), i)
            self._by_name = by_name
        found = self._by_name.get(name)
        return None if found is None else int(self.addresses[found])


def _tokens(token_index: np.ndarray, token_table: bytes) -> list[bytes]:
    """The 256 tokens names are made of: NUL-terminated strings at ``kallsyms_token_index`` (§5.2)."""
    tokens = []
    for start in token_index.tolist():
        end = token_table.find(b"\0", start)
        tokens.append(token_table[start : end if end >= 0 else len(token_table)])
    return tokens


def _entry_starts(stream: _Stream, count: int, long_lengths: bool) -> np.ndarray:
    """Offset of each entry's first token in the names stream, and its token count (two arrays); a length byte
    with bit 7 set continues in the next byte from Linux 6.1 (``long_lengths``)."""
    starts = np.empty(count, dtype=np.int64)
    lengths = np.empty(count, dtype=np.int64)
    pos = 0
    data = stream.data
    for i in range(count):
        stream.ensure(pos + 2)
        n = data[pos]
        head = 1
        if long_lengths and n & 0x80:
            n = (n & 0x7F) | data[pos + 1] << 7
            head = 2
        starts[i], lengths[i] = pos + head, n
        pos += head + n
    stream.ensure(pos)
    return np.stack([starts, lengths])


def _address_schemes(
    raw: np.ndarray, base: int | None, syms: dict[str, int | None], mem: VirtualReader, word_size: int, bo: str
) -> dict[str, np.ndarray]:
    """Every way the kernel may have stored the addresses (§5.3), to be told apart by _stext."""
    count = len(raw)
    mask = np.uint64((1 << (8 * word_size)) - 1)
    schemes: dict[str, np.ndarray] = {}  # uint64 arithmetic wraps as the kernel's unsigned long does
    if base is not None:
        ubase = np.uint64(base)
        schemes["base-relative"] = (ubase + (raw & 0xFFFFFFFF).astype(np.uint64)) & mask
        percpu = np.where(raw >= 0, raw.astype(np.uint64), ubase - np.uint64(1) + (-raw).astype(np.uint64))
        schemes["absolute-percpu"] = percpu & mask
    offsets = syms["kallsyms_offsets"]
    if offsets is not None:
        place = (4 * np.arange(count, dtype=np.int64) + raw).astype(np.uint64)
        schemes["place-relative"] = (np.uint64(offsets) + place) & mask
    addresses = syms["kallsyms_addresses"]
    if addresses is not None:
        absolute = np.frombuffer(mem.read(addresses, word_size * count), dtype=f"{bo}u{word_size}")
        schemes = {"absolute": absolute.astype(np.uint64)}
    return schemes


def read_kallsyms(info: VmcoreInfo, mem: VirtualReader, *, word_size: int, endian: Endian) -> Kallsyms:
    """Decode the kernel's kallsyms tables from memory (§5.2) and pick the address scheme that gives _stext (§5.3)."""
    syms = {name: info.symbol(name) for name in (*REQUIRED, "kallsyms_relative_base", "kallsyms_addresses")}
    missing = [f"SYMBOL({n})" for n in REQUIRED if syms[n] is None]
    if missing and syms["kallsyms_addresses"] is None:
        raise UnsupportedError(f"VMCOREINFO lacks {', '.join(missing)} (kallsyms is exported from Linux 6.0)")
    stext = info.symbol("_stext")

    def read(name: str, size: int) -> bytes:
        try:
            return mem.read(syms[name] or 0, size)
        except KdfixError as exc:
            raise exc.with_context(field=name) from None

    count = int.from_bytes(read("kallsyms_num_syms", 4), endian)
    if not 0 < count <= MAX_SYMS:
        raise FormatError(f"kallsyms_num_syms at {syms['kallsyms_num_syms']:#x}: {count} symbols is implausible")
    bo = "<" if endian == "little" else ">"
    token_index = np.frombuffer(read("kallsyms_token_index", 512), dtype=f"{bo}u2").astype(np.int64)
    tokens = _tokens(token_index, read("kallsyms_token_table", int(token_index.max()) + 256))
    stream = _Stream(mem, syms["kallsyms_names"] or 0, count * (2 + MAX_NAME_TOKENS))
    long_first = _version_at_least(info.osrelease, 6, 1) is not False
    raw = np.frombuffer(read("kallsyms_offsets", 4 * count), dtype=f"{bo}i4").astype(np.int64)
    base = int.from_bytes(read("kallsyms_relative_base", word_size), endian) if syms["kallsyms_relative_base"] else None
    schemes = _address_schemes(raw, base, syms, mem, word_size, bo)
    for long_lengths in (long_first, not long_first):
        try:
            starts, lengths = _entry_starts(stream, count, long_lengths)
        except FormatError:
            continue
        names = bytes(stream.data)
        first_tokens = np.frombuffer(names, dtype=np.uint8)[np.minimum(starts, len(names) - 1)]
        types = b"".join(tokens[t][:1] or b"?" for t in first_tokens.tolist())

        def name_of(index: int, starts: np.ndarray = starts, lengths: np.ndarray = lengths,
                    names: bytes = names) -> str:  # fmt: skip
            s, n = int(starts[index]), int(lengths[index])
            return b"".join(tokens[b] for b in names[s : s + n])[1:].decode("latin-1")

        for scheme, values in schemes.items():
            addresses = values.astype(np.uint64)
            if stext is None:
                return Kallsyms(addresses, types, name_of, scheme)
            for index in np.flatnonzero(addresses == np.uint64(stext)).tolist():
                if name_of(index) in ("_stext", "_text", "stext"):
                    return Kallsyms(addresses, types, name_of, scheme)
    raise FormatError(f"kallsyms: no address scheme gives SYMBOL(_stext) {stext:#x} for a symbol named _stext")
