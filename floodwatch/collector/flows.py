"""Decoded flows as columns, and flows -> the packet records capture produces, weighted by sampling.

Every decoder (NetFlow v5, v9, IPFIX, sFlow) ends in `Flows`: numpy columns, one entry per flow record
(or sFlow sample). `weighted_rows` turns them into RECORD_DTYPE rows: a flow of P packets seen at 1 in
R stands for T = P x R packets on the wire. A PacketBatch has one sample rate for all of its rows, so T
is written in binary: one row per set bit b of T (after rounding T to SIG_BITS significant bits, an
error under 1 %), sent in the batch of rate 2**b. Totals scaled by the batch rates add up to T; a flow
costs the aggregator at most SIG_BITS rows (usually 1 to 3), whatever its size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from floodwatch.records import DIR_UNKNOWN, RECORD_DTYPE, V4_MAPPED_PREFIX, opaque

SIG_BITS = 7  # significant bits of a flow's packet total kept (relative error < 2**-7)
MAX_WEIGHT_BITS = 48  # a flow's scaled packet total above 2**48 is absurd
L4_HEADER = np.zeros(256, dtype=np.int64)  # header bytes above IP, to estimate payload lengths
L4_HEADER[[6]] = 20
L4_HEADER[[17, 1, 58]] = 8
_V4PFX = np.frombuffer(V4_MAPPED_PREFIX, dtype=np.uint8)


@dataclass
class Flows:
    """Columns of n flows. Addresses are (n, 16) uint8 in record form (IPv4 v4-mapped)."""

    src: np.ndarray
    dst: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    proto: np.ndarray
    flags: np.ndarray
    ttl: np.ndarray
    ipver: np.ndarray
    packets: np.ndarray  # uint64, packets the exporter counted (sampled)
    octets: np.ndarray  # uint64, bytes (IP lengths) the exporter counted
    rate: np.ndarray  # uint64, 1 in N sampling of each flow
    ts: np.ndarray  # float64, arrival time of the datagram
    exporter: np.ndarray  # int64, the exporter's index (Collector.exporter_names)

    def __len__(self) -> int:
        return len(self.packets)

    @staticmethod
    def empty(n: int) -> Flows:
        z = np.zeros
        return Flows(z((n, 16), np.uint8), z((n, 16), np.uint8), z(n, np.int64), z(n, np.int64),
                     z(n, np.int64), z(n, np.int64), z(n, np.int64), z(n, np.int64), z(n, np.uint64),
                     z(n, np.uint64), np.ones(n, np.uint64), z(n, np.float64), z(n, np.int64))

    def take(self, keep: np.ndarray) -> Flows:
        return Flows(*(getattr(self, f)[keep] for f in FIELDS))

    @staticmethod
    def concat(parts: list[Flows]) -> Flows:
        if len(parts) == 1:
            return parts[0]
        return Flows(*(np.concatenate([getattr(p, f) for p in parts]) for f in FIELDS))


FIELDS = ("src", "dst", "sport", "dport", "proto", "flags", "ttl", "ipver", "packets", "octets", "rate", "ts",
          "exporter")


def v4_addrs(col: np.ndarray) -> np.ndarray:
    """(n, 4) uint8 IPv4 addresses -> (n, 16) v4-mapped."""
    out = np.zeros((len(col), 16), dtype=np.uint8)
    out[:, 10:12] = 0xFF
    out[:, 12:16] = col
    return out


def be_uint(col: np.ndarray) -> np.ndarray:
    """(n, k) big-endian bytes -> uint64 (k <= 8)."""
    out = np.zeros(len(col), dtype=np.uint64)
    for i in range(col.shape[1]):
        out = (out << np.uint64(8)) | col[:, i].astype(np.uint64)
    return out


def distinct(values: np.ndarray) -> list[int]:
    """The distinct values of an integer column, ascending (a sort: numpy 2's hashing np.unique costs
    ~3x more on the few distinct values of a batch's rates or link types)."""
    s = np.sort(values)
    return s[np.r_[True, s[1:] != s[:-1]]].tolist() if len(s) else []


def sane(flows: Flows, max_rate: int) -> tuple[Flows, int, int]:
    """(flows kept, dropped for an absurd sampling rate, dropped for absurd lengths)."""
    rate_bad = (flows.rate < 1) | (flows.rate > max_rate)
    pk = flows.packets
    with np.errstate(divide="ignore", invalid="ignore"):
        avg = np.where(pk > 0, flows.octets // np.maximum(pk, np.uint64(1)), 0)
    len_bad = ~rate_bad & ((pk == 0) | (pk > (1 << 40)) | (avg < 20) | (avg > 65535))
    bad = rate_bad | len_bad
    if not bad.any():
        return flows, 0, 0
    return flows.take(~bad), int(rate_bad.sum()), int(len_bad.sum())


def _round_sig(total: np.ndarray) -> np.ndarray:
    """Round each value to SIG_BITS significant bits (to nearest)."""
    if not len(total) or int(total.max()) < 1 << SIG_BITS:
        return total
    bits = np.zeros(len(total), dtype=np.int64)
    nz = total > 0
    bits[nz] = np.floor(np.log2(total[nz].astype(np.float64))).astype(np.int64) + 1
    shift = np.maximum(bits - SIG_BITS, 0).astype(np.uint64)
    half = np.where(shift > 0, np.uint64(1) << np.maximum(shift, np.uint64(1)) - np.uint64(1), np.uint64(0))
    return ((total + half) >> shift) << shift


def base_rows(flows: Flows, direction: np.ndarray | int = DIR_UNKNOWN) -> np.ndarray:
    """One RECORD_DTYPE row per flow (its average packet)."""
    n = len(flows)
    base = np.zeros(n, dtype=RECORD_DTYPE)
    base["ts"] = flows.ts
    pk = np.maximum(flows.packets, np.uint64(1))
    wire = np.minimum(flows.octets // pk, np.uint64(65535)).astype(np.int64)
    base["wirelen"] = wire
    base["sport"], base["dport"] = flows.sport, flows.dport
    base["paylen"] = np.maximum(wire - np.where(flows.ipver == 6, 40, 20) - L4_HEADER[flows.proto & 255], 0)
    base["direction"] = direction
    base["ipver"], base["proto"], base["flags"], base["ttl"] = flows.ipver, flows.proto, flows.flags, flows.ttl
    u8 = base.view(np.uint8).reshape(n, RECORD_DTYPE.itemsize)
    so, do = RECORD_DTYPE.fields["src"][1], RECORD_DTYPE.fields["dst"][1]  # type: ignore[index]
    u8[:, so : so + 16] = flows.src
    u8[:, do : do + 16] = flows.dst
    return base


def weighted_rows(base: np.ndarray, total: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """[(rate 2**b, RECORD_DTYPE rows)] standing for `total` packets of each base row (a flow's packets x
    its sampling rate)."""
    if not len(base):
        return []
    total = _round_sig(total)
    top = min(int(total.max()).bit_length(), MAX_WEIGHT_BITS)
    if top == 0:
        return []
    bits = ((total[None, :] >> _BITS[:top, None]) & np.uint64(1)).astype(bool)  # (bit, flow)
    hits = [np.flatnonzero(row) for row in bits]
    rows = opaque(base)[np.concatenate(hits)].view(RECORD_DTYPE)  # gathered once, grouped by bit
    out, start = [], 0
    for b, hit in enumerate(hits):
        if len(hit):
            out.append((1 << b, rows[start : start + len(hit)]))
            start += len(hit)
    return out


_BITS = np.arange(MAX_WEIGHT_BITS, dtype=np.uint64)
