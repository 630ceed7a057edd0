"""The kernel log in a dump: the lockless printk ring buffer (Linux ≥ 5.10) and the older ``log_buf`` records.

Layouts come from VMCOREINFO's SIZE/OFFSET keys (arch-kernels-and-introspection.md §4.1, §4.6), never from a
hard-coded struct.  A damaged ring is read as far as it is sound; what was skipped is listed in ``damage``.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from kdfix.errors import AddressError, FormatError, KdfixError, UnsupportedError
from kdfix.kernel.vmem import Endian, VirtualReader
from kdfix.notes.vmcoreinfo import VmcoreInfo

LEVEL_NAMES = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")
LOG_NEWLINE = 2  # printk_info.flags bits (kernel/printk/internal.h, §4.5)
LOG_CONT = 8
CALLER_CPU = 0x80000000  # caller_id bit 31: a CPU number, else a task pid (§4.5)

# desc_state (§4.3 step 5)
_STATE_RESERVED, _STATE_COMMITTED, _STATE_FINALIZED, _STATE_REUSABLE = 0, 1, 2, 3
# Bounds on values read from memory before anything is allocated from them: the kernel caps log_buf_len at 2^31
# and a ring has one descriptor per 2^PRB_AVGBITS text bytes (§4.2).
MAX_DATA_BITS = 31
MAX_DESC_BITS = 27
_PRINTABLE = frozenset(string.printable.encode())  # isprint() || isspace() in the C locale


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One printk record: ``ts_nsec`` is local_clock() ns since boot; ``text`` has no trailing newline."""

    seq: int
    ts_nsec: int
    level: int
    facility: int
    flags: int
    caller_id: int | None
    text: bytes
    subsystem: str = ""
    device: str = ""
    dataless: bool = False  # the kernel stored no text block (an empty line, or a failed allocation)

    @property
    def caller(self) -> str | None:
        """``T<pid>`` or ``C<cpu>`` as the kernel's CONFIG_PRINTK_CALLER prints it."""
        if self.caller_id is None:
            return None
        if self.caller_id & CALLER_CPU:
            return f"C{self.caller_id & ~CALLER_CPU}"
        return f"T{self.caller_id}"

    @property
    def level_name(self) -> str:
        return LEVEL_NAMES[self.level & 7]


@dataclass(frozen=True)
class KernelLog:
    """The records of the kernel log in sequence order, and what could not be read.

    ``layout`` is "printk_ringbuffer" or "log_buf"; ``overwritten`` counts records lost to the ring wrapping
    (the first surviving ``seq``), which is normal and not damage.
    """

    layout: str
    records: tuple[LogRecord, ...]
    damage: tuple[str, ...] = ()
    overwritten: int = 0
    dropped: int = 0  # messages the kernel itself could not store (printk_ringbuffer.fail)

    def select(self, *, since_seq: int | None = None, max_level: int | None = None) -> KernelLog:
        """The records with ``seq ≥ since_seq`` and ``level ≤ max_level`` (as severe or more)."""
        kept = tuple(
            r
            for r in self.records
            if (since_seq is None or r.seq >= since_seq) and (max_level is None or r.level <= max_level)
        )
        return KernelLog(self.layout, kept, self.damage, self.overwritten, self.dropped)


# ---- rendering --------------------------------------------------------------------------------------------------


def format_timestamp(ts_nsec: int) -> str:
    """``[%5llu.%06lu]`` of seconds and microseconds, as makedumpfile, crash and dmesg print it (§4.7)."""
    return f"[{ts_nsec // 1_000_000_000:5d}.{ts_nsec % 1_000_000_000 // 1000:06d}]"


def escape_text(text: bytes, indent: int) -> str:
    """Printable bytes and whitespace as they are, others as ``\\xNN``; a newline continues at ``indent``."""
    out: list[str] = []
    for byte in text:
        if byte == 0x0A:
            out.append("\n" + " " * indent)
        elif byte in _PRINTABLE:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def format_record(record: LogRecord, *, show_caller: bool = False, show_level: bool = False) -> str:
    """One record as ``makedumpfile --dump-dmesg`` prints it (§4.7), optionally with ``<level>`` and caller."""
    prefix = f"<{record.level}>" if show_level else ""
    prefix += format_timestamp(record.ts_nsec) + " "
    if show_caller and record.caller is not None:
        prefix += f"[{record.caller:>6}] "
    return prefix + escape_text(record.text, len(prefix))


def iter_lines(log: KernelLog, *, show_caller: bool = False, show_level: bool = False) -> Iterator[str]:
    """The printed lines; records without text are left out, as makedumpfile and crash leave them out."""
    for record in log.records:
        if not record.dataless:
            yield format_record(record, show_caller=show_caller, show_level=show_level)


# ---- reading ----------------------------------------------------------------------------------------------------


@dataclass
class _Keys:
    """Required VMCOREINFO numbers, each missing one named in the error."""

    info: VmcoreInfo
    missing: list[str] = field(default_factory=list)

    def get(self, kind: str, name: str) -> int:
        value = {"OFFSET": self.info.offset, "SIZE": self.info.size}[kind](name)
        if value is None:
            self.missing.append(f"{kind}({name})")
            return 0
        return value

    def check(self, what: str) -> None:
        if self.missing:
            raise UnsupportedError(f"VMCOREINFO lacks {', '.join(self.missing)}: cannot read the {what}")


def _read_tolerant(mem: VirtualReader, vaddr: int, size: int, chunk: int = 4096) -> tuple[bytes, list[range]]:
    """``size`` bytes at ``vaddr`` with unreadable pages zero-filled; returns the data and the bad offsets."""
    out = bytearray()
    bad: list[range] = []
    pos = 0
    while pos < size:
        take = min(chunk - (vaddr + pos) % chunk, size - pos)
        try:
            out += mem.read(vaddr + pos, take)
        except AddressError:
            out += bytes(take)
            if bad and bad[-1].stop == pos:
                bad[-1] = range(bad[-1].start, pos + take)
            else:
                bad.append(range(pos, pos + take))
        pos += take
    return bytes(out), bad


def _overlaps(bad: Iterable[range], start: int, stop: int) -> bool:
    return any(r.start < stop and start < r.stop for r in bad)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


class _Words:
    """Integer views of a byte buffer in the kernel's byte order."""

    def __init__(self, data: bytes, word_size: int, endian: Endian) -> None:
        self.data, self.word_size, self.endian = data, word_size, endian

    def uint(self, offset: int, size: int) -> int:
        return int.from_bytes(self.data[offset : offset + size], self.endian)

    def word(self, offset: int) -> int:
        return self.uint(offset, self.word_size)


def read_printk_ringbuffer(info: VmcoreInfo, mem: VirtualReader, *, word_size: int, endian: Endian) -> KernelLog:
    """Walk the lockless ring from its tail id to its head id (§4.3), decoding each text block (§4.4)."""
    prb_ptr = info.symbol("prb")
    if prb_ptr is None:
        raise UnsupportedError("VMCOREINFO has no SYMBOL(prb)")
    k = _Keys(info)
    rb_size = k.get("SIZE", "printk_ringbuffer")
    off_desc_ring = k.get("OFFSET", "printk_ringbuffer.desc_ring")
    off_text_ring = k.get("OFFSET", "printk_ringbuffer.text_data_ring")
    off_count_bits = k.get("OFFSET", "prb_desc_ring.count_bits")
    off_descs = k.get("OFFSET", "prb_desc_ring.descs")
    off_infos = k.get("OFFSET", "prb_desc_ring.infos")
    off_head_id = k.get("OFFSET", "prb_desc_ring.head_id")
    off_tail_id = k.get("OFFSET", "prb_desc_ring.tail_id")
    desc_size = k.get("SIZE", "prb_desc")
    off_state = k.get("OFFSET", "prb_desc.state_var")
    off_lpos = k.get("OFFSET", "prb_desc.text_blk_lpos")
    off_begin = k.get("OFFSET", "prb_data_blk_lpos.begin")
    off_next = k.get("OFFSET", "prb_data_blk_lpos.next")
    info_size = k.get("SIZE", "printk_info")
    off_seq = k.get("OFFSET", "printk_info.seq")
    off_text_len = k.get("OFFSET", "printk_info.text_len")
    off_size_bits = k.get("OFFSET", "prb_data_ring.size_bits")
    off_data = k.get("OFFSET", "prb_data_ring.data")
    off_counter = k.get("OFFSET", "atomic_long_t.counter")
    off_ts = info.offset("printk_info.ts_nsec")
    if off_ts is None:  # the ktime_timestamps variant (§4.1)
        off_ts = k.get("OFFSET", "printk_info.ts") + k.get("OFFSET", "ktime_timestamps.mono")
    k.check("printk ring buffer")
    off_caller = info.offset("printk_info.caller_id")
    off_dev = info.offset("printk_info.dev_info")
    off_subsys = info.offset("dev_printk_info.subsystem")
    off_device = info.offset("dev_printk_info.device")
    len_subsys = info.get("LENGTH(printk_info_subsystem)")
    len_device = info.get("LENGTH(printk_info_device)")
    off_fail = info.offset("printk_ringbuffer.fail")
    # facility and flags:5/level:3 follow text_len (u16) and are not exported (§4.1)
    off_facility, off_flags = off_text_len + 2, off_text_len + 3

    bits = 8 * word_size
    word_mask = (1 << bits) - 1
    id_mask = word_mask & ~(3 << (bits - 2))

    def word(vaddr: int, what: str) -> int:
        try:
            return int.from_bytes(mem.read(vaddr, word_size), endian)
        except KdfixError as exc:
            raise exc.with_context(field=what) from None

    rb_vaddr = word(prb_ptr, "prb")
    try:
        rb = _Words(mem.read(rb_vaddr, rb_size), word_size, endian)
    except KdfixError as exc:
        raise exc.with_context(field="*prb (struct printk_ringbuffer)") from None
    count_bits = rb.uint(off_desc_ring + off_count_bits, 4)
    size_bits = rb.uint(off_text_ring + off_size_bits, 4)
    if not 0 < count_bits <= MAX_DESC_BITS:
        raise FormatError(f"prb_desc_ring.count_bits at {rb_vaddr + off_desc_ring + off_count_bits:#x}: "
                          f"{count_bits} is not a ring size")  # fmt: skip
    if not 0 < size_bits <= MAX_DATA_BITS:
        raise FormatError(f"prb_data_ring.size_bits at {rb_vaddr + off_text_ring + off_size_bits:#x}: "
                          f"{size_bits} is not a ring size")  # fmt: skip
    count, data_size = 1 << count_bits, 1 << size_bits
    descs_vaddr = rb.word(off_desc_ring + off_descs)
    infos_vaddr = rb.word(off_desc_ring + off_infos)
    data_vaddr = rb.word(off_text_ring + off_data)
    head_id = rb.word(off_desc_ring + off_head_id + off_counter)
    tail_id = rb.word(off_desc_ring + off_tail_id + off_counter)
    dropped = rb.word(off_fail + off_counter) if off_fail is not None else 0

    damage: list[str] = []
    descs_raw, descs_bad = _read_tolerant(mem, descs_vaddr, count * desc_size)
    infos_raw, infos_bad = _read_tolerant(mem, infos_vaddr, count * info_size)
    data_raw, data_bad = _read_tolerant(mem, data_vaddr, data_size)
    for name, bad, base in (("descriptors", descs_bad, descs_vaddr), ("record infos", infos_bad, infos_vaddr),
                            ("text data", data_bad, data_vaddr)):  # fmt: skip
        if bad:
            damage.append(f"{name}: {sum(len(r) for r in bad)} bytes unreadable from {base + bad[0].start:#x}")
    descs = _Words(descs_raw, word_size, endian)
    infos = _Words(infos_raw, word_size, endian)

    span = (head_id - tail_id) & id_mask
    if span >= count:
        damage.append(f"head_id {head_id:#x} and tail_id {tail_id:#x} are {span} ids apart in a ring of {count}: "
                      f"reading the last {count}")  # fmt: skip
        tail_id = (head_id - count + 1) & id_mask
        span = count - 1

    records: list[LogRecord] = []
    skipped: dict[str, list[int]] = {}
    for step in range(span + 1):
        desc_id = (tail_id + step) & id_mask
        idx = desc_id & (count - 1)
        d, i = idx * desc_size, idx * info_size
        if _overlaps(descs_bad, d, d + desc_size) or _overlaps(infos_bad, i, i + info_size):
            skipped.setdefault("unreadable descriptor", []).append(desc_id)
            continue
        sv = descs.word(d + off_state + off_counter)
        state = (sv >> (bits - 2)) & 3
        if (sv & id_mask) != desc_id:
            skipped.setdefault("descriptor id mismatch", []).append(desc_id)
            continue
        if state == _STATE_REUSABLE:  # freed for reuse (the ring's initial tail is one): nothing lost
            continue
        if state != _STATE_COMMITTED and state != _STATE_FINALIZED:
            skipped.setdefault("reserved (a writer was busy)", []).append(desc_id)
            continue
        begin = descs.word(d + off_lpos + off_begin)
        nxt = descs.word(d + off_lpos + off_next)
        text_len = infos.uint(i + off_text_len, 2)
        dataless = bool(begin & 1 and nxt & 1)
        text = b""
        if dataless:
            if begin == 1 or nxt == 1:  # FAILED_LPOS: the kernel could not store the text
                skipped.setdefault("text lost by the kernel (FAILED_LPOS)", []).append(desc_id)
        else:
            block = _text_block(begin, nxt, size_bits, word_mask)
            if block is None:
                skipped.setdefault("illegal text block position", []).append(desc_id)
                continue
            start, length = block
            if _overlaps(data_bad, start, start + length):
                skipped.setdefault("text in an unreadable page", []).append(desc_id)
                continue
            usable = max(length - word_size, 0)
            text = data_raw[start + word_size : start + word_size + min(text_len, usable)]
        dev = i + off_dev if off_dev is not None else None
        subsystem = device = ""
        if dev is not None and off_subsys is not None and len_subsys is not None:
            subsystem = _cstr(infos_raw[dev + off_subsys : dev + off_subsys + int(len_subsys)])
        if dev is not None and off_device is not None and len_device is not None:
            device = _cstr(infos_raw[dev + off_device : dev + off_device + int(len_device)])
        level_byte = infos.uint(i + off_flags, 1)
        records.append(
            LogRecord(
                seq=infos.uint(i + off_seq, 8),
                ts_nsec=infos.uint(i + off_ts, 8),
                level=level_byte >> 5,
                facility=infos.uint(i + off_facility, 1),
                flags=level_byte & 0x1F,
                caller_id=infos.uint(i + off_caller, 4) if off_caller is not None else None,
                text=text,
                subsystem=subsystem,
                device=device,
                dataless=dataless,
            )
        )
    for reason, ids in skipped.items():
        damage.append(f"{len(ids)} record(s) skipped, {reason}: ids {_id_list(ids)}")
    damage.extend(_sequence_gaps(records))
    overwritten = records[0].seq if records else 0
    return KernelLog("printk_ringbuffer", tuple(records), tuple(damage), overwritten, dropped)


def _text_block(begin: int, nxt: int, size_bits: int, word_mask: int) -> tuple[int, int] | None:
    """(start index, size) of a text block in the data ring, or None if the positions are illegal (§4.4).

    Positions are ``unsigned long`` and overflow (``word_mask``): the wrap counts are compared, not the values.
    """
    size = 1 << size_bits
    if begin >> size_bits == nxt >> size_bits and begin < nxt:
        return begin & (size - 1), nxt - begin
    if ((begin + size) & word_mask) >> size_bits == nxt >> size_bits:
        return 0, nxt & (size - 1)
    return None


def _id_list(ids: list[int], limit: int = 8) -> str:
    shown = ", ".join(f"{i:#x}" for i in ids[:limit])
    return shown + (f", … ({len(ids) - limit} more)" if len(ids) > limit else "")


def _sequence_gaps(records: list[LogRecord]) -> list[str]:
    """Sequence numbers missing between surviving records (each one a lost or unreadable record)."""
    gaps = [(a.seq, b.seq) for a, b in itertools.pairwise(records) if b.seq != a.seq + 1]
    if not gaps:
        return []
    shown = ", ".join(f"{a + 1}-{b - 1}" if b - a > 2 else str(a + 1) for a, b in gaps[:8] if b > a)
    backwards = sum(1 for a, b in gaps if b <= a)
    text = [f"sequence numbers missing: {shown}"] if shown else []
    if backwards:
        text.append(f"{backwards} record(s) out of sequence order")
    return text


def read_log_buf(info: VmcoreInfo, mem: VirtualReader, *, word_size: int, endian: Endian) -> KernelLog:
    """Walk the variable-length ``log_buf`` records of Linux 3.5-5.9 from log_first_idx to log_next_idx (§4.6)."""
    names = ("log_buf", "log_buf_len", "log_first_idx", "log_next_idx")
    addrs = {n: info.symbol(n) for n in names}
    missing = [f"SYMBOL({n})" for n, a in addrs.items() if a is None]
    k = _Keys(info)
    hdr_size = k.get("SIZE", "printk_log")
    off_ts = k.get("OFFSET", "printk_log.ts_nsec")
    off_len = k.get("OFFSET", "printk_log.len")
    off_text_len = k.get("OFFSET", "printk_log.text_len")
    k.missing[:0] = missing
    k.check("log_buf")
    off_caller = info.offset("printk_log.caller_id")
    off_dict_len = info.offset("printk_log.dict_len")
    # facility and flags:5/level:3 follow dict_len (u16), which follows text_len (§4.6)
    off_facility = (off_dict_len if off_dict_len is not None else off_text_len + 2) + 2

    def u32(name: str) -> int:
        try:
            return int.from_bytes(mem.read(addrs[name] or 0, 4), endian)
        except KdfixError as exc:
            raise exc.with_context(field=name) from None

    try:
        buf_vaddr = int.from_bytes(mem.read(addrs["log_buf"] or 0, word_size), endian)
    except KdfixError as exc:
        raise exc.with_context(field="log_buf") from None
    buf_len, first, next_idx = u32("log_buf_len"), u32("log_first_idx"), u32("log_next_idx")
    if not 0 < buf_len <= 1 << MAX_DATA_BITS:
        raise FormatError(f"log_buf_len at {addrs['log_buf_len']:#x}: {buf_len} is not a buffer size")
    if first >= buf_len or next_idx >= buf_len:
        raise FormatError(f"log_first_idx {first} / log_next_idx {next_idx} outside log_buf_len {buf_len}")
    data, bad = _read_tolerant(mem, buf_vaddr, buf_len)
    buf = _Words(data, word_size, endian)
    damage = [f"log_buf: {sum(len(r) for r in bad)} bytes unreadable from {buf_vaddr + bad[0].start:#x}"] if bad else []
    records: list[LogRecord] = []
    pos, seq, wrapped = first, 0, False
    while pos != next_idx:
        if pos + hdr_size > buf_len or buf.uint(pos + off_len, 2) == 0:
            if wrapped:  # a second wrap: the chain never reaches log_next_idx
                damage.append(f"log_buf chain wraps twice without reaching log_next_idx {next_idx}")
                break
            pos, wrapped = 0, True
            continue
        length = buf.uint(pos + off_len, 2)
        text_len = buf.uint(pos + off_text_len, 2)
        if length < hdr_size or pos + length > buf_len or hdr_size + text_len > length:
            damage.append(f"log_buf record at offset {pos}: len {length}, text_len {text_len} do not fit: stopped")
            break
        if _overlaps(bad, pos, pos + length):
            damage.append(f"log_buf record at offset {pos} is in an unreadable page")
        else:
            level_byte = buf.uint(pos + off_facility + 1, 1)
            records.append(
                LogRecord(
                    seq=seq,
                    ts_nsec=buf.uint(pos + off_ts, 8),
                    level=level_byte >> 5,
                    facility=buf.uint(pos + off_facility, 1),
                    flags=level_byte & 0x1F,
                    caller_id=buf.uint(pos + off_caller, 4) if off_caller is not None else None,
                    text=data[pos + hdr_size : pos + hdr_size + text_len],
                )
            )
        seq += 1
        pos += length
        if pos == buf_len:
            pos, wrapped = 0, True
        if seq > buf_len // max(hdr_size, 1):
            damage.append("log_buf chain longer than the buffer can hold: stopped")
            break
    # log_buf sequence numbers are not stored per record; ours count from log_first_idx
    return KernelLog("log_buf", tuple(records), tuple(damage))


def read_kernel_log(info: VmcoreInfo, mem: VirtualReader, *, word_size: int, endian: Endian) -> KernelLog:
    """The kernel log, from whichever printk layout ``info`` describes (§4.1 lockless, else §4.6 log_buf)."""
    if info.symbol("prb") is not None:
        return read_printk_ringbuffer(info, mem, word_size=word_size, endian=endian)
    if info.symbol("log_buf") is not None:
        return read_log_buf(info, mem, word_size=word_size, endian=endian)
    raise UnsupportedError("VMCOREINFO has neither SYMBOL(prb) nor SYMBOL(log_buf): no kernel log to read")
