"""An independent reading of a capture for the invariant test: each frame's protocol, flags, ports,
fragment and addresses by struct, by the rules docs/detector.md states, to recompute every number an
incident states (tests/detect/test_detect_invariants.py)."""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HTTP = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE ")


@dataclass
class Pkt:
    ts: float
    kind: str  # tcp udp icmp other malformed
    src: str = ""
    dst: str = ""
    sport: int = -1
    dport: int = -1
    flags: int = -1
    frag: str = "none"  # none first later
    payload: bytes = b""


@dataclass
class Truth:
    pkts: list[Pkt] = field(default_factory=list)

    def count(self, pred: Callable[[Pkt], bool]) -> int:
        return sum(1 for p in self.pkts if pred(p))

    def by(self, attr: str) -> Counter[object]:
        return Counter(getattr(p, attr) for p in self.pkts if getattr(p, attr) not in ("", -1))

    def peak_pps(self, width: float = 0.1) -> float:
        per = Counter(int(p.ts / width + 5e-7) for p in self.pkts)
        return max(per.values()) / width


def read_pcap(path: Path) -> list[tuple[float, bytes]]:
    data = path.read_bytes()
    out, off = [], 24
    while off + 16 <= len(data):
        sec, usec, cap, _ = struct.unpack_from("<IIII", data, off)
        out.append((sec + usec / 1e6, data[off + 16 : off + 16 + cap]))
        off += 16 + cap
    return out


def _l4(p: Pkt, proto: int, seg: bytes) -> None:
    if proto in (6, 17) and p.frag != "later" and len(seg) >= 8:
        p.sport, p.dport = struct.unpack_from("!HH", seg)
        p.kind = "tcp" if proto == 6 else "udp"
        if proto == 6 and len(seg) >= 20:
            p.flags = seg[13]
            p.payload = seg[(seg[12] >> 4) * 4 :][:32]
        else:
            p.payload = seg[8:][:32]
    elif proto in (6, 17):
        p.kind = "tcp" if proto == 6 else "udp"
    elif proto in (1, 58):
        p.kind = "icmp"
    else:
        p.kind = "other"


def parse(ts: float, frame: bytes) -> Pkt:
    p = Pkt(ts, "malformed")
    et, ip = struct.unpack_from("!H", frame, 12)[0], frame[14:]
    if et == 0x0800 and len(ip) >= 20 and ip[0] >> 4 == 4:
        ihl, totlen = (ip[0] & 15) * 4, struct.unpack_from("!H", ip, 2)[0]
        if ihl < 20 or totlen < ihl or totlen > len(ip):
            return p
        fragw = struct.unpack_from("!H", ip, 6)[0]
        p.frag = "later" if fragw & 0x1FFF else "first" if fragw & 0x2000 else "none"
        p.src, p.dst = str(ipaddress.IPv4Address(ip[12:16])), str(ipaddress.IPv4Address(ip[16:20]))
        _l4(p, ip[9], ip[ihl:totlen])
    elif et == 0x86DD and len(ip) >= 40 and ip[0] >> 4 == 6:
        plen, nh = struct.unpack_from("!HB", ip, 4)
        if plen == 0 or 40 + plen > len(ip):
            return p
        p.src, p.dst = str(ipaddress.IPv6Address(ip[8:24])), str(ipaddress.IPv6Address(ip[24:40]))
        body = ip[40 : 40 + plen]
        if nh == 44:
            nh, offw = body[0], struct.unpack_from("!H", body, 2)[0]
            p.frag = "later" if offw & 0xFFF8 else "first" if offw & 1 else "none"
            body = body[8:]
        _l4(p, nh, body)
    return p


def truth_of(path: Path) -> Truth:
    return Truth([parse(ts, f) for ts, f in read_pcap(path)])
