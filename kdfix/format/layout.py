"""Declarative C structures: one declaration gives offsets, parsing and building for every ABI.

A :class:`Layout` lists fields with their C types in declaration order. Binding it to an
:class:`Abi` (word size, byte order, alignment of 64-bit scalars) computes offsets as a C
compiler would, and yields a :class:`BoundLayout` that unpacks bytes into a frozen record
and packs a record back into bytes. Nobody types an offset.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast

from kdfix.errors import FormatError, TruncatedError


@dataclass(frozen=True, slots=True)
class Abi:
    """How a C compiler lays out a structure: word size, byte order and 64-bit alignment."""

    name: str
    word_size: int  # sizeof(long): 8 (LP64) or 4 (ILP32)
    byte_order: str  # "<" little endian, ">" big endian
    align64: int  # alignment of 8-byte scalars: 8 (LP64, ARM32 "pad") or 4 (i386 "pack")

    @property
    def is_64bit(self) -> bool:
        return self.word_size == 8

    @property
    def word_mask(self) -> int:
        """All ones in a ``ulong``: what a signed value becomes when stored in one."""
        return (1 << (8 * self.word_size)) - 1

    @property
    def endian(self) -> Literal["little", "big"]:
        return "little" if self.byte_order == "<" else "big"


LP64_LE = Abi("lp64-le", 8, "<", 8)
LP64_BE = Abi("lp64-be", 8, ">", 8)
I386_LE = Abi("i386-le", 4, "<", 4)
I386_BE = Abi("i386-be", 4, ">", 4)
ARM32_LE = Abi("arm32-le", 4, "<", 8)
ARM32_BE = Abi("arm32-be", 4, ">", 8)
ALL_ABIS = (LP64_LE, LP64_BE, I386_LE, I386_BE, ARM32_LE, ARM32_BE)
ABIS_BY_NAME = {abi.name: abi for abi in ALL_ABIS}

# C scalar name -> (struct code, size); "long"-sized types depend on the ABI.
_FIXED_SCALARS: dict[str, tuple[str, int]] = {
    "u8": ("B", 1),
    "s8": ("b", 1),
    "u16": ("H", 2),
    "s16": ("h", 2),
    "short": ("h", 2),
    "u32": ("I", 4),
    "s32": ("i", 4),
    "int": ("i", 4),
    "u64": ("Q", 8),
    "s64": ("q", 8),
    "off_t": ("q", 8),
}
_WORD_SCALARS = {"long": ("q", "i"), "ulong": ("Q", "I")}
_CTYPE = re.compile(r"^(?P<base>\w+)(?:\[(?P<count>\d+)\])?$")


def _scalar(ctype: str, abi: Abi) -> tuple[str, int, int]:
    """Return (struct code, size, alignment) of a C scalar under ``abi``."""
    if ctype in _WORD_SCALARS:
        code = _WORD_SCALARS[ctype][0 if abi.word_size == 8 else 1]
        size = abi.word_size
    elif ctype in _FIXED_SCALARS:
        code, size = _FIXED_SCALARS[ctype]
    else:
        raise ValueError(f"unknown C type {ctype!r}")
    align = abi.align64 if size == 8 else size
    return code, size, align


@dataclass(frozen=True, slots=True)
class Field:
    """One member of a C structure.

    ``ctype`` is a scalar name (``"u32"``, ``"ulong"``, ``"off_t"``), a char array
    (``"char[65]"``, read as bytes), a scalar array (``"ulong[27]"``, read as a tuple) or a
    nested :class:`Layout`. ``since`` is the format version that introduced the field;
    ``derived`` marks values a writer recomputes (sizes, counts, offsets).
    """

    name: str
    ctype: str | Layout[Any]
    since: int = 0
    derived: bool = False


@dataclass(frozen=True, slots=True)
class _Slot:
    """A compiled leaf: dotted path, offset, struct code and element count."""

    path: str
    offset: int
    size: int
    kind: str  # "scalar", "bytes", "array"
    code: str
    count: int


R = TypeVar("R")
_DECLARED: dict[type, Layout[Any]] = {}  # record class -> its layout, for nesting a declared record in another


def cfield(ctype: str | type, *, since: int = 0, derived: bool = False) -> Any:
    """Declare one member of a record class: its C type (or a nested record class), ``since`` and ``derived``.

    The default is the C zero value (0, ``bytes(n)``, a tuple of zeros, a zero nested record), so a record built
    with only some fields named packs the rest as zero.
    """
    meta = {"ctype": ctype, "since": since, "derived": derived}
    if isinstance(ctype, type):
        return dataclasses.field(default_factory=ctype, metadata=meta)
    m = _CTYPE.match(ctype)
    if m is None:
        raise ValueError(f"bad C type {ctype!r}")
    if m["count"] is None:
        return dataclasses.field(default=0, metadata=meta)
    count = int(m["count"])
    default: bytes | tuple[int, ...] = bytes(count) if m["base"] == "char" else (0,) * count
    return dataclasses.field(default=default, metadata=meta)


def _annotation_for(ctype: str | type) -> str:
    """The annotation a record class must give a member of C type ``ctype``."""
    if isinstance(ctype, type):
        return ctype.__name__
    m = _CTYPE.match(ctype)
    assert m is not None
    if m["count"] is None:
        return "int"
    return "bytes" if m["base"] == "char" else "tuple[int, ...]"


class Layout(Generic[R]):
    """An unbound structure declaration; :meth:`bind` compiles it for one ABI and version.

    Declare a structure as a frozen dataclass whose members are :func:`cfield` and pass it to :meth:`declare`:
    the class is then the typed record that ``unpack`` returns and ``pack`` takes. ``Layout(name, fields)``
    builds an untyped record class for structures no code reads by attribute.
    """

    def __init__(self, name: str, fields: list[Field], record_type: type[R] | None = None) -> None:
        self.name = name
        self.fields = tuple(fields)
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"{name}: duplicate field names")
        self._record_type = record_type

    @property
    def record_type(self) -> type[R]:
        """The record class; an untyped one is made on first use (making a dataclass costs start-up time)."""
        if self._record_type is None:
            made = dataclasses.make_dataclass(
                _camel(self.name),
                [(f.name, Any, dataclasses.field(default_factory=_default_factory(f))) for f in self.fields],
                frozen=True,
                slots=True,
                namespace={"__doc__": f"A decoded ``{self.name}`` (see kdfix.format)."},
            )
            self._record_type = made
        return self._record_type

    @classmethod
    def declare(cls, name: str, record_type: type[R]) -> Layout[R]:
        """The layout of a record class whose members are :func:`cfield` declarations (checked here)."""
        fields: list[Field] = []
        for f in dataclasses.fields(record_type):  # type: ignore[arg-type]
            if "ctype" not in f.metadata:
                raise ValueError(f"{name}.{f.name}: not declared with cfield()")
            ctype = f.metadata["ctype"]
            want = _annotation_for(ctype)
            if f.type != want:
                raise ValueError(f"{name}.{f.name}: annotated {f.type!r}, its C type {ctype!r} needs {want!r}")
            if isinstance(ctype, type):
                if ctype not in _DECLARED:
                    raise ValueError(f"{name}.{f.name}: {ctype.__name__} is not a declared record")
                ctype = _DECLARED[ctype]
            fields.append(Field(f.name, ctype, since=f.metadata["since"], derived=f.metadata["derived"]))
        layout = cls(name, fields, record_type)
        _DECLARED[record_type] = layout
        return layout

    def __repr__(self) -> str:
        return f"Layout({self.name!r})"

    @property
    def max_version(self) -> int:
        """The highest ``since`` tag, i.e. the newest version of this structure."""
        return max(f.since for f in self.fields)

    def bind(self, abi: Abi, version: int | None = None) -> BoundLayout[R]:
        """Compile for ``abi``, keeping only fields introduced at or before ``version``."""
        return _bind(self, abi, self.max_version if version is None else version)

    def make(self, **values: Any) -> R:
        """Build a record, with unnamed fields zero."""
        return self.record_type(**values)

    def derived_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.derived)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _default_factory(f: Field) -> Any:
    if isinstance(f.ctype, Layout):
        sub = f.ctype
        return lambda: sub.record_type()
    m = _CTYPE.match(f.ctype)
    if m is None:
        raise ValueError(f"bad C type {f.ctype!r}")
    if m["count"] is None:
        return lambda: 0
    count = int(m["count"])
    if m["base"] == "char":
        return lambda: bytes(count)
    return lambda: (0,) * count


def _layout_of(
    layout: Layout[Any], abi: Abi, version: int, base: int, prefix: str
) -> tuple[list[_Slot], int, int, int]:
    """Return (slots, end offset, aligned size, alignment) of ``layout`` placed at ``base``."""
    slots: list[_Slot] = []
    offset = 0
    max_align = 1
    for f in layout.fields:
        if f.since > version:
            continue
        path = prefix + f.name
        if isinstance(f.ctype, Layout):
            _probe, _end, sub_size, sub_align = _layout_of(f.ctype, abi, f.ctype.max_version, 0, "")
            offset = _round(offset, sub_align)
            sub_slots, _, _, _ = _layout_of(f.ctype, abi, f.ctype.max_version, base + offset, path + ".")
            slots.extend(sub_slots)
            offset += sub_size
            max_align = max(max_align, sub_align)
            continue
        m = _CTYPE.match(f.ctype)
        assert m is not None
        count = int(m["count"]) if m["count"] is not None else 1
        if m["base"] == "char":
            slots.append(_Slot(path, base + offset, count, "bytes", f"{count}s", 1))
            offset += count
            continue
        code, size, align = _scalar(m["base"], abi)
        offset = _round(offset, align)
        kind = "array" if m["count"] is not None else "scalar"
        slots.append(_Slot(path, base + offset, size * count, kind, f"{count}{code}", count))
        offset += size * count
        max_align = max(max_align, align)
    return slots, offset, _round(offset, max_align), max_align


def _round(value: int, align: int) -> int:
    return -(-value // align) * align


@functools.cache
def _bind(layout: Layout[R], abi: Abi, version: int) -> BoundLayout[R]:
    return BoundLayout(layout, abi, version)


class BoundLayout(Generic[R]):
    """A layout compiled for one ABI and version: ``unpack``, ``pack``, ``offset_of``, ``size``."""

    def __init__(self, layout: Layout[R], abi: Abi, version: int) -> None:
        self.layout = layout
        self.abi = abi
        self.version = version
        slots, end, aligned, _ = _layout_of(layout, abi, version, 0, "")
        self.slots = tuple(slots)
        # A full structure has its C sizeof; a version-truncated one ends after its last field.
        self.size = aligned if version >= layout.max_version else end
        fmt = [abi.byte_order]
        pos = 0
        for slot in self.slots:
            if slot.offset > pos:
                fmt.append(f"{slot.offset - pos}x")
            fmt.append(slot.code)
            pos = slot.offset + slot.size
        if self.size > pos:
            fmt.append(f"{self.size - pos}x")
        self._struct = struct.Struct("".join(fmt))
        assert self._struct.size == self.size, (layout.name, self._struct.size, self.size)
        # The leaves in order as one struct.Struct, for hot loops (pack(*leaves), iter_unpack); padding included.
        self.struct = self._struct
        self._offsets = {s.path: s for s in self.slots}

    def __repr__(self) -> str:
        return f"<{self.layout.name} {self.abi.name} v{self.version} size={self.size}>"

    def offset_of(self, path: str) -> int:
        """Offset of a (dotted) field path from the start of the structure."""
        if path in self._offsets:
            return self._offsets[path].offset
        for slot in self.slots:
            if slot.path.startswith(path + "."):
                return slot.offset
        raise KeyError(f"{self.layout.name} has no field {path!r} in {self.abi.name} v{self.version}")

    def size_of(self, path: str) -> int:
        """Size in bytes of a leaf field."""
        if path not in self._offsets:
            raise KeyError(f"{self.layout.name} has no leaf field {path!r}")
        return self._offsets[path].size

    def has(self, path: str) -> bool:
        return path in self._offsets

    def unpack(self, buf: bytes | bytearray | memoryview, offset: int = 0, *, what: str | None = None) -> R:
        """Decode the structure at ``buf[offset:]`` into a frozen record."""
        if len(buf) - offset < self.size:
            raise TruncatedError(
                f"needs {self.size} bytes, only {max(0, len(buf) - offset)} available",
                field=what or self.layout.name,
                offset=offset,
            )
        try:
            values = self._struct.unpack_from(buf, offset)
        except struct.error as exc:  # pragma: no cover - guarded by the length check
            raise FormatError(str(exc), field=what or self.layout.name, offset=offset) from exc
        leaves: dict[str, Any] = {}
        pos = 0
        for slot in self.slots:
            if slot.kind == "array":
                leaves[slot.path] = tuple(values[pos : pos + slot.count])
                pos += slot.count
            else:
                leaves[slot.path] = values[pos]
                pos += 1
        return _build(self.layout, leaves, "")

    def unpack_values(self, buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Any, ...]:
        """The leaf values at ``buf[offset:]`` in declaration order, without building a record.

        For hot loops over many small structures (a notes blob may hold millions of headers); the
        caller guarantees ``size`` bytes are there, as ``struct.unpack_from`` does.
        """
        return self._struct.unpack_from(buf, offset)

    def pack(self, record: R) -> bytes:
        """Encode a record; fields absent from this version are dropped."""
        values: list[Any] = []
        for slot in self.slots:
            value = _get_path(record, slot.path)
            if slot.kind == "array":
                if len(value) != slot.count:
                    raise FormatError(f"expects {slot.count} elements, got {len(value)}", field=slot.path)
                values.extend(value)
            elif slot.kind == "bytes":
                if len(value) > slot.size:
                    raise FormatError(f"{len(value)} bytes exceed char[{slot.size}]", field=slot.path)
                values.append(bytes(value))
            else:
                values.append(value)
        try:
            return self._struct.pack(*values)
        except struct.error as exc:
            raise FormatError(f"cannot pack {self.layout.name}: {exc}", field=self.layout.name) from exc

    def pack_field(self, path: str, value: Any) -> bytes:
        """Encode one leaf field alone (for in-place patches)."""
        slot = self._offsets[path]
        fmt = self.abi.byte_order + slot.code
        if slot.kind == "array":
            return struct.pack(fmt, *value)
        if slot.kind == "bytes":
            if len(value) > slot.size:
                raise FormatError(f"{len(value)} bytes exceed char[{slot.size}]", field=path)
            return struct.pack(fmt, bytes(value))
        return struct.pack(fmt, value)

    def numpy_dtype(self) -> Any:
        """A numpy structured dtype of the leaves at their offsets (padding included), to read a table of these
        structures at C speed with ``numpy.frombuffer``; numpy is imported here only, when a table is read."""
        import numpy as np

        order = self.abi.byte_order
        formats: list[Any] = []
        for slot in self.slots:
            if slot.kind == "bytes":
                formats.append(f"S{slot.size}")
            elif slot.kind == "array":
                formats.append((order + slot.code[-1], (slot.count,)))
            else:
                formats.append(order + slot.code[-1])
        names = [slot.path for slot in self.slots]
        offsets = [slot.offset for slot in self.slots]
        return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": self.size})

    def iter_fields(self) -> Iterator[tuple[str, int, int]]:
        """Yield (path, offset, size) of every leaf."""
        for slot in self.slots:
            yield slot.path, slot.offset, slot.size


def _get_path(record: Any, path: str) -> Any:
    for part in path.split("."):
        record = getattr(record, part)
    return record


def _build(layout: Layout[R], leaves: dict[str, Any], prefix: str) -> R:
    kwargs: dict[str, Any] = {}
    for f in layout.fields:
        path = prefix + f.name
        if isinstance(f.ctype, Layout):
            if any(k.startswith(path + ".") for k in leaves):
                kwargs[f.name] = _build(f.ctype, leaves, path + ".")
        elif path in leaves:
            kwargs[f.name] = leaves[path]
    return layout.record_type(**kwargs)


def replace(record: R, **changes: Any) -> R:
    """Return a copy of a record with some fields changed (``dataclasses.replace``)."""
    return dataclasses.replace(cast(Any, record), **changes)  # type: ignore[no-any-return]


def as_dict(record: Any) -> dict[str, Any]:
    """Convert a record (recursively) to a plain dict."""
    return dataclasses.asdict(record)


__all__ = [
    "ABIS_BY_NAME",
    "ALL_ABIS",
    "ARM32_BE",
    "ARM32_LE",
    "I386_BE",
    "I386_LE",
    "LP64_BE",
    "LP64_LE",
    "Abi",
    "BoundLayout",
    "Field",
    "Layout",
    "as_dict",
    "cfield",
    "replace",
]
