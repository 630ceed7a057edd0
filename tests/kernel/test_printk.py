"""kdfix.kernel.printk: the lockless ring and log_buf read back what the test-side writers logged, damage is
reported instead of raised, and lines render as makedumpfile prints them (arch-kernels-and-introspection.md §4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdfix.errors import FormatError, UnsupportedError
from kdfix.kernel.printk import (
    KernelLog,
    LogRecord,
    format_record,
    iter_lines,
    read_kernel_log,
    read_log_buf,
    read_printk_ringbuffer,
)
from kdfix.notes.vmcoreinfo import VmcoreInfo
from tests.kernel.printk_writer import DATA_VADDR, Message, write_log_buf, write_ring


def _read(ring_or_info: object, memory: object, word: int = 8, endian: str = "little") -> KernelLog:
    info = VmcoreInfo.parse(ring_or_info)  # type: ignore[arg-type]
    return read_kernel_log(info, memory, word_size=word, endian=endian)  # type: ignore[arg-type]


def _fields(m: Message) -> tuple[object, ...]:
    return (m.text, m.ts_nsec, m.level, m.facility, m.flags, m.caller_id, m.subsystem.decode(), m.device.decode())


def _record_fields(r: LogRecord) -> tuple[object, ...]:
    return (r.text, r.ts_nsec, r.level, r.facility, r.flags, r.caller_id, r.subsystem, r.device)


def test_ring_reads_every_message_in_order() -> None:
    msgs = [Message(b"Linux version 6.1", 0, 5), Message(b"second", 1_500_000, 6, caller_id=0x80000001),
            Message(b"usb 1-1: new device", 2_000_000_123, 3, subsystem=b"usb", device=b"+usb:1-1")]  # fmt: skip
    ring = write_ring(msgs)
    log = _read(ring.vmcoreinfo, ring.memory)
    assert log.layout == "printk_ringbuffer" and log.damage == () and log.overwritten == 0
    assert [_record_fields(r) for r in log.records] == [_fields(m) for m in msgs]
    assert [r.seq for r in log.records] == [0, 1, 2]
    assert [r.caller for r in log.records] == ["T1", "C1", "T1"]


def test_wrapped_ring_keeps_the_newest_and_counts_the_lost() -> None:
    msgs = [Message(f"message number {i}".encode(), i * 1000) for i in range(100)]
    ring = write_ring(msgs, count_bits=4, size_bits=9)
    log = _read(ring.vmcoreinfo, ring.memory)
    assert log.damage == ()
    assert [r.text for r in log.records] == [m.text for m in ring.survivors]
    assert log.records[-1].text == b"message number 99"
    assert log.overwritten == ring.first_seq > 0


@given(
    texts=st.lists(st.binary(min_size=0, max_size=60), min_size=1, max_size=80),
    word=st.sampled_from([8, 4]),
    count_bits=st.integers(2, 6),
    size_bits=st.integers(8, 11),
    first_id=st.integers(0, 2**30 - 1) | st.none(),
    first_lpos=st.integers(0, 2**32 - 1) | st.none(),
    endian=st.sampled_from(["little", "big"]),
)
def test_ring_roundtrip(texts: list[bytes], word: int, count_bits: int, size_bits: int, first_id: int | None,
                        first_lpos: int | None, endian: str) -> None:  # fmt: skip
    """Any sequence of messages, any ring geometry, id and lpos start (overflow included): the survivors come
    back with their seq, and records with empty text are data-less only when the writer gave them no block."""
    msgs = [Message(t, ts_nsec=i * 7919, level=i % 8, caller_id=i) for i, t in enumerate(texts)]
    ring = write_ring(msgs, word=word, count_bits=count_bits, size_bits=size_bits, first_id=first_id,
                      first_lpos=None if first_lpos is None else first_lpos * word, endian=endian)  # fmt: skip
    log = _read(ring.vmcoreinfo, ring.memory, word, endian)
    assert log.damage == ()
    assert [_record_fields(r) for r in log.records] == [_fields(m) for m in ring.survivors]
    assert [r.seq for r in log.records] == list(range(ring.first_seq, len(msgs)))


def test_reserved_and_mismatched_descriptors_are_skipped_and_reported() -> None:
    msgs = [Message(f"m{i}".encode(), i) for i in range(6)]
    ring = write_ring(msgs, count_bits=4)
    mem = ring.memory.segments
    base = next(a for a in mem if a <= ring.state_vaddrs[2] < a + len(mem[a]))
    at = ring.state_vaddrs[2] - base
    sv = int.from_bytes(mem[base][at : at + 8], "little")
    mem[base][at : at + 8] = (sv & ~(3 << 62)).to_bytes(8, "little")  # state 0: reserved
    at4 = ring.state_vaddrs[4] - base
    mem[base][at4 : at4 + 8] = ((2 << 62) | 12345).to_bytes(8, "little")  # id mismatch
    log = _read(ring.vmcoreinfo, ring.memory)
    assert [r.text for r in log.records] == [b"m0", b"m1", b"m3", b"m5"]
    assert any("reserved" in d and f"{ring.ids[2]:#x}" in d for d in log.damage)
    assert any("mismatch" in d and f"{ring.ids[4]:#x}" in d for d in log.damage)
    assert any("missing: 2" in d for d in log.damage)


def test_unreadable_text_page_loses_only_its_records() -> None:
    msgs = [Message(b"x" * 100 + str(i).encode(), i) for i in range(60)]
    ring = write_ring(msgs, count_bits=6, size_bits=13)
    ring.memory.holes = {DATA_VADDR + 4096}
    log = _read(ring.vmcoreinfo, ring.memory)
    assert log.damage and any("text data" in d for d in log.damage)
    assert any("unreadable page" in d for d in log.damage)
    read_back = [r.text for r in log.records]
    assert 0 < len(read_back) < len(msgs)
    assert all(t in {m.text for m in msgs} for t in read_back)


def test_implausible_ring_geometry_is_a_format_error() -> None:
    ring = write_ring([Message(b"a")])
    rb = ring.memory.segments[0x2000]
    rb[0:4] = (200).to_bytes(4, "little")  # count_bits
    with pytest.raises(FormatError, match="count_bits"):
        _read(ring.vmcoreinfo, ring.memory)


def test_missing_layout_keys_are_named() -> None:
    ring = write_ring([Message(b"a")])
    text = b"\n".join(line for line in ring.vmcoreinfo.split(b"\n") if not line.startswith(b"SIZE(prb_desc)"))
    with pytest.raises(UnsupportedError, match=r"SIZE\(prb_desc\)"):
        read_printk_ringbuffer(VmcoreInfo.parse(text), ring.memory, word_size=8, endian="little")
    with pytest.raises(UnsupportedError, match="neither"):
        _read(b"OSRELEASE=1\n", ring.memory)


def test_log_buf_with_wrap_and_caller() -> None:
    msgs = [Message(f"old style {i}".encode(), i * 10**9 + 5000, level=i % 8, caller_id=0x80000000 | i)
            for i in range(12)]  # fmt: skip
    memory, info = write_log_buf(msgs, buf_len=512, first=300)
    log = _read(info, memory)
    assert log.layout == "log_buf" and log.damage == ()
    assert [_record_fields(r)[:6] for r in log.records] == [_fields(m)[:6] for m in msgs]


@given(texts=st.lists(st.binary(max_size=40), max_size=30), caller=st.booleans(), first=st.integers(0, 60))
def test_log_buf_roundtrip(texts: list[bytes], caller: bool, first: int) -> None:
    msgs = [Message(t, ts_nsec=i, level=i % 8) for i, t in enumerate(texts)]
    memory, info = write_log_buf(msgs, buf_len=2048, caller=caller, first=first * 8)
    log = read_log_buf(VmcoreInfo.parse(info), memory, word_size=8, endian="little")
    assert [r.text for r in log.records] == texts
    assert all(r.caller_id is None for r in log.records) is not caller or not texts


def test_log_buf_bad_record_length_stops_with_damage() -> None:
    msgs = [Message(b"good"), Message(b"bad"), Message(b"never")]
    memory, info = write_log_buf(msgs)
    buf = memory.segments[0x8000]
    buf[32 + 8 : 32 + 10] = (9).to_bytes(2, "little")  # 2nd record's len < header size
    log = _read(info, memory)
    assert [r.text for r in log.records] == [b"good"]
    assert log.damage and "len 9" in log.damage[0]


def _rec(text: bytes, ts: int = 1_234_567_891, **kw: object) -> LogRecord:
    return LogRecord(seq=0, ts_nsec=ts, level=6, facility=0, flags=2, caller_id=kw.pop("caller_id", 7), text=text,
                     **kw)  # type: ignore[arg-type]  # fmt: skip


def test_format_matches_makedumpfile_rules() -> None:
    """§4.7: "[%5llu.%06lu] ", newline → newline + indent, non-printable → \\xNN, tab kept."""
    assert format_record(_rec(b"hello")) == "[    1.234567] hello"
    assert format_record(_rec(b"a\nb", ts=123456 * 10**9)) == "[123456.000000] a\n                b"
    assert format_record(_rec(b"\x01x\ty\x7f\xe9")) == "[    1.234567] \\x01x\ty\\x7f\\xe9"
    assert format_record(_rec(b"hi"), show_caller=True, show_level=True) == "<6>[    1.234567] [    T7] hi"


def test_lines_leave_out_dataless_records() -> None:
    log = KernelLog("printk_ringbuffer", (_rec(b"a"), _rec(b"", dataless=True), _rec(b"")))
    assert list(iter_lines(log)) == ["[    1.234567] a", "[    1.234567] "]


def test_select_by_seq_and_level() -> None:
    recs = tuple(LogRecord(i, i, i % 8, 0, 0, None, b"t") for i in range(16))
    log = KernelLog("printk_ringbuffer", recs)
    assert [r.seq for r in log.select(since_seq=10).records] == [10, 11, 12, 13, 14, 15]
    assert [r.seq for r in log.select(max_level=1).records] == [0, 1, 8, 9]
