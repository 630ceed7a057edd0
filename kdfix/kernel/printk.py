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


@dataclass(frozen=True)
class _PrbLayout:
    """Offsets and sizes of the ring's structures, all from VMCOREINFO (§4.1); None: the kernel has no such field."""

    rb_size: int
    off_desc_ring: int
    off_text_ring: int
    off_count_bits: int
    off_descs: int
    off_infos: int
    off_head_id: int
    off_tail_id: int
    desc_size: int
    off_state: int
    off_lpos: int
    off_begin: int
    off_next: int
    info_size: int
    off_seq: int
    off_text_len: int
    off_size_bits: int
    off_data: int
    off_counter: int
    off_ts: int
    off_caller: int | None
    off_dev: int | None
    off_subsys: int | None
    off_device: int | None
    len_subsys: str | None
    len_device: str | None
    off_fail: int | None

    @classmethod
    def of(cls, info: VmcoreInfo) -> _PrbLayout:
        k = _Keys(info)
        need = {
            name: k.get(kind, key)
            for name, kind, key in (
                ("rb_size", "SIZE", "printk_ringbuffer"),
                ("off_desc_ring", "OFFSET", "printk_ringbuffer.desc_ring"),
                ("off_text_ring", "OFFSET", "printk_ringbuffer.text_data_ring"),
                ("off_count_bits", "OFFSET", "prb_desc_ring.count_bits"),
                ("off_descs", "OFFSET", "prb_desc_ring.descs"),
                ("off_infos", "OFFSET", "prb_desc_ring.infos"),
                ("off_head_id", "OFFSET", "prb_desc_ring.head_id"),
                ("off_tail_id", "OFFSET", "prb_desc_ring.tail_id"),
                ("desc_size", "SIZE", "prb_desc"),
                ("off_state", "OFFSET", "prb_desc.state_var"),
                ("off_lpos", "OFFSET", "prb_desc.text_blk_lpos"),
                ("off_begin", "OFFSET", "prb_data_blk_lpos.begin"),
                ("off_next", "OFFSET", "prb_data_blk_lpos.next"),
                ("info_size", "SIZE", "printk_info"),
                ("off_seq", "OFFSET", "printk_info.seq"),
                ("off_text_len", "OFFSET", "printk_info.text_len"),
                ("off_size_bits", "OFFSET", "prb_data_ring.size_bits"),
                ("off_data", "OFFSET", "prb_data_ring.data"),
                ("off_counter", "OFFSET", "atomic_long_t.counter"),
            )
        }
        off_ts = info.offset("printk_info.ts_nsec")
        if off_ts is None:  # the ktime_timestamps variant (§4.1)
            off_ts = k.get("OFFSET", "printk_info.ts") + k.get("OFFSET", "ktime_timestamps.mono")
        k.check("printk ring buffer")
        return cls(
            **need,
            off_ts=off_ts,
            off_caller=info.offset("printk_info.caller_id"),
            off_dev=info.offset("printk_info.dev_info"),
            off_subsys=info.offset("dev_printk_info.subsystem"),
            off_device=info.offset("dev_printk_info.device"),
            len_subsys=info.get("LENGTH(printk_info_subsystem)"),
            len_device=info.get("LENGTH(printk_info_device)"),
            off_fail=info.offset("printk_ringbuffer.fail"),
        )


@dataclass
class _Ring:
    """The ring's three areas as read (unreadable pages zero-filled, their offsets in ``*_bad``) and its ids."""

    count: int
    size_bits: int
    head_id: int
    tail_id: int
    dropped: int
    descs: _Words
    infos: _Words
    data: bytes
    descs_bad: list[range]
    infos_bad: list[range]
    data_bad: list[range]
    damage: list[str]


def read_printk_ringbuffer(info: VmcoreInfo, mem: VirtualReader, *, word_size: int, endian: Endian) -> KernelLog:
    """Walk the lockless ring from its tail id to its head id (§4.3), decoding each text block (§4.4)."""
    prb_ptr = info.symbol("prb")
    if prb_ptr is None:
        raise UnsupportedError("VMCOREINFO has no SYMBOL(prb)")
    lay = _PrbLayout.of(info)
    bits = 8 * word_size
    id_mask = ((1 << bits) - 1) & ~(3 << (bits - 2))
    ring = _read_ring(lay, mem, prb_ptr, word_size, endian)
    damage = ring.damage
    tail_id, count = ring.tail_id, ring.count
    span = (ring.head_id - tail_id) & id_mask
    if span >= count:
        damage.append(f"head_id {ring.head_id:#x} and tail_id {tail_id:#x} are {span} ids apart in a ring of "
                      f"{count}: reading the last {count}")  # fmt: skip
        tail_id = (ring.head_id - count + 1) & id_mask
        span = count - 1
    records: list[LogRecord] = []
    skipped: dict[str, list[int]] = {}
    for step in range(span + 1):
        desc_id = (tail_id + step) & id_mask
        found = _decode_record(lay, ring, desc_id, word_size, id_mask)
        if isinstance(found, tuple):  # a record whose text the kernel lost: kept, and counted as damage
            records.append(found[0])
            skipped.setdefault(found[1], []).append(desc_id)
        elif isinstance(found, LogRecord):
            records.append(found)
        elif found is not None:
            skipped.setdefault(found, []).append(desc_id)
    for reason, ids in skipped.items():
        damage.append(f"{len(ids)} record(s) skipped, {reason}: ids {_id_list(ids)}")
    damage.extend(_sequence_gaps(records))
    overwritten = records[0].seq if records else 0
    return KernelLog("printk_ringbuffer", tuple(records), tuple(damage), overwritten, ring.dropped)


def _read_ring(lay: _PrbLayout, mem: VirtualReader, prb_ptr: int, word_size: int, endian: Endian) -> _Ring:
    """``*prb`` and its ring sizes (bounded before anything is allocated), then the three areas, tolerantly."""
    try:
        rb_vaddr = int.from_bytes(mem.read(prb_ptr, word_size), endian)
    except KdfixError as exc:
        raise exc.with_context(field="prb") from None
    try:
        rb = _Words(mem.read(rb_vaddr, lay.rb_size), word_size, endian)
    except KdfixError as exc:
        raise exc.with_context(field="*prb (struct printk_ringbuffer)") from None
    count_bits = rb.uint(lay.off_desc_ring + lay.off_count_bits, 4)
    size_bits = rb.uint(lay.off_text_ring + lay.off_size_bits, 4)
    if not 0 < count_bits <= MAX_DESC_BITS:
        raise FormatError(f"prb_desc_ring.count_bits at {rb_vaddr + lay.off_desc_ring + lay.off_count_bits:#x}: "
                          f"{count_bits} is not a ring size")  # fmt: skip
    if not 0 < size_bits <= MAX_DATA_BITS:
        raise FormatError(f"prb_data_ring.size_bits at {rb_vaddr + lay.off_text_ring + lay.off_size_bits:#x}: "
                          f"{size_bits} is not a ring size")  # fmt: skip
    count, data_size = 1 << count_bits, 1 << size_bits
    descs_vaddr = rb.word(lay.off_desc_ring + lay.off_descs)
    infos_vaddr = rb.word(lay.off_desc_ring + lay.off_infos)
    data_vaddr = rb.word(lay.off_text_ring + lay.off_data)
    damage: list[str] = []
    descs_raw, descs_bad = _read_tolerant(mem, descs_vaddr, count * lay.desc_size)
    infos_raw, infos_bad = _read_tolerant(mem, infos_vaddr, count * lay.info_size)
    data_raw, data_bad = _read_tolerant(mem, data_vaddr, data_size)
    for name, bad, base in (("descriptors", descs_bad, descs_vaddr), ("record infos", infos_bad, infos_vaddr),
                            ("text data", data_bad, data_vaddr)):  # fmt: skip
        if bad:
            damage.append(f"{name}: {sum(len(r) for r in bad)} bytes unreadable from {base + bad[0].start:#x}")
    return _Ring(
        count=count,
        size_bits=size_bits,
        head_id=rb.word(lay.off_desc_ring + lay.off_head_id + lay.off_counter),
        tail_id=rb.word(lay.off_desc_ring + lay.off_tail_id + lay.off_counter),
        dropped=rb.word(lay.off_fail + lay.off_counter) if lay.off_fail is not None else 0,
        descs=_Words(descs_raw, word_size, endian),
        infos=_Words(infos_raw, word_size, endian),
        data=data_raw,
        descs_bad=descs_bad,
        infos_bad=infos_bad,
        data_bad=data_bad,
        damage=damage,
    )


def _decode_record(
    lay: _PrbLayout, ring: _Ring, desc_id: int, word_size: int, id_mask: int
) -> LogRecord | tuple[LogRecord, str] | str | None:
    """Descriptor ``desc_id``'s record; a reason string when it is skipped; (record, reason) for a record whose
    text the kernel lost; None for a descriptor freed for reuse (§4.3 steps 5-6, §4.4)."""
    bits = 8 * word_size
    idx = desc_id & (ring.count - 1)
    d, i = idx * lay.desc_size, idx * lay.info_size
    if _overlaps(ring.descs_bad, d, d + lay.desc_size) or _overlaps(ring.infos_bad, i, i + lay.info_size):
        return "unreadable descriptor"
    sv = ring.descs.word(d + lay.off_state + lay.off_counter)
    state = (sv >> (bits - 2)) & 3
    if (sv & id_mask) != desc_id:
        return "descriptor id mismatch"
    if state == _STATE_REUSABLE:  # freed for reuse (the ring's initial tail is one): nothing lost
        return None
    if state != _STATE_COMMITTED and state != _STATE_FINALIZED:
        return "reserved (a writer was busy)"
    begin = ring.descs.word(d + lay.off_lpos + lay.off_begin)
    nxt = ring.descs.word(d + lay.off_lpos + lay.off_next)
    text_len = ring.infos.uint(i + lay.off_text_len, 2)
    dataless = bool(begin & 1 and nxt & 1)
    text = b""
    lost = None
    if dataless:
        if begin == 1 or nxt == 1:  # FAILED_LPOS: the kernel could not store the text
            lost = "text lost by the kernel (FAILED_LPOS)"
    else:
        block = _text_block(begin, nxt, ring.size_bits, (1 << bits) - 1)
        if block is None:
            return "illegal text block position"
        start, length = block
        if _overlaps(ring.data_bad, start, start + length):
            return "text in an unreadable page"
        usable = max(length - word_size, 0)
        text = ring.data[start + word_size : start + word_size + min(text_len, usable)]
    record = _record_at(lay, ring.infos, i, text, dataless)
    return record if lost is None else (record, lost)


def _record_at(lay: _PrbLayout, infos: _Words, i: int, text: bytes, dataless: bool) -> LogRecord:
    """The printk_info at ``i`` with its text; facility and flags:5/level:3 follow text_len (u16), not exported."""
    subsystem = device = ""
    if lay.off_dev is not None:
        dev = i + lay.off_dev
        if lay.off_subsys is not None and lay.len_subsys is not None:
            subsystem = _cstr(infos.data[dev + lay.off_subsys : dev + lay.off_subsys + int(lay.len_subsys)])
        if lay.off_device is not None and lay.len_device is not None:
            device = _cstr(infos.data[dev + lay.off_device : dev + lay.off_device + int(lay.len_device)])
    level_byte = infos.uint(i + lay.off_text_len + 3, 1)
    return LogRecord(
        seq=infos.uint(i + lay.off_seq, 8),
        ts_nsec=infos.uint(i + lay.off_ts, 8),
        level=level_byte >> 5,
        facility=infos.uint(i + lay.off_text_len + 2, 1),
        flags=level_byte & 0x1F,
        caller_id=infos.uint(i + lay.off_caller, 4) if lay.off_caller is not None else None,
        text=text,
        subsystem=subsystem,
        device=device,
        dataless=dataless,
    )


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


@dataclass(frozen=True)
class _LogLayout:
    """``struct printk_log`` of Linux 3.5-5.9 from VMCOREINFO (§4.6); ``off_caller`` None before 5.1."""

    hdr_size: int
    off_ts: int
    off_len: int
    off_text_len: int
    off_caller: int | None
    off_facility: int

    @classmethod
    def of(cls, info: VmcoreInfo, missing_symbols: list[str]) -> _LogLayout:
        k = _Keys(info)
        hdr_size = k.get("SIZE", "printk_log")
        off_ts = k.get("OFFSET", "printk_log.ts_nsec")
        off_len = k.get("OFFSET", "printk_log.len")
        off_text_len = k.get("OFFSET", "printk_log.text_len")
        k.missing[:0] = missing_symbols
        k.check("log_buf")
        off_dict_len = info.offset("printk_log.dict_len")
        # facility and flags:5/level:3 follow dict_len (u16), which follows text_len (§4.6)
        off_facility = (off_dict_len if off_dict_len is not None else off_text_len + 2) + 2
        return cls(hdr_size, off_ts, off_len, off_text_len, info.offset("printk_log.caller_id"), off_facility)

    def record_at(self, buf: _Words, pos: int, seq: int, text: bytes) -> LogRecord:
        level_byte = buf.uint(pos + self.off_facility + 1, 1)
        return LogRecord(
            seq=seq,
            ts_nsec=buf.uint(pos + self.off_ts, 8),
            level=level_byte >> 5,
            facility=buf.uint(pos + self.off_facility, 1),
            flags=level_byte & 0x1F,
            caller_id=buf.uint(pos + self.off_caller, 4) if self.off_caller is not None else None,
            text=text,
        )


def read_log_buf(info: VmcoreInfo, mem: VirtualReader, *, word_size: int, endian: Endian) -> KernelLog:
    """Walk the variable-length ``log_buf`` records of Linux 3.5-5.9 from log_first_idx to log_next_idx (§4.6)."""
    names = ("log_buf", "log_buf_len", "log_first_idx", "log_next_idx")
    addrs = {n: info.symbol(n) for n in names}
    lay = _LogLayout.of(info, [f"SYMBOL({n})" for n, a in addrs.items() if a is None])
    hdr_size, off_len, off_text_len = lay.hdr_size, lay.off_len, lay.off_text_len

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
            records.append(lay.record_at(buf, pos, seq, data[pos + hdr_size : pos + hdr_size + text_len]))
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
