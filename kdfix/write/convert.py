"""Convert between containers and codecs: kdump ↔ flattened ↔ split ↔ ELF, keeping every page unless told.

``dump_level`` filters as makedumpfile's ``-d`` does: bit 1 by page contents (zero pages share the zero page
in KDUMP output, are left out of ELF), bits 2/4/8/16 by the kernel's struct pages (kdfix.kernel.pageflags).

Defaults keep the input as it is: its container, codec, dump_level and shared-zero-page style, and its
header phys_base and utsname. When the codec does not change, stored pages pass through undecoded, so a
flattened file converted with ``flat=False`` is byte-identical to ``makedumpfile -R`` of it.

An ELF input has no KDUMP header, so its utsname is chosen as every writer chooses it (kdfix.write.utsname:
the kernel's init_uts_ns, else VMCOREINFO's OSRELEASE and the architecture's machine); ``utsname="auto"`` does the
same for a KDUMP input whose utsname is not sane (libkdumpfile, and so drgn, needs it to tell the architecture).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import struct
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kdfix.arch import recognise
from kdfix.errors import UnsupportedError
from kdfix.format.constants import MAX_DUMP_LEVEL, NOTE_NAME_ERASEINFO, DumpLevel
from kdfix.format.kdump import PAGE_DESC, PAGE_DESC_SIZE
from kdfix.model import DumpModel
from kdfix.read.flattened import reassembles
from kdfix.read.probe import open_dump
from kdfix.write.atomic import atomic_output
from kdfix.write.elf import LoadSegment, write_elf
from kdfix.write.flattened import reassemble
from kdfix.write.kdump import Progress, WriteResult, write_kdump
from kdfix.write.passthrough import iter_stored_pages
from kdfix.write.recheck import recheck
from kdfix.write.split import write_split
from kdfix.write.utsname import choose_utsname, with_utsname

if TYPE_CHECKING:
    from kdfix.kernel.pageflags import Exclusion
    from kdfix.read.dump import Dump

TARGETS = ("kdump", "elf")
UTSNAME_MODES = ("auto", "keep")
DEFAULT_CODEC = "zlib"
COUNT_BATCH = 1 << 16  # descriptors read at once when counting the pages of a reassembled file


@dataclass(frozen=True)
class ConvertResult:
    """What ``convert`` did."""

    inputs: tuple[str, ...]
    input_container: str
    outputs: tuple[str, ...]
    container: str  # kdump, flattened, split, split-flattened or elf
    codec: str  # "none" for ELF
    bytes: int
    pages: int
    zero_pages: int
    raw_pages: int
    compressed_pages: int
    passthrough: bool
    seconds: float
    utsname: str = ""  # where the header utsname came from, or why it was kept ("" for ELF output)
    messages: tuple[str, ...] = ()
    dump_level: int | None = None  # the level asked for (None: the input's kept)
    excluded: dict[str, int] | None = None  # pages dropped per struct-page class (kdfix.kernel.pageflags)
    page_pass_seconds: float | None = None


def split_names(output: str | os.PathLike[str], parts: int) -> list[str]:
    """Names of the parts of a split output: OUT.1 … OUT.N."""
    base = os.fspath(output)
    return [f"{base}.{i}" for i in range(1, parts + 1)]


def _uses_zero_page(dump: Dump) -> bool:
    """True if any descriptor of the input points at a shared zero page (kdump-format.md §7)."""
    return any(part.zero_page_offsets() for part in dump.kdump_parts)


def convert(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    to: str | None = None,
    codec: str | None = None,
    flat: bool | None = None,
    split: int | None = None,
    dump_level: int | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    recheck_pages: int | str = "all",
    utsname: str | None = None,
) -> ConvertResult:
    """Convert the dump ``inputs`` (several = a split set) to ``output`` (``split``: OUT.1..OUT.N), atomically.

    The output is reopened and checked before it replaces anything: every page (``recheck_pages`` "all"), or
    about that many pages spread over the file (``kdfix fix``, which then checks what it changed itself).
    ``utsname``: "auto" fills a header utsname that is not sane, "keep" keeps the input's; default auto for an
    ELF input, keep for a KDUMP one (a container change keeps its header, as ``makedumpfile -R`` does).
    """
    began = time.monotonic()
    paths = tuple(os.fspath(p) for p in inputs)
    if dump_level is not None and not 0 <= dump_level <= MAX_DUMP_LEVEL:
        raise UnsupportedError(f"dump level {dump_level} is not 0..{MAX_DUMP_LEVEL}", field="dump_level")
    if utsname not in (None, *UTSNAME_MODES):
        raise UnsupportedError(f"utsname mode {utsname!r}: choose auto or keep", field="utsname")
    with open_dump(*paths) as dump:
        in_kdump = dump.container != "elf"
        to = to or ("kdump" if in_kdump else "elf")
        if to not in TARGETS:
            raise UnsupportedError(f"unknown output format {to!r}; choose kdump or elf")
        exclusion = None
        if dump_level is not None and dump_level & ~DumpLevel.EXCLUDE_ZERO:
            from kdfix.kernel.pageflags import dump_exclusion  # numpy and the kernel view, only when filtering

            exclusion = dump_exclusion(dump, dump_level)
        exclude = exclusion.excluded if exclusion is not None else None
        if to == "elf":
            if codec not in (None, "none") or flat or split:
                raise UnsupportedError("ELF output has no compression, flattening or split")
            result = _write_elf_output(dump, paths[0], output, dump_level, exclude, progress, recheck_pages)
            return _result(paths, dump.container, (os.fspath(output),), "elf", "none", result, False, began,
                           exclusion=exclusion)  # fmt: skip

        in_codec = dump.compression if in_kdump else None
        codec = codec or in_codec or DEFAULT_CODEC
        flat = (dump.container == "flattened") if flat is None else flat
        model, zero_page = _kdump_model(dump, dump_level)
        model, uts_source, messages = _choose_utsname(dump, model, utsname or ("keep" if in_kdump else "auto"))
        passthrough = in_kdump and codec == in_codec
        if model.utsname == dump.model.utsname and _is_reassembly(dump, to, passthrough, flat, split, dump_level):
            with atomic_output(output, mode_from=paths[0]) as tmp:
                size = reassemble(paths[0], tmp)
                os.truncate(tmp, size)
                recheck(tmp, pages=recheck_pages, what="the converted file")
            counts = _stored_counts(dump.kdump)
            return ConvertResult(paths, dump.container, (os.fspath(output),), "kdump", codec, size, *counts, True,
                                 round(time.monotonic() - began, 3), uts_source, messages)  # fmt: skip
        options = dict(
            codec=codec,
            flat=flat,
            zero_page=zero_page,
            workers=workers,
            progress=progress,
            page_source=iter_stored_pages(dump.memory) if passthrough else None,
            phys_base_from_vmcoreinfo=not in_kdump,
            exclude=exclude,
        )
        if split:
            names = split_names(output, split)
            with contextlib.ExitStack() as stack:
                tmps = [stack.enter_context(atomic_output(n, mode_from=paths[0])) for n in names]
                result = write_split(tmps, model, dump.memory, **options)  # type: ignore[arg-type]
                recheck(tmps, pages=recheck_pages, what="the converted split set")
            outputs, kind = tuple(names), "split-flattened" if flat else "split"
        else:
            with atomic_output(output, mode_from=paths[0]) as tmp:
                result = write_kdump(tmp, model, dump.memory, **options)  # type: ignore[arg-type]
                recheck(tmp, pages=recheck_pages, what="the converted file")
            outputs, kind = (os.fspath(output),), "flattened" if flat else "kdump"
        return _result(paths, dump.container, outputs, kind, codec, result, passthrough, began, uts_source,
                       messages, exclusion=exclusion)  # fmt: skip


def _write_elf_output(dump: Any, mode_from: str, output: str | os.PathLike[str], dump_level: int | None,
                      exclude: Any, progress: Progress | None, recheck_pages: int | str) -> WriteResult:  # fmt: skip
    """The ELF output, atomically and rechecked: an ELF input keeps its PT_LOADs unless pages are left out."""
    zero = bool(dump_level is not None and dump_level & DumpLevel.EXCLUDE_ZERO)
    segments = None
    if dump.elf is not None and not zero and exclude is None:
        segments = [LoadSegment(s.paddr, s.vaddr, s.memsz) for s in dump.elf.segments]
    with atomic_output(output, mode_from=mode_from) as tmp:
        result = write_elf(tmp, dump.model, dump.memory, progress=progress, segments=segments, exclude_zero=zero,
                           exclude=exclude)  # fmt: skip
        recheck(tmp, pages=recheck_pages, what="the converted file")
    return result


def _kdump_model(dump: Any, dump_level: int | None) -> tuple[DumpModel, bool]:
    """The model a KDUMP output is written from, and whether its zero pages share the zero page.

    A KDUMP input keeps what it left out (its dump_level bits) and adds ``dump_level``'s. An ELF input gets
    QEMU's choice (dump_level 1, zero pages kept and sharing the zero page) unless told otherwise, loses its
    eraseinfo note, and gets the header layout its architecture's makedumpfile and crash read (32-bit on i386,
    arch-kernels-and-introspection.md §2.6), not the ELF class QEMU happened to write.
    """
    model: DumpModel = dump.model
    if dump.container != "elf":
        zero_page = _uses_zero_page(dump) if dump_level is None else bool(dump_level & DumpLevel.EXCLUDE_ZERO)
        if dump_level is not None:
            # pages the input left out stay out (its bits are kept), but zero pages are stored again without bit 1
            kept = model.dump_level & ~DumpLevel.EXCLUDE_ZERO
            model = dataclasses.replace(model, dump_level=int(kept | dump_level))
        return model, zero_page
    level = DumpLevel.EXCLUDE_ZERO if dump_level is None else dump_level
    notes = tuple(n for n in model.notes if n.name != NOTE_NAME_ERASEINFO)
    model = dataclasses.replace(model, dump_level=int(level), notes=notes)
    found = recognise(model)
    if found is not None:
        model = dataclasses.replace(model, abi=found.arch.kdump_abi(model.abi.byte_order))
    return model, bool(level & DumpLevel.EXCLUDE_ZERO)


def _choose_utsname(dump: Any, model: DumpModel, mode: str) -> tuple[DumpModel, str, tuple[str, ...]]:
    """(model, where its utsname comes from, messages): "auto" fills a utsname that is not sane
    (write/utsname.choose_utsname), "keep" keeps the input's."""
    if mode != "auto":
        return model, "kept (the input's)", ()
    choice = choose_utsname(model, dump.memory)
    model = with_utsname(model, choice)
    if choice.changes:
        return model, choice.source, tuple(choice.messages)
    return model, f"kept ({choice.source})", (*choice.messages, f"utsname kept: {choice.source}")


def _is_reassembly(dump: object, to: str, passthrough: bool, flat: bool, split: int | None,
                   dump_level: int | None) -> bool:  # fmt: skip
    """True when the output is exactly the flattened input's reassembled file (``makedumpfile -R``, kdump-format.md
    §11): same codec, container kdump, nothing excluded, and a complete stream (bytes no record wrote read as zero in
    both). Its records are then copied as
    they are, in large writes, instead of page by page."""
    if to != "kdump" or not passthrough or flat or split or dump_level is not None:
        return False
    return reassembles(dump)


def _stored_counts(container: object) -> tuple[int, int, int, int]:
    """(pages, zero, raw, compressed) of a KDUMP container, from its descriptor table read in batches."""
    part: Any = container
    total = part.dumped.count()
    desc = PAGE_DESC.bind(part.abi).struct
    zero_offsets = part.zero_page_offsets()
    # a layout that reads as {i64 offset, u32 size, u32 flags, u64 page_flags} in this machine's byte order (LP64
    # little-endian dumps here) is counted with strided arrays at C speed; any other through struct
    probe = desc.pack(-2, 3, 5, 7) if desc.size == PAGE_DESC_SIZE == 24 else b""
    strided = bool(probe) and array("q", probe)[0] == -2 and array("I", probe).tolist()[2:4] == [3, 5]
    zero = unflagged = 0
    for first in range(0, total, COUNT_BATCH):
        n = min(COUNT_BATCH, total - first)
        raw = part.source.read_at(part.data_offset + PAGE_DESC_SIZE * first, PAGE_DESC_SIZE * n)
        raw = raw[: len(raw) - len(raw) % PAGE_DESC_SIZE]
        if strided:
            offsets, flags = array("q", raw)[0::3], array("I", raw)[3::6]
            zero += sum(offsets.count(z) for z in zero_offsets)
            unflagged += flags.count(0)
        else:
            for offset, _size, flag, _ in struct.iter_unpack(desc.format, raw):
                zero += offset in zero_offsets
                unflagged += not flag
    return total, zero, unflagged - zero, total - unflagged


def _result(
    inputs: tuple[str, ...],
    input_container: str,
    outputs: tuple[str, ...],
    container: str,
    codec: str,
    result: WriteResult,
    passthrough: bool,
    began: float,
    utsname: str = "",
    messages: tuple[str, ...] = (),
    *,
    exclusion: Exclusion | None = None,
) -> ConvertResult:
    return ConvertResult(
        inputs=inputs,
        input_container=input_container,
        outputs=outputs,
        container=container,
        codec=codec,
        bytes=sum(os.path.getsize(p) for p in outputs),
        pages=result.pages,
        zero_pages=result.zero_pages,
        raw_pages=result.raw_pages,
        compressed_pages=result.compressed_pages,
        passthrough=passthrough,
        seconds=round(time.monotonic() - began, 3),
        utsname=utsname,
        messages=messages,
        dump_level=exclusion.level if exclusion is not None else None,
        excluded=dict(exclusion.counts) if exclusion is not None else None,
        page_pass_seconds=exclusion.seconds if exclusion is not None else None,
    )
