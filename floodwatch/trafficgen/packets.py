"""Frame builders (Ethernet + IPv4/IPv6 + TCP/UDP/ICMP), with real checksums, built with struct."""

from __future__ import annotations

import ipaddress
import struct

ETH_IP4, ETH_IP6 = 0x0800, 0x86DD
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_FRAG6, PROTO_ICMP6 = 1, 6, 17, 44, 58
SRC_MAC = bytes.fromhex("020000000001")
BROADCAST = b"\xff" * 6
TCP_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80}


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def flags_byte(flags: str) -> int:
    """'SA' -> SYN|ACK; '' -> none. Letters: F S R P A U E C."""
    out = 0
    for ch in flags.upper():
        out |= TCP_FLAGS[ch]
    return out


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    head = struct.pack("!HHHH", sport, dport, length, 0)
    c = checksum(_pseudo(src, dst, PROTO_UDP, length) + head + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, c) + payload


def tcp(src: bytes, dst: bytes, sport: int, dport: int, flags: int, seq: int, ack: int = 0,
        payload: bytes = b"", window: int = 0, csum: bool = True) -> bytes:
    """A TCP segment; csum=False leaves the checksum 0 (bulk test data that no stack receives)."""
    head = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, window, 0, 0)
    if not csum:
        return head + payload
    c = checksum(_pseudo(src, dst, PROTO_TCP, len(head) + len(payload)) + head + payload)
    return head[:16] + struct.pack("!H", c) + head[18:] + payload


def icmp(src: bytes, dst: bytes, icmp_type: int, code: int, ident: int, seq: int, payload: bytes,
         v6: bool) -> bytes:
    body = struct.pack("!BBHHH", icmp_type, code, 0, ident, seq) + payload
    pseudo = _pseudo(src, dst, PROTO_ICMP6, len(body)) if v6 else b""
    c = checksum(pseudo + body)
    return body[:2] + struct.pack("!H", c) + body[4:]


def ipv4(src: bytes, dst: bytes, proto: int, l4: bytes, ttl: int, ident: int = 0,
         frag_offset: int = 0, more_fragments: bool = False) -> bytes:
    frag = (frag_offset // 8) | (0x2000 if more_fragments else 0)
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident & 0xFFFF, frag, ttl, proto, 0, src, dst)
    return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + l4


def ipv6(src: bytes, dst: bytes, proto: int, l4: bytes, hop_limit: int) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, hop_limit, src, dst) + l4


def ipv6_fragment(src: bytes, dst: bytes, proto: int, chunk: bytes, hop_limit: int, ident: int,
                  offset: int, more: bool) -> bytes:
    frag_hdr = struct.pack("!BBHI", proto, 0, (offset // 8) << 3 | (1 if more else 0), ident)
    return ipv6(src, dst, PROTO_FRAG6, frag_hdr + chunk, hop_limit)


def ether(ip_packet: bytes, v6: bool, dst_mac: bytes = BROADCAST, src_mac: bytes = SRC_MAC) -> bytes:
    return dst_mac + src_mac + struct.pack("!H", ETH_IP6 if v6 else ETH_IP4) + ip_packet


def ip_packet(src: bytes, dst: bytes, proto: int, l4: bytes, ttl: int, ident: int = 0) -> bytes:
    return ipv6(src, dst, proto, l4, ttl) if len(src) == 16 else ipv4(src, dst, proto, l4, ttl, ident)


def addr(text: str) -> bytes:
    return ipaddress.ip_address(text).packed
