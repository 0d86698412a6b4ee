"""sFlow v5 datagrams -> packet records, through our own header parser (floodwatch.capture.fastparse).

The XDR walk over samples and flow records is the only per-sample Python: it notes where each raw packet
header is (offset, length, frame length, sampling rate) and nothing else. The headers of many datagrams
are then parsed together by `fastparse.parse_many`, exactly as capture parses frames, so an sFlow sample
becomes the same record a captured packet does. Counter samples are counted (interface counters of the
exporter are not traffic of the protected networks). Bad input raises BadDatagram.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field

import numpy as np

from floodwatch.capture import parse as P
from floodwatch.capture.fastparse import parse_many
from floodwatch.errors import BadDatagram
from floodwatch.records import RECORD_DTYPE, opaque

U32 = struct.Struct(">I")
U32X2 = struct.Struct(">II")
FLOW_HEAD = struct.Struct(">IIIIIIII")  # seq source sampling_rate pool drops input output nrecords
XFLOW_HEAD = struct.Struct(">IIIIIIIIIII")  # expanded: seq type index rate pool drops 4 x if, nrecords
# a flow record's format and length, then (raw packet header) header_protocol frame_length stripped header_length
RAW6 = struct.Struct(">IIIIII")
HEADER_LINKTYPE = {1: P.LINKTYPE_ETHERNET, 11: P.LINKTYPE_RAW, 12: P.LINKTYPE_RAW}
MAX_HEADER = 1024  # an sFlow agent sends 128 bytes by default; more than this is absurd


@dataclass
class SflowBatch:
    """Raw headers of the datagrams decoded since the last take(): one buffer, one entry per sample:
    (offset in buf, header length, frame length, sampling rate, link type, exporter index)."""

    buf: bytearray = field(default_factory=bytearray)
    entries: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)
    # flow samples (format 1) not walked yet: (offset of the body in buf, offset of its end, exporter);
    # sflow_rows reads those whose first record is a raw header column-wise, the others one by one
    flow1: array = field(default_factory=lambda: array("q"))  # body, end, exporter, body, end, ...
    counter_samples: int = 0
    other_records: int = 0
    bad_rate: int = 0

    def __len__(self) -> int:
        return len(self.entries) + len(self.flow1) // 3


def decode_sflow(data: bytes, out: SflowBatch, exporter: int, max_rate: int) -> int:
    """Append the raw headers of one datagram to `out`; returns the samples with absurd rates."""
    if len(data) < 28:
        raise BadDatagram("sFlow: short datagram")
    version, atype = U32X2.unpack_from(data, 0)
    if version != 5 or atype not in (1, 2):
        raise BadDatagram(f"sFlow: version {version}, agent address type {atype}")
    pos = 8 + (4 if atype == 1 else 16) + 16  # sub agent, sequence, uptime, sample count
    if pos > len(data):
        raise BadDatagram("sFlow: short header")
    nsamples = U32.unpack_from(data, pos - 4)[0]
    base = len(out.buf)
    out.buf += data
    bad_rate = 0
    end = len(data)
    unpack2 = U32X2.unpack_from
    flow1 = out.flow1
    for _ in range(nsamples):
        if pos + 8 > end:
            raise BadDatagram("sFlow: truncated sample header")
        fmt, length = unpack2(data, pos)
        body, pos = pos + 8, pos + 8 + length
        if pos > end:
            raise BadDatagram(f"sFlow: sample of {length} bytes past the end")
        if fmt == 1:
            flow1.extend((base + body, base + pos, exporter))
        elif fmt == 3:
            bad_rate += _flow_sample(data, body, pos, True, out.entries, base, exporter, max_rate)
        elif fmt in (2, 4):
            out.counter_samples += 1
        else:
            out.other_records += 1
    return bad_rate


def _flow_sample(data: bytes, pos: int, end: int, expanded: bool, entries: list[tuple[int, int, int, int, int, int]],
                 base: int, exporter: int, max_rate: int) -> int:
    head = XFLOW_HEAD if expanded else FLOW_HEAD
    if pos + head.size > end:
        raise BadDatagram("sFlow: truncated flow sample")
    fields = head.unpack_from(data, pos)
    rate, nrec = fields[3 if expanded else 2], fields[-1]
    pos += head.size
    if not 1 <= rate <= max_rate:
        return 1
    for _ in range(nrec):
        if pos + 24 > end:  # a short record at the end: only an extended one may be that short
            if pos + 8 > end or U32X2.unpack_from(data, pos)[0] == 1:
                raise BadDatagram("sFlow: truncated flow record")
            fmt, length = U32X2.unpack_from(data, pos)
            proto = frame_len = stripped = hlen = 0
        else:
            fmt, length, proto, frame_len, stripped, hlen = RAW6.unpack_from(data, pos)
        rec, pos = pos + 8, pos + 8 + length
        if pos > end:
            raise BadDatagram(f"sFlow: flow record of {length} bytes past the end")
        if fmt != 1:
            continue  # extended data (switch, router, gateway...): not traffic
        link = HEADER_LINKTYPE.get(proto)
        if link is None or hlen > MAX_HEADER or rec + 16 + hlen > pos:
            continue
        entries.append((base + rec + 16, hlen, frame_len - stripped if frame_len - stripped > hlen else hlen,
                        rate, link, exporter))
    return 0


_AR56 = np.arange(56, dtype=np.int64)


_LINK = np.full(16, -1, dtype=np.int64)
for _proto, _link in HEADER_LINKTYPE.items():
    _LINK[_proto] = _link


def _flow1_entries(batch: SflowBatch, flat: np.ndarray, max_rate: int) -> np.ndarray:
    """Entries of the format-1 flow samples, column-wise where the first record is a raw header (the
    usual shape); the others are walked by _flow_sample. Rows of (off, cap, wire, rate, link, exporter)."""
    t = np.frombuffer(batch.flow1, dtype=np.int64).reshape(-1, 3)
    body, end = t[:, 0], t[:, 1]
    head = flat.take(body[:, None] + _AR56, mode="clip").view(">u4").astype(np.int64)  # 14 words a sample
    rate, nrec, rfmt, rlen, proto, frame, stripped, hlen = (head[:, k // 4] for k in (8, 28, 32, 36, 40, 44, 48, 52))
    fits = (body + 56 <= end) & (nrec >= 1) & (rfmt == 1) & (rlen >= 16) & (body + 40 + rlen <= end)
    fits &= (hlen <= rlen - 16) & (hlen <= MAX_HEADER) & (proto >= 0) & (proto < 16)
    link = np.where(fits, _LINK[np.where(fits, proto, 0)], -1)
    fits &= (link >= 0) & (nrec == 1)
    bad = fits & ((rate < 1) | (rate > max_rate))
    batch.bad_rate += int(bad.sum())
    ok = fits & ~bad
    wire = np.maximum(frame - stripped, hlen)
    fast = np.stack([body + 56, hlen, wire, rate, link, t[:, 2]], axis=1)[ok]
    slow: list[tuple[int, int, int, int, int, int]] = []
    buf = bytes(batch.buf) if (~fits).any() else b""
    for b, e, x in t[~fits].tolist():
        try:
            batch.bad_rate += _flow_sample(buf, b, e, False, slow, 0, x, max_rate)
        except BadDatagram:
            batch.other_records += 1
    if slow:
        fast = np.concatenate([fast, np.array(slow, dtype=np.int64).reshape(-1, 6)])
    return fast


def sflow_rows(batch: SflowBatch, max_rate: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """RECORD_DTYPE rows of every sample in the batch (parsed a link type at a time by
    fastparse.parse_many) and their columns in the same order: rate, link, exporter, off, cap, wire."""
    flat = np.frombuffer(batch.buf, dtype=np.uint8)
    table = np.array(batch.entries, dtype=np.int64).reshape(-1, 6)
    if batch.flow1:
        table = np.concatenate([table, _flow1_entries(batch, flat, max_rate)])
    cols = {name: table[:, i] for i, name in enumerate(("off", "cap", "wire", "rate", "link", "exporter"))}
    cols["wire"] = np.minimum(cols["wire"], 0xFFFFFFFF)
    kinds = np.unique(cols["link"])
    if len(kinds) > 1:
        order = np.argsort(cols["link"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
    parts = [opaque(np.zeros(0, dtype=RECORD_DTYPE))]
    for k in kinds.tolist():
        sel = cols["link"] == k
        parts.append(opaque(parse_many(batch.buf, cols["off"][sel], cols["cap"][sel], cols["wire"][sel], k, flat)))
    return (parts[1] if len(parts) == 2 else np.concatenate(parts)).view(RECORD_DTYPE), cols
