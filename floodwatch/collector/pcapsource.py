"""Flow export datagrams from a capture file (`floodwatch analyze` of sFlow / NetFlow / IPFIX traffic).

The frames are parsed by capture's parser (fastparse.parse_many, a chunk at a time); UDP datagrams
captured whole are handed on with their time, their sender (the exporter) and their protocol: sFlow
when the payload starts with version 5 as a 32-bit word, NetFlow/IPFIX when it starts with 5, 9 or 10
as a 16-bit word. Everything else in the file is counted and skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from floodwatch.capture.fastparse import parse_many
from floodwatch.capture.pcapfile import PcapReader
from floodwatch.records import PROTO_UDP, addr_text

EXPORT_PORTS = (2055, 4739, 6343, 9995, 9996, 2056, 4729)
CHUNK = 4096
Datagram = tuple[float, str, str, bytes]  # ts, exporter, "sflow" | "flow", payload


def kind_of(payload: bytes) -> str:
    """'sflow', 'flow' or '' for a UDP payload."""
    if payload[:4] == b"\x00\x00\x00\x05":
        return "sflow"
    if payload[:2] in (b"\x00\x05", b"\x00\x09", b"\x00\x0a"):
        return "flow"
    return ""


def datagrams(path: str | os.PathLike[str], stats: dict[str, int]) -> Iterator[Datagram]:
    """Every flow export datagram of a capture file, in file order; `stats` counts the rest."""
    with PcapReader(path) as reader:
        for chunk in reader.chunks(CHUNK):
            rows = parse_many(reader.buf, chunk.offs, chunk.caps, chunk.wires, chunk.linktype)
            stats["packets"] = stats.get("packets", 0) + len(rows)
            udp = (rows["proto"] == PROTO_UDP) & (rows["frag"] == 0) & (chunk.caps == chunk.wires)
            udp &= (rows["paylen"] > 0) & (rows["malformed"] == 0)
            for i in np.flatnonzero(udp).tolist():
                end = int(chunk.offs[i] + chunk.caps[i])
                payload = bytes(reader.buf[end - int(rows["paylen"][i]) : end])
                kind = kind_of(payload)
                if not kind:
                    stats["not_export"] = stats.get("not_export", 0) + 1
                    continue
                stats["datagrams"] = stats.get("datagrams", 0) + 1
                yield float(chunk.ts[i]), addr_text(bytes(rows["src"][i])), kind, payload
            stats["not_export"] = stats.get("not_export", 0) + int(len(rows) - udp.sum())


def looks_like_flow_export(path: str | os.PathLike[str], sample: int = 2000) -> bool:
    """Whether most of the first packets of a capture are flow export datagrams (to a usual port)."""
    with PcapReader(path) as reader:
        for chunk in reader.chunks(sample):
            rows = parse_many(reader.buf, chunk.offs, chunk.caps, chunk.wires, chunk.linktype)
            hits = (rows["proto"] == PROTO_UDP) & np.isin(rows["dport"], EXPORT_PORTS)
            return bool(len(rows)) and int(hits.sum()) * 2 > len(rows)
    return False
