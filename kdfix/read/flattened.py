"""FlattenedSource: serves the reassembled file of a makedumpfile flattened stream (kdump-format.md §11).

One pass over the record headers builds a sorted, non-overlapping extent index (last write wins, as
``makedumpfile -R`` replays the records); reads are answered from it, holes read as zero.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import itertools
import operator
import os
from array import array
from collections.abc import Iterator

from kdfix.errors import FormatError
from kdfix.format.constants import FLAT_HEADER_SIZE, FLAT_SIGNATURE, FLAT_TYPE
from kdfix.format.flattened import FLAT_HEADER_BOUND, FLAT_RECORD_BOUND, FLAT_RECORD_SIZE
from kdfix.read.source import Source, read_exact, source_path

_RECORD = FLAT_RECORD_BOUND.struct
_HEADER_BATCH = 1 << 20  # bytes of stream read at once while scanning small records
_LARGE_RECORD = 4096  # payload size from which the next record header is read on its own
MAX_LOGICAL_SIZE = 1 << 62  # offset + size beyond this cannot be a real file


def probe_flattened(head: bytes) -> bool:
    """True if ``head`` starts with the flattened signature and type 1 (crash's strncmp of 13 bytes)."""
    if len(head) < FLAT_HEADER_BOUND.size:
        return False
    if head[:13] != FLAT_SIGNATURE + b"\0":
        return False
    return FLAT_HEADER_BOUND.unpack(head).type == FLAT_TYPE


def reassembles(dump: object) -> bool:
    """True for a complete flattened stream read without problems: its reassembled file is the dump as read."""
    if getattr(dump, "container", None) != "flattened" or getattr(dump, "problems", None):
        return False
    source = getattr(getattr(dump, "kdump", None), "source", None)
    return bool(getattr(source, "end_marker", False))


class FlattenedSource:
    """A Source answering reads of the reassembled file from the records of a flattened stream.

    ``problems`` lists what is wrong but survivable (missing end marker, last record cut short).
    Memory use is proportional to the number of records, not to the file size.
    """

    def __init__(self, stream: Source) -> None:
        self.stream = stream
        self.path = source_path(stream)
        self.problems: list[str] = []
        self.record_count = 0
        self.end_marker = False
        self._starts = array("q")
        self._ends = array("q")
        self._src = array("q")
        self._index()

    def _index(self) -> None:
        head = read_exact(self.stream, 0, FLAT_HEADER_BOUND.size, field="flat_header")
        if head[:13] != FLAT_SIGNATURE + b"\0":
            raise FormatError("not a flattened stream (no makedumpfile signature)", field="flat_header.signature",
                              offset=0)  # fmt: skip
        hdr = FLAT_HEADER_BOUND.unpack(head)
        if hdr.type != FLAT_TYPE:
            raise FormatError(f"type {hdr.type} is not {FLAT_TYPE}", field="flat_header.type",
                              offset=FLAT_HEADER_BOUND.offset_of("type"))  # fmt: skip
        # (logical start, size, stream offset of payload) per record, in three arrays: 24 bytes a record, not a
        # tuple of three ints (about 160), so a stream of many records is indexed in little memory
        offsets, sizes, payloads = array("q"), array("q"), array("q")
        put_offset, put_size, put_payload = offsets.append, sizes.append, payloads.append
        unpack_from, read = _RECORD.unpack_from, self.stream.read_at
        fileno = getattr(self.stream, "fileno", None)
        fd, pread = (fileno() if fileno is not None else None), os.pread  # one header: a bare pread
        size = self.stream.size
        pos = FLAT_HEADER_SIZE
        buf = b""
        buf_start = pos
        large = False  # the last record's payload was large
        while True:
            if pos + FLAT_RECORD_SIZE > size:
                if pos < size:
                    self.problems.append(f"flattened stream truncated inside a record header at {pos:#x}")
                self.problems.append("flattened stream has no end marker (truncated)")
                break
            if large:  # after a large record read just the next header: batches would read every payload too
                raw = pread(fd, FLAT_RECORD_SIZE, pos) if fd is not None else b""
                offset, buf_size = unpack_from(raw if len(raw) == FLAT_RECORD_SIZE else read(pos, FLAT_RECORD_SIZE))
            else:
                rel = pos - buf_start
                if rel < 0 or rel + FLAT_RECORD_SIZE > len(buf):
                    buf_start = pos
                    buf = read(pos, _HEADER_BATCH)
                    rel = 0
                offset, buf_size = unpack_from(buf, rel)
            payload = pos + FLAT_RECORD_SIZE
            end = payload + buf_size
            if offset >= 0 and buf_size > 0 and offset + buf_size <= MAX_LOGICAL_SIZE and end <= size:
                put_offset(offset)  # the common case: one comparison chain
                put_size(buf_size)
                put_payload(payload)
                pos = end
                large = buf_size >= _LARGE_RECORD
                continue
            if offset == -1 and buf_size == -1:
                self.end_marker = True
                if pos + FLAT_RECORD_SIZE < size:
                    self.problems.append(
                        f"{size - pos - FLAT_RECORD_SIZE:#x} bytes after the end marker at {pos:#x} ignored"
                    )
                break
            if offset < 0:
                raise FormatError(f"negative record offset {offset}", field="flat_record.offset", offset=pos)
            if buf_size <= 0:
                raise FormatError(f"record size {buf_size} is not positive", field="flat_record.buf_size",
                                  offset=pos + 8)  # fmt: skip
            if offset + buf_size > MAX_LOGICAL_SIZE:
                raise FormatError(f"record {offset:#x}+{buf_size:#x} is beyond any file size",
                                  field="flat_record.buf_size", offset=pos + 8)  # fmt: skip
            avail = size - payload
            self.problems.append(
                f"flattened stream truncated: record at {pos:#x} declares {buf_size:#x} bytes, "
                f"{max(avail, 0):#x} present; no end marker"
            )
            if avail > 0:
                put_offset(offset)
                put_size(avail)
                put_payload(payload)
            break
        self.record_count = len(offsets)
        self._build(offsets, sizes, payloads)

    def _build(self, offsets: array[int], sizes: array[int], payloads: array[int]) -> None:
        """Turn the records into disjoint extents, each byte taken from the last record that wrote it.

        Records that do not overlap (QEMU's and makedumpfile's streams: QEMU interleaves its descriptor and data
        records) are the extents as they are, sorted by offset. Otherwise a sweep over the sorted record
        boundaries with a heap of the open records keyed by record number: O(n log n) whatever the overlap (a
        stream may rewrite any byte any number of times).
        """
        starts, lengths, srcs = offsets, sizes, payloads
        if not all(map(operator.le, offsets, offsets[1:])):  # not ascending: sorted copies
            order = sorted(range(len(offsets)), key=offsets.__getitem__)
            starts = array("q", [offsets[i] for i in order])
            lengths = array("q", [sizes[i] for i in order])
            srcs = array("q", [payloads[i] for i in order])
            del order
        ends = array("q", map(operator.add, starts, lengths))
        if all(map(operator.le, ends, starts[1:])):  # each record ends where or before the next one starts
            self._starts, self._ends, self._src = starts, ends, srcs
            self.size = max(ends, default=0)
            return
        del starts, lengths, srcs, ends
        self._sweep(list(zip(offsets, sizes, payloads, strict=True)))  # in stream order: the last write wins

    def _sweep(self, records: list[tuple[int, int, int]]) -> None:
        """The extents of records that overlap (see _build): each byte from the last record that wrote it."""
        starts, ends, srcs = self._starts, self._ends, self._src
        order = sorted(range(len(records)), key=records.__getitem__)  # by logical start (ties: overlap anyway)
        points = sorted({r[0] for r in records} | {r[0] + r[1] for r in records})
        open_records: list[tuple[int, int]] = []  # (-record number, end): the heap top is the last write
        k = 0
        for here, there in itertools.pairwise(points):
            while k < len(order) and records[order[k]][0] == here:
                i = order[k]
                heapq.heappush(open_records, (-i, records[i][0] + records[i][1]))
                k += 1
            while open_records and open_records[0][1] <= here:
                heapq.heappop(open_records)
            if not open_records:
                continue
            start, _, src = records[-open_records[0][0]]
            piece_src = src + here - start
            if ends and ends[-1] == here and srcs[-1] + (here - starts[-1]) == piece_src:
                ends[-1] = there  # the same record continues (or one contiguous in the stream)
                continue
            starts.append(here)
            ends.append(there)
            srcs.append(piece_src)
        self.size = max(ends, default=0)

    @property
    def extent_count(self) -> int:
        return len(self._starts)

    def iter_extents(self) -> Iterator[tuple[int, int, int]]:
        """The index: (logical start, logical end, stream offset) in ascending order."""
        return zip(self._starts, self._ends, self._src, strict=True)

    @functools.cached_property
    def has_holes(self) -> bool:
        """True if some byte below ``size`` was written by no record (a lost record, or a sparse stream)."""
        if not self._starts:
            return False
        return self._starts[0] > 0 or any(a < b for a, b in zip(self._ends, self._starts[1:], strict=False))

    def hole_bytes(self, file_offset: int, length: int) -> int:
        """How many bytes of ``[file_offset, file_offset + length)`` no record wrote (they read as zero)."""
        end = min(file_offset + length, self.size)
        if end <= file_offset:
            return 0
        covered = 0
        i = bisect.bisect_right(self._ends, file_offset)
        while i < len(self._starts) and self._starts[i] < end:
            covered += min(self._ends[i], end) - max(self._starts[i], file_offset)
            i += 1
        return end - file_offset - covered

    def read_at(self, file_offset: int, length: int) -> bytes:
        if file_offset < 0 or length < 0:
            raise ValueError(f"bad read {file_offset:#x}+{length:#x}")
        end = min(file_offset + length, self.size)
        if end <= file_offset:
            return b""
        starts, ends, srcs = self._starts, self._ends, self._src
        i = bisect.bisect_right(ends, file_offset)
        # Single-extent reads are the common case.
        if i < len(starts) and starts[i] <= file_offset and end <= ends[i]:
            data = self.stream.read_at(srcs[i] + file_offset - starts[i], end - file_offset)
            return data if len(data) == end - file_offset else data.ljust(end - file_offset, b"\0")
        out = bytearray()
        pos = file_offset
        while pos < end:
            if i >= len(starts) or starts[i] >= end:
                out += bytes(end - pos)
                break
            if starts[i] > pos:
                out += bytes(starts[i] - pos)
                pos = starts[i]
            take = min(ends[i], end) - pos
            data = self.stream.read_at(srcs[i] + pos - starts[i], take)
            out += data.ljust(take, b"\0")
            pos += take
            i += 1
        return bytes(out)

    def close(self) -> None:
        self.stream.close()

    def __repr__(self) -> str:
        return f"FlattenedSource({self.path!r}, records={self.record_count}, size={self.size:#x})"
