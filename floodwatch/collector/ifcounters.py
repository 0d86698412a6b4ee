"""sFlow counter samples: the generic interface counters (sFlow v5 `if_counters`, counter record 0:1) of
each exporter's interfaces, decoded for a whole batch with numpy and kept, latest only, in a bounded table.

A switch or router sends a counter sample per interface every polling interval (20-30 s): speed, octets,
packets, errors and discards in and out. They are not traffic of the protected networks; the collector
shows them in its counters (`floodwatch status`) so an operator sees what each exporter's links carry.
Counter samples come in the compact (format 2) and the expanded (format 4) form. A counter sample whose
records do not add up, or a generic record shorter than the 88 bytes of the spec, is counted as bad.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from floodwatch.capture.fastparse import gather
from floodwatch.collector.xdr import Items, walk, words

GENERIC_INTERFACE = 1  # counter record format (enterprise 0)
IF_COUNTERS = np.dtype([
    ("if_index", ">u4"), ("if_type", ">u4"), ("speed", ">u8"), ("if_direction", ">u4"), ("if_status", ">u4"),
    ("in_octets", ">u8"), ("in_ucast", ">u4"), ("in_multicast", ">u4"), ("in_broadcast", ">u4"),
    ("in_discards", ">u4"), ("in_errors", ">u4"), ("in_unknown_protos", ">u4"),
    ("out_octets", ">u8"), ("out_ucast", ">u4"), ("out_multicast", ">u4"), ("out_broadcast", ">u4"),
    ("out_discards", ">u4"), ("out_errors", ">u4"), ("promiscuous", ">u4"),
])
assert IF_COUNTERS.itemsize == 88
MAX_RECORDS = 32  # records in one counter sample at most (interface, Ethernet, VLAN, processor...)
MAX_EXPORTERS = 1024  # exporters whose interfaces are kept
MAX_INTERFACES = 512  # interfaces kept per exporter (a chassis switch has a few hundred)
SHOWN_EXPORTERS, SHOWN_INTERFACES = 8, 16  # in the heartbeat's counters (the busiest first)


@dataclass
class Decoded:
    """Generic interface counter records of a batch and the exporter index of each; bad records."""

    rows: np.ndarray
    exporter: np.ndarray
    bad: int = 0

    @staticmethod
    def empty() -> Decoded:
        return Decoded(np.zeros(0, dtype=IF_COUNTERS), np.zeros(0, dtype=np.int64))


def decode(buf: bytes, flat: np.ndarray, s: Items, exporter: np.ndarray) -> Decoded:
    """The generic interface records of counter samples `s` (formats 2 and 4) of one batch."""
    head = np.where(s.fmt == 4, 16, 12)  # seq, source id (type, index when expanded), record count
    fits = s.body + head <= s.end
    bad = int((~fits).sum())
    s, exporter, head = s.select(fits), exporter[fits], head[fits]
    nrec = words(flat, s.body + head - 4, 1)[:, 0]
    many = nrec > MAX_RECORDS  # absurd, and walking it would cost per record
    bad += int(many.sum())
    s, exporter, head, nrec = s.select(~many), exporter[~many], head[~many], nrec[~many]
    recs, bad_chain = walk(buf, flat, s.body + head, s.end, nrec)
    bad += int(bad_chain.sum())
    gen = recs.select(recs.fmt == GENERIC_INTERFACE)
    short = gen.end - gen.body < IF_COUNTERS.itemsize
    bad += int(short.sum())
    gen = gen.select(~short)
    order = np.argsort(gen.body, kind="stable")  # arrival order (walks return items by position)
    gen = Items(gen.fmt[order], gen.body[order], gen.end[order], gen.chain[order])
    raw = np.ascontiguousarray(gather(flat, gen.body, IF_COUNTERS.itemsize))
    return Decoded(raw.view(IF_COUNTERS).ravel(), exporter[gen.chain], bad)


def _fields(row: np.void) -> dict[str, int]:
    return {"speed": int(row["speed"]), "in_octets": int(row["in_octets"]), "out_octets": int(row["out_octets"]),
            "in_packets": int(row["in_ucast"]) + int(row["in_multicast"]) + int(row["in_broadcast"]),
            "out_packets": int(row["out_ucast"]) + int(row["out_multicast"]) + int(row["out_broadcast"]),
            "in_errors": int(row["in_errors"]), "out_errors": int(row["out_errors"]),
            "in_discards": int(row["in_discards"]), "out_discards": int(row["out_discards"]),
            "status": int(row["if_status"])}


class InterfaceTable:
    """The latest counters of each (exporter, ifIndex), and counter records per exporter; bounded."""

    def __init__(self) -> None:
        self.latest: dict[int, dict[int, dict[str, int]]] = {}  # exporter index -> ifIndex -> counters
        self.records: dict[int, int] = {}  # exporter index -> generic records received
        self.dropped = 0  # records of exporters or interfaces past the bounds

    def add(self, d: Decoded) -> None:
        if not len(d.rows):
            return
        key = (d.exporter.astype(np.uint64) << np.uint64(32)) | d.rows["if_index"].astype(np.uint64)
        _, last = np.unique(key[::-1], return_index=True)  # the batch's latest record of each interface
        for i in (len(key) - 1 - last).tolist():
            exp, row = int(d.exporter[i]), d.rows[i]
            table = self.latest.get(exp)
            if table is None:
                if len(self.latest) >= MAX_EXPORTERS:
                    self.dropped += 1
                    continue
                table = self.latest[exp] = {}
            idx = int(row["if_index"])
            if idx not in table and len(table) >= MAX_INTERFACES:
                self.dropped += 1
                continue
            table[idx] = _fields(row)
        for exp, n in zip(*np.unique(d.exporter, return_counts=True), strict=True):
            if int(exp) in self.latest:
                self.records[int(exp)] = self.records.get(int(exp), 0) + int(n)

    def snapshot(self, names: list[str]) -> dict[str, Any]:
        """{exporter: {ifIndex: counters}} for the heartbeat: the exporters and interfaces with the most
        octets first, SHOWN_EXPORTERS x SHOWN_INTERFACES at most."""
        def octets(c: dict[str, int]) -> int:
            return c["in_octets"] + c["out_octets"]

        busiest = sorted(self.latest.items(), key=lambda kv: -sum(octets(c) for c in kv[1].values()))
        out: dict[str, Any] = {}
        for exp, table in busiest[:SHOWN_EXPORTERS]:
            if 0 <= exp < len(names):
                top = sorted(table.items(), key=lambda kv: -octets(kv[1]))[:SHOWN_INTERFACES]
                out[names[exp]] = {str(i): c for i, c in top}
        return out

    def per_exporter(self, names: list[str]) -> dict[str, int]:
        return {names[e]: n for e, n in list(self.records.items())[:SHOWN_EXPORTERS * 4] if 0 <= e < len(names)}
