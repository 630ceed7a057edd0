"""Kernel data the synthetic Linux image carries for readers that walk it, laid out as Linux 6.1 on x86_64.

- The lockless printk ring (arch-kernels-and-introspection.md §4.1-§4.5): ``prb`` → ``printk_rb_static``, its
  descriptor, info and text arrays, records logged in order from the kernel's initial ids and positions.
- SPARSEMEM_EXTREME (§6.2): the ``mem_section`` root array, the sections, and a vmemmap ``struct page`` array,
  which makedumpfile needs to tell the memory model before it reads anything (``get_mem_map``).

Each builder returns the bytes to store at given virtual addresses plus the VMCOREINFO lines that describe them,
with the values the 6.1 x86_64 kernel exports (§4.1 64-bit column, §6.2, §6.7).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WORD = 8  # x86_64 unsigned long
U64 = (1 << 64) - 1

# §4.1, 64-bit values (Linux 6.1)
PRINTK_KEYS: dict[str, int] = {
    "SIZE(printk_ringbuffer)": 88, "OFFSET(printk_ringbuffer.desc_ring)": 0,
    "OFFSET(printk_ringbuffer.text_data_ring)": 48, "OFFSET(printk_ringbuffer.fail)": 80,
    "SIZE(prb_desc_ring)": 48, "OFFSET(prb_desc_ring.count_bits)": 0, "OFFSET(prb_desc_ring.descs)": 8,
    "OFFSET(prb_desc_ring.infos)": 16, "OFFSET(prb_desc_ring.head_id)": 24, "OFFSET(prb_desc_ring.tail_id)": 32,
    "SIZE(prb_desc)": 24, "OFFSET(prb_desc.state_var)": 0, "OFFSET(prb_desc.text_blk_lpos)": 8,
    "SIZE(prb_data_blk_lpos)": 16, "OFFSET(prb_data_blk_lpos.begin)": 0, "OFFSET(prb_data_blk_lpos.next)": 8,
    "SIZE(printk_info)": 88, "OFFSET(printk_info.seq)": 0, "OFFSET(printk_info.ts_nsec)": 8,
    "OFFSET(printk_info.text_len)": 16, "OFFSET(printk_info.caller_id)": 20, "OFFSET(printk_info.dev_info)": 24,
    "SIZE(dev_printk_info)": 64, "OFFSET(dev_printk_info.subsystem)": 0, "LENGTH(printk_info_subsystem)": 16,
    "OFFSET(dev_printk_info.device)": 16, "LENGTH(printk_info_device)": 48,
    "SIZE(prb_data_ring)": 32, "OFFSET(prb_data_ring.size_bits)": 0, "OFFSET(prb_data_ring.data)": 8,
    "OFFSET(prb_data_ring.head_lpos)": 16, "OFFSET(prb_data_ring.tail_lpos)": 24,
    "SIZE(atomic_long_t)": 8, "OFFSET(atomic_long_t.counter)": 0,
    "SIZE(latched_seq)": 24, "OFFSET(latched_seq.val)": 8,
}  # fmt: skip
FACILITY_AT, FLAGS_LEVEL_AT = 18, 19  # §4.1: u8 facility, then flags:5 | level:3
LOG_NEWLINE = 2  # §4.5
STATE_FINALIZED, STATE_REUSABLE = 2, 3  # §4.3 step 5

# §6.2 / the measured 6.1 x86_64 VMCOREINFO: 4-level paging, 128 MiB sections
SECTION_SIZE_BITS = 27
MAX_PHYSMEM_BITS = 46
PAGE_SHIFT = 12
SIZE_PAGE = 64  # SIZE(page)
OFF_PAGE_REFCOUNT = 52  # OFFSET(page._refcount)
SIZE_MEM_SECTION = 16
PAGES_PER_SECTION = 1 << (SECTION_SIZE_BITS - PAGE_SHIFT)
SECTIONS_PER_ROOT = 4096 // SIZE_MEM_SECTION
NR_SECTION_ROOTS = (1 << (MAX_PHYSMEM_BITS - SECTION_SIZE_BITS)) // SECTIONS_PER_ROOT  # LENGTH(mem_section)
ROOT_ARRAY_SIZE = NR_SECTION_ROOTS * WORD
SECTION_FLAGS = 0xF  # MARKED_PRESENT | HAS_MEM_MAP | IS_ONLINE | IS_EARLY (§6.2 step 5)
VMEMMAP_BASE = 0xFFFFEA0000000000  # vmemmap_base without memory KASLR
MEMMAP_SECTION_BYTES = PAGES_PER_SECTION * SIZE_PAGE  # one section's struct pages: 2 MiB


@dataclass(frozen=True)
class LogRecord:
    """One kernel log message as printk stores it."""

    text: str
    ts_nsec: int = 0
    level: int = 6
    caller_id: int = 1  # task 1 (a CPU context would set bit 31)


@dataclass(frozen=True)
class Placed:
    """Bytes to store at kernel virtual addresses, and the VMCOREINFO lines that let readers find them."""

    blobs: dict[int, bytes]
    vmcoreinfo: tuple[str, ...]


def _u(value: int, width: int = WORD) -> bytes:
    return (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")


def _put(buf: bytearray, off: int, value: int, width: int = WORD) -> None:
    buf[off : off + width] = _u(value, width)


def printk_ring(records: Sequence[LogRecord], *, prb: int, rb: int, clear_seq: int, descs: int, infos: int,
                data: int, count_bits: int, size_bits: int) -> Placed:  # fmt: skip
    """The static ring at ``rb`` with ``records`` logged in order (no wrap: they must fit), ``prb`` pointing at it.

    Initial values as the kernel's (§4.4 step 4): descriptor ids from ``DESC0_ID = -(count + 1)``, text positions
    from ``BLK0_LPOS = -size``; unused slots are zero but for the last, which holds ``DESC0_ID`` reusable.
    """
    k = PRINTK_KEYS
    bits = 8 * WORD
    id_mask = U64 & ~(3 << (bits - 2))
    count, size = 1 << count_bits, 1 << size_bits
    if len(records) > count:
        raise ValueError(f"{len(records)} records do not fit {count} descriptors")
    desc0 = -(count + 1) & id_mask
    desc_buf = bytearray(count * k["SIZE(prb_desc)"])
    info_buf = bytearray(count * k["SIZE(printk_info)"])
    text_buf = bytearray(size)
    last = (count - 1) * k["SIZE(prb_desc)"]
    _put(desc_buf, last + k["OFFSET(prb_desc.state_var)"], STATE_REUSABLE << (bits - 2) | desc0)
    lpos = -size & U64
    desc_id = desc0
    for seq, rec in enumerate(records):
        desc_id = (desc_id + 1) & id_mask
        text = rec.text.encode()
        need = (WORD + len(text) + WORD - 1) // WORD * WORD
        begin, nxt = lpos, (lpos + need) & U64
        start = begin & (size - 1)
        if start + need > size:
            raise ValueError("records do not fit the text ring")
        text_buf[start : start + WORD + len(text)] = _u(desc_id) + text
        slot = desc_id & (count - 1)
        d = slot * k["SIZE(prb_desc)"]
        _put(desc_buf, d + k["OFFSET(prb_desc.state_var)"], STATE_FINALIZED << (bits - 2) | desc_id)
        lp = d + k["OFFSET(prb_desc.text_blk_lpos)"]
        _put(desc_buf, lp + k["OFFSET(prb_data_blk_lpos.begin)"], begin)
        _put(desc_buf, lp + k["OFFSET(prb_data_blk_lpos.next)"], nxt)
        i = slot * k["SIZE(printk_info)"]
        _put(info_buf, i + k["OFFSET(printk_info.seq)"], seq, 8)
        _put(info_buf, i + k["OFFSET(printk_info.ts_nsec)"], rec.ts_nsec, 8)
        _put(info_buf, i + k["OFFSET(printk_info.text_len)"], len(text), 2)
        info_buf[i + FLAGS_LEVEL_AT] = rec.level << 5 | LOG_NEWLINE
        _put(info_buf, i + k["OFFSET(printk_info.caller_id)"], rec.caller_id, 4)
        lpos = nxt
    head_id = desc_id if records else desc0
    tail_id = (desc0 + 1) & id_mask if records else desc0
    rb_buf = bytearray(k["SIZE(printk_ringbuffer)"])

    def put(off: int, value: int, width: int = WORD) -> None:
        _put(rb_buf, off, value, width)

    dr, tr = k["OFFSET(printk_ringbuffer.desc_ring)"], k["OFFSET(printk_ringbuffer.text_data_ring)"]
    counter = k["OFFSET(atomic_long_t.counter)"]
    put(dr + k["OFFSET(prb_desc_ring.count_bits)"], count_bits, 4)
    put(dr + k["OFFSET(prb_desc_ring.descs)"], descs)
    put(dr + k["OFFSET(prb_desc_ring.infos)"], infos)
    put(dr + k["OFFSET(prb_desc_ring.head_id)"] + counter, head_id)
    put(dr + k["OFFSET(prb_desc_ring.tail_id)"] + counter, tail_id)
    put(tr + k["OFFSET(prb_data_ring.size_bits)"], size_bits, 4)
    put(tr + k["OFFSET(prb_data_ring.data)"], data)
    put(tr + k["OFFSET(prb_data_ring.head_lpos)"] + counter, lpos)
    put(tr + k["OFFSET(prb_data_ring.tail_lpos)"] + counter, -size)
    lines = (f"SYMBOL(prb)={prb:x}", f"SYMBOL(printk_rb_static)={rb:x}", f"SYMBOL(clear_seq)={clear_seq:x}",
             *(f"{key}={value}" for key, value in k.items()))  # fmt: skip
    blobs = {prb: _u(rb), rb: bytes(rb_buf), clear_seq: bytes(k["SIZE(latched_seq)"]), descs: bytes(desc_buf),
             infos: bytes(info_buf), data: bytes(text_buf)}  # fmt: skip
    return Placed(blobs, lines)


def memmap_size(ram_pfns: int) -> int:
    """Bytes of struct pages for the sections that hold ``ram_pfns`` pages of RAM (whole sections, as vmemmap
    populates them)."""
    return -(-ram_pfns // PAGES_PER_SECTION) * MEMMAP_SECTION_BYTES


def sparse_mem_map(ram_pfns: int, *, root: int, sections: int) -> Placed:
    """SPARSEMEM_EXTREME for RAM ``[0, ram_pfns)``: the root array at ``root`` (``SYMBOL(mem_section)``, the
    array's address as since 4.15), section pages from ``sections`` (one 4 KiB page per root used), and the
    vmemmap struct pages at ``VMEMMAP_BASE`` — every RAM page in use (``_refcount`` 1), the rest of a section zero.

    The caller maps ``VMEMMAP_BASE`` (``memmap_size(ram_pfns)`` bytes) and both addresses in its page tables.
    """
    nsec = -(-ram_pfns // PAGES_PER_SECTION)
    roots = -(-nsec // SECTIONS_PER_ROOT)
    if roots > NR_SECTION_ROOTS:
        raise ValueError(f"{ram_pfns} pages exceed MAX_PHYSMEM_BITS {MAX_PHYSMEM_BITS}")
    root_buf = bytearray(ROOT_ARRAY_SIZE)
    section_buf = bytearray(roots * 4096)
    for r in range(roots):
        root_buf[r * WORD : (r + 1) * WORD] = _u(sections + r * 4096)
    for nr in range(nsec):
        # the kernel stores mem_map - section_start_pfn (§6.2 step 6): for vmemmap that is VMEMMAP_BASE
        off = nr * SIZE_MEM_SECTION
        section_buf[off : off + WORD] = _u(VMEMMAP_BASE | SECTION_FLAGS)
    pages = bytearray(memmap_size(ram_pfns))
    one = _u(1, 4)
    for pfn in range(ram_pfns):
        at = pfn * SIZE_PAGE + OFF_PAGE_REFCOUNT
        pages[at : at + 4] = one
    lines = (
        f"SYMBOL(mem_section)={root:x}",
        f"LENGTH(mem_section)={NR_SECTION_ROOTS}",
        f"SIZE(mem_section)={SIZE_MEM_SECTION}",
        "OFFSET(mem_section.section_mem_map)=0",
        f"NUMBER(SECTION_SIZE_BITS)={SECTION_SIZE_BITS}",
        f"NUMBER(MAX_PHYSMEM_BITS)={MAX_PHYSMEM_BITS}",
        f"OFFSET(page._refcount)={OFF_PAGE_REFCOUNT}",
    )
    return Placed({root: bytes(root_buf), sections: bytes(section_buf), VMEMMAP_BASE: bytes(pages)}, lines)


__all__ = ["PRINTK_KEYS", "VMEMMAP_BASE", "LogRecord", "Placed", "memmap_size", "printk_ring", "sparse_mem_map"]
