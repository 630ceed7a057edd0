"""open_dump: recognise a dump by its content (KDUMP/DISKDUMP, flattened, ELF) and open it."""

from __future__ import annotations

import os
from collections.abc import Callable

from kdfix.errors import FormatError, KdfixError, UnsupportedError
from kdfix.format.constants import FLAT_SIGNATURE, KDUMP_SIGNATURES, XC_CORE_MAGICS
from kdfix.read.dump import Dump
from kdfix.read.elf import ElfContainer, probe_elf
from kdfix.read.flattened import FlattenedSource, probe_flattened
from kdfix.read.kdump import KdumpContainer
from kdfix.read.source import FileSource, Source
from kdfix.read.split import SplitContainer

_HEAD = 4096


def probe_kdump(head: bytes) -> bool:
    return head[:8] in KDUMP_SIGNATURES


def refuse_unsupported(head: bytes) -> None:
    """Name formats that kdfix recognises but does not read, rather than calling them not a dump."""
    if len(head) >= 4 and int.from_bytes(head[:4], "little") in XC_CORE_MAGICS:
        raise UnsupportedError("Xen xc_core dump: not supported", field="xch_magic", offset=0)


# Ordered probes: the first that recognises the head wins.
PROBES: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("kdump", probe_kdump),
    ("flattened", probe_flattened),
    ("elf", probe_elf),
)


def probe_container(head: bytes) -> str | None:
    """The container kind of a file from its first bytes, or None."""
    for name, probe in PROBES:
        if probe(head):
            return name
    return None


def _open_kdump_part(path: str) -> tuple[str, KdumpContainer, FileSource]:
    src = FileSource(path)
    try:
        kind = probe_container(src.read_at(0, _HEAD))
        if kind == "kdump":
            return kind, KdumpContainer(src), src
        if kind == "flattened":
            flat = FlattenedSource(src)
            if probe_elf(flat.read_at(0, 64)):
                raise FormatError("a flattened ELF core cannot be part of a split set", path=path)
            return kind, KdumpContainer(flat), src
        if kind == "elf":
            raise FormatError("an ELF core cannot be part of a split set", path=path)
        raise FormatError("not a KDUMP, flattened or ELF dump", field="signature", offset=0, path=path)
    except BaseException:
        src.close()
        raise


def open_dump(path: str | os.PathLike[str], *more_parts: str | os.PathLike[str]) -> Dump:
    """Open a dump file; with several paths, open them as one split set (parts in any order)."""
    paths = tuple(os.fspath(p) for p in (path, *more_parts))
    if len(paths) > 1:
        opened: list[tuple[str, KdumpContainer, FileSource]] = []
        try:
            for p in paths:
                opened.append(_open_kdump_part(p))
            split = SplitContainer([c for _, c, _ in opened])
        except BaseException:
            for _, c, _ in opened:
                c.close()
            raise
        return Dump(paths, "split", split=split)
    src: Source = FileSource(paths[0])
    try:
        kind = probe_container(src.read_at(0, _HEAD))
        if kind == "kdump":
            return Dump(paths, "kdump", kdump=KdumpContainer(src))
        if kind == "flattened":
            flat = FlattenedSource(src)
            if probe_elf(flat.read_at(0, 64)):  # makedumpfile -F of an ELF input: the stream holds an ELF core
                note = "flattened stream of an ELF core (makedumpfile -F): read as its reassembled ELF"
                return Dump(paths, "elf", elf=ElfContainer(flat), problems=[*flat.problems, note])
            try:
                kdump = KdumpContainer(flat)
            except KdfixError as exc:
                raise exc.with_context(path=paths[0]) from None
            return Dump(paths, "flattened", kdump=kdump, problems=list(flat.problems))
        if kind == "elf":
            return Dump(paths, "elf", elf=ElfContainer(src))
        if src.size == 0:
            raise FormatError("empty file", path=paths[0])
        refuse_unsupported(src.read_at(0, _HEAD))
        if src.read_at(0, 13) == FLAT_SIGNATURE + b"\0":  # flattened signature, bad header: name the field
            FlattenedSource(src)
        raise FormatError("not a KDUMP, flattened or ELF dump", field="signature", offset=0, path=paths[0])
    except KdfixError as exc:
        src.close()
        raise exc.with_context(path=paths[0]) from None
    except BaseException:
        src.close()
        raise
