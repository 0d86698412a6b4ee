"""The packet-summary record: one fixed-size row per captured packet, carried in PacketBatch.

Capture packs rows with `RECORD_STRUCT.pack_into`; the aggregator reads a whole batch at once with
`numpy.frombuffer(batch.records, dtype=RECORD_DTYPE)` (zero copy, columnar).
"""

from __future__ import annotations

import ipaddress
import socket
import struct

import numpy as np

PAYLOAD_HEAD = 32

# Field order matters: RECORD_STRUCT and RECORD_DTYPE describe the same bytes.
RECORD_DTYPE = np.dtype(
    [
        ("ts", "<f8"),  # capture time, epoch seconds (file time for pcap sources)
        ("wirelen", "<u4"),  # original frame length on the wire
        ("sport", "<u2"),  # TCP/UDP source port; ICMP type
        ("dport", "<u2"),  # TCP/UDP destination port; ICMP code
        ("paylen", "<u2"),  # L4 payload length (capped at 65535)
        ("vlan", "<u2"),  # outer 802.1Q VLAN id, 0 when untagged
        ("direction", "u1"),  # DIR_IN / DIR_OUT / DIR_UNKNOWN
        ("ipver", "u1"),  # 0 (not IP), 4 or 6
        ("proto", "u1"),  # IP protocol number (after IPv6 extension headers); 0 when not IP
        ("flags", "u1"),  # TCP flags byte (FIN=1 SYN=2 RST=4 PSH=8 ACK=16 URG=32 ECE=64 CWR=128)
        ("ttl", "u1"),  # IPv4 TTL / IPv6 hop limit
        ("frag", "u1"),  # FRAG_NONE / FRAG_FIRST / FRAG_LATER
        ("iface", "u1"),  # index into the capture actor's interface list
        ("malformed", "u1"),  # 1 when the frame could not be parsed fully (still counted)
        ("src", "S16"),  # source address, IPv4 as v4-mapped IPv6
        ("dst", "S16"),  # destination address, IPv4 as v4-mapped IPv6
        ("payload", f"S{PAYLOAD_HEAD}"),  # first bytes of the L4 payload, zero padded
    ]
)
RECORD_STRUCT = struct.Struct(f"<dIHHHHBBBBBBBB16s16s{PAYLOAD_HEAD}s")
RECORD_SIZE = RECORD_STRUCT.size
assert RECORD_DTYPE.itemsize == RECORD_SIZE, (RECORD_SIZE, RECORD_DTYPE.itemsize)
RECORD_VOID = np.dtype(f"V{RECORD_SIZE}")


def opaque(rows: np.ndarray) -> np.ndarray:
    """RECORD_DTYPE rows viewed as opaque RECORD_SIZE-byte items: taking, masking, concatenating or copying
    them is then a memcpy per row (numpy moves a structured dtype field by field, ~40x slower). View the
    result back with .view(RECORD_DTYPE)."""
    return rows.view(RECORD_VOID)

DIR_IN, DIR_OUT, DIR_UNKNOWN = 0, 1, 2
FRAG_NONE, FRAG_FIRST, FRAG_LATER = 0, 1, 2
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG, TCP_ECE, TCP_CWR = 1, 2, 4, 8, 16, 32, 64, 128

V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"
_ZERO12 = bytes(12)


def v4_mapped(addr4: bytes) -> bytes:
    """4 raw IPv4 bytes -> the 16-byte v4-mapped form used in records."""
    return V4_MAPPED_PREFIX + addr4


def addr_text(addr16: bytes) -> str:
    """16 record bytes -> '1.2.3.4' for v4-mapped addresses, else the compressed IPv6 text."""
    addr16 = addr16.ljust(16, b"\x00")  # numpy strips trailing NULs from S16 values
    if addr16[:12] == V4_MAPPED_PREFIX:
        return socket.inet_ntoa(addr16[12:])  # the same text as ipaddress, ~10x faster (windows' top lists)
    if addr16[:12] == _ZERO12:  # ::/96: inet_ntop writes its last 32 bits as an IPv4 address, ipaddress not
        return str(ipaddress.IPv6Address(addr16))
    return socket.inet_ntop(socket.AF_INET6, addr16)  # the same text as ipaddress (RFC 5952), ~10x faster


def addr_bytes(text: str) -> bytes:
    """'1.2.3.4' or an IPv6 text -> the 16-byte record form."""
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return v4_mapped(ip.packed)
    return ip.packed
