"""Packets and incident events built for the recorder's tests (real bytes, real checksums)."""

from __future__ import annotations

import struct
import time
from typing import Any

from floodwatch.messages import IncidentEvent

VICTIM = (198, 18, 0, 2)


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ip4(proto: int, l4: bytes, src: tuple[int, ...] = (198, 18, 0, 1), dst: tuple[int, ...] = VICTIM) -> bytes:
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, bytes(src), bytes(dst))
    h = h[:10] + struct.pack("!H", _csum(h)) + h[12:]
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + h + l4


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport: int, dport: int, flags: int, opts: bytes = b"", payload: bytes = b"") -> bytes:
    offset = ((20 + len(opts)) // 4) << 4
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, offset, flags, 64240, 0, 0) + opts + payload


def dns_query(name: str, qtype: int = 255, txid: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", qtype, 1)


def dns_response(name: str, qtype: int = 255, txid: int = 0x1234, pad: int = 200) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 300, pad + 1) + bytes([pad]) + b"x" * pad
    return struct.pack("!HHHHHH", txid, 0x8180, 1, 1, 0, 0) + labels + struct.pack("!HH", qtype, 1) + answer


def quiet_frame(i: int) -> bytes:
    """Ordinary traffic before the attack: a UDP packet from port 1111 carrying its index."""
    return ip4(17, udp(1111, 5000, b"before-%06d" % i))


def dns_amp_frame(i: int) -> bytes:
    """An amplified DNS answer from a reflector (source port 53), one reflector per i."""
    return ip4(17, udp(53, 40000 + i % 1000, dns_response("amp.example.org", 255, i & 0xFFFF)),
               src=(203, 0, 113, 1 + i % 250))


SYN_OPTS = b"\x02\x04\x05\xb4\x01\x03\x03\x07\x04\x02\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x00"
NTP_MONLIST = bytes([0x17, 0x00, 0x03, 0x2A]) + b"\0" * 4
MEMCACHED_STATS = b"\x00\x01\x00\x00\x00\x01\x00\x00stats\r\n"
SSDP_MSEARCH = (b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\n'
                b"MX: 1\r\nST: ssdp:all\r\n\r\n")
HTTP_GET = b"GET /wp-login.php?x=1 HTTP/1.1\r\nHost: victim.example\r\nUser-Agent: EvilBot/1.0\r\n\r\n"


def mixed_frames() -> list[bytes]:
    """One of each protocol the dissection reads."""
    return [
        ip4(17, udp(40000, 53, dns_query("isc.org", 255))),
        ip4(17, udp(40001, 123, NTP_MONLIST)),
        ip4(17, udp(40002, 11211, MEMCACHED_STATS)),
        ip4(17, udp(40003, 1900, SSDP_MSEARCH)),
        ip4(6, tcp(40004, 80, 0x18, b"", HTTP_GET)),
        ip4(6, tcp(40005, 80, 0x02, SYN_OPTS)),
    ]


def incident(cls: type[IncidentEvent], key: str, subtype: str = "dns_amplification", seq: int = 0,
             ended_at: float | None = None, started_at: float = 0.0) -> Any:
    now = time.time()
    return cls(
        incident_key=key, status="resolved" if ended_at is not None else "active", attack_family="udp_flood",
        attack_subtype=subtype, severity="high", confidence=80, started_at=started_at or now, ended_at=ended_at,
        updated_at=now, seq=seq, peak_pps=100000, peak_bps=10**9, protocol_breakdown={"udp": 100.0},
        tcp_flag_breakdown={}, geo_breakdown={}, source_ip_count=250, top_src_ips=[], top_dst_ports=[],
        target_ips=["198.18.0.2"], ioc_matches=[], spoofing_detected=False, botnet_detected=False,
    )
