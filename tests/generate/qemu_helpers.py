"""Test helpers for QEMU-style generation: a QEMU-like ELF writer and an independent flattened-stream parser.

Both are written from qemu-dumps.md §2-§4 and kdump-format.md §11 without using kdfix's own writers, so the tests
do not check kdfix against itself.
"""

from __future__ import annotations

import struct
from pathlib import Path


def note(name: bytes, ntype: int, desc: bytes, *, pad_byte: int = 0) -> bytes:
    """One ELF note; ``pad_byte`` fills the desc padding (QEMU copies the guest's padding verbatim)."""
    n = name + b"\0"
    npad = (-len(n)) % 4
    dpad = (-len(desc)) % 4
    return struct.pack("<III", len(n), len(desc), ntype) + n + b"\0" * npad + desc + bytes([pad_byte]) * dpad


def prstatus_x86_64(pid: int, rip: int) -> bytes:
    desc = bytearray(336)
    struct.pack_into("<i", desc, 32, pid)
    struct.pack_into("<Q", desc, 240, rip)
    return bytes(desc)


def qemu_cpu_state(rip: int) -> bytes:
    desc = bytearray(440)
    struct.pack_into("<II", desc, 0, 1, 440)
    struct.pack_into("<Q", desc, 136, rip)
    return bytes(desc)


def qemu_notes(ncpus: int, vmcoreinfo: bytes | None = None, *, pad_byte: int = 0) -> bytes:
    blob = b"".join(note(b"CORE", 1, prstatus_x86_64(i + 1, 0xFFFFFFFF81000000 + i)) for i in range(ncpus))
    blob += b"".join(note(b"QEMU", 0, qemu_cpu_state(0xFFFFFFFF81000000 + i)) for i in range(ncpus))
    if vmcoreinfo is not None:
        blob += note(b"VMCOREINFO", 0, vmcoreinfo, pad_byte=pad_byte)
    return blob


def write_elf(path: Path, blocks: list[tuple[int, bytes]], notes: bytes, *, machine: int = 62) -> Path:
    """An ELF64 LE core: PT_NOTE then one PT_LOAD per (paddr, data) block, data after the headers."""
    phnum = 1 + len(blocks)
    off = 64 + 56 * phnum
    ehdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 4, machine, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0)
    phdrs = struct.pack("<IIQQQQQQ", 4, 0, off, 0, 0, len(notes), len(notes), 0)
    body = notes
    pos = off + len(notes)
    for paddr, data in blocks:
        phdrs += struct.pack("<IIQQQQQQ", 1, 0, pos, paddr, paddr, len(data), len(data), 0)
        body += data
        pos += len(data)
    path.write_bytes(ehdr + phdrs + body)
    return path


def parse_flat(data: bytes) -> list[tuple[int, bytes]]:
    """The records of a flattened stream; asserts the header and the end marker."""
    assert data[:16] == b"makedumpfile\0\0\0\0"
    assert struct.unpack(">qq", data[16:32]) == (1, 1)
    assert data[32:4096] == bytes(4064)
    pos = 4096
    records = []
    while True:
        off, size = struct.unpack(">qq", data[pos : pos + 16])
        pos += 16
        if off == -1 and size == -1:
            break
        assert off >= 0 and size > 0
        records.append((off, data[pos : pos + size]))
        pos += size
    assert pos == len(data), "bytes after the end marker"
    return records


def reassemble(records: list[tuple[int, bytes]]) -> bytes:
    end = max(off + len(d) for off, d in records)
    buf = bytearray(end)
    for off, d in records:
        buf[off : off + len(d)] = d
    return bytes(buf)


MAIN = struct.Struct("<8si390s6xqqIiiIIIIIIi")  # 64-bit disk_dump_header (kdump-format.md §3): 464 bytes
SUB = struct.Struct("<QiiQQqQqQqQQQQ")  # 64-bit kdump_sub_header v6 (kdump-format.md §4): 104 bytes


def headers(kdump: bytes) -> tuple[tuple, tuple]:
    """The main header and the sub header, which starts at block_size (field 6 of the main header)."""
    main = MAIN.unpack_from(kdump, 0)
    return main, SUB.unpack_from(kdump, main[6])


def pages_by_pfn(blocks: list[tuple[int, bytes]], page_size: int = 4096) -> dict[int, bytes]:
    """``{pfn: page}`` of page-aligned ``(paddr, data)`` blocks (the pages QEMU enumerates for them)."""
    pages = {}
    for paddr, data in blocks:
        assert paddr % page_size == 0 and len(data) % page_size == 0, "page-aligned blocks only"
        for i in range(len(data) // page_size):
            pages[paddr // page_size + i] = data[i * page_size : (i + 1) * page_size]
    return pages


def independent_units(pages: dict[int, bytes], page_size: int = 4096):
    """A stand-in for ``kdfix.generate.qemu_stream.compressed_units`` with no cache and no workers: every page is
    compressed on its own with ``zlib.compress(page, 1)`` (qemu-dumps.md §5: zero page → size 0, raw when the
    result is not smaller than a page). Only ``first_pfn``/``npages`` of the units are used."""
    import zlib
    from array import array

    zero = bytes(page_size)

    def compressed_units(units, **_kwargs):  # same call shape as the real one
        for unit in units:
            sizes = array("I")
            stored = []
            for pfn in range(unit.first_pfn, unit.first_pfn + unit.npages):
                page = pages.get(pfn, zero)
                if page == zero:
                    sizes.append(0)
                    continue
                packed = zlib.compress(page, 1)
                if len(packed) < page_size:
                    sizes.append(len(packed))
                    stored.append(packed)
                else:
                    sizes.append(page_size)
                    stored.append(page)
            yield sizes.tobytes(), b"".join(stored)

    return compressed_units
