"""Shared helpers of the capture tests: tshark as the reference, frame builders, capture file writers."""

from __future__ import annotations

import struct
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from floodwatch.capture import pcapwrite
from floodwatch.capture.fastparse import parse_many
from floodwatch.capture.pcapfile import PcapReader
from floodwatch.records import RECORD_DTYPE, addr_text
from floodwatch.trafficgen.packets import checksum


@dataclass
class Profile:
    packets: int
    bytes: int
    protocols: Counter[int]  # IP protocol number -> packets (0: not IP)
    sources: Counter[str]


def tshark_profile(path: Path) -> Profile:
    """What tshark reads in a capture: the reference every capture test compares against."""
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=\t", "-e", "frame.len",
         "-e", "ip.proto", "-e", "ipv6.nxt", "-e", "ip.src", "-e", "ipv6.src"],
        check=True, capture_output=True, text=True, timeout=120).stdout
    prof = Profile(0, 0, Counter(), Counter())
    for line in out.splitlines():
        flen, proto4, nxt6, src4, src6 = (line.split("\t") + [""] * 5)[:5]
        prof.packets += 1
        prof.bytes += int(flen)
        # the first value is the outer header (ICMP errors and tunnels carry inner ones too)
        first4, first6 = proto4.split(",")[0], nxt6.split(",")[0]
        proto = first4 or first6
        prof.protocols[int(proto) if proto else 0] += 1
        src = src4.split(",")[0] or src6.split(",")[0]
        if src:
            prof.sources[src] += 1
    return prof


def records_of(path: Path, chunk: int = 2048) -> np.ndarray:
    """Every record our reader + parser make of a capture file."""
    parts = []
    with PcapReader(path) as r:
        flat = np.frombuffer(r.buf, dtype=np.uint8)
        for c in r.chunks(chunk):
            rows = parse_many(r.buf, c.offs, c.caps, c.wires, c.linktype, flat)
            rows["ts"] = c.ts
            parts.append(rows.copy())
        del flat
    return np.concatenate(parts) if parts else np.zeros(0, dtype=RECORD_DTYPE)


def profile_of_records(rows: np.ndarray) -> Profile:
    prof = Profile(len(rows), int(rows["wirelen"].sum()), Counter(), Counter())
    protos = np.where(rows["ipver"] > 0, rows["proto"], 0)
    for proto, n in zip(*np.unique(protos, return_counts=True), strict=True):
        prof.protocols[int(proto)] += int(n)
    ip = rows[rows["ipver"] > 0]
    uniq, counts = np.unique(ip["src"], return_counts=True)
    for a, n in zip(uniq, counts, strict=True):
        prof.sources[addr_text(bytes(a))] += int(n)
    return prof


def assert_same_top(ours: Counter[str], ref: Counter[str], k: int = 10) -> None:
    """Our top k sources are tshark's (ties at the cut may be ordered either way)."""
    mine = ours.most_common(k)
    theirs = ref.most_common(k)
    assert [n for _, n in mine] == [n for _, n in theirs]
    for ip, n in mine:
        assert ref[ip] == n, (ip, n, ref[ip])


# -- capture file writers ------------------------------------------------------------------------------
def write_pcap(path: Path, linktype: int, frames: list[tuple[float, bytes]], snaplen: int = 262144,
               wirelens: list[int] | None = None) -> Path:
    pcapwrite.write_pcap(path, frames, linktype, snaplen, wirelens)
    return path


def frames_of(path: Path) -> list[tuple[float, bytes]]:
    with PcapReader(path) as r:
        return [(ts, bytes(r.buf[o : o + c])) for ts, _, o, c, _ in r]


def sll(frame: bytes, pkttype: int = 0) -> bytes:
    """An Ethernet frame re-wrapped in a Linux cooked (SLL) header."""
    proto = struct.unpack("!H", frame[12:14])[0]
    return struct.pack("!HHH8sH", pkttype, 1, 6, frame[6:12] + b"\0\0", proto) + frame[14:]


def sll2(frame: bytes, pkttype: int = 0) -> bytes:
    return struct.pack("!HHIHBB8s", struct.unpack("!H", frame[12:14])[0], 0, 2, 1, pkttype, 6,
                       frame[6:12] + b"\0\0") + frame[14:]


# -- frame builders (hand-built frames of every kind) -----------------------------------------------------
def eth(payload: bytes, ethertype: int = 0x0800, tags: tuple[tuple[int, int], ...] = ()) -> bytes:
    """Ethernet frame; tags = ((tpid, vid), ...) outermost first."""
    hdr = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01"
    for tpid, vid in tags:
        hdr += struct.pack("!HH", tpid, vid)
    return hdr + struct.pack("!H", ethertype) + payload


def ipv4(src: str, dst: str, proto: int, l4: bytes, ttl: int = 64, mf: bool = False, offset: int = 0,
         options: bytes = b"", totlen: int | None = None) -> bytes:
    import ipaddress

    ihl = 5 + len(options) // 4
    tl = totlen if totlen is not None else ihl * 4 + len(l4)
    fragw = (0x2000 if mf else 0) | (offset // 8)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, tl, 1, fragw, ttl, proto, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed) + options
    csum = inet_checksum(hdr)  # a real header checksum: the receiving kernel answers such packets
    return hdr[:10] + struct.pack("!H", csum) + hdr[12:] + l4


def inet_checksum(data: bytes) -> int:
    return checksum(data)


def ipv6(src: str, dst: str, nh: int, rest: bytes, hlim: int = 64, plen: int | None = None) -> bytes:
    import ipaddress

    pl = len(rest) if plen is None else plen
    return struct.pack("!IHBB16s16s", 0x60000000, pl, nh, hlim, ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + rest


def ext6(nh: int, length8: int = 0) -> bytes:
    """A generic IPv6 extension header ((len + 1) * 8 bytes)."""
    return struct.pack("!BB", nh, length8) + bytes(6 + 8 * length8)


def frag6(nh: int, offset: int, more: bool) -> bytes:
    return struct.pack("!BBHI", nh, 0, offset | (1 if more else 0), 7)


def tcp(sport: int, dport: int, flags: int, payload: bytes = b"", options: bytes = b"") -> bytes:
    doff = 5 + len(options) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, doff << 4, flags, 1024, 0, 0) + options + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp(itype: int, code: int, payload: bytes = b"") -> bytes:
    msg = struct.pack("!BBHI", itype, code, 0, 0) + payload
    return msg[:2] + struct.pack("!H", inet_checksum(msg)) + msg[4:]


def trafgen_conf(frames: list[bytes]) -> str:
    """A trafgen config sending these exact frames, in this order, round and round."""
    return "\n".join("{ " + ", ".join(f"0x{b:02x}" for b in f) + " }" for f in frames) + "\n"


def mac_bytes(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def eth_to(dst_mac: str, src_mac: str, payload: bytes, ethertype: int = 0x0800,
           tags: tuple[tuple[int, int], ...] = ()) -> bytes:
    """eth() with real addresses (the receiving veth accepts frames for its own MAC)."""
    frame = eth(payload, ethertype, tags)
    return mac_bytes(dst_mac) + mac_bytes(src_mac) + frame[12:]
