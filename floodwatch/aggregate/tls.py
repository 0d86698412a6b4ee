"""New TLS connections from packet heads: ClientHellos toward local web ports, per window and per source.

A ClientHello is a TCP payload that starts a TLS handshake record (content type 0x16, version 0x03 0x00..
0x04) whose first handshake message is type 1 (byte 5). The capture keeps the first 32 payload bytes of
every packet (floodwatch/records.py), enough for these six. Counted for the whole batch at once (numpy
masks); the sources go into a small heavy-hitter table, made only when a window has a ClientHello.
"""

from __future__ import annotations

import numpy as np

from floodwatch.aggregate.spacesaving import HeavyHitters
from floodwatch.records import PROTO_TCP

HELLO_CAPACITY = 256  # sources tracked per window (heavy hitters: bounded whatever the traffic)
HELLO_BUFFER = 4096


def client_hellos(recs: np.ndarray, ports: np.ndarray) -> np.ndarray:
    """Mask of the records that carry a TLS ClientHello to one of `ports` (a sorted uint16 array)."""
    if recs.size == 0 or ports.size == 0:
        return np.zeros(recs.size, dtype=bool)
    cand = (recs["proto"] == PROTO_TCP) & (recs["paylen"] >= 6)
    if not cand.any():  # a UDP or bare-SYN flood: no port lookup at all
        return cand
    cand &= np.isin(recs["dport"], ports)
    if not cand.any():
        return cand
    head = recs["payload"].view((np.uint8, recs.dtype["payload"].itemsize))
    idx = np.flatnonzero(cand)
    h = head[idx]
    ok = (h[:, 0] == 0x16) & (h[:, 1] == 0x03) & (h[:, 2] <= 0x04) & (h[:, 5] == 0x01)
    cand[idx[~ok]] = False
    return cand


class HelloCounts:
    """One window's ClientHellos: the total (scaled by the sampling rate) and the top sources."""

    def __init__(self, ports: tuple[int, ...]) -> None:
        self.ports = np.array(sorted(ports), dtype=np.uint16)
        self.total = 0
        self.src: HeavyHitters | None = None  # made at the window's first ClientHello

    def add(self, recs: np.ndarray, skeys: np.ndarray, halves: np.ndarray | None, rate: int) -> None:
        """One slice of inbound IP records; `halves`: the source address halves when some are IPv6."""
        mask = client_hellos(recs, self.ports)
        n = int(np.count_nonzero(mask))
        if n == 0:
            return
        if self.src is None:
            self.src = HeavyHitters(HELLO_CAPACITY, HELLO_BUFFER, payload_width=2)
        self.total += n * rate
        self.src.update(skeys[mask], rate, None if halves is None else halves[mask])
