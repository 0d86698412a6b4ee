"""sFlow v5 datagrams -> packet records (through our own header parser) and interface counters.

`decode_sflow` only checks a datagram's header and appends it to an SflowBatch: nothing per sample.
`sflow_rows` then walks the samples of every datagram of the batch together (floodwatch.collector.xdr),
the records of every flow sample together, and parses the raw packet headers of them all with
`fastparse.parse_many`, exactly as capture parses frames, so an sFlow sample becomes the record a
captured packet does. Counter samples (compact and expanded) give the generic interface counters of
their records (floodwatch.collector.ifcounters). A datagram whose samples do not add up is counted
malformed and none of it is used; a flow sample whose records do not add up is counted and dropped.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field

import numpy as np

from floodwatch.capture import parse as P
from floodwatch.capture.fastparse import parse_many
from floodwatch.collector import ifcounters
from floodwatch.collector.flows import distinct
from floodwatch.collector.xdr import Items, walk, words
from floodwatch.errors import BadDatagram
from floodwatch.records import RECORD_DTYPE, opaque

HEAD4 = struct.Struct(">II16xI")  # version, agent address type, (IPv4 address ... ) sample count
MAX_SAMPLES_GUESS = 64  # a datagram's sample count, as far as batching goes
MAX_SAMPLES = 256  # samples in one datagram at most (agents fill a datagram to the MTU: ~10 at 1500 bytes)
MAX_RECORDS = 32  # records in one sample at most (a header and a few extended records)
HEADER_LINKTYPE = {1: P.LINKTYPE_ETHERNET, 11: P.LINKTYPE_RAW, 12: P.LINKTYPE_RAW}
MAX_HEADER = 1024  # an sFlow agent sends 128 bytes by default; more than this is absurd
PAD = bytes(128)
FLOW_SAMPLE, COUNTER_SAMPLE, FLOW_SAMPLE_EXPANDED, COUNTER_SAMPLE_EXPANDED = 1, 2, 3, 4
RAW_HEADER = 1  # flow record format: raw packet header
_LINK = np.full(16, -1, dtype=np.int64)
for _proto, _link in HEADER_LINKTYPE.items():
    _LINK[_proto] = _link


@dataclass
class SflowBatch:
    """Datagrams gathered since the last sflow_rows(): their bytes, and per datagram (offset of its first
    sample in buf, its end, exporter index, sample count); then what sflow_rows counted."""

    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    buf: bytes = b""  # the parts joined (and padded) by sflow_rows
    dgrams: array = field(default_factory=lambda: array("q"))
    samples: int = 0  # samples announced (at most what the bytes can hold)
    malformed: int = 0
    bad_samples: int = 0
    bad_rate: int = 0
    counter_samples: int = 0
    other_samples: int = 0
    interfaces: ifcounters.Decoded = field(default_factory=ifcounters.Decoded.empty)

    def __len__(self) -> int:
        return self.samples


def decode_sflow(data: bytes, out: SflowBatch, exporter: int) -> None:
    """Check one datagram's header and append it to `out` (its samples are walked by sflow_rows)."""
    n = len(data)
    if n < 28:
        raise BadDatagram("sFlow: short datagram")
    version, atype, nsamples = HEAD4.unpack_from(data)  # nsamples right for an IPv4 agent address
    if version != 5 or atype not in (1, 2):
        raise BadDatagram(f"sFlow: version {version}, agent address type {atype}")
    pos = 28
    if atype == 2:  # IPv6 agent address: 12 bytes more
        pos = 40
        if n < pos:
            raise BadDatagram("sFlow: short header")
        nsamples = int.from_bytes(data[36:40], "big")
    if nsamples > MAX_SAMPLES:  # absurd: and walking it would cost per sample
        raise BadDatagram(f"sFlow: {nsamples} samples in a datagram")
    base = out.size
    out.parts.append(data)
    out.size = base + n
    out.dgrams.extend((base + pos, base + n, exporter, nsamples))
    out.samples += nsamples if nsamples < MAX_SAMPLES_GUESS else MAX_SAMPLES_GUESS


def _flow_entries(batch: SflowBatch, flat: np.ndarray, s: Items, exporter: np.ndarray, expanded: bool,
                  max_rate: int) -> np.ndarray:
    """Rows of (off, cap, wire, rate, link, exporter) for the raw headers of flow samples `s`."""
    head = 44 if expanded else 32  # seq source [type index] rate pool drops in out (4 words expanded) nrec
    fits = s.body + head <= s.end
    batch.bad_samples += int((~fits).sum())
    s, exporter = s.select(fits), exporter[fits]
    w = words(flat, s.body, head // 4)
    rate, nrec = w[:, 3 if expanded else 2], w[:, -1]
    many = nrec > MAX_RECORDS
    bad = ((rate < 1) | (rate > max_rate)) & ~many
    batch.bad_rate += int(bad.sum())
    batch.bad_samples += int(many.sum())
    bad |= many
    s, exporter, rate, nrec = s.select(~bad), exporter[~bad], rate[~bad], nrec[~bad]
    recs, bad_chain = walk(batch.buf, flat, s.body + head, s.end, nrec)
    batch.bad_samples += int(bad_chain.sum())
    raw = recs.select(recs.fmt == RAW_HEADER)
    h = words(flat, raw.body, 4)  # header_protocol frame_length stripped header_length
    proto, frame, stripped, hlen = h[:, 0], h[:, 1], h[:, 2], h[:, 3]
    room = raw.end - raw.body - 16
    ok = (room >= 0) & (hlen <= room) & (hlen <= MAX_HEADER) & (proto >= 0) & (proto < 16)
    link = np.where(ok, _LINK[np.where(ok, proto, 0)], -1)
    ok &= link >= 0
    wire = np.maximum(frame - stripped, hlen)
    return np.stack([raw.body + 16, hlen, wire, rate[raw.chain], link, exporter[raw.chain]], axis=1)[ok]


def _samples(batch: SflowBatch, flat: np.ndarray, max_rate: int) -> np.ndarray:
    """Walk every sample of the batch: flow sample entries out; the rest counted (interface counters
    decoded into batch.interfaces)."""
    d = np.frombuffer(batch.dgrams, dtype=np.int64).reshape(-1, 4)
    samples, bad = walk(batch.buf, flat, d[:, 0], d[:, 1], d[:, 3])
    batch.malformed += int(bad.sum())
    exporter = d[samples.chain, 2]
    parts = [np.zeros((0, 6), dtype=np.int64)]
    for fmt, expanded in ((FLOW_SAMPLE, False), (FLOW_SAMPLE_EXPANDED, True)):
        sel = samples.fmt == fmt
        if sel.any():
            parts.append(_flow_entries(batch, flat, samples.select(sel), exporter[sel], expanded, max_rate))
    counters = (samples.fmt == COUNTER_SAMPLE) | (samples.fmt == COUNTER_SAMPLE_EXPANDED)
    batch.counter_samples += int(counters.sum())
    if counters.any():
        batch.interfaces = ifcounters.decode(batch.buf, flat, samples.select(counters), exporter[counters])
    known = counters | (samples.fmt == FLOW_SAMPLE) | (samples.fmt == FLOW_SAMPLE_EXPANDED)
    batch.other_samples += int((~known).sum())
    return np.concatenate(parts)


def sflow_rows(batch: SflowBatch, max_rate: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """RECORD_DTYPE rows of every sample in the batch (parsed a link type at a time by
    fastparse.parse_many) and their columns in the same order: rate, link, exporter, off, cap, wire."""
    batch.buf = b"".join(batch.parts) + PAD  # padded: fixed-width gathers of the last samples fit too
    batch.parts = []
    flat = np.frombuffer(batch.buf, dtype=np.uint8)
    table = _samples(batch, flat, max_rate)
    cols = {name: table[:, i] for i, name in enumerate(("off", "cap", "wire", "rate", "link", "exporter"))}
    cols["wire"] = np.minimum(cols["wire"], 0xFFFFFFFF)
    kinds = distinct(cols["link"])
    if len(kinds) > 1:
        order = np.argsort(cols["link"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
    parts = [opaque(np.zeros(0, dtype=RECORD_DTYPE))]
    for k in kinds:
        sel = cols["link"] == k
        parts.append(opaque(parse_many(batch.buf, cols["off"][sel], cols["cap"][sel], cols["wire"][sel], k, flat)))
    return (parts[1] if len(parts) == 2 else np.concatenate(parts)).view(RECORD_DTYPE), cols
