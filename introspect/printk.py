"""The kernel log, read from the printk ring buffer (``prb``) in guest RAM.

Linux 5.10+ keeps records in a lockless ring: descriptors (state + text position),
infos (sequence number, timestamp, length) and a text data ring. A record is used
only once its descriptor is finalized and still carries the id we asked for; a record
overwritten while we read it is dropped, never returned torn. Reading resumes at the
first descriptor not read yet, so a sample costs only the records that are new; a
record still being written (reserved, or committed but open for continuation) stops
the read and is read again next time.
"""

from __future__ import annotations

from dataclasses import dataclass

from .kernel import GuestKernel

DESC_STATE_SHIFT = 62
DESC_ID_MASK = (1 << DESC_STATE_SHIFT) - 1
RESERVED, COMMITTED, FINALIZED = 0, 1, 2
MAX_RECORDS = 4096
PENDING = "pending"  # _record: the writer is not done with this record yet


@dataclass(frozen=True)
class LogRecord:
    seq: int
    ts: float  # seconds since boot
    level: int
    text: str

    def __str__(self) -> str:
        return f"[{self.ts:12.6f}] {self.text}"


class KernelLog:
    """Reads new kernel log records since the previous call."""

    def __init__(self, k: GuestKernel):
        self.k = k
        self.next_seq = 0
        self.next_id: int | None = None  # first descriptor id not read yet
        o = lambda t, m: k.off(t, m)  # noqa: E731
        self.o_desc_ring = o("printk_ringbuffer", "desc_ring")
        self.o_text_ring = o("printk_ringbuffer", "text_data_ring")
        self.o_count_bits = o("prb_desc_ring", "count_bits")
        self.o_descs = o("prb_desc_ring", "descs")
        self.o_infos, self.o_head = o("prb_desc_ring", "infos"), o("prb_desc_ring", "head_id")
        self.o_tail = o("prb_desc_ring", "tail_id")
        self.o_size_bits, self.o_data = o("prb_data_ring", "size_bits"), o("prb_data_ring", "data")
        self.desc_size, self.info_size = k.size("prb_desc"), k.size("printk_info")
        self.o_lpos = o("prb_desc", "text_blk_lpos")
        self.o_seq, self.o_ts = o("printk_info", "seq"), o("printk_info", "ts_nsec")
        self.o_len, self.o_caller = o("printk_info", "text_len"), o("printk_info", "caller_id")

    def read_new(self, limit: int = MAX_RECORDS) -> list[LogRecord]:
        """Records with a sequence number not returned before, oldest first."""
        k = self.k
        rb = k.u64(k.sym("prb"))
        ring = rb + self.o_desc_ring
        count_bits = k.u32(ring + self.o_count_bits)
        descs, infos = k.u64(ring + self.o_descs), k.u64(ring + self.o_infos)
        head, tail = (k.u64(ring + self.o_head) & DESC_ID_MASK,
                      k.u64(ring + self.o_tail) & DESC_ID_MASK)
        text = rb + self.o_text_ring
        size = 1 << k.u32(text + self.o_size_bits)
        data = k.u64(text + self.o_data)
        mask = (1 << count_bits) - 1
        records = []
        ident = tail
        if self.next_id is not None and \
                (self.next_id - tail) & DESC_ID_MASK <= ((head - tail) & DESC_ID_MASK) + 1:
            ident = self.next_id  # resume after what earlier calls read (head + 1: nothing new)
        for _ in range(min((head + 1 - ident) & DESC_ID_MASK, 1 << count_bits)):
            rec = self._record(ident, descs, infos, data, size, mask)
            if rec is PENDING:
                break
            if rec is not None and rec.seq >= self.next_seq:
                records.append(rec)
            ident = (ident + 1) & DESC_ID_MASK
        self.next_id = ident
        records.sort(key=lambda r: r.seq)
        records = records[-limit:]
        if records:
            self.next_seq = records[-1].seq + 1
        return records

    def _record(self, ident: int, descs: int, infos: int, data: int, size: int,
                mask: int) -> LogRecord | str | None:
        """The record ``ident``; None if it is gone or has no text, PENDING if unfinished."""
        k = self.k
        idx = ident & mask
        desc = descs + idx * self.desc_size
        state_var = k.u64(desc)
        if state_var & DESC_ID_MASK != ident:
            return None  # recycled for a newer record: we fell behind
        if state_var >> DESC_STATE_SHIFT in (RESERVED, COMMITTED):
            return PENDING
        if state_var >> DESC_STATE_SHIFT != FINALIZED:
            return None
        begin, nxt = k.u64s(desc + self.o_lpos, 2)
        info = infos + idx * self.info_size
        seq, ts = k.u64s(info + self.o_seq, 2)
        length = k.u16(info + self.o_len)
        facility_level = k.read(info + self.o_len + 2, 2)
        if begin & 1 or begin == nxt:  # data-less record
            return None
        start = begin & (size - 1)
        if begin // size != nxt // size:  # wrapped: text starts at the ring's beginning
            start = 0
        raw = k.read(data + start + 8, min(length, size - start - 8))  # skip the block id
        if k.u64(desc) != state_var:  # recycled while we read it
            return None
        level = facility_level[1] >> 5
        return LogRecord(seq, ts / 1e9, level, raw.decode("utf-8", "replace"))
