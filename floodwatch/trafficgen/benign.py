"""Benign traffic for false-positive tests: a bulk TCP transfer (both directions) and timeline merging."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from floodwatch.trafficgen import packets as P

MSS = 1448


def bulk_transfer(local: str, peer: str, data_pps: float, seconds: float, start: float,
                  direction: str = "down", port: int = 5201) -> Iterator[tuple[float, bytes]]:
    """One established TCP connection moving data at `data_pps` full-size segments per second, with an
    ACK every second segment the other way (a speed test, a large download or upload).

    direction: "down" (peer sends data to local), "up" (local sends), "both" (two connections).
    """
    if direction == "both":
        yield from merge([bulk_transfer(local, peer, data_pps / 2, seconds, start, "down", port),
                          bulk_transfer(local, peer, data_pps / 2, seconds, start, "up", port + 1)])
        return
    lo, pe = P.addr(local), P.addr(peer)
    sender, receiver = (pe, lo) if direction == "down" else (lo, pe)
    sport, dport = (port, 40001) if direction == "down" else (40002, port)
    v6 = len(lo) == 16
    seq, ack = 1_000_000, 5_000_000
    payload = bytes(MSS)
    for i in range(int(data_pps * seconds)):
        t = start + i / data_pps
        seg = P.tcp(sender, receiver, sport, dport, P.flags_byte("A" if i % 8 else "PA"), seq, ack, payload, 64240,
                    csum=False)
        yield t, P.ether(P.ip_packet(sender, receiver, P.PROTO_TCP, seg, 64, i), v6)
        seq = (seq + MSS) & 0xFFFFFFFF
        if i % 2:
            back = P.tcp(receiver, sender, dport, sport, P.flags_byte("A"), ack, seq, b"", 64240)
            yield t + 0.00005, P.ether(P.ip_packet(receiver, sender, P.PROTO_TCP, back, 64, i), v6)


def merge(timelines: Iterable[Iterable[tuple[float, bytes]]]) -> Iterator[tuple[float, bytes]]:
    """Several time-ordered (ts, frame) streams as one time-ordered stream."""
    return heapq.merge(*timelines, key=lambda item: item[0])
