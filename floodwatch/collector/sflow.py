"""sFlow v5 datagrams -> packet records, through our own header parser (floodwatch.capture.fastparse).

The XDR walk over samples and flow records is the only per-sample Python: it notes where each raw packet
header is (offset, length, frame length, sampling rate) and nothing else. The headers of many datagrams
are then parsed together by `fastparse.parse_many`, exactly as capture parses frames, so an sFlow sample
becomes the same record a captured packet does. Counter samples are counted (interface counters of the
exporter are not traffic of the protected networks). Bad input raises BadDatagram.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from floodwatch.capture import parse as P
from floodwatch.capture.fastparse import parse_many
from floodwatch.errors import BadDatagram

U32 = struct.Struct(">I")
U32X2 = struct.Struct(">II")
FLOW_HEAD = struct.Struct(">IIIIIIII")  # seq source sampling_rate pool drops input output nrecords
XFLOW_HEAD = struct.Struct(">IIIIIIIIIII")  # expanded: seq type index rate pool drops 4 x if, nrecords
RAW_HEAD = struct.Struct(">IIII")  # header_protocol frame_length stripped header_length
HEADER_LINKTYPE = {1: P.LINKTYPE_ETHERNET, 11: P.LINKTYPE_RAW, 12: P.LINKTYPE_RAW}
MAX_HEADER = 1024  # an sFlow agent sends 128 bytes by default; more than this is absurd


@dataclass
class SflowBatch:
    """Raw headers of the datagrams decoded since the last take(): one buffer, one entry per sample."""

    buf: bytearray = field(default_factory=bytearray)
    offs: list[int] = field(default_factory=list)
    caps: list[int] = field(default_factory=list)
    wires: list[int] = field(default_factory=list)
    rates: list[int] = field(default_factory=list)
    links: list[int] = field(default_factory=list)
    exporters: list[int] = field(default_factory=list)
    counter_samples: int = 0
    other_records: int = 0

    def __len__(self) -> int:
        return len(self.offs)


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
    for _ in range(nsamples):
        if pos + 8 > end:
            raise BadDatagram("sFlow: truncated sample header")
        fmt, length = U32X2.unpack_from(data, pos)
        body, pos = pos + 8, pos + 8 + length
        if pos > end:
            raise BadDatagram(f"sFlow: sample of {length} bytes past the end")
        if fmt == 1 or fmt == 3:
            bad_rate += _flow_sample(data, body, pos, fmt == 3, out, base, exporter, max_rate)
        elif fmt in (2, 4):
            out.counter_samples += 1
        else:
            out.other_records += 1
    return bad_rate


def _flow_sample(data: bytes, pos: int, end: int, expanded: bool, out: SflowBatch, base: int,
                 exporter: int, max_rate: int) -> int:
    head = XFLOW_HEAD if expanded else FLOW_HEAD
    if pos + head.size > end:
        raise BadDatagram("sFlow: truncated flow sample")
    fields = head.unpack_from(data, pos)
    rate, nrec = fields[3 if expanded else 2], fields[-1]
    pos += head.size
    if not 1 <= rate <= max_rate:
        return 1
    for _ in range(nrec):
        if pos + 8 > end:
            raise BadDatagram("sFlow: truncated flow record")
        fmt, length = U32X2.unpack_from(data, pos)
        rec, pos = pos + 8, pos + 8 + length
        if pos > end:
            raise BadDatagram(f"sFlow: flow record of {length} bytes past the end")
        if fmt != 1:
            continue  # extended data (switch, router, gateway...): not traffic
        if length < RAW_HEAD.size:
            raise BadDatagram("sFlow: short raw header record")
        proto, frame_len, stripped, hlen = RAW_HEAD.unpack_from(data, rec)
        link = HEADER_LINKTYPE.get(proto)
        if link is None or hlen > MAX_HEADER or rec + RAW_HEAD.size + hlen > pos:
            out.other_records += 1
            continue
        out.offs.append(base + rec + RAW_HEAD.size)
        out.caps.append(hlen)
        out.wires.append(max(frame_len - stripped, hlen))
        out.rates.append(rate)
        out.links.append(link)
        out.exporters.append(exporter)
    return 0


def sflow_rows(batch: SflowBatch) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """RECORD_DTYPE rows of every sample in the batch (parsed a link type at a time by
    fastparse.parse_many) and their columns in the same order: rate, link, exporter, off, cap."""
    cols = {"rate": np.asarray(batch.rates, dtype=np.int64), "link": np.asarray(batch.links, dtype=np.int64),
            "exporter": np.asarray(batch.exporters, dtype=np.int64),
            "off": np.asarray(batch.offs, dtype=np.int64), "cap": np.asarray(batch.caps, dtype=np.int64),
            "wire": np.minimum(np.asarray(batch.wires, dtype=np.int64), 0xFFFFFFFF)}
    flat = np.frombuffer(batch.buf, dtype=np.uint8)
    kinds = np.unique(cols["link"])
    if len(kinds) > 1:
        order = np.argsort(cols["link"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
    parts = []
    for k in kinds.tolist():
        sel = cols["link"] == k
        parts.append(parse_many(batch.buf, cols["off"][sel], cols["cap"][sel], cols["wire"][sel], k, flat))
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), cols
