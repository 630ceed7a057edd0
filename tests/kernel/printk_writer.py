"""Test-side writers of kernel log memory: a lockless printk ring and a ``log_buf``, laid out from the reference
tables (arch-kernels-and-introspection.md §4.1, §4.2, §4.4, §4.6), with the VMCOREINFO that describes them."""

from __future__ import annotations

from dataclasses import dataclass, field

from kdfix.errors import AddressError

# §4.1: 64-bit / 32-bit Linux 6.1 values, as the kernel exports them. kdfix.generate.kernel_data holds the 64-bit
# ones too; this copy is the reference table on the test side, so the reader's tests do not rest on the generator.
RING_KEYS = {
    8: {
        "SIZE(printk_ringbuffer)": 88, "OFFSET(printk_ringbuffer.desc_ring)": 0,
        "OFFSET(printk_ringbuffer.text_data_ring)": 48, "OFFSET(printk_ringbuffer.fail)": 80,
        "SIZE(prb_desc_ring)": 48, "OFFSET(prb_desc_ring.count_bits)": 0, "OFFSET(prb_desc_ring.descs)": 8,
        "OFFSET(prb_desc_ring.infos)": 16, "OFFSET(prb_desc_ring.head_id)": 24, "OFFSET(prb_desc_ring.tail_id)": 32,
        "SIZE(prb_desc)": 24, "OFFSET(prb_desc.state_var)": 0, "OFFSET(prb_desc.text_blk_lpos)": 8,
        "SIZE(prb_data_blk_lpos)": 16, "OFFSET(prb_data_blk_lpos.begin)": 0, "OFFSET(prb_data_blk_lpos.next)": 8,
        "SIZE(prb_data_ring)": 32, "OFFSET(prb_data_ring.size_bits)": 0, "OFFSET(prb_data_ring.data)": 8,
        "OFFSET(prb_data_ring.head_lpos)": 16, "OFFSET(prb_data_ring.tail_lpos)": 24,
        "SIZE(atomic_long_t)": 8, "OFFSET(atomic_long_t.counter)": 0,
    },
    4: {
        "SIZE(printk_ringbuffer)": 44, "OFFSET(printk_ringbuffer.desc_ring)": 0,
        "OFFSET(printk_ringbuffer.text_data_ring)": 24, "OFFSET(printk_ringbuffer.fail)": 40,
        "SIZE(prb_desc_ring)": 24, "OFFSET(prb_desc_ring.count_bits)": 0, "OFFSET(prb_desc_ring.descs)": 4,
        "OFFSET(prb_desc_ring.infos)": 8, "OFFSET(prb_desc_ring.head_id)": 12, "OFFSET(prb_desc_ring.tail_id)": 16,
        "SIZE(prb_desc)": 12, "OFFSET(prb_desc.state_var)": 0, "OFFSET(prb_desc.text_blk_lpos)": 4,
        "SIZE(prb_data_blk_lpos)": 8, "OFFSET(prb_data_blk_lpos.begin)": 0, "OFFSET(prb_data_blk_lpos.next)": 4,
        "SIZE(prb_data_ring)": 16, "OFFSET(prb_data_ring.size_bits)": 0, "OFFSET(prb_data_ring.data)": 4,
        "OFFSET(prb_data_ring.head_lpos)": 8, "OFFSET(prb_data_ring.tail_lpos)": 12,
        "SIZE(atomic_long_t)": 4, "OFFSET(atomic_long_t.counter)": 0,
    },
}  # fmt: skip
INFO_KEYS = {
    "SIZE(printk_info)": 88, "OFFSET(printk_info.seq)": 0, "OFFSET(printk_info.ts_nsec)": 8,
    "OFFSET(printk_info.text_len)": 16, "OFFSET(printk_info.caller_id)": 20, "OFFSET(printk_info.dev_info)": 24,
    "SIZE(dev_printk_info)": 64, "OFFSET(dev_printk_info.subsystem)": 0, "OFFSET(dev_printk_info.device)": 16,
    "LENGTH(printk_info_subsystem)": 16, "LENGTH(printk_info_device)": 48,
}  # fmt: skip
FACILITY_AT, LEVEL_AT = 18, 19  # §4.1: after text_len (u16)

PRB_SYMBOL = 0x1000  # &prb
RB_VADDR = 0x2000
DESCS_VADDR = 0x10_0000
INFOS_VADDR = 0x20_0000
DATA_VADDR = 0x40_0000


class SegmentMemory:
    """A VirtualReader over {vaddr: bytes} segments; ``holes`` are page-sized ranges that raise AddressError."""

    def __init__(self, segments: dict[int, bytes], holes: tuple[int, ...] = ()) -> None:
        self.segments = {a: bytearray(b) for a, b in segments.items()}
        self.holes = set(holes)

    def read(self, vaddr: int, size: int) -> bytes:
        for page in range(vaddr // 4096, (vaddr + size - 1) // 4096 + 1):
            if page * 4096 in self.holes:
                raise AddressError(f"hole at {page * 4096:#x}")
        for base, data in self.segments.items():
            if base <= vaddr and vaddr + size <= base + len(data):
                return bytes(data[vaddr - base : vaddr - base + size])
        raise AddressError(f"unmapped {vaddr:#x}+{size:#x}")


@dataclass
class Message:
    """What a test logs: the expected record fields."""

    text: bytes
    ts_nsec: int = 0
    level: int = 6
    facility: int = 0
    flags: int = 2
    caller_id: int = 1
    subsystem: bytes = b""
    device: bytes = b""


@dataclass
class Ring:
    """The written ring: memory, VMCOREINFO text, the surviving messages, and the first surviving seq."""

    memory: SegmentMemory
    vmcoreinfo: bytes
    survivors: list[Message]
    first_seq: int
    ids: list[int] = field(default_factory=list)  # descriptor id of each survivor
    state_vaddrs: list[int] = field(default_factory=list)  # address of each survivor's state_var


def write_ring(
    messages: list[Message], *, word: int = 8, count_bits: int = 4, size_bits: int = 10, first_id: int | None = None,
    first_lpos: int | None = None, fail: int = 0, endian: str = "little",
) -> Ring:  # fmt: skip
    """Log ``messages`` into a fresh ring as the kernel does, overwriting the oldest when full."""
    bits = word * 8
    mask = (1 << bits) - 1
    id_mask = mask & ~(3 << (bits - 2))
    count, size = 1 << count_bits, 1 << size_bits
    keys = RING_KEYS[word]
    # kernel defaults: DESC0_ID = -(count + 1), BLK0_LPOS = -size (§4.4 step 4)
    next_id = ((first_id if first_id is not None else -(count + 1)) + 1) & id_mask
    lpos = (first_lpos if first_lpos is not None else -size) & mask
    blocks: list[tuple[int, int, int]] = []  # (id, begin, next) of every message
    for msg in messages:
        need = (word + len(msg.text) + word - 1) // word * word
        if need > size // 2:
            raise ValueError("message too long for the test ring")
        begin = lpos
        nxt = begin + need
        if begin >> size_bits != nxt >> size_bits:  # wraps (even when it ends on the boundary): data at index 0
            nxt = (nxt >> size_bits << size_bits) + need
        blocks.append((next_id, begin & mask, nxt & mask))
        lpos = nxt & mask
        next_id = (next_id + 1) & id_mask
    head_lpos = lpos
    # the oldest messages whose descriptor or data was overwritten are gone
    first = 0
    while first < len(blocks) and (len(blocks) - first > count or ((head_lpos - blocks[first][1]) & mask) > size):
        first += 1
    descs = bytearray(count * keys["SIZE(prb_desc)"])
    infos = bytearray(count * INFO_KEYS["SIZE(printk_info)"])
    data = bytearray(size)
    # untouched slots hold the initial reusable state with a non-matching id
    for slot in range(count):
        sv = (3 << (bits - 2)) | ((-(count + 1) - slot) & id_mask)
        descs[slot * keys["SIZE(prb_desc)"] : slot * keys["SIZE(prb_desc)"] + word] = sv.to_bytes(word, endian)
    ids, state_vaddrs = [], []
    for k, (msg, (desc_id, begin, nxt)) in enumerate(zip(messages, blocks, strict=True)):
        if k < first:
            continue
        slot = desc_id & (count - 1)
        d = slot * keys["SIZE(prb_desc)"]
        sv = (2 << (bits - 2)) | desc_id  # finalized
        descs[d : d + word] = sv.to_bytes(word, endian)
        lp = d + keys["OFFSET(prb_desc.text_blk_lpos)"]
        descs[lp : lp + word] = begin.to_bytes(word, endian)
        descs[lp + word : lp + 2 * word] = nxt.to_bytes(word, endian)
        start = 0 if begin >> size_bits != nxt >> size_bits else begin & (size - 1)
        block = desc_id.to_bytes(word, endian) + msg.text
        data[start : start + len(block)] = block
        i = slot * INFO_KEYS["SIZE(printk_info)"]
        infos[i : i + 8] = (k + 0).to_bytes(8, endian)  # seq = index in `messages`
        infos[i + 8 : i + 16] = msg.ts_nsec.to_bytes(8, endian)
        infos[i + 16 : i + 18] = len(msg.text).to_bytes(2, endian)
        infos[i + FACILITY_AT] = msg.facility
        infos[i + LEVEL_AT] = msg.level << 5 | msg.flags
        infos[i + 20 : i + 24] = msg.caller_id.to_bytes(4, endian)
        infos[i + 24 : i + 24 + len(msg.subsystem)] = msg.subsystem
        infos[i + 40 : i + 40 + len(msg.device)] = msg.device
        ids.append(desc_id)
        state_vaddrs.append(DESCS_VADDR + d)
    head_id = blocks[-1][0] if blocks else (next_id - 1) & id_mask
    tail_id = blocks[first][0] if first < len(blocks) else head_id
    rb = bytearray(keys["SIZE(printk_ringbuffer)"])

    def put(off: int, value: int, width: int = word) -> None:
        rb[off : off + width] = value.to_bytes(width, endian)

    dr, tr = keys["OFFSET(printk_ringbuffer.desc_ring)"], keys["OFFSET(printk_ringbuffer.text_data_ring)"]
    put(dr + keys["OFFSET(prb_desc_ring.count_bits)"], count_bits, 4)
    put(dr + keys["OFFSET(prb_desc_ring.descs)"], DESCS_VADDR)
    put(dr + keys["OFFSET(prb_desc_ring.infos)"], INFOS_VADDR)
    put(dr + keys["OFFSET(prb_desc_ring.head_id)"], head_id)
    put(dr + keys["OFFSET(prb_desc_ring.tail_id)"], tail_id)
    put(tr + keys["OFFSET(prb_data_ring.size_bits)"], size_bits, 4)
    put(tr + keys["OFFSET(prb_data_ring.data)"], DATA_VADDR)
    put(tr + keys["OFFSET(prb_data_ring.head_lpos)"], head_lpos)
    put(keys["OFFSET(printk_ringbuffer.fail)"], fail)
    memory = SegmentMemory({
        PRB_SYMBOL: RB_VADDR.to_bytes(word, endian), RB_VADDR: bytes(rb), DESCS_VADDR: bytes(descs),
        INFOS_VADDR: bytes(infos), DATA_VADDR: bytes(data),
    })  # fmt: skip
    text = "OSRELEASE=6.1.0-test\nPAGESIZE=4096\n" + f"SYMBOL(prb)={PRB_SYMBOL:x}\n"
    text += "".join(f"{k}={v}\n" for k, v in {**keys, **INFO_KEYS}.items())
    return Ring(memory, text.encode(), messages[first:], first, ids, state_vaddrs)


LOG_BUF_PTR, LOG_BUF_LEN_SYM, LOG_FIRST_IDX, LOG_NEXT_IDX = 0x1000, 0x1010, 0x1018, 0x1020
LOG_BUF_VADDR = 0x8000


def write_log_buf(messages: list[Message], *, buf_len: int = 4096, caller: bool = True, first: int = 0,
                  word: int = 8) -> tuple[SegmentMemory, bytes]:  # fmt: skip
    """Lay ``messages`` into a pre-5.10 ``log_buf`` starting at offset ``first`` (§4.6); returns memory, VMCOREINFO."""
    hdr = 24 if caller else 16
    buf = bytearray(buf_len)
    pos = first
    for msg in messages:
        length = (hdr + len(msg.text) + 7) // 8 * 8
        if pos + length > buf_len:  # a zero len at the old position means "wrap to 0"
            buf[pos + 8 : pos + 10] = bytes(2) if pos + 10 <= buf_len else b""
            pos = 0
        rec = bytearray(length)
        rec[0:8] = msg.ts_nsec.to_bytes(8, "little")
        rec[8:10] = length.to_bytes(2, "little")
        rec[10:12] = len(msg.text).to_bytes(2, "little")
        rec[14] = msg.facility
        rec[15] = msg.level << 5 | msg.flags
        if caller:
            rec[16:20] = msg.caller_id.to_bytes(4, "little")
        rec[hdr : hdr + len(msg.text)] = msg.text
        buf[pos : pos + length] = rec
        pos += length
    memory = SegmentMemory({
        LOG_BUF_PTR: LOG_BUF_VADDR.to_bytes(word, "little"), LOG_BUF_LEN_SYM: buf_len.to_bytes(4, "little"),
        LOG_FIRST_IDX: first.to_bytes(4, "little"), LOG_NEXT_IDX: pos.to_bytes(4, "little"),
        LOG_BUF_VADDR: bytes(buf),
    })  # fmt: skip
    text = (f"OSRELEASE=4.19.0\nSYMBOL(log_buf)={LOG_BUF_PTR:x}\nSYMBOL(log_buf_len)={LOG_BUF_LEN_SYM:x}\n"
            f"SYMBOL(log_first_idx)={LOG_FIRST_IDX:x}\nSYMBOL(log_next_idx)={LOG_NEXT_IDX:x}\n"
            f"SIZE(printk_log)={hdr}\nOFFSET(printk_log.ts_nsec)=0\nOFFSET(printk_log.len)=8\n"
            "OFFSET(printk_log.text_len)=10\nOFFSET(printk_log.dict_len)=12\n")  # fmt: skip
    if caller:
        text += "OFFSET(printk_log.caller_id)=16\n"
    return memory, text.encode()
