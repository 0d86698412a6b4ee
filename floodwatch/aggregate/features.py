"""Lookup tables that turn record columns into small category indexes (built once, used vectorised)."""

from __future__ import annotations

import numpy as np

from floodwatch.records import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_CWR,
    TCP_ECE,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    TCP_URG,
)

PROTO_NAMES = ("tcp", "udp", "icmp", "other")
P_TCP, P_UDP, P_ICMP, P_OTHER = 0, 1, 2, 3

FLAG_NAMES = ("SYN", "SYN-ACK", "ACK", "PSH-ACK", "RST", "RST-ACK", "FIN", "FIN-ACK", "XMAS", "NULL",
              "SYN-ECE", "OTHER")
FRAG_NAMES = ("none", "first", "later")

# Inbound frame sizes (wire length), RMON-style buckets: label i covers [EDGES[i], EDGES[i+1]).
SIZE_EDGES = np.array([0, 65, 128, 256, 512, 1024, 1519], dtype=np.uint32)
SIZE_NAMES = ("0-64", "65-127", "128-255", "256-511", "512-1023", "1024-1518", "1519+")


def _proto_lut() -> np.ndarray:
    lut = np.full(256, P_OTHER, dtype=np.uint8)
    lut[PROTO_TCP] = P_TCP
    lut[PROTO_UDP] = P_UDP
    lut[PROTO_ICMP] = P_ICMP
    lut[PROTO_ICMPV6] = P_ICMP
    return lut


def flag_combo(flags: int) -> str:
    """One TCP flags byte -> its combination name (the precedence documented in docs/aggregator.md)."""
    syn, ack, rst, fin = flags & TCP_SYN, flags & TCP_ACK, flags & TCP_RST, flags & TCP_FIN
    if flags == 0:
        return "NULL"
    if fin and flags & TCP_PSH and flags & TCP_URG:
        return "XMAS"
    if rst:
        return "OTHER" if syn else ("RST-ACK" if ack else "RST")
    if syn:
        if fin:
            return "OTHER"
        if ack:
            return "SYN-ACK"
        return "SYN-ECE" if flags & (TCP_ECE | TCP_CWR) else "SYN"
    if fin:
        return "FIN-ACK" if ack else "FIN"
    if ack:
        return "PSH-ACK" if flags & TCP_PSH else "ACK"
    return "OTHER"


PROTO_LUT = _proto_lut()
FLAG_LUT = np.array([FLAG_NAMES.index(flag_combo(f)) for f in range(256)], dtype=np.uint8)

