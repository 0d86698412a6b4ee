"""Synthetic records and batches for the aggregator tests, and pcap files read into real batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from floodwatch.messages import CounterSample, PacketBatch
from floodwatch.records import DIR_UNKNOWN, RECORD_DTYPE, addr_bytes

V4 = b"\x00" * 10 + b"\xff\xff"


def v4_addrs(ints: np.ndarray) -> np.ndarray:
    """uint32 IPv4 addresses -> S16 v4-mapped column values."""
    raw = np.zeros((ints.size, 16), dtype=np.uint8)
    raw[:, 10:12] = 0xFF
    raw[:, 12:] = ints.astype(">u4").view(np.uint8).reshape(-1, 4)
    return raw.view("S16").reshape(-1)


def records(n: int, **cols: Any) -> np.ndarray:
    """n records: TCP SYN 198.18.0.1:40000 -> 10.10.10.10:80, 60 bytes, TTL 64, unless overridden.
    `src`/`dst` may be text addresses (one for all) or S16 arrays."""
    r = np.zeros(n, dtype=RECORD_DTYPE)
    defaults: dict[str, Any] = {"ts": 1000.0, "wirelen": 60, "sport": 40000, "dport": 80, "direction": DIR_UNKNOWN,
                                "ipver": 4, "proto": 6, "flags": 2, "ttl": 64, "src": "198.18.0.1",
                                "dst": "10.10.10.10"}
    defaults.update(cols)
    for name, value in defaults.items():
        if name in ("src", "dst") and isinstance(value, str):
            value = addr_bytes(value)
        r[name] = value
    return r


def batch(recs: np.ndarray, rate: int = 1, seq: int = 0, iface: str = "test") -> PacketBatch:
    ts = recs["ts"]
    return PacketBatch(source="test", iface=iface, seq=seq, sample_rate=rate, count=int(recs.size),
                       records=recs.tobytes(), t_first=float(ts.min()), t_last=float(ts.max()))


def counters(ts: float, rx: int, rxb: int, tx: int = 0, txb: int = 0, iface: str = "eth0", drops: int = 0,
             conn: int = -1) -> CounterSample:
    return CounterSample(iface=iface, ts=ts, rx_packets=rx, rx_bytes=rxb, tx_packets=tx, tx_bytes=txb,
                         kernel_drops=drops, send_drops=0, sample_rate=1, conn_count=conn)


def pcap_batches(path: Path, size: int = 1024) -> Iterator[PacketBatch]:
    """A capture file as PacketBatches, parsed by the capture area's reader and parser."""
    from floodwatch.capture.fastparse import parse_many
    from floodwatch.capture.pcapfile import PcapReader

    with PcapReader(path) as reader:
        for seq, chunk in enumerate(reader.chunks(size)):
            rows = parse_many(reader.buf, chunk.offs, chunk.caps, chunk.wires, chunk.linktype)
            rows["ts"] = chunk.ts
            yield PacketBatch(source="pcap", iface=path.name, seq=seq, sample_rate=1, count=len(rows),
                              records=rows.tobytes(), t_first=float(chunk.ts[0]), t_last=float(chunk.ts[-1]))
